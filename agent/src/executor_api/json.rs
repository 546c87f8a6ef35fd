//! Mesos v1 JSON for the executor API: brim.v1 task/executor → the JSON the executor reads
//! (LAUNCH, SUBSCRIBED), and the executor's `TaskStatus` JSON (UPDATE) → brim.v1.
//!
//! Same conventions as the master's scheduler API (`master/src/mesos/json.rs`): wrappers are
//! `{"value": …}`, enums are their names, `bytes` are base64.

use brim_proto::v1::{self, TaskState, TaskStatusReason, TaskStatusSource};
use serde_json::{json, Map, Value};

pub(crate) fn id(v: &str) -> Value {
    json!({ "value": v })
}

/// `command` of a TaskInfo/ExecutorInfo in Mesos shape.
pub(crate) fn command_json(c: &v1::CommandInfo) -> Value {
    let mut m = Map::new();
    m.insert("shell".into(), json!(c.shell));
    m.insert("value".into(), json!(c.value));
    if !c.arguments.is_empty() {
        m.insert("arguments".into(), json!(c.arguments));
    }
    if !c.environment.is_empty() {
        let vars: Vec<Value> = c
            .environment
            .iter()
            .map(|v| json!({"name": v.name, "type": "VALUE", "value": v.value}))
            .collect();
        m.insert("environment".into(), json!({ "variables": vars }));
    }
    if !c.user.is_empty() {
        m.insert("user".into(), json!(c.user));
    }
    Value::Object(m)
}

fn resource_json(r: &v1::Resource, role: &str) -> Option<Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(r.name));
    match r.value.as_ref()? {
        v1::resource::Value::Scalar(s) => {
            m.insert("type".into(), json!("SCALAR"));
            m.insert("scalar".into(), json!({ "value": s }));
        }
        v1::resource::Value::Ranges(rs) => {
            let range: Vec<Value> = rs
                .range
                .iter()
                .map(|x| json!({"begin": x.begin, "end": x.end}))
                .collect();
            m.insert("type".into(), json!("RANGES"));
            m.insert("ranges".into(), json!({ "range": range }));
        }
        v1::resource::Value::Set(s) => {
            m.insert("type".into(), json!("SET"));
            m.insert("set".into(), json!({ "item": s.item }));
        }
    }
    m.insert("role".into(), json!("*"));
    m.insert("allocation_info".into(), json!({ "role": role }));
    if r.revocable {
        m.insert("revocable".into(), json!({}));
    }
    Some(Value::Object(m))
}

/// `mesos.v1.ExecutorInfo`.
pub(crate) fn executor_info_json(e: &v1::ExecutorInfo, framework_id: &str) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!("CUSTOM"));
    m.insert("executor_id".into(), id(&e.executor_id));
    m.insert("framework_id".into(), id(framework_id));
    if !e.name.is_empty() {
        m.insert("name".into(), json!(e.name));
    }
    if let Some(c) = &e.command {
        m.insert("command".into(), command_json(c));
    }
    Value::Object(m)
}

/// `mesos.v1.FrameworkInfo` (the fields brim keeps).
pub(crate) fn framework_info_json(f: &v1::FrameworkInfo) -> Value {
    let caps: Vec<Value> = f
        .capabilities
        .iter()
        .map(|c| json!({ "type": c }))
        .collect();
    json!({
        "id": id(&f.id),
        "user": f.user,
        "name": f.name,
        "roles": [f.role],
        "failover_timeout": f.failover_timeout,
        "hostname": f.hostname,
        "principal": f.principal,
        "capabilities": caps,
    })
}

