//! Authentication and authorization as gRPC clients see them: UNAUTHENTICATED without a
//! valid token, PERMISSION_DENIED for roles, capabilities and frameworks a principal does
//! not own. (TLS, agents' certificates and the HTTP side: tests/security.rs.)

use std::net::SocketAddr;

use brim_proto::v1::{self, scheduler_client::SchedulerClient};
use tonic::transport::Channel;
use tonic::Code;

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";

async fn start() -> (brim_master::RunningMaster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = dir.path().join("credentials.toml");
    std::fs::write(
        &credentials,
        format!(
            "[[credential]]\nprincipal = \"alice\"\ntoken = \"{ALICE}\"\n\
             [[credential]]\nprincipal = \"bob\"\ntoken = \"{BOB}\"\n"
        ),
    )
    .expect("write");
    let acls = dir.path().join("acls.toml");
    std::fs::write(
        &acls,
        "[[principal]]\nname = \"alice\"\nroles = [\"analytics\"]\nusers = [\"nobody\"]\n\
         [[principal]]\nname = \"bob\"\nroles = [\"*\"]\nrevocable = true\n",
    )
    .expect("write");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut config = brim_master::MasterConfig::new(addr, dir.path().join("master"));
    config.security.credentials = Some(credentials);
    config.security.acls = Some(acls);
    let m = brim_master::start(config).await.expect("master starts");
    (m, dir)
}

async fn client(addr: SocketAddr) -> SchedulerClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    SchedulerClient::new(channel)
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    r
}

fn framework(role: &str, capabilities: &[&str]) -> v1::SubscribeRequest {
    v1::SubscribeRequest {
        framework_info: Some(v1::FrameworkInfo {
            user: "nobody".into(),
            name: "auth-test".into(),
            role: role.into(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }),
    }
}

/// Subscribes and returns the framework id, or the refusal's code and message.
async fn subscribe(
    c: &mut SchedulerClient<Channel>,
    token: Option<&str>,
    request: v1::SubscribeRequest,
) -> Result<String, (Code, String)> {
    let mut stream = c
        .subscribe(with_token(request, token))
        .await
        .map_err(|s| (s.code(), s.message().to_string()))?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|s| (s.code(), s.message().to_string()))?
        .expect("a first event");
    // Keep the stream (the framework stays connected) for the rest of the test.
    std::mem::forget(stream);
    match first.event {
        Some(v1::event::Event::Subscribed(s)) => Ok(s.framework_id),
        other => panic!("first event should be SUBSCRIBED, got {other:?}"),
    }
}

#[tokio::test]
async fn grpc_callers_are_authenticated_and_authorized() {
    let (m, _dir) = start().await;
    let mut c = client(m.addr()).await;

    let check = |r: Result<String, (Code, String)>, code: Code, says: &str| match r {
        Err((got, message)) => {
            assert_eq!(got, code, "{message}");
            assert!(message.contains(says), "`{message}` should say `{says}`");
        }
        Ok(id) => panic!("subscribed as {id}; expected {code:?}"),
    };
    check(
        subscribe(&mut c, None, framework("analytics", &[])).await,
        Code::Unauthenticated,
        "requires authentication",
    );
    check(
        subscribe(
            &mut c,
            Some("wrong-token-0123456789"),
            framework("analytics", &[]),
        )
        .await,
        Code::Unauthenticated,
        "unknown bearer token",
    );
    check(
        subscribe(&mut c, Some(ALICE), framework("web", &[])).await,
        Code::PermissionDenied,
        "may not subscribe under role `web`",
    );
    check(
        subscribe(
            &mut c,
            Some(ALICE),
            framework("analytics", &["REVOCABLE_RESOURCES"]),
        )
        .await,
        Code::PermissionDenied,
        "may not use revocable resources",
    );
    let mut claims_bob = framework("analytics", &[]);
    if let Some(info) = claims_bob.framework_info.as_mut() {
        info.principal = "bob".into();
    }
    check(
        subscribe(&mut c, Some(ALICE), claims_bob).await,
        Code::PermissionDenied,
        "authenticated as `alice`",
    );

    let alice = subscribe(&mut c, Some(ALICE), framework("analytics", &[]))
        .await
        .expect("alice subscribes under her role");
    subscribe(
        &mut c,
        Some(BOB),
        framework("web", &["REVOCABLE_RESOURCES"]),
    )
    .await
    .expect("bob may use any role and revocable resources");

    // Calls for alice's framework: alice may, bob may not, nobody anonymous.
    let revive = |token| {
        with_token(
            v1::ReviveRequest {
                framework_id: alice.clone(),
            },
            token,
        )
    };
    c.revive(revive(Some(ALICE))).await.expect("alice revives");
    let denied = c
        .revive(revive(Some(BOB)))
        .await
        .expect_err("bob is refused");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let anonymous = c.revive(revive(None)).await.expect_err("anonymous refused");
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    // Bob cannot take over alice's framework by re-subscribing with its id.
    let mut takeover = framework("analytics", &[]);
    if let Some(info) = takeover.framework_info.as_mut() {
        info.id = alice.clone();
    }
    check(
        subscribe(&mut c, Some(BOB), takeover).await,
        Code::PermissionDenied,
        "belongs to principal `alice`",
    );
    m.stop().await.expect("stops");
}
