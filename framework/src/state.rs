//! Client for the master's `GET /state` JSON (see docs/ARCHITECTURE.md, "Master HTTP"):
//! typed views for tables and placement checks, or the raw JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use brim_proto::v1;
use brim_proto::Resources;
use serde::{Deserialize, Deserializer};

use crate::driver::master_uri;

/// Why `/state` could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid master address `{address}`: {why} (expected host:port, e.g. 127.0.0.1:5050)")]
    InvalidMaster { address: String, why: String },
    #[error("cannot reach the master at {master}: {message}")]
    Unreachable { master: String, message: String },
    #[error("the master at {master} answered HTTP {status} for /state")]
    Status { master: String, status: u16 },
    #[error("the master at {master} sent /state JSON that cannot be read: {message}")]
    Decode { master: String, message: String },
}

/// Fetches `/state` from a master (or the first answering one of `host:port,host:port`; a
/// standby redirects to the leader).
#[derive(Clone, Debug)]
pub struct StateClient {
    master: String,
    urls: Vec<String>,
    http: reqwest::Client,
}

impl StateClient {
    /// `master` is `host:port`, or several separated by commas (plaintext, no token).
    pub fn new(master: &str) -> Result<Self, StateError> {
        Self::with_security(master, &brim_security::ClientSecurity::default())
    }

