//! Who is who (bearer tokens → principals) and who may do what (per-principal ACLs), read
//! from TOML files that the master watches and reloads when they change.
//!
//! Credentials file (`--credentials`):
//! ```toml
//! [[credential]]
//! principal = "analytics"
//! token = "a-long-random-string"
//! expires = 2027-01-01T00:00:00Z   # optional (RFC 3339, with an offset)
//! ```
//! A token is sent as `Authorization: Bearer <token>`, or — Mesos frameworks — as
//! `Authorization: Basic base64(<principal>:<token>)`.
//!
//! ACL file (`--acls`); a principal that is not listed may do nothing:
//! ```toml
//! [[principal]]
//! name = "analytics"
//! roles = ["analytics"]        # roles it may subscribe under; "*" = any
//! revocable = true             # may opt into revocable resources
//! users = ["nobody", "etl"]    # users its tasks may run as; "*" = any but root
//! operator = ["teardown"]      # teardown, maintenance, quota, weight, sandboxes; "*" = all
//! agent = false                # may register agents (with its certificate)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Why a credentials or ACL file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Longest token accepted (a longer `Authorization` header is refused without a lookup).
pub const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    credential: Vec<CredentialEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    principal: String,
    token: String,
    #[serde(default)]
    expires: Option<When>,
}

/// `expires` as a TOML date-time (`2027-01-01T00:00:00Z`) or a string holding one.
#[derive(Deserialize)]
#[serde(untagged)]
enum When {
    Native(toml::value::Datetime),
    Text(String),
}

impl When {
    fn timestamp(&self, principal: &str) -> Result<jiff::Timestamp, String> {
        let text = match self {
            When::Native(d) => d.to_string(),
            When::Text(t) => t.clone(),
        };
        text.parse::<jiff::Timestamp>().map_err(|e| {
            format!(
                "`expires` of `{principal}` is `{text}`: {e}; give an RFC 3339 time with an offset, e.g. 2027-01-01T00:00:00Z"
            )
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    token: Vec<u8>,
    principal: String,
    expires: Option<jiff::Timestamp>,
}

/// Tokens and the principals they stand for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    entries: Vec<Entry>,
}

/// Why presented credentials do not name a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("unknown bearer token")]
    UnknownToken,
    #[error("wrong principal or secret")]
    WrongSecret,
    #[error("the token of principal `{principal}` expired at {at}; ask for a new one")]
    Expired {
        principal: String,
        at: jiff::Timestamp,
    },
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_principal(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(format!(
            "principal `{name}` must be 1-128 characters without control characters"
        ));
    }
    Ok(())
}

impl Credentials {
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let file: CredentialsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = Vec::with_capacity(file.credential.len());
        for c in file.credential {
            check_principal(&c.principal)?;
            if c.token.len() < 16 || c.token.len() > MAX_TOKEN_BYTES {
                return Err(format!(
                    "the token of `{}` must be 16 to {MAX_TOKEN_BYTES} bytes long",
                    c.principal
                ));
            }
            if entries
                .iter()
                .any(|e: &Entry| e.token == c.token.as_bytes())
            {
                return Err(format!("the token of `{}` is used twice", c.principal));
            }
            let expires = c
                .expires
                .as_ref()
                .map(|w| w.timestamp(&c.principal))
                .transpose()?;
            entries.push(Entry {
                token: c.token.into_bytes(),
                principal: c.principal,
                expires,
            });
        }
        Ok(Credentials { entries })
    }

    /// The entry whose token is `token`. Every entry is compared, so the time taken does not
    /// tell how close a guess was.
    fn find(&self, token: &[u8]) -> Option<&Entry> {
        let mut found = None;
        for e in &self.entries {
            if same(&e.token, token) {
                found = Some(e);
            }
        }
        found
    }

    fn valid(e: &Entry, now: jiff::Timestamp) -> Result<&str, CredentialError> {
        match e.expires {
            Some(at) if now >= at => Err(CredentialError::Expired {
                principal: e.principal.clone(),
                at,
            }),
            _ => Ok(&e.principal),
        }
    }

