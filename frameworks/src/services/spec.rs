//! The service spec (`app.toml` / `app.json`): parsing, defaults and validation. A validated
//! spec carries its compiled constraints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::constraints::Constraint;

/// Largest number of instances of one service.
pub const MAX_INSTANCES: u32 = 1000;

/// A service as the operator writes it. Unknown fields are rejected so typos are caught.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Lowercase letters, digits and `-`; unique.
    pub id: String,
    #[serde(default = "one")]
    pub instances: u32,
    /// Shell command (`/bin/sh -c`). `$PORT0`... hold the ports asked with `ports`.
    pub cmd: String,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// MiB.
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// Number of ports to reserve per instance (exported as `PORT0`, `PORT1`, ...).
    #[serde(default)]
    pub ports: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `field:OP[:value]`: `hostname:UNIQUE`, `rack:LIKE:r[12]`, `rack:UNLIKE:r9`,
    /// `zone:GROUP_BY[:n]`, `rack:CLUSTER:r1`. `field` is `hostname` or an agent attribute.
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub upgrade: Upgrade,
    #[serde(default)]
    pub backoff: Backoff,
    /// A RUNNING instance counts as healthy (available) once it has been running this long;
    /// with a `health_check`, once the agent's check passes instead.
    #[serde(default)]
    pub healthy_after_seconds: f64,
    /// Checked by the agent while an instance runs; failing instances are killed and
    /// replaced, and only passing ones count as available during a rolling restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// SIGTERM→SIGKILL grace period when an instance is stopped.
    #[serde(default = "default_grace")]
    pub kill_grace_seconds: f64,
    /// Unix user to run as (default: `nobody`, the hosted frameworks' user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run each instance in an OCI container of this image (crun on the agent): an absolute
    /// path on the agents to an OCI image layout directory or an OCI/`docker save` tarball,
    /// or an `http://`/`file://` URI of one. `cmd` then runs in the image's root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Directories mounted into each instance, `SOURCE:TARGET[:ro]` as `brim run --volume`:
    /// an absolute SOURCE is the agent's (under its `--allowed-host-paths`), a relative one
    /// a sandbox directory; TARGET relative = in the sandbox, absolute = in the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

/// What the agent checks on each instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// `command` (exit 0 = healthy), `http` (GET 2xx/3xx) or `tcp` (connect succeeds).
    pub kind: HealthCheckKindSpec,
    /// Shell command for `command` checks (run in the instance's sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Path for `http` checks, e.g. `/health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which of the instance's ports `http`/`tcp` checks use (0 = `PORT0`).
    #[serde(default)]
    pub port_index: u32,
    #[serde(default = "default_check_grace")]
    pub grace_period_seconds: f64,
    #[serde(default = "default_check_interval")]
    pub interval_seconds: f64,
    #[serde(default = "default_check_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "default_check_failures")]
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKindSpec {
    Command,
    Http,
    Tcp,
}

fn default_check_grace() -> f64 {
    10.0
}
fn default_check_interval() -> f64 {
    2.0
}
fn default_check_timeout() -> f64 {
    5.0
}
fn default_check_failures() -> u32 {
    3
}

impl HealthCheckSpec {
    /// The wire form the agent runs.
    pub fn to_proto(&self) -> brim_framework::v1::HealthCheck {
        use brim_framework::v1::HealthCheckKind;
        brim_framework::v1::HealthCheck {
            kind: match self.kind {
                HealthCheckKindSpec::Command => HealthCheckKind::Command,
                HealthCheckKindSpec::Http => HealthCheckKind::Http,
                HealthCheckKindSpec::Tcp => HealthCheckKind::Tcp,
            } as i32,
            command: self.command.clone().unwrap_or_default(),
            port: self.port_index,
            path: self.path.clone().unwrap_or_default(),
            grace_period_seconds: self.grace_period_seconds,
            interval_seconds: self.interval_seconds,
            timeout_seconds: self.timeout_seconds,
            consecutive_failures: self.consecutive_failures,
        }
    }

