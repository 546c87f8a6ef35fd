//! Bad input over the wire: malformed protobuf, oversized messages, calls with unknown ids.
//! Each must get a clear gRPC error while the master keeps serving and keeps its state.

use std::net::SocketAddr;

use brim_proto::v1::{self, scheduler_client::SchedulerClient};
use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// Sends raw bytes as a gRPC message, to hand the server a malformed protobuf.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn start() -> (brim_master::RunningMaster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let m = brim_master::start(brim_master::MasterConfig::new(
        addr,
        dir.path().to_path_buf(),
    ))
    .await
    .expect("master starts");
    (m, dir)
}

type CallResult = Result<tonic::Response<v1::CallResponse>, Status>;

async fn raw_call(addr: SocketAddr, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

async fn healthy(addr: SocketAddr) {
    let mut client = SchedulerClient::connect(format!("http://{addr}"))
        .await
        .expect("master still accepts connections");
    let err = client
        .revive(v1::ReviveRequest {
            framework_id: "unknown".into(),
        })
        .await
        .expect_err("unknown framework");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
}

#[tokio::test]
async fn malformed_protobuf_gets_an_error_and_master_survives() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    for garbage in [
        vec![0xff; 16],
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        b"{\"json\": true}".to_vec(),
    ] {
        let err = raw_call(addr, "/brim.v1.Scheduler/Accept", garbage)
            .await
            .expect_err("garbage must be rejected");
        assert_ne!(err.code(), Code::Ok);
        assert!(!err.message().is_empty());
    }
    healthy(addr).await;
    m.stop().await.expect("stop");
}

#[tokio::test]
async fn oversized_message_is_rejected() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let mut client = SchedulerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_encoding_message_size(64 * 1024 * 1024);
    let huge = v1::AcceptRequest {
        framework_id: "x".repeat(brim_proto::MAX_MESSAGE_BYTES + 1),
        ..Default::default()
    };
    let err = client
        .accept(huge)
        .await
        .expect_err("oversized must be rejected");
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
    assert!(err.message().contains("too large"), "{}", err.message());
    healthy(addr).await;
    m.stop().await.expect("stop");
}

#[tokio::test]
async fn calls_with_unknown_or_missing_ids_get_clear_errors() {
    let (m, _dir) = start().await;
    let addr = m.addr();
    let mut c = SchedulerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let checks: Vec<(&str, CallResult, Code)> = vec![
        (
            "empty framework id",
            c.decline(v1::DeclineRequest::default()).await,
            Code::InvalidArgument,
        ),
        (
            "unknown framework",
            c.kill(v1::KillRequest {
                framework_id: "nope".into(),
                task_id: "t".into(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
        ),
        (
            "unknown framework accept",
            c.accept(v1::AcceptRequest {
                framework_id: "nope".into(),
                offer_ids: vec!["o".into()],
                ..Default::default()
            })
            .await,
            Code::NotFound,
        ),
        (
            "teardown unknown",
            c.teardown(v1::TeardownRequest {
                framework_id: "nope".into(),
            })
            .await,
            Code::NotFound,
        ),
    ];
    for (what, r, code) in checks {
        let err = r.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(
            err.message().len() > 10,
            "{what}: message should explain: {:?}",
            err.message()
        );
    }
    // A subscribe without framework info is refused; a valid one still works afterwards.
    let err = c
        .subscribe(v1::SubscribeRequest {
            framework_info: None,
        })
        .await
        .expect_err("no info");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut stream = c
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                name: "ok".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("valid subscribe")
        .into_inner();
    let first = stream.message().await.expect("stream").expect("event");
    assert!(matches!(first.event, Some(v1::event::Event::Subscribed(_))));
    m.stop().await.expect("stop");
}