    /// The principal a bearer `token` stands for at `now`.
    pub fn bearer(&self, token: &str, now: jiff::Timestamp) -> Result<&str, CredentialError> {
        let e = self
            .find(token.as_bytes())
            .ok_or(CredentialError::UnknownToken)?;
        Self::valid(e, now)
    }

    /// HTTP Basic: `principal` with its token as the secret, at `now`.
    pub fn basic(
        &self,
        principal: &str,
        secret: &str,
        now: jiff::Timestamp,
    ) -> Result<&str, CredentialError> {
        match self.find(secret.as_bytes()) {
            Some(e) if e.principal == principal => Self::valid(e, now),
            _ => Err(CredentialError::WrongSecret),
        }
    }

    /// The principal `token` stands for, ignoring expiry.
    pub fn principal(&self, token: &str) -> Option<&str> {
        self.find(token.as_bytes()).map(|e| e.principal.as_str())
    }
}

/// An operator call that ACLs grant by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorCall {
    /// Tear down another principal's framework.
    Teardown,
    /// Retire agents (`/agents/{id}/gone`).
    Maintenance,
    /// Change a role's quota.
    Quota,
    /// Change a role's weight.
    Weight,
    /// Read the sandboxes (stdout/stderr) of other principals' tasks.
    Sandboxes,
}

impl OperatorCall {
    pub fn name(self) -> &'static str {
        match self {
            OperatorCall::Teardown => "teardown",
            OperatorCall::Maintenance => "maintenance",
            OperatorCall::Quota => "quota",
            OperatorCall::Weight => "weight",
            OperatorCall::Sandboxes => "sandboxes",
        }
    }
}

/// Something a principal asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Subscribe a framework under this role.
    RegisterRole(&'a str),
    /// Subscribe with the `REVOCABLE_RESOURCES` capability.
    UseRevocable,
    /// Launch a task running as this Unix user.
    RunAsUser(&'a str),
    /// Register an agent.
    RegisterAgent,
    Operator(OperatorCall),
}

impl Action<'_> {
    /// Label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RegisterRole(_) => "register_role",
            Action::UseRevocable => "revocable",
            Action::RunAsUser(_) => "run_as_user",
            Action::RegisterAgent => "register_agent",
            Action::Operator(c) => c.name(),
        }
    }
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Grant {
    All(AllMarker),
    Some(Vec<OperatorCall>),
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
enum AllMarker {
    #[serde(rename = "*")]
    All,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct PrincipalAcl {
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    revocable: bool,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default = "no_calls")]
    operator: Grant,
    #[serde(default)]
    agent: bool,
}

fn no_calls() -> Grant {
    Grant::Some(Vec::new())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    principal: Vec<PrincipalAcl>,
}

/// Per-principal permissions. Anything not granted is denied, and so is everything asked by
/// an unauthenticated caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acls {
    principals: HashMap<String, PrincipalAcl>,
}

impl Acls {
    pub fn parse(text: &str) -> Result<Acls, String> {
        let file: AclFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut principals = HashMap::new();
        for p in file.principal {
            check_principal(&p.name)?;
            let name = p.name.clone();
            if principals.insert(name.clone(), p).is_some() {
                return Err(format!("principal `{name}` is listed twice"));
            }
        }
        Ok(Acls { principals })
    }

    /// Whether `principal` may do `action`.
    pub fn allows(&self, principal: Option<&str>, action: &Action<'_>) -> bool {
        let Some(acl) = principal.and_then(|p| self.principals.get(p)) else {
            return false;
        };
        match action {
            Action::RegisterRole(role) => acl.roles.iter().any(|r| r == "*" || r == role),
            Action::UseRevocable => acl.revocable,
            // Root only when named: "*" never includes it.
            Action::RunAsUser(user) => acl
                .users
                .iter()
                .any(|u| u == user || (u == "*" && *user != "root")),
            Action::RegisterAgent => acl.agent,
            Action::Operator(call) => match &acl.operator {
                Grant::All(_) => true,
                Grant::Some(calls) => calls.contains(call),
            },
        }
    }
}

