//! Mesos v1 protobuf bodies for the Mesos HTTP API edges (`/api/v1/scheduler` on the master,
//! `/api/v1/executor` on the agent): content negotiation, and transcoding between
//! `application/x-protobuf` and the Mesos JSON the handlers speak.
//!
//! The message definitions are Apache Mesos's own v1 protos, vendored under `proto/mesos/v1`
//! (Apache-2.0, license headers kept) and compiled at build time into a descriptor set;
//! `prost-reflect` decodes and encodes them dynamically. Mesos JSON is the protobuf JSON form
//! with the protos' field names, enums as names, 64-bit integers as numbers and `bytes` as
//! base64, so a protobuf body becomes exactly the JSON a Mesos client would have sent.
//!
//! Architecture Invariants:
//! - a protobuf request with a field the Mesos protos do not define is refused (400), never
//!   silently dropped; a body is bounded by the caller before it reaches [`decode`];
//! - decoding never panics on any input (fuzzed: `fuzz/fuzz_targets/mesos_protobuf.rs`).

use std::sync::LazyLock;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value as Field,
};

/// `Content-Type`/`Accept` of Mesos JSON bodies.
pub const APPLICATION_JSON: &str = "application/json";
/// `Content-Type`/`Accept` of Mesos protobuf bodies.
pub const APPLICATION_PROTOBUF: &str = "application/x-protobuf";

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesos_v1.bin"));

static POOL: LazyLock<Result<DescriptorPool, String>> =
    LazyLock::new(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()));

/// The encoded `FileDescriptorSet` of the vendored Mesos v1 protos, for clients in other
/// languages (tests hand it to Python's `protobuf`).
pub fn descriptor_set() -> &'static [u8] {
    DESCRIPTORS
}

/// The vendored Mesos v1 protos (`mesos.v1.*`, `mesos.v1.scheduler.*`,
/// `mesos.v1.executor.*`), for clients and tests that build messages field by field.
pub fn descriptor_pool() -> Result<&'static DescriptorPool, TranscodeError> {
    POOL.as_ref()
        .map_err(|e| TranscodeError::Descriptors(e.clone()))
}

/// The Mesos messages that cross the HTTP API edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MesosMessage {
    /// `mesos.v1.scheduler.Call` (request body of `/api/v1/scheduler`).
    SchedulerCall,
    /// `mesos.v1.scheduler.Event` (a record of the scheduler event stream).
    SchedulerEvent,
    /// `mesos.v1.executor.Call` (request body of `/api/v1/executor`).
    ExecutorCall,
    /// `mesos.v1.executor.Event` (a record of the executor event stream).
    ExecutorEvent,
}

impl MesosMessage {
    /// Every message, for tests and fuzzing.
    pub const ALL: [MesosMessage; 4] = [
        MesosMessage::SchedulerCall,
        MesosMessage::SchedulerEvent,
        MesosMessage::ExecutorCall,
        MesosMessage::ExecutorEvent,
    ];

    /// Fully qualified protobuf name.
    pub fn full_name(self) -> &'static str {
        match self {
            MesosMessage::SchedulerCall => "mesos.v1.scheduler.Call",
            MesosMessage::SchedulerEvent => "mesos.v1.scheduler.Event",
            MesosMessage::ExecutorCall => "mesos.v1.executor.Call",
            MesosMessage::ExecutorEvent => "mesos.v1.executor.Event",
        }
    }

    /// The name Mesos uses in its error messages (`Call`, `Event`).
    fn short_name(self) -> &'static str {
        match self {
            MesosMessage::SchedulerCall | MesosMessage::ExecutorCall => "Call",
            MesosMessage::SchedulerEvent | MesosMessage::ExecutorEvent => "Event",
        }
    }

    fn descriptor(self) -> Result<MessageDescriptor, TranscodeError> {
        descriptor_pool()?
            .get_message_by_name(self.full_name())
            .ok_or_else(|| {
                TranscodeError::Descriptors(format!("{} is not in the set", self.full_name()))
            })
    }
}

/// Why a body could not be transcoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscodeError {
    /// Not a valid protobuf encoding of the message.
    #[error("Failed to parse body into {message} protobuf: {reason}")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    /// A field number the Mesos v1 protos do not define.
    #[error(
        "Failed to parse body into {message} protobuf: unknown field number {number} in \
         '{within}'; send only fields of the Mesos v1 protos"
    )]
    UnknownField {
        message: &'static str,
        within: String,
        number: u32,
    },
    /// Mesos JSON that has no protobuf form (a server-side bug, not a client's).
    #[error("Failed to convert {message} JSON into protobuf: {reason}")]
    Encode {
        message: &'static str,
        reason: String,
    },
    /// The built-in descriptor set is unusable (a build problem).
    #[error("Mesos protobuf descriptors are unusable: {0}; rebuild brim-proto")]
    Descriptors(String),
}