    fn problems(&self, ports: u32, bad: &mut impl FnMut(&str, String)) {
        match self.kind {
            HealthCheckKindSpec::Command => {
                if self.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    bad(
                        "health_check.command",
                        "a command check needs a command".into(),
                    );
                }
            }
            HealthCheckKindSpec::Http | HealthCheckKindSpec::Tcp => {
                if self.port_index >= ports {
                    bad(
                        "health_check.port_index",
                        format!(
                            "port {} is not among the {ports} port(s) the service asks for (`ports`)",
                            self.port_index
                        ),
                    );
                }
                if self.kind == HealthCheckKindSpec::Http
                    && !self.path.as_deref().unwrap_or("/").starts_with('/')
                {
                    bad("health_check.path", "must start with `/`".into());
                }
            }
        }
        for (field, v, max) in [
            (
                "health_check.grace_period_seconds",
                self.grace_period_seconds,
                3600.0,
            ),
            (
                "health_check.interval_seconds",
                self.interval_seconds,
                3600.0,
            ),
            ("health_check.timeout_seconds", self.timeout_seconds, 3600.0),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= max) {
                bad(field, format!("must be in (0, {max}], got {v}"));
            }
        }
        if self.consecutive_failures == 0 || self.consecutive_failures > 100 {
            bad(
                "health_check.consecutive_failures",
                format!("must be in [1, 100], got {}", self.consecutive_failures),
            );
        }
    }
}

/// Rolling restart bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upgrade {
    /// How many instances may be unavailable during a restart (below `instances`).
    pub max_unavailable: u32,
    /// How many extra instances may run during a restart (above `instances`).
    pub max_surge: u32,
}

impl Default for Upgrade {
    fn default() -> Self {
        Upgrade {
            max_unavailable: 0,
            max_surge: 1,
        }
    }
}

/// Delay before relaunching after an instance failed: `initial * factor^(n-1)`, capped at
/// `max`, `n` = consecutive failures (reset when an instance ran `reset_after_seconds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial_seconds: f64,
    pub factor: f64,
    pub max_seconds: f64,
    pub reset_after_seconds: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_seconds: 1.0,
            factor: 2.0,
            max_seconds: 60.0,
            reset_after_seconds: 30.0,
        }
    }
}

impl Backoff {
    /// Delay after `failures` consecutive failures (≥ 1).
    pub fn delay(&self, failures: u32) -> std::time::Duration {
        let exp = failures.saturating_sub(1).min(64) as i32;
        let secs = (self.initial_seconds * self.factor.powi(exp)).min(self.max_seconds);
        std::time::Duration::from_secs_f64(secs.max(0.0))
    }
}

fn one() -> u32 {
    1
}
fn default_cpus() -> f64 {
    0.1
}
fn default_mem() -> f64 {
    64.0
}
fn default_grace() -> f64 {
    3.0
}

/// One problem in a spec: where (`instances`, `constraints[1]`, `line 3, column 1`) and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

/// Why a spec was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("cannot parse the {format} spec: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    #[error("invalid service spec: {}", problems.iter().map(|p| format!("{}: {}", p.field, p.problem)).collect::<Vec<_>>().join("; "))]
    Invalid { problems: Vec<FieldProblem> },
}

impl SpecError {
    pub fn problems(&self) -> Vec<FieldProblem> {
        match self {
            SpecError::Parse { format, message } => vec![FieldProblem {
                field: format!("({format})"),
                problem: message.clone(),
            }],
            SpecError::Invalid { problems } => problems.clone(),
        }
    }
}

/// A spec that passed validation, with its constraints compiled.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    pub spec: ServiceSpec,
    pub constraints: Vec<Constraint>,
}

impl ServiceSpec {
    /// Parses TOML (line and column in errors).
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse {
            format: "TOML",
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Parses JSON (line and column in errors).
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        serde_json::from_str(text).map_err(|e| SpecError::Parse {
            format: "JSON",
            message: e.to_string(),
        })
    }

    /// Parses by file name: `.json` is JSON, everything else TOML.
    pub fn from_file_text(name: &str, text: &str) -> Result<Self, SpecError> {
        if name.ends_with(".json") {
            Self::from_json(text)
        } else {
            Self::from_toml(text)
        }
    }

