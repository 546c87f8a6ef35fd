//! TLS end to end on loopback: certificates from `pki`, a server from `serve`, clients
//! from `ClientTls`. A client certificate names the principal; a foreign one is refused.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use brim_security::{pki, serve, tls, ClientSecurity, ClientTls, Peer};

async fn start(files: &brim_security::TlsFiles) -> SocketAddr {
    let router = Router::new().route(
        "/whoami",
        get(|ConnectInfo(peer): ConnectInfo<Peer>| async move {
            peer.certificate.unwrap_or_else(|| "-".into())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = tls::server_config(files).expect("server config");
    tokio::spawn(serve(
        listener,
        Some(config),
        router,
        std::future::pending(),
    ));
    addr
}

async fn whoami(client: &ClientSecurity, addr: SocketAddr) -> Result<String, String> {
    let http = client
        .reqwest_builder()
        .expect("client config")
        .build()
        .expect("client");
    let r = http
        .get(format!("https://{addr}/whoami"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    r.text().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn client_certificates_name_principals_and_foreign_ones_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = pki::Pki::open_or_create(&dir.path().join("cluster"), "cluster CA").expect("ca");
    let server = cluster
        .issue("master", &pki::local_hosts())
        .expect("server cert");
    cluster.issue("alice", &[]).expect("client cert");
    let foreign = pki::Pki::open_or_create(&dir.path().join("foreign"), "foreign CA").expect("ca");
    foreign.issue("alice", &[]).expect("foreign cert");
    let addr = start(&server).await;

    let with_cert = ClientSecurity {
        tls: Some(pki::client_files(&dir.path().join("cluster"), "alice")),
        token: None,
    };
    assert_eq!(whoami(&with_cert, addr).await.as_deref(), Ok("alice"));

    let without_cert = ClientSecurity {
        tls: Some(ClientTls {
            ca: cluster.ca(),
            identity: None,
        }),
        token: None,
    };
    assert_eq!(whoami(&without_cert, addr).await.as_deref(), Ok("-"));

    // Same name, other CA: the handshake fails, nothing is served.
    let (cert, key) = pki::cert_files(&dir.path().join("foreign"), "alice");
    let impostor = ClientSecurity {
        tls: Some(ClientTls {
            ca: cluster.ca(),
            identity: Some((cert, key)),
        }),
        token: None,
    };
    let refused = whoami(&impostor, addr).await;
    assert!(
        refused.is_err(),
        "a foreign certificate was accepted: {refused:?}"
    );

    // A client that does not trust the server's CA refuses the server.
    let distrustful = ClientSecurity {
        tls: Some(ClientTls {
            ca: foreign.ca(),
            identity: None,
        }),
        token: None,
    };
    assert!(whoami(&distrustful, addr).await.is_err());

    // Reopening the CA directory signs with the same CA.
    let again = pki::Pki::open_or_create(&dir.path().join("cluster"), "cluster CA").expect("ca");
    again.issue("bob", &[]).expect("cert");
    let bob = ClientSecurity {
        tls: Some(pki::client_files(&dir.path().join("cluster"), "bob")),
        token: None,
    };
    assert_eq!(whoami(&bob, addr).await.as_deref(), Ok("bob"));
}

#[test]
fn bearer_tokens() {
    assert_eq!(brim_security::bearer("Bearer abc"), Some("abc"));
    assert_eq!(brim_security::bearer("bearer  abc "), Some("abc"));
    assert_eq!(brim_security::bearer("Basic abc"), None);
    assert_eq!(brim_security::bearer("Bearer "), None);
    assert_eq!(brim_security::bearer("Bearer"), None);
}

#[test]
fn client_options_resolve_to_tls_by_default() {
    use brim_security::{ClientOptions, ClientSetupError};
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = dir.path().join("dev-tls");
    // Nothing given and no dev CA: an error that says what to pass.
    let none = ClientOptions::default().resolve(&dev);
    assert!(
        matches!(&none, Err(ClientSetupError::NoCa { .. })),
        "{none:?}"
    );
    assert!(none
        .err()
        .is_some_and(|e| e.to_string().contains("--insecure")));
    // --insecure: plaintext, the token kept.
    let plain = ClientOptions {
        insecure: true,
        token: Some("t".into()),
        ..Default::default()
    }
    .resolve(&dev)
    .expect("insecure resolves");
    assert_eq!(plain.tls, None);
    assert_eq!(plain.url("h:1"), "http://h:1");
    // brim dev's CA is found, with its operator certificate.
    let ca = pki::Pki::open_or_create(&dev, "dev CA").expect("ca");
    ca.issue(brim_security::DEV_CLIENT, &[]).expect("operator");
    let found = ClientOptions::default().resolve(&dev).expect("dev CA");
    let tls = found.tls.clone().expect("tls");
    assert_eq!(tls.ca, dev.join("ca.pem"));
    assert!(tls.identity.is_some());
    assert_eq!(found.url("h:1"), "https://h:1");
    // Half an identity is refused.
    let half = ClientOptions {
        cert: Some("c.pem".into()),
        ..Default::default()
    }
    .resolve(&dev);
    assert!(
        matches!(half, Err(ClientSetupError::HalfIdentity)),
        "{half:?}"
    );
}
