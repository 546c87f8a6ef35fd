//! Durable registry: what must survive a master restart (Mesos "registrar").
//!
//! Agents (admitted / unreachable / gone), frameworks, and role weights and quotas. Task state
//! is deliberately *not* here: agents are the source of truth and re-register with their tasks.
//!
//! One trait ([`RegistryStore`]) because the store is a real axis of variation: the embedded
//! `redb` file (single master, the default) and etcd (HA, later) — plus an in-memory store that
//! state-machine tests use.
//!
//! Architecture Invariant: every write is durable (fsync'd) before the call returns, so the
//! state actor may tell the outside world about a change only after writing it here.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

pub mod etcd;
use serde::{Deserialize, Serialize};

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry storage failed: {0}; check the work dir's disk and permissions")]
    Storage(String),
    #[error("registry record `{key}` is corrupt ({why}); restore the registry file or remove the record")]
    Corrupt { key: String, why: String },
    #[error("registry write refused: this master no longer holds leadership")]
    Fenced,
}

impl From<redb::Error> for RegistryError {
    fn from(e: redb::Error) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for RegistryError {
            fn from(e: $t) -> Self { RegistryError::Storage(e.to_string()) }
        }
    )*};
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Registry view of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    pub http_address: String,
    /// Resources in operator syntax (`Resources` Display form).
    pub resources: String,
    pub attributes: Vec<(String, String)>,
    pub state: AgentRegistryState,
    /// Seconds since the Unix epoch when the state last changed.
    pub since: f64,
    /// Dynamic reservations (Mesos RESERVE): role -> resources in operator syntax.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reservations: BTreeMap<String, String>,
    /// Persistent volumes (Mesos CREATE), each on disk of its role's reservation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeRecord>,
}

/// A persistent volume on an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub persistence_id: String,
    pub role: String,
    /// Size in MiB (part of the role's reserved `disk`).
    pub disk: f64,
    pub container_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentRegistryState {
    Admitted,
    Unreachable,
    Gone,
}

/// Registry view of a framework.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRecord {
    pub id: String,
    pub name: String,
    pub user: String,
    pub role: String,
    pub principal: String,
    pub capabilities: Vec<String>,
    pub failover_timeout: f64,
    pub hostname: String,
    pub registered_time: f64,
}

/// Registry view of a role: weight and quota in operator syntax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub name: String,
    pub weight: f64,
    pub quota_guarantee: Option<String>,
    pub quota_limit: Option<String>,
}

/// Everything the registry holds, as loaded at start-up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistrySnapshot {
    pub agents: BTreeMap<String, AgentRecord>,
    pub frameworks: BTreeMap<String, FrameworkRecord>,
    pub roles: BTreeMap<String, RoleRecord>,
}

/// A durable key/record store for the master's registry.
pub trait RegistryStore: Send {
    fn load(&self) -> Result<RegistrySnapshot, RegistryError>;
    fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), RegistryError>;
    fn put_framework(&mut self, framework: &FrameworkRecord) -> Result<(), RegistryError>;
    fn remove_framework(&mut self, id: &str) -> Result<(), RegistryError>;
    fn put_role(&mut self, role: &RoleRecord) -> Result<(), RegistryError>;
}

const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
const FRAMEWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("frameworks");
const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("roles");

/// The embedded registry: one `redb` file, each record JSON-encoded under its id.
pub struct RedbRegistry {
    db: redb::Database,
}

impl RedbRegistry {
    /// Opens (creating if needed) the registry file at `path`.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let db = redb::Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(AGENTS)?;
            txn.open_table(FRAMEWORKS)?;
            txn.open_table(ROLES)?;
        }
        txn.commit()?;
        Ok(RedbRegistry { db })
    }

    fn put(
        &mut self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &impl Serialize,
    ) -> Result<(), RegistryError> {
        let bytes = serde_json::to_vec(value).map_err(|e| RegistryError::Storage(e.to_string()))?;
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(table)?;
            t.insert(key, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read_all<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<BTreeMap<String, T>, RegistryError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let mut out = BTreeMap::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let key = k.value().to_string();
            let rec = serde_json::from_slice(v.value()).map_err(|e| RegistryError::Corrupt {
                key: key.clone(),
                why: e.to_string(),
            })?;
            out.insert(key, rec);
        }
        Ok(out)
    }
}

