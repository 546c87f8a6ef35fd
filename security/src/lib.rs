//! brim's security pieces shared by the master, the agent, the SDK and the CLI: rustls
//! configurations from PEM files ([`tls`]), a listener that serves axum over TLS and tells
//! handlers who the peer is ([`serve`]), a small on-disk CA for `brim dev` and `brim certs`
//! ([`pki`]), and the credentials and ACL files the master watches ([`policy`]).
//! See docs/SECURITY.md for the threat model.
#![forbid(unsafe_code)]

pub mod pki;
pub mod policy;
pub mod serve;
pub mod tls;

pub use policy::{Acls, Action, CredentialError, Credentials, OperatorCall, Watched};
pub use serve::{serve, serve_with, Peer, ServeLimits};
pub use tls::{ClientTls, TlsError, TlsFiles};

/// How long clients wait for a TCP (and TLS) connection to a brim daemon.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// TCP keepalive of clients' connections: a peer that vanished (power off, partition) is
/// detected even on an idle connection.
pub const TCP_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);
/// HTTP/2 keepalive of long-lived gRPC streams (agent link, framework subscription): ping
/// this often, give up on the peer when a ping is not answered within the same time.
pub const HTTP2_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(20);

/// How a client reaches brim: TLS settings (`None`: plaintext, only with `--insecure`) and
/// an optional bearer token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSecurity {
    pub tls: Option<ClientTls>,
    pub token: Option<String>,
}

impl ClientSecurity {
    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `host:port` (or a URL) as a URL with this client's scheme; an explicit scheme wins.
    pub fn url(&self, address: &str) -> String {
        if address.contains("://") {
            address.to_string()
        } else {
            format!("{}://{address}", self.scheme())
        }
    }

    /// A reqwest client builder with this TLS configuration and the token sent on every
    /// request, a connect timeout ([`CONNECT_TIMEOUT`]) and TCP keepalive, so a dead or
    /// silent server is noticed; callers add a per-request `timeout`.
    pub fn reqwest_builder(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        let mut b = match &self.tls {
            Some(t) => t.reqwest_builder()?,
            None => reqwest::Client::builder(),
        }
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(TCP_KEEPALIVE);
        if let Some(token) = &self.token {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| TlsError::Incomplete("the token must be printable ASCII"))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
            b = b.default_headers(headers);
        }
        Ok(b)
    }
}

/// Why client settings could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error(
        "--tls-cert and --tls-key (BRIM_TLS_CERT, BRIM_TLS_KEY) go together: pass both or neither"
    )]
    HalfIdentity,
    #[error("no CA to verify the master with: pass --tls-ca (or BRIM_TLS_CA) with the cluster CA, start `brim dev` (its CA lands in {dev}), or pass --insecure (BRIM_INSECURE=1) for a plaintext master")]
    NoCa { dev: String },
}

/// Name of `brim dev`'s client certificate (the principal its CLI authenticates as).
pub const DEV_CLIENT: &str = "operator";

/// What a client was told (flags or `BRIM_*` variables), before defaults are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub token: Option<String>,
    pub insecure: bool,
}

impl ClientOptions {
    /// From `BRIM_TLS_CA`, `BRIM_TLS_CERT`, `BRIM_TLS_KEY`, `BRIM_TOKEN` and `BRIM_INSECURE`
    /// (set and not `0`/`false`).
    pub fn from_env() -> Self {
        let path = |v: &str| {
            std::env::var_os(v)
                .filter(|p| !p.is_empty())
                .map(Into::into)
        };
        ClientOptions {
            ca: path("BRIM_TLS_CA"),
            cert: path("BRIM_TLS_CERT"),
            key: path("BRIM_TLS_KEY"),
            token: std::env::var("BRIM_TOKEN").ok(),
            insecure: std::env::var("BRIM_INSECURE")
                .is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no")),
        }
    }

    /// The settings: plaintext with `insecure`; else TLS with the given CA, or else with the
    /// CA `brim dev` made in `dev_dir` (presenting its `operator` certificate unless a
    /// certificate was given); else an error saying what to pass.
    pub fn resolve(&self, dev_dir: &std::path::Path) -> Result<ClientSecurity, ClientSetupError> {
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err(ClientSetupError::HalfIdentity),
        };
        let token = self.token.clone().filter(|t| !t.is_empty());
        if self.insecure {
            if token.is_some() {
                tracing::warn!("insecure: the token travels in plaintext");
            }
            return Ok(ClientSecurity { tls: None, token });
        }
        let tls = match &self.ca {
            Some(ca) => ClientTls {
                ca: ca.clone(),
                identity,
            },
            None if dev_dir.join("ca.pem").exists() => {
                let mut tls = pki::client_files(dev_dir, DEV_CLIENT);
                if identity.is_some() {
                    tls.identity = identity;
                }
                tls
            }
            None => {
                return Err(ClientSetupError::NoCa {
                    dev: dev_dir.display().to_string(),
                })
            }
        };
        Ok(ClientSecurity {
            tls: Some(tls),
            token,
        })
    }
}

/// Where `brim dev` keeps its CA by default: `$HOME/.brim/dev/tls` (`/var/lib/brim/dev/tls`
/// without a home).
pub fn dev_tls_dir() -> std::path::PathBuf {
    let base = match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => std::path::PathBuf::from(h).join(".brim"),
        _ => std::path::PathBuf::from("/var/lib/brim"),
    };
    base.join("dev").join("tls")
}

/// The principal and secret of an `Authorization: Basic base64(principal:secret)` header
/// value (what Mesos frameworks send); `None` when it is not Basic or not valid base64 of
/// UTF-8 with a `:`.
pub fn basic(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (principal, secret) = text.split_once(':')?;
    Some((principal.to_string(), secret.to_string()))
}

/// The bearer token of an `Authorization: Bearer …` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_headers() {
        // base64("analytics:a-long-random-string")
        assert_eq!(
            super::basic("Basic YW5hbHl0aWNzOmEtbG9uZy1yYW5kb20tc3RyaW5n"),
            Some(("analytics".into(), "a-long-random-string".into()))
        );
        // A secret may contain ':'; the principal may not.
        assert_eq!(
            super::basic("basic YTpiOmM="),
            Some(("a".into(), "b:c".into()))
        );
        for bad in ["Bearer abc", "Basic !!!", "Basic bm9jb2xvbg==", "Basic", ""] {
            assert_eq!(super::basic(bad), None, "{bad:?}");
        }
    }
}