/// `mesos.v1.TaskInfo` as an executor receives it in LAUNCH.
pub(crate) fn task_json(t: &v1::TaskInfo, framework_id: &str, agent_id: &str, role: &str) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(t.name));
    m.insert("task_id".into(), id(&t.task_id));
    m.insert("agent_id".into(), id(agent_id));
    let resources: Vec<Value> = t
        .resources
        .iter()
        .filter_map(|r| resource_json(r, role))
        .collect();
    m.insert("resources".into(), json!(resources));
    if let Some(e) = &t.executor {
        m.insert("executor".into(), executor_info_json(e, framework_id));
    }
    if let Some(c) = &t.command {
        m.insert("command".into(), command_json(c));
    }
    if t.kill_grace_period_seconds > 0.0 {
        let ns = (t.kill_grace_period_seconds * 1e9) as i64;
        m.insert(
            "kill_policy".into(),
            json!({"grace_period": {"nanoseconds": ns}}),
        );
    }
    if !t.labels.is_empty() {
        let labels: Vec<Value> = t
            .labels
            .iter()
            .map(|l| json!({"key": l.key, "value": l.value}))
            .collect();
        m.insert("labels".into(), json!({ "labels": labels }));
    }
    Value::Object(m)
}

fn id_of<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.get(field)
        .and_then(|x| x.get("value"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("Expecting '{field}.value' to be present"))
}

/// The executor's `update.status` → brim TaskStatus (source executor). The uuid is the
/// executor's (16 bytes, base64) so the acknowledgement can be handed back to it; a missing or
/// malformed uuid is an error, as in Mesos.
pub(crate) fn status_from_json(
    s: &Value,
    framework_id: &str,
    agent_id: &str,
) -> Result<v1::TaskStatus, String> {
    let task_id = id_of(s, "task_id")?;
    let state_name = s
        .get("state")
        .and_then(Value::as_str)
        .ok_or("Expecting 'status.state' to be present")?;
    let state = TaskState::from_str_name(state_name)
        .filter(|st| *st != TaskState::Unspecified)
        .ok_or_else(|| format!("unknown task state {state_name:?}"))?;
    let uuid = s
        .get("uuid")
        .and_then(Value::as_str)
        .ok_or("Expecting 'status.uuid' to be present")?;
    let uuid = base64_decode(uuid).ok_or("'status.uuid' is not valid base64")?;
    if uuid.len() != 16 {
        return Err(format!(
            "'status.uuid' decodes to {} bytes; expected 16",
            uuid.len()
        ));
    }
    let reason = s
        .get("reason")
        .and_then(Value::as_str)
        .and_then(TaskStatusReason::from_str_name)
        .unwrap_or(TaskStatusReason::ReasonUnspecified);
    Ok(v1::TaskStatus {
        task_id: task_id.to_string(),
        state: state as i32,
        message: s
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        reason: reason as i32,
        source: TaskStatusSource::SourceExecutor as i32,
        agent_id: agent_id.to_string(),
        framework_id: framework_id.to_string(),
        timestamp: crate::agent::now_secs(),
        uuid,
        ..Default::default()
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what Mesos and pymesos use for `bytes`).
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not; `None` when malformed.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrips() {
        for len in 0..20u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_decode("a$"), None);
    }

    #[test]
    fn parses_a_pymesos_update() {
        let s = json!({"task_id": {"value": "t1"}, "state": "TASK_RUNNING",
                       "uuid": base64_encode(&[7; 16]), "timestamp": 1, "source": "SOURCE_EXECUTOR"});
        let st = status_from_json(&s, "f", "a").expect("valid");
        assert_eq!(st.task_id, "t1");
        assert_eq!(st.state, TaskState::TaskRunning as i32);
        assert_eq!(st.uuid, vec![7; 16]);
        let bad = json!({"task_id": {"value": "t1"}, "state": "TASK_NOPE", "uuid": "AA=="});
        assert!(status_from_json(&bad, "f", "a").is_err());
        let short = json!({"task_id": {"value": "t1"}, "state": "TASK_RUNNING", "uuid": "AA=="});
        assert!(status_from_json(&short, "f", "a").is_err());
    }
}
