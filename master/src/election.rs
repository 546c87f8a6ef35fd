//! Leader election for HA masters, on etcd's election API.
//!
//! A master campaigns under `<prefix>/leader` with its advertised address as the value and a
//! lease of `ttl`. While it waits it is a standby; once `campaign` returns it is the leader and
//! keeps the lease alive. If a keep-alive fails or the lease expires, [`Leadership::lost`]
//! resolves and the master must stop acting as leader at once (Mesos masters abort on lost
//! leadership; so does `brim master`, to be restarted as a standby by its supervisor).

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::watch;

use crate::registry::etcd::Fence;

/// Why the election could not run.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("cannot reach etcd at {endpoints}: {source}; check --etcd and that etcd is running")]
    Connect {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd election failed: {0}; check that etcd is up and, over TLS, that it accepts this master's client certificate (--etcd-cert/--etcd-key)")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd answered the campaign without a leader key")]
    NoLeaderKey,
    #[error("etcd endpoint `{endpoint}`: {why}")]
    Endpoint { endpoint: String, why: String },
    #[error("etcd TLS: {0}")]
    Tls(#[from] brim_security::TlsError),
}

/// Checks every endpoint's scheme against the TLS setting: `https://` with TLS, `http://`
/// without (a bare `host:port` gets the right one).
pub fn endpoints_for(endpoints: &[String], tls: bool) -> Result<Vec<String>, ElectionError> {
    endpoints
        .iter()
        .map(|e| {
            let bad = |why: &str| ElectionError::Endpoint {
                endpoint: e.clone(),
                why: why.to_string(),
            };
            match (e.split_once("://").map(|(s, _)| s), tls) {
                (None, true) => Ok(format!("https://{e}")),
                (None, false) => Ok(format!("http://{e}")),
                (Some("https"), true) | (Some("http"), false) => Ok(e.clone()),
                (Some("http"), true) => Err(bad(
                    "plaintext with --etcd-ca given; use https:// (etcd with --cert-file) or drop the --etcd-* TLS flags",
                )),
                (Some("https"), false) => Err(bad(
                    "https needs the CA that signed etcd's certificate: pass --etcd-ca (and --etcd-cert/--etcd-key when etcd checks client certificates)",
                )),
                (Some(_), _) => Err(bad("use http:// or https://")),
            }
        })
        .collect()
}

/// Connects to etcd with a short connect timeout and HTTP/2 keep-alives (a dead etcd is
/// noticed in seconds). No per-request timeout: `campaign` legitimately blocks for as long
/// as another master leads; the lease, not the connection, is what bounds leadership.
pub async fn connect(endpoints: &[String]) -> Result<Client, ElectionError> {
    connect_with(endpoints, None).await
}

/// [`connect`] over TLS when `tls` is set: etcd's certificate is verified against
/// `tls.ca`, and `tls.identity` is presented to an etcd started with `--client-cert-auth`.
pub async fn connect_with(
    endpoints: &[String],
    tls: Option<&brim_security::ClientTls>,
) -> Result<Client, ElectionError> {
    let endpoints = endpoints_for(endpoints, tls.is_some())?;
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = tls {
        opts = opts.with_tls(tls.tonic_config()?);
    }
    Client::connect(&endpoints, Some(opts))
        .await
        .map_err(|source| ElectionError::Connect {
            endpoints: endpoints.join(","),
            source,
        })
}

/// This master's election.
pub struct Election {
    client: Client,
    name: String,
    ttl: Duration,
}

/// Proof of leadership: the election key with its creation revision, and a signal that flips
/// to `true` when leadership is lost.
pub struct Leadership {
    pub fence: Fence,
    pub lost: watch::Receiver<bool>,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl Election {
    pub fn new(client: Client, prefix: &str, ttl: Duration) -> Self {
        Election {
            client,
            name: format!("{prefix}/leader"),
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    /// Address of the current leader, if any.
    pub async fn leader(&self) -> Option<String> {
        let mut c = self.client.clone();
        let resp = c.leader(self.name.clone()).await.ok()?;
        let kv = resp.kv()?;
        String::from_utf8(kv.value().to_vec()).ok()
    }

    /// Addresses of every master campaigning (the leader and the standbys), oldest first.
    pub async fn candidates(&self) -> Option<Vec<String>> {
        let mut c = self.client.clone();
        let resp = c
            .get(
                format!("{}/", self.name),
                Some(etcd_client::GetOptions::new().with_prefix().with_sort(
                    etcd_client::SortTarget::Create,
                    etcd_client::SortOrder::Ascend,
                )),
            )
            .await
            .ok()?;
        Some(
            resp.kvs()
                .iter()
                .filter_map(|kv| String::from_utf8(kv.value().to_vec()).ok())
                .collect(),
        )
    }

    /// Blocks until this master leads, then keeps its lease alive in the background.
    pub async fn campaign(&self, address: &str) -> Result<Leadership, ElectionError> {
        let mut c = self.client.clone();
        let ttl_secs = self.ttl.as_secs().max(1) as i64;
        let lease = c.lease_grant(ttl_secs, None).await?.id();
        let (mut keeper, mut responses) = c.lease_keep_alive(lease).await?;
        let (lost_tx, lost_rx) = watch::channel(false);
        // Keep the lease alive while we wait too: a standby must not lose its place in line.
        let interval = self.ttl / 3;
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let alive = match keeper.keep_alive().await {
                    Ok(()) => matches!(
                        tokio::time::timeout(interval.max(Duration::from_millis(500)), responses.message()).await,
                        Ok(Ok(Some(r))) if r.ttl() > 0
                    ),
                    Err(_) => false,
                };
                if !alive {
                    tracing::error!(lease, "etcd lease keep-alive failed: leadership is lost");
                    let _ = lost_tx.send(true);
                    return;
                }
            }
        });
        let resp = c.campaign(self.name.clone(), address, lease).await?;
        let key = resp.leader().ok_or(ElectionError::NoLeaderKey)?;
        let fence = Fence {
            key: key.key().to_vec(),
            revision: key.rev(),
        };
        Ok(Leadership {
            fence,
            lost: lost_rx,
            keepalive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_schemes_follow_the_tls_setting() {
        let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            endpoints_for(&e(&["10.0.0.1:2379", "https://e2:2379"]), true).ok(),
            Some(e(&["https://10.0.0.1:2379", "https://e2:2379"]))
        );
        assert_eq!(
            endpoints_for(&e(&["e1:2379", "http://e2:2379"]), false).ok(),
            Some(e(&["http://e1:2379", "http://e2:2379"]))
        );
        let err = endpoints_for(&e(&["http://e1:2379"]), true).expect_err("plaintext with TLS");
        assert!(err.to_string().contains("use https://"), "{err}");
        let err = endpoints_for(&e(&["https://e1:2379"]), false).expect_err("https without CA");
        assert!(err.to_string().contains("--etcd-ca"), "{err}");
        assert!(endpoints_for(&e(&["unix://sock"]), false).is_err());
    }
}