    /// As [`StateClient::new`], over TLS and with a token as `security` says.
    pub fn with_security(
        master: &str,
        security: &brim_security::ClientSecurity,
    ) -> Result<Self, StateError> {
        let urls = master
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| {
                master_uri(m, security.scheme())
                    .map(|base| format!("{base}/state"))
                    .map_err(|e| StateError::InvalidMaster {
                        address: m.to_string(),
                        why: match e {
                            crate::DriverError::InvalidMaster { why, .. } => why,
                            other => other.to_string(),
                        },
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(StateError::InvalidMaster {
                address: master.to_string(),
                why: "no master address given".into(),
            });
        }
        let http = security
            .reqwest_builder()
            .map_err(|e| StateError::Unreachable {
                master: master.to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| StateError::Unreachable {
                master: master.to_string(),
                message: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(StateClient {
            master: master.to_string(),
            urls,
            http,
        })
    }

    pub fn master(&self) -> &str {
        &self.master
    }

    /// The raw `/state` document, from the first master that answers.
    pub async fn fetch_json(&self) -> Result<serde_json::Value, StateError> {
        let mut last = None;
        for url in &self.urls {
            match self.fetch_one(url).await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StateError::Unreachable {
            master: self.master.clone(),
            message: "no master address".into(),
        }))
    }

    async fn fetch_one(&self, url: &str) -> Result<serde_json::Value, StateError> {
        let unreachable = |e: reqwest::Error| StateError::Unreachable {
            master: self.master.clone(),
            message: error_chain(&e),
        };
        let resp = self.http.get(url).send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(StateError::Status {
                master: self.master.clone(),
                status: resp.status().as_u16(),
            });
        }
        let body = resp.bytes().await.map_err(unreachable)?;
        serde_json::from_slice(&body).map_err(|e| StateError::Decode {
            master: self.master.clone(),
            message: e.to_string(),
        })
    }

    /// The typed `/state` document.
    pub async fn fetch(&self) -> Result<MasterState, StateError> {
        let json = self.fetch_json().await?;
        MasterState::from_json(json).map_err(|e| StateError::Decode {
            master: self.master.clone(),
            message: e.to_string(),
        })
    }
}

/// The root cause, which is what a person can act on ("Connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The master's `/state`. Unknown fields are ignored and missing ones default, so the
/// client keeps working as the master adds fields.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MasterState {
    pub version: String,
    pub master_id: String,
    pub leader: String,
    pub agents: Vec<AgentView>,
    pub frameworks: Vec<FrameworkView>,
    /// Live tasks (terminal ones linger until acknowledged).
    pub tasks: Vec<TaskView>,
    /// Recently ended tasks, oldest first.
    pub completed_tasks: Vec<TaskView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    pub http_address: String,
    /// Connected to the master.
    pub active: bool,
    /// `connected`, `disconnected` or `unreachable`.
    pub status: String,
    #[serde(deserialize_with = "de_resources")]
    pub resources: Resources,
    #[serde(deserialize_with = "de_resources")]
    pub used: Resources,
    /// Oversubscription: the slack the agent lends (revocable cpus, mem), what revocable
    /// tasks use of it, and the agent's estimate of what its other tasks really use.
    #[serde(deserialize_with = "de_resources")]
    pub revocable: Resources,
    #[serde(deserialize_with = "de_resources")]
    pub revocable_used: Resources,
    #[serde(deserialize_with = "de_resources")]
    pub used_estimate: Resources,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub user: String,
    /// Connected and not suppressed (receiving offers).
    pub active: bool,
    pub connected: bool,
    pub suppressed: bool,
    #[serde(deserialize_with = "de_resources")]
    pub allocated: Resources,
    #[serde(deserialize_with = "de_resources")]
    pub offered: Resources,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    pub state: String,
    #[serde(deserialize_with = "de_resources")]
    pub resources: Resources,
    pub exit_code: Option<i32>,
    pub message: String,
}

impl TaskView {
    /// True when the state is a terminal one (FINISHED, FAILED, KILLED, ...).
    pub fn is_terminal(&self) -> bool {
        v1::TaskState::from_str_name(&self.state).is_some_and(v1::TaskState::is_terminal)
    }
}

impl MasterState {
    pub fn from_json(json: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(json)
    }

    /// Active agents.
    pub fn active_agents(&self) -> impl Iterator<Item = &AgentView> {
        self.agents.iter().filter(|a| a.active)
    }

    /// True when some active agent's total resources could hold `need` (when idle).
    pub fn can_ever_fit(&self, need: &Resources) -> bool {
        self.active_agents().any(|a| a.resources.contains(need))
    }

    /// The active agent whose total resources come closest to holding `need`: the highest
    /// sum over the asked scalars of min(have / need, 1), ties broken by cpus then mem.
    pub fn closest_agent(&self, need: &Resources) -> Option<&AgentView> {
        let score = |a: &AgentView| -> f64 {
            need.scalars()
                .map(|(name, amount)| (a.resources.scalar(name) / amount).min(1.0))
                .sum()
        };
        self.active_agents().max_by(|a, b| {
            score(a)
                .total_cmp(&score(b))
                .then(
                    a.resources
                        .scalar("cpus")
                        .total_cmp(&b.resources.scalar("cpus")),
                )
                .then(
                    a.resources
                        .scalar("mem")
                        .total_cmp(&b.resources.scalar("mem")),
                )
        })
    }
}

fn de_resources<'de, D: Deserializer<'de>>(d: D) -> Result<Resources, D::Error> {
    let map: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(d)?;
    resources_from_json(&map.unwrap_or_default()).map_err(serde::de::Error::custom)
}

/// `{"cpus":2,"mem":1024,"ports":"[31000-32000]","zones":["a","b"]}` → [`Resources`].
fn resources_from_json(
    map: &BTreeMap<String, serde_json::Value>,
) -> Result<Resources, brim_proto::ResourceError> {
    use serde_json::Value;
    let mut out = Resources::new();
    for (name, value) in map {
        let one = match value {
            Value::Number(n) => {
                let mut r = Resources::new();
                r.set_scalar(name, n.as_f64().unwrap_or(f64::NAN))?;
                r
            }
            Value::String(s) => Resources::parse(&format!("{name}:{s}"))?,
            Value::Array(items) => {
                let mut r = Resources::new();
                r.set_items(
                    name,
                    items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect(),
                )?;
                r
            }
            Value::Null => continue,
            other => {
                return Err(brim_proto::ResourceError::Parse {
                    input: format!("{name}:{other}"),
                    why: "expected a number, a range string or an array".into(),
                })
            }
        };
        out.add(&one);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"version":"0.1.0","master_id":"m1","start_time":1700000000.0,"leader":"127.0.0.1:5050",
 "agents":[{"id":"a1","hostname":"h1","http_address":"127.0.0.1:5051","active":true,
            "resources":{"cpus":2,"mem":1024,"ports":"[31000-32000]"},"used":{"cpus":0.5},
            "attributes":{"rack":"r1"},"registered_time":1700000000.0},
           {"id":"a2","hostname":"h2","http_address":"127.0.0.1:5052","active":true,
            "resources":{"cpus":8,"mem":512,"gpus":["g0","g1"]},"used":{}},
           {"id":"a3","hostname":"h3","active":false,"resources":{"cpus":64,"mem":65536}}],
 "frameworks":[{"id":"f1","name":"brim-run","role":"*","user":"root","active":true,"connected":true,
                "capabilities":[],"allocated":{"cpus":0.5,"mem":64},"offered":{},"registered_time":1.0}],
 "tasks":[{"id":"t1","name":"echo","framework_id":"f1","agent_id":"a1","state":"TASK_RUNNING",
           "resources":{"cpus":0.5,"mem":64},"exit_code":null,"message":"","updated_time":1.0},
          {"id":"t0","state":"TASK_FINISHED","exit_code":0,"resources":null}],
 "completed_tasks":[{"id":"t-1","state":"TASK_FAILED","exit_code":3}],
 "roles":[{"name":"*","weight":1.0,"share":0.25,"quota":null}]}"#;

    fn sample() -> MasterState {
        let json: serde_json::Value =
            serde_json::from_str(SAMPLE).unwrap_or_else(|e| panic!("sample is JSON: {e}"));
        MasterState::from_json(json).unwrap_or_else(|e| panic!("sample should decode: {e}"))
    }

    #[test]
    fn decodes_the_documented_shape() {
        let s = sample();
        assert_eq!(s.agents.len(), 3);
        assert_eq!(
            s.agents[0].resources.to_string(),
            "cpus:2;mem:1024;ports:[31000-32000]"
        );
        assert_eq!(
            s.agents[1].resources.to_string(),
            "cpus:8;mem:512;gpus:{g0,g1}"
        );
        assert_eq!(s.frameworks[0].allocated.scalar("mem"), 64.0);
        assert!(!s.tasks[0].is_terminal());
        assert!(s.tasks[1].is_terminal());
        assert_eq!(s.tasks[1].exit_code, Some(0));
        assert_eq!(s.completed_tasks[0].exit_code, Some(3));
    }

    #[test]
    fn placement_checks_use_active_agents_only() {
        let s = sample();
        let check = |ask: &str, fits: bool, closest: &str| {
            let need = Resources::parse(ask).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.can_ever_fit(&need), fits, "{ask}");
            assert_eq!(
                s.closest_agent(&need).map(|a| a.id.as_str()),
                Some(closest),
                "{ask}"
            );
        };
        check("cpus:1;mem:1000", true, "a1");
        check("cpus:4;mem:100", true, "a2");
        check("cpus:32;mem:64", false, "a2");
        check("cpus:1;mem:4096", false, "a1");
    }

    #[test]
    fn bad_resources_are_rejected() {
        let json = serde_json::json!({"agents":[{"id":"a","resources":{"cpus":{"x":1}}}]});
        assert!(MasterState::from_json(json).is_err());
        let json = serde_json::json!({"agents":[{"id":"a","resources":{"cpus":-1}}]});
        assert!(MasterState::from_json(json).is_err());
    }

    #[test]
    fn invalid_master_address() {
        assert!(matches!(
            StateClient::new("nope"),
            Err(StateError::InvalidMaster { .. })
        ));
    }
}