    /// Checks every field, reporting all problems at once.
    pub fn validate(self) -> Result<ValidSpec, SpecError> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, problem: String| {
            problems.push(FieldProblem {
                field: field.to_string(),
                problem,
            })
        };
        if let Err(why) = valid_id(&self.id) {
            bad("id", why);
        }
        if self.instances > MAX_INSTANCES {
            bad(
                "instances",
                format!("must be at most {MAX_INSTANCES}, got {}", self.instances),
            );
        }
        if self.cmd.trim().is_empty() {
            bad("cmd", "must not be empty".into());
        }
        if let Some(Err(why)) = self.user.as_deref().map(valid_user) {
            bad("user", why);
        }
        if let Some(Err(why)) = self.image.as_deref().map(valid_image) {
            bad("image", why);
        }
        for v in &self.volumes {
            if let Err(why) = brim_framework::parse_volume(v) {
                bad("volumes", why);
            }
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0 && self.cpus <= 1024.0) {
            bad("cpus", format!("must be in (0, 1024], got {}", self.cpus));
        }
        if !(self.mem.is_finite() && self.mem > 0.0 && self.mem <= 16.0 * 1024.0 * 1024.0) {
            bad(
                "mem",
                format!("must be a positive number of MiB, got {}", self.mem),
            );
        }
        if self.ports > 64 {
            bad("ports", format!("must be at most 64, got {}", self.ports));
        }
        for name in self.env.keys() {
            if name.is_empty()
                || name.contains('=')
                || name.contains('\0')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                bad(
                    &format!("env.{name}"),
                    "is not a valid environment variable name".into(),
                );
            }
        }
        let mut constraints = Vec::new();
        for (i, text) in self.constraints.iter().enumerate() {
            match Constraint::parse(text) {
                Ok(c) => constraints.push(c),
                Err(why) => bad(&format!("constraints[{i}]"), format!("`{text}`: {why}")),
            }
        }
        if self.upgrade.max_unavailable == 0 && self.upgrade.max_surge == 0 {
            bad(
                "upgrade",
                "max_unavailable and max_surge are both 0, so a restart could never make \
                 progress; set one of them to at least 1"
                    .into(),
            );
        }
        let b = &self.backoff;
        if !(b.initial_seconds.is_finite()
            && b.initial_seconds >= 0.0
            && b.initial_seconds <= 3600.0)
        {
            bad(
                "backoff.initial_seconds",
                format!("must be in [0, 3600], got {}", b.initial_seconds),
            );
        }
        if !(b.factor.is_finite() && (1.0..=10.0).contains(&b.factor)) {
            bad(
                "backoff.factor",
                format!("must be in [1, 10], got {}", b.factor),
            );
        }
        if !(b.max_seconds.is_finite()
            && b.max_seconds >= b.initial_seconds
            && b.max_seconds <= 86400.0)
        {
            bad(
                "backoff.max_seconds",
                format!("must be in [initial_seconds, 86400], got {}", b.max_seconds),
            );
        }
        if !(b.reset_after_seconds.is_finite() && b.reset_after_seconds >= 0.0) {
            bad(
                "backoff.reset_after_seconds",
                format!("must be ≥ 0, got {}", b.reset_after_seconds),
            );
        }
        if !(self.healthy_after_seconds.is_finite()
            && (0.0..=3600.0).contains(&self.healthy_after_seconds))
        {
            bad(
                "healthy_after_seconds",
                format!("must be in [0, 3600], got {}", self.healthy_after_seconds),
            );
        }
        if let Some(hc) = &self.health_check {
            hc.problems(self.ports, &mut bad);
        }
        if !(self.kill_grace_seconds.is_finite()
            && (0.0..=600.0).contains(&self.kill_grace_seconds))
        {
            bad(
                "kill_grace_seconds",
                format!("must be in [0, 600], got {}", self.kill_grace_seconds),
            );
        }
        if problems.is_empty() {
            Ok(ValidSpec {
                spec: self,
                constraints,
            })
        } else {
            Err(SpecError::Invalid { problems })
        }
    }

    /// True when `other` differs only in `instances` (a scale, not a new version).
    pub fn same_except_instances(&self, other: &ServiceSpec) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        a == *other
    }
}

