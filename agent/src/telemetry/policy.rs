//! What the kernel programs enforce for one task, from its resources and labels (pure).

use brim_proto::v1::TaskInfo;
use brim_proto::Resources;

use crate::ebpf::TaskPolicy;

/// Task label setting an egress limit in megabits per second (decimal, > 0).
pub(crate) const EGRESS_LABEL: &str = "net_egress_mbps";

/// The task's policy: it may bind only its `ports` (none: no port at all but ephemeral
/// ones), and its egress is limited when it carries a valid `net_egress_mbps` label.
pub(crate) fn task_policy(info: &TaskInfo, resources: &Resources) -> Result<TaskPolicy, String> {
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
    Ok(TaskPolicy {
        ports: Some(ports),
        egress_bytes_per_sec: egress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use brim_proto::v1::Label;

    fn check(resources: &str, label: Option<&str>, expected: Result<TaskPolicy, &str>) {
        let info = TaskInfo {
            labels: label
                .map(|v| {
                    vec![Label {
                        key: EGRESS_LABEL.into(),
                        value: v.into(),
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        let r = Resources::parse(resources).expect("resources");
        match (task_policy(&info, &r), expected) {
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
            }),
        );
        check(
            "cpus:1",
            Some("8"),
            Ok(TaskPolicy {
                ports: Some(vec![]),
                egress_bytes_per_sec: Some(1_000_000),
            }),
        );
        check("cpus:1", Some("fast"), Err("not a number"));
        check("cpus:1", Some("0"), Err("out of range"));
        check("cpus:1", Some("NaN"), Err("out of range"));
    }
}
