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

pub use policy::{Acls, Action, Credentials, OperatorCall, Watched};
pub use serve::{serve, Peer};
pub use tls::{ClientTls, TlsError, TlsFiles};

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
    /// request.
    pub fn reqwest_builder(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        let mut b = match &self.tls {
            Some(t) => t.reqwest_builder()?,
            None => reqwest::Client::builder(),
        };
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

/// The bearer token of an `Authorization: Bearer …` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