impl RegistryStore for RedbRegistry {
    fn load(&self) -> Result<RegistrySnapshot, RegistryError> {
        Ok(RegistrySnapshot {
            agents: self.read_all(AGENTS)?,
            frameworks: self.read_all(FRAMEWORKS)?,
            roles: self.read_all(ROLES)?,
        })
    }

    fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), RegistryError> {
        self.put(AGENTS, &agent.id, agent)
    }

    fn put_framework(&mut self, framework: &FrameworkRecord) -> Result<(), RegistryError> {
        self.put(FRAMEWORKS, &framework.id, framework)
    }

    fn remove_framework(&mut self, id: &str) -> Result<(), RegistryError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(FRAMEWORKS)?;
            t.remove(id)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn put_role(&mut self, role: &RoleRecord) -> Result<(), RegistryError> {
        self.put(ROLES, &role.name, role)
    }
}

/// Volatile registry for tests of the state machine.
#[derive(Default)]
pub struct MemoryRegistry {
    snapshot: RegistrySnapshot,
}

impl RegistryStore for MemoryRegistry {
    fn load(&self) -> Result<RegistrySnapshot, RegistryError> {
        Ok(self.snapshot.clone())
    }
    fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), RegistryError> {
        self.snapshot.agents.insert(agent.id.clone(), agent.clone());
        Ok(())
    }
    fn put_framework(&mut self, framework: &FrameworkRecord) -> Result<(), RegistryError> {
        self.snapshot
            .frameworks
            .insert(framework.id.clone(), framework.clone());
        Ok(())
    }
    fn remove_framework(&mut self, id: &str) -> Result<(), RegistryError> {
        self.snapshot.frameworks.remove(id);
        Ok(())
    }
    fn put_role(&mut self, role: &RoleRecord) -> Result<(), RegistryError> {
        self.snapshot.roles.insert(role.name.clone(), role.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, state: AgentRegistryState) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            hostname: "h".into(),
            http_address: "127.0.0.1:5051".into(),
            resources: "cpus:2;mem:1024".into(),
            attributes: vec![("rack".into(), "r1".into())],
            state,
            since: 1.0,
            reservations: Default::default(),
            volumes: Vec::new(),
        }
    }

    #[test]
    fn redb_registry_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.redb");
        {
            let mut r = RedbRegistry::open(&path).expect("open");
            r.put_agent(&agent("a1", AgentRegistryState::Admitted))
                .expect("put");
            r.put_agent(&agent("a1", AgentRegistryState::Unreachable))
                .expect("put");
            r.put_framework(&FrameworkRecord {
                id: "f1".into(),
                name: "n".into(),
                user: "u".into(),
                role: "r".into(),
                principal: String::new(),
                capabilities: vec![],
                failover_timeout: 0.0,
                hostname: String::new(),
                registered_time: 0.0,
            })
            .expect("put");
            r.put_framework(&FrameworkRecord {
                id: "f2".into(),
                name: "n2".into(),
                user: "u".into(),
                role: "r".into(),
                principal: String::new(),
                capabilities: vec![],
                failover_timeout: 0.0,
                hostname: String::new(),
                registered_time: 0.0,
            })
            .expect("put");
            r.remove_framework("f2").expect("remove");
            r.put_role(&RoleRecord {
                name: "r".into(),
                weight: 2.0,
                quota_guarantee: Some("cpus:1".into()),
                quota_limit: None,
            })
            .expect("put");
        }
        let r = RedbRegistry::open(&path).expect("reopen");
        let s = r.load().expect("load");
        assert_eq!(s.agents["a1"].state, AgentRegistryState::Unreachable);
        assert_eq!(s.frameworks.keys().collect::<Vec<_>>(), vec!["f1"]);
        assert_eq!(s.roles["r"].weight, 2.0);
    }

    #[test]
    fn corrupt_record_is_reported_not_panicked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.redb");
        let mut r = RedbRegistry::open(&path).expect("open");
        let txn = r.db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(AGENTS).expect("table");
            t.insert("bad", b"{not json".as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
        match r.load() {
            Err(RegistryError::Corrupt { key, .. }) => assert_eq!(key, "bad"),
            other => panic!("expected a corrupt-record error, got {other:?}"),
        }
        // The store stays usable.
        r.put_agent(&agent("ok", AgentRegistryState::Admitted))
            .expect("put after corruption");
    }
}