/// A policy file the master re-reads when its modification time changes. A file that no
/// longer parses is reported and the last good version stays in force.
pub struct Watched<T> {
    path: PathBuf,
    parse: fn(&str) -> Result<T, String>,
    current: RwLock<(Option<SystemTime>, Arc<T>)>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads the file once; it must exist and parse.
    pub fn load(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<Self, PolicyError> {
        let (mtime, value) = Self::read(path, parse)?;
        Ok(Watched {
            path: path.to_path_buf(),
            parse,
            current: RwLock::new((mtime, Arc::new(value))),
        })
    }

    fn read(
        path: &Path,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<(Option<SystemTime>, T), PolicyError> {
        let read_err = |source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mtime = std::fs::metadata(path).map_err(read_err)?.modified().ok();
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let value = parse(&text).map_err(|message| PolicyError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        Ok((mtime, value))
    }

    /// The version in force.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Re-reads the file if it changed; returns whether a new version is in force.
    pub fn reload_if_changed(&self) -> bool {
        let mtime = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| m.modified().ok());
        let known = self.current.read().unwrap_or_else(|p| p.into_inner()).0;
        if mtime == known {
            return false;
        }
        match Self::read(&self.path, self.parse) {
            Ok((mtime, value)) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (mtime, Arc::new(value));
                tracing::info!(path = %self.path.display(), "reloaded");
                true
            }
            Err(e) => {
                // Remember the bad version's time so the error is logged once per change.
                self.current.write().unwrap_or_else(|p| p.into_inner()).0 = mtime;
                tracing::error!("{e}; keeping the previous version");
                false
            }
        }
    }

    /// Polls the file every `every` until the returned task is aborted.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_principals() {
        let c = Credentials::parse(
            "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\n\
             [[credential]]\nprincipal = \"b\"\ntoken = \"fedcba9876543210\"\n",
        )
        .expect("parses");
        assert_eq!(c.principal("0123456789abcdef"), Some("a"));
        assert_eq!(c.principal("fedcba9876543210"), Some("b"));
        assert_eq!(c.principal("0123456789abcdeX"), None);
        assert_eq!(c.principal(""), None);
        for bad in [
            "[[credential]]\nprincipal = \"a\"\ntoken = \"short\"\n",
            "[[credential]]\nprincipal = \"\"\ntoken = \"0123456789abcdef\"\n",
            "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\n[[credential]]\nprincipal = \"b\"\ntoken = \"0123456789abcdef\"\n",
            "[[credential]]\nprincipal = \"a\"\n",
            "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\nextra = 1\n",
            "not toml",
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn tokens_expire() {
        let c = Credentials::parse(
            "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\nexpires = 2030-01-01T00:00:00Z\n\
             [[credential]]\nprincipal = \"b\"\ntoken = \"fedcba9876543210\"\nexpires = \"2030-01-01T01:00:00+01:00\"\n\
             [[credential]]\nprincipal = \"c\"\ntoken = \"cccccccccccccccc\"\n",
        )
        .expect("parses");
        let before: jiff::Timestamp = "2029-12-31T23:59:59Z".parse().expect("time");
        let at: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().expect("time");
        assert_eq!(c.bearer("0123456789abcdef", before), Ok("a"));
        let err = c.bearer("0123456789abcdef", at).expect_err("expired");
        assert_eq!(
            err.to_string(),
            "the token of principal `a` expired at 2030-01-01T00:00:00Z; ask for a new one"
        );
        // An offset is honoured: 01:00+01:00 is midnight UTC.
        assert!(c.bearer("fedcba9876543210", at).is_err());
        assert_eq!(c.bearer("cccccccccccccccc", at), Ok("c"), "no expiry");
        assert_eq!(
            c.bearer("nope-nope-nope-nope", at),
            Err(CredentialError::UnknownToken)
        );
        for bad in [
            "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\nexpires = 2030-01-01T00:00:00\n",
            "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\nexpires = \"next year\"\n",
            "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\nexpires = 2030-01-01\n",
        ] {
            let e = Credentials::parse(bad).expect_err("a time without offset is refused");
            assert!(e.contains("RFC 3339"), "{e}");
        }
    }

    #[test]
    fn basic_needs_the_principal_and_its_token() {
        let c = Credentials::parse(
            "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\n\
             [[credential]]\nprincipal = \"b\"\ntoken = \"fedcba9876543210\"\nexpires = 2000-01-01T00:00:00Z\n",
        )
        .expect("parses");
        let now = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * 365 * 40);
        assert_eq!(c.basic("a", "0123456789abcdef", now), Ok("a"));
        assert_eq!(
            c.basic("b", "0123456789abcdef", now),
            Err(CredentialError::WrongSecret),
            "another principal's token"
        );
        assert_eq!(
            c.basic("a", "wrong", now),
            Err(CredentialError::WrongSecret)
        );
        assert!(matches!(
            c.basic("b", "fedcba9876543210", now),
            Err(CredentialError::Expired { .. })
        ));
    }

    #[test]
    fn acls_deny_by_default() {
        let acls = Acls::parse(
            r#"
            [[principal]]
            name = "etl"
            roles = ["analytics"]
            users = ["*"]

            [[principal]]
            name = "ops"
            roles = ["*"]
            revocable = true
            users = ["root", "nobody"]
            operator = "*"
            agent = true

            [[principal]]
            name = "viewer"
            operator = ["sandboxes"]
            "#,
        )
        .expect("parses");
        let check = |p: Option<&str>, a: Action<'_>, want: bool| {
            assert_eq!(acls.allows(p, &a), want, "{p:?} {a:?}");
        };
        check(Some("etl"), Action::RegisterRole("analytics"), true);
        check(Some("etl"), Action::RegisterRole("web"), false);
        check(Some("etl"), Action::UseRevocable, false);
        check(Some("etl"), Action::RunAsUser("nobody"), true);
        check(Some("etl"), Action::RunAsUser("root"), false);
        check(Some("etl"), Action::Operator(OperatorCall::Teardown), false);
        check(Some("etl"), Action::RegisterAgent, false);
        check(Some("ops"), Action::RegisterRole("web"), true);
        check(Some("ops"), Action::UseRevocable, true);
        check(Some("ops"), Action::RunAsUser("root"), true);
        check(Some("ops"), Action::RunAsUser("etl"), false);
        check(Some("ops"), Action::Operator(OperatorCall::Weight), true);
        check(Some("ops"), Action::RegisterAgent, true);
        check(
            Some("viewer"),
            Action::Operator(OperatorCall::Sandboxes),
            true,
        );
        check(Some("viewer"), Action::Operator(OperatorCall::Quota), false);
        check(Some("viewer"), Action::RegisterRole("*"), false);
        check(Some("stranger"), Action::RegisterRole("*"), false);
        check(None, Action::RunAsUser("nobody"), false);
        for bad in [
            "[[principal]]\nname = \"a\"\noperator = [\"reboot\"]\n",
            "[[principal]]\nname = \"a\"\n[[principal]]\nname = \"a\"\n",
            "[[principal]]\nname = \"a\"\nroles = \"x\"\n",
            "[[principal]]\nname = \"a\"\ntypo = true\n",
        ] {
            assert!(Acls::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn watched_files_reload_and_keep_the_last_good_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("creds.toml");
        let v1 = "[[credential]]\nprincipal = \"a\"\ntoken = \"0123456789abcdef\"\n";
        std::fs::write(&path, v1).expect("write");
        let w = Watched::load(&path, Credentials::parse).expect("loads");
        assert_eq!(w.get().principal("0123456789abcdef"), Some("a"));
        assert!(!w.reload_if_changed());
        let bump = |text: &str, secs: u64| {
            std::fs::write(&path, text).expect("write");
            let f = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .expect("set mtime");
        };
        bump(
            "[[credential]]\nprincipal = \"b\"\ntoken = \"0123456789abcdef\"\n",
            1_000,
        );
        assert!(w.reload_if_changed());
        assert_eq!(w.get().principal("0123456789abcdef"), Some("b"));
        bump("garbage", 2_000);
        assert!(!w.reload_if_changed());
        assert_eq!(w.get().principal("0123456789abcdef"), Some("b"));
        assert!(Watched::load(&dir.path().join("missing"), Credentials::parse).is_err());
    }
}