/// Protobuf bytes of `message` → its Mesos JSON.
pub fn decode(message: MesosMessage, bytes: &[u8]) -> Result<serde_json::Value, TranscodeError> {
    let desc = message.descriptor()?;
    let malformed = |reason: String| TranscodeError::Malformed {
        message: message.short_name(),
        reason,
    };
    let msg = DynamicMessage::decode(desc, bytes).map_err(|e| malformed(e.to_string()))?;
    if let Some((within, number)) = first_unknown_field(&msg) {
        return Err(TranscodeError::UnknownField {
            message: message.short_name(),
            within,
            number,
        });
    }
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| malformed(e.to_string()))
}

/// Mesos JSON of `message` → its protobuf bytes. Keys the protos do not define are dropped
/// (brim's own JSON may carry extras a protobuf client has no field for).
pub fn encode(message: MesosMessage, json: &serde_json::Value) -> Result<Vec<u8>, TranscodeError> {
    let desc = message.descriptor()?;
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(desc, json, &options).map_err(|e| {
        TranscodeError::Encode {
            message: message.short_name(),
            reason: e.to_string(),
        }
    })?;
    Ok(msg.encode_to_vec())
}

/// The first field (message name, number) that no descriptor defines, depth first. The
/// recursion is bounded by prost's decode recursion limit.
fn first_unknown_field(msg: &DynamicMessage) -> Option<(String, u32)> {
    if let Some(u) = msg.unknown_fields().next() {
        return Some((msg.descriptor().full_name().to_string(), u.number()));
    }
    msg.fields().find_map(|(_, v)| match v {
        Field::Message(m) => first_unknown_field(m),
        Field::List(items) => items.iter().find_map(|i| match i {
            Field::Message(m) => first_unknown_field(m),
            _ => None,
        }),
        Field::Map(entries) => entries.values().find_map(|i| match i {
            Field::Message(m) => first_unknown_field(m),
            _ => None,
        }),
        _ => None,
    })
}

/// The body format of a request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    Json,
    Protobuf,
}

impl MediaType {
    /// The `Content-Type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Json => APPLICATION_JSON,
            MediaType::Protobuf => APPLICATION_PROTOBUF,
        }
    }
}

/// Why a request's `Content-Type` is not usable (Mesos's messages; 400 and 415).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentTypeError {
    #[error("Expecting 'Content-Type' to be present")]
    Missing,
    #[error("Expecting 'Content-Type' of application/json or application/x-protobuf")]
    Unsupported,
}

/// The request body format named by a `Content-Type` header value (`None` = header absent).
pub fn request_media_type(content_type: Option<&str>) -> Result<MediaType, ContentTypeError> {
    let ct = content_type.ok_or(ContentTypeError::Missing)?;
    match essence(ct).as_str() {
        APPLICATION_JSON => Ok(MediaType::Json),
        APPLICATION_PROTOBUF => Ok(MediaType::Protobuf),
        _ => Err(ContentTypeError::Unsupported),
    }
}

