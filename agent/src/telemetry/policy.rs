//! What the kernel programs enforce for one task, from its resources and labels (pure).

use brim_proto::v1::TaskInfo;
use brim_proto::Resources;

use crate::ebpf::{DeviceRule, TaskPolicy};

/// Task label setting an egress limit in megabits per second (decimal, > 0).
pub(crate) const EGRESS_LABEL: &str = "net_egress_mbps";
pub(crate) use crate::ebpf::devices::DEVICES_LABEL;

/// The task's policy: it may bind only its `ports` (none: no port at all but ephemeral
/// ones), its egress is limited when it carries a valid `net_egress_mbps` label, and it may
/// open the built-in devices, the operator's `default_devices` (`--device-allow`) and those
/// of its `devices` label. An invalid label is an error naming it.
pub(crate) fn task_policy(
    info: &TaskInfo,
    resources: &Resources,
    default_devices: &[DeviceRule],
) -> Result<TaskPolicy, String> {
    let ports = resources
        .ranges("ports")
        .map(|r| {
            r.intervals()
                .iter()
                .map(|&(b, e)| {
                    (
                        u16::try_from(b).unwrap_or(u16::MAX),
                        u16::try_from(e).unwrap_or(u16::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut egress = None;
    if let Some(l) = info.labels.iter().find(|l| l.key == EGRESS_LABEL) {
        let mbps: f64 = l.value.trim().parse().map_err(|_| {
            format!(
                "label {EGRESS_LABEL}=`{}` is not a number: use megabits per second, e.g. 100",
                l.value
            )
        })?;
        if !(mbps.is_finite() && mbps > 0.0 && mbps <= 1e6) {
            return Err(format!(
                "label {EGRESS_LABEL}={mbps} is out of range: use 0 < mbps <= 1000000"
            ));
        }
        egress = Some((mbps * 1e6 / 8.0) as u64);
    }
    let mut devices = default_devices.to_vec();
    if let Some(l) = info.labels.iter().find(|l| l.key == DEVICES_LABEL) {
        let rules =
            DeviceRule::parse_list(&l.value).map_err(|e| format!("label {DEVICES_LABEL}: {e}"))?;
        devices.extend(rules.into_iter().filter(|r| !default_devices.contains(r)));
    }
    if devices.len() > crate::ebpf::abi::MAX_DEV_RULES {
        return Err(format!(
            "label {DEVICES_LABEL}: {} device rules with the agent's defaults, at most {} fit",
            devices.len(),
            crate::ebpf::abi::MAX_DEV_RULES
        ));
    }
    Ok(TaskPolicy {
        ports: Some(ports),
        egress_bytes_per_sec: egress,
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use brim_proto::v1::Label;

    fn check(resources: &str, label: Option<&str>, expected: Result<TaskPolicy, &str>) {
        check_labels(resources, label.map(|v| (EGRESS_LABEL, v)), &[], expected)
    }

    fn check_labels(
        resources: &str,
        label: Option<(&str, &str)>,
        defaults: &[DeviceRule],
        expected: Result<TaskPolicy, &str>,
    ) {
        let info = TaskInfo {
            labels: label
                .map(|(k, v)| {
                    vec![Label {
                        key: k.into(),
                        value: v.into(),
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        let r = Resources::parse(resources).expect("resources");
        match (task_policy(&info, &r, defaults), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{resources} {label:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn policies() {
        check(
            "cpus:1;ports:[31000-31002,31005-31005]",
            None,
            Ok(TaskPolicy {
                ports: Some(vec![(31000, 31002), (31005, 31005)]),
                egress_bytes_per_sec: None,
                devices: vec![],
            }),
        );
        check(
            "cpus:1",
            Some("8"),
            Ok(TaskPolicy {
                ports: Some(vec![]),
                egress_bytes_per_sec: Some(1_000_000),
                devices: vec![],
            }),
        );
        check("cpus:1", Some("fast"), Err("not a number"));
        check("cpus:1", Some("0"), Err("out of range"));
        check("cpus:1", Some("NaN"), Err("out of range"));
    }

    #[test]
    fn device_rules_extend_the_operator_defaults() {
        let gpu = DeviceRule::parse("c 195:* rwm").expect("rule");
        let null = DeviceRule::parse("/dev/null r").expect("rule");
        let policy = |devices| {
            Ok(TaskPolicy {
                ports: Some(vec![]),
                egress_bytes_per_sec: None,
                devices,
            })
        };
        check_labels("cpus:1", None, &[gpu], policy(vec![gpu]));
        check_labels(
            "cpus:1",
            Some((DEVICES_LABEL, "c 195:* rwm, /dev/null r")),
            &[gpu],
            policy(vec![gpu, null]),
        );
        check_labels(
            "cpus:1",
            Some((DEVICES_LABEL, "c 195")),
            &[],
            Err("label devices: device rule `c 195`"),
        );
        let many = vec!["c 1:1"; 17].join(",");
        check_labels(
            "cpus:1",
            Some((DEVICES_LABEL, &many)),
            &[],
            Err("at most 16 fit"),
        );
    }
}