/// Image references the agent can provision: an absolute path on the agent, or an
/// `http://`, `https://` or `file://` URI (no registry names: nothing pulls from a registry).
pub fn valid_image(image: &str) -> Result<(), String> {
    if image.is_empty() || image.len() > 4096 {
        return Err("must be 1 to 4096 characters".into());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{image}` contains whitespace or control characters"
        ));
    }
    let ok = image.starts_with('/')
        || ["http://", "https://", "file:///"]
            .iter()
            .any(|scheme| image.len() > scheme.len() && image.starts_with(scheme));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{image}` is neither an absolute path on the agents nor an http://, https:// or \
             file:/// URI of an OCI image layout or image tarball (registry names like \
             `busybox:latest` are not supported)"
        ))
    }
}

/// Unix user names: 1-32 of `a-z A-Z 0-9 _ . -`, not starting with `-`.
pub fn valid_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("`{user}` is not a valid user name"))
    }
}

/// Service ids: 1-63 of `a-z 0-9 -`, starting with a letter or digit.
pub fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 63 {
        return Err(format!("must be 1-63 characters, got {}", id.len()));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || id.starts_with('-')
    {
        return Err(format!(
            "`{id}` may only contain lowercase letters, digits and `-` (not first)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "web"
instances = 3
cmd = "python3 -m http.server $PORT0"
cpus = 0.2
mem = 64
ports = 1
env = { GREETING = "hi" }
constraints = ["hostname:UNIQUE", "rack:LIKE:r[0-9]"]
[upgrade]
max_unavailable = 1
max_surge = 1
"#;

    #[test]
    fn toml_and_json_parse_with_defaults() {
        let v = ServiceSpec::from_toml(GOOD)
            .and_then(ServiceSpec::validate)
            .unwrap_or_else(|e| panic!("good spec: {e}"));
        assert_eq!(v.spec.instances, 3);
        assert_eq!(v.constraints.len(), 2);
        assert_eq!(v.spec.backoff, Backoff::default());
        let j = ServiceSpec::from_json(r#"{"id":"api","cmd":"sleep 100"}"#)
            .and_then(ServiceSpec::validate)
            .unwrap_or_else(|e| panic!("json spec: {e}"));
        assert_eq!((j.spec.instances, j.spec.cpus, j.spec.mem), (1, 0.1, 64.0));
        assert_eq!(
            j.spec.upgrade,
            Upgrade {
                max_unavailable: 0,
                max_surge: 1
            }
        );
    }

    #[test]
    fn parse_errors_carry_the_position() {
        let check = |name: &str, text: &str, want: &[&str]| {
            let e = ServiceSpec::from_file_text(name, text)
                .and_then(ServiceSpec::validate)
                .err()
                .unwrap_or_else(|| panic!("{text} should be rejected"));
            let msg = e.to_string();
            for w in want {
                assert!(msg.contains(w), "`{msg}` should mention `{w}`");
            }
        };
        check(
            "a.toml",
            "id = \"x\"\ncmd = \"true\"\ninstnces = 2\n",
            &["line 3", "unknown field `instnces`"],
        );
        check(
            "a.toml",
            "id = \"x\"\ncmd = \"true\"\ninstances = \"two\"\n",
            &["line 3", "instances"],
        );
        check(
            "a.json",
            "{\"id\": \"x\",\n \"cmd\": 3}",
            &["line 2", "invalid type"],
        );
        check("a.toml", "id = \"x\"\n", &["missing field `cmd`"]);
    }

    #[test]
    fn health_checks_are_validated_and_converted() {
        let parse = |toml: &str| -> ServiceSpec {
            toml::from_str(toml).unwrap_or_else(|e| panic!("test spec: {e}"))
        };
        let ok = parse(
            "id = \"web\"\ncmd = \"x\"\nports = 1\n[health_check]\nkind = \"http\"\npath = \"/health\"\n",
        );
        let hc = ok.health_check.clone().expect("health check");
        assert_eq!(
            hc.to_proto().kind,
            brim_framework::v1::HealthCheckKind::Http as i32
        );
        assert_eq!(hc.to_proto().path, "/health");
        assert!(ok.validate().is_ok());
        for (toml, field) in [
            (
                "[health_check]\nkind = \"command\"\n",
                "health_check.command",
            ),
            (
                "[health_check]\nkind = \"tcp\"\n",
                "health_check.port_index",
            ),
            (
                "ports = 1\n[health_check]\nkind = \"http\"\npath = \"health\"\n",
                "health_check.path",
            ),
            (
                "[health_check]\nkind = \"command\"\ncommand = \"true\"\ninterval_seconds = 0\n",
                "health_check.interval_seconds",
            ),
        ] {
            let spec = parse(&format!("id = \"web\"\ncmd = \"x\"\n{toml}"));
            match spec.validate() {
                Err(SpecError::Invalid { problems }) => {
                    assert!(
                        problems.iter().any(|p| p.field == field),
                        "{field}: {problems:?}"
                    )
                }
                other => panic!("{field} should be rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn validation_names_every_bad_field() {
        let spec = ServiceSpec {
            id: "Web_1".into(),
            instances: 5000,
            cmd: " ".into(),
            cpus: 0.0,
            mem: f64::NAN,
            ports: 65,
            env: [("1X".to_string(), "v".to_string())].into(),
            constraints: vec![
                "hostname:UNIQUE".into(),
                "rack:LIKE:([".into(),
                "rack:SOMETIMES".into(),
            ],
            upgrade: Upgrade {
                max_unavailable: 0,
                max_surge: 0,
            },
            backoff: Backoff {
                factor: 0.5,
                ..Backoff::default()
            },
            healthy_after_seconds: -1.0,
            health_check: None,
            kill_grace_seconds: 3.0,
            user: Some("a b".into()),
            image: Some("busybox:latest".into()),
            volumes: vec!["/srv/data:/data:ro".into(), "nocolon".into()],
        };
        let problems = match spec.validate() {
            Err(SpecError::Invalid { problems }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "id",
                "instances",
                "cmd",
                "user",
                "image",
                "volumes",
                "cpus",
                "mem",
                "ports",
                "env.1X",
                "constraints[1]",
                "constraints[2]",
                "upgrade",
                "backoff.factor",
                "healthy_after_seconds"
            ]
        );
        assert!(problems[10].problem.contains("regex"), "{:?}", problems[10]);
        assert!(
            problems[5].problem.contains("SOURCE:TARGET"),
            "{:?}",
            problems[5]
        );
        assert!(
            problems[4].problem.contains("registry names"),
            "{:?}",
            problems[4]
        );
        assert!(
            problems[11]
                .problem
                .contains("unknown operator `SOMETIMES`"),
            "{:?}",
            problems[11]
        );
    }

    #[test]
    fn images_are_paths_or_uris_never_registry_names() {
        for ok in [
            "/var/lib/images/busybox-oci",
            "/tmp/busybox.tar",
            "http://127.0.0.1:8080/busybox.tar",
            "https://images.example/app.tar",
            "file:///srv/app.tar",
        ] {
            assert_eq!(valid_image(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "busybox:latest",
            "docker.io/library/busybox",
            "relative/dir",
            "http://",
            "/a b",
            "/a\nb",
            "ftp://host/x.tar",
        ] {
            assert!(valid_image(bad).is_err(), "{bad:?} should be refused");
        }
        let spec: ServiceSpec =
            toml::from_str("id = \"web\"\ncmd = \"httpd -f\"\nimage = \"/srv/images/web-oci\"\n")
                .unwrap_or_else(|e| panic!("spec: {e}"));
        assert_eq!(spec.image.as_deref(), Some("/srv/images/web-oci"));
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::default();
        let secs: Vec<f64> = (1..=8).map(|n| b.delay(n).as_secs_f64()).collect();
        assert_eq!(secs, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]);
        assert_eq!(b.delay(u32::MAX).as_secs_f64(), 60.0);
    }
}