/// The response format for an `Accept` header value (`None` = header absent, anything goes):
/// the type with the higher quality, where a type's quality is that of the most specific
/// range naming it; JSON on a tie, as Mesos prefers it. `None` when neither is acceptable.
pub fn response_media_type(accept: Option<&str>) -> Option<MediaType> {
    let Some(accept) = accept else {
        return Some(MediaType::Json);
    };
    let quality = |wanted: &str| -> f32 {
        let mut best: Option<(u8, f32)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let name = essence(parts.next().unwrap_or_default());
            let specificity = if name == wanted {
                2
            } else if name == "application/*" {
                1
            } else if name == "*/*" {
                0
            } else {
                continue;
            };
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let (json, protobuf) = (quality(APPLICATION_JSON), quality(APPLICATION_PROTOBUF));
    if json > 0.0 && json >= protobuf {
        Some(MediaType::Json)
    } else if protobuf > 0.0 {
        Some(MediaType::Protobuf)
    } else {
        None
    }
}

fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descriptors_load_and_name_every_message() {
        for m in MesosMessage::ALL {
            assert!(m.descriptor().is_ok(), "{}", m.full_name());
        }
    }

    #[test]
    fn scheduler_call_round_trips_in_mesos_json_form() {
        let call = json!({
            "framework_id": {"value": "fw-1"},
            "type": "ACCEPT",
            "accept": {
                "offer_ids": [{"value": "o-1"}],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                    "name": "t", "task_id": {"value": "t-1"}, "agent_id": {"value": "a-1"},
                    "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}],
                    "command": {"value": "true", "shell": true},
                }]}}],
                "filters": {"refuse_seconds": 5.0},
            },
        });
        let bytes = encode(MesosMessage::SchedulerCall, &call).expect("encode");
        let back = decode(MesosMessage::SchedulerCall, &bytes).expect("decode");
        assert_eq!(back, call);
    }

    #[test]
    fn sixty_four_bit_integers_are_numbers_and_bytes_base64() {
        let ev = json!({"type": "UPDATE", "update": {"status": {
            "task_id": {"value": "t"}, "state": "TASK_RUNNING",
            "uuid": "AAECAwQFBgcICQoLDA0ODw==", "timestamp": 1.5,
        }}});
        let bytes = encode(MesosMessage::SchedulerEvent, &ev).expect("encode");
        assert_eq!(decode(MesosMessage::SchedulerEvent, &bytes), Ok(ev));
        let ack = json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"},
            "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "AAE="}});
        let sub = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
            "user": "u", "name": "n", "failover_timeout": 10.0}}});
        for call in [ack, sub] {
            let bytes = encode(MesosMessage::SchedulerCall, &call).expect("encode");
            assert_eq!(decode(MesosMessage::SchedulerCall, &bytes), Ok(call));
        }
        let offers = json!({"type": "OFFERS", "offers": {"offers": [{
            "id": {"value": "o"}, "framework_id": {"value": "f"}, "agent_id": {"value": "a"},
            "hostname": "h", "resources": [{"name": "mem", "type": "SCALAR",
            "scalar": {"value": 128.0}}]}]}});
        let bytes = encode(MesosMessage::SchedulerEvent, &offers).expect("encode");
        assert_eq!(decode(MesosMessage::SchedulerEvent, &bytes), Ok(offers));
        let hb = json!({"type": "HEARTBEAT"});
        let bytes = encode(MesosMessage::SchedulerEvent, &hb).expect("encode");
        assert_eq!(decode(MesosMessage::SchedulerEvent, &bytes), Ok(hb));
    }

    #[test]
    fn unknown_fields_are_refused_even_when_nested() {
        // Call { type = SUBSCRIBE (1) } plus field 999 (varint 1) at top level.
        let top = [0x10, 0x01, 0xb8, 0x3e, 0x01];
        let err = decode(MesosMessage::SchedulerCall, &top).expect_err("unknown field");
        assert!(
            matches!(&err, TranscodeError::UnknownField { number: 999, within, .. } if within == "mesos.v1.scheduler.Call"),
            "{err}"
        );
        // Call { framework_id (1) = FrameworkID { field 7 } }.
        let nested = [0x0a, 0x02, 0x38, 0x01];
        let err = decode(MesosMessage::SchedulerCall, &nested).expect_err("nested unknown");
        assert!(
            matches!(&err, TranscodeError::UnknownField { number: 7, within, .. } if within == "mesos.v1.FrameworkID"),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("Failed to parse body into Call protobuf"));
    }

    #[test]
    fn malformed_protobuf_is_an_error() {
        for bad in [&[0x0a, 0x05, 0x01][..], &[0xff; 11], &[0x0b]] {
            let err = decode(MesosMessage::ExecutorCall, bad).expect_err("malformed");
            assert!(matches!(err, TranscodeError::Malformed { .. }), "{err}");
        }
    }

    /// The committed seeds of the `mesos_protobuf` fuzz target (first byte picks the message)
    /// decode and survive a round trip.
    #[test]
    fn fuzz_seeds_decode_and_round_trip() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mesos_protobuf");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            let data = std::fs::read(&path).expect("seed");
            let (&pick, body) = data.split_first().expect("non-empty seed");
            let m = MesosMessage::ALL[usize::from(pick) % MesosMessage::ALL.len()];
            let json = decode(m, body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let again = encode(m, &json).expect("re-encode");
            assert_eq!(decode(m, &again), Ok(json));
            seen += 1;
        }
        assert!(seen >= 8, "only {seen} seeds in {}", dir.display());
    }

    #[test]
    fn content_type_negotiation() {
        use MediaType::*;
        assert_eq!(request_media_type(Some("application/json")), Ok(Json));
        assert_eq!(
            request_media_type(Some("Application/X-Protobuf; charset=x")),
            Ok(Protobuf)
        );
        assert_eq!(request_media_type(None), Err(ContentTypeError::Missing));
        assert_eq!(
            request_media_type(Some("text/plain")),
            Err(ContentTypeError::Unsupported)
        );
        let r = response_media_type;
        assert_eq!(r(None), Some(Json));
        assert_eq!(r(Some("*/*")), Some(Json));
        assert_eq!(r(Some("application/json")), Some(Json));
        assert_eq!(r(Some("application/x-protobuf")), Some(Protobuf));
        assert_eq!(r(Some("application/x-protobuf, */*;q=0.1")), Some(Protobuf));
        assert_eq!(
            r(Some("application/json;q=0, application/*")),
            Some(Protobuf)
        );
        assert_eq!(
            r(Some("application/x-protobuf;q=0.5, application/json")),
            Some(Json)
        );
        assert_eq!(r(Some("text/html")), None);
        assert_eq!(r(Some("application/json;q=0")), None);
    }
}
