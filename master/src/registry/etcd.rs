//! The HA registry: records under a key prefix in etcd, JSON-encoded.
//!
//! Writes are **fenced**: each is a transaction that succeeds only while this master's
//! election key still exists with the creation revision it won with. A master that lost its
//! lease (and so its key) can no longer write, even if it has not noticed yet — two masters
//! believing they lead cannot both change the registry.
//!
//! The registry API is synchronous (the state actor calls it inline, like the redb store), so
//! etcd calls run on a dedicated thread with its own small runtime; callers wait for the
//! answer with a deadline.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::de::DeserializeOwned;

use super::{
    AgentRecord, FrameworkRecord, RegistryError, RegistrySnapshot, RegistryStore, RoleRecord,
};

/// How long a registry call waits for etcd.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The election key (and its creation revision) that every write is conditional on.
#[derive(Debug, Clone)]
pub struct Fence {
    pub key: Vec<u8>,
    pub revision: i64,
}

/// Every key under the prefix with its raw value.
type Entries = Vec<(String, Vec<u8>)>;

enum Op {
    Load(mpsc::Sender<Result<Entries, RegistryError>>),
    Put(String, Vec<u8>, mpsc::Sender<Result<(), RegistryError>>),
    Delete(String, mpsc::Sender<Result<(), RegistryError>>),
}

/// Registry records in etcd under `prefix`, writable only while `fence` holds.
pub struct EtcdRegistry {
    ops: mpsc::Sender<Op>,
    prefix: String,
}

impl EtcdRegistry {
    /// Uses `client` (already connected) from a dedicated thread.
    pub fn new(client: Client, prefix: &str, fence: Option<Fence>) -> Result<Self, RegistryError> {
        let (tx, rx) = mpsc::channel::<Op>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Storage(format!("cannot start the etcd thread: {e}")))?;
        let load_prefix = prefix.to_string();
        std::thread::Builder::new()
            .name("brim-etcd-registry".into())
            .spawn(move || {
                let mut client = client;
                while let Ok(op) = rx.recv() {
                    runtime.block_on(serve(&mut client, &fence, &load_prefix, op));
                }
            })
            .map_err(|e| RegistryError::Storage(format!("cannot start the etcd thread: {e}")))?;
        Ok(EtcdRegistry {
            ops: tx,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}/{kind}/{id}", self.prefix)
    }

    fn call<T>(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<T, RegistryError>>) -> Op,
    ) -> Result<T, RegistryError> {
        let (tx, rx) = mpsc::channel();
        self.ops
            .send(make(tx))
            .map_err(|_| RegistryError::Storage("the etcd thread stopped".into()))?;
        rx.recv_timeout(CALL_TIMEOUT).map_err(|_| {
            RegistryError::Storage(format!(
                "etcd did not answer within {CALL_TIMEOUT:?}; check that etcd is up"
            ))
        })?
    }

    fn put(
        &mut self,
        kind: &str,
        id: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), RegistryError> {
        let bytes = serde_json::to_vec(value).map_err(|e| RegistryError::Storage(e.to_string()))?;
        let key = self.key(kind, id);
        self.call(|tx| Op::Put(key, bytes, tx))
    }
}

async fn serve(client: &mut Client, fence: &Option<Fence>, prefix: &str, op: Op) {
    let storage = |e: etcd_client::Error| RegistryError::Storage(format!("etcd: {e}"));
    match op {
        Op::Load(reply) => {
            let r = client
                .get(format!("{prefix}/"), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(storage)
                .map(|resp| {
                    resp.kvs()
                        .iter()
                        .map(|kv| {
                            (
                                String::from_utf8_lossy(kv.key()).to_string(),
                                kv.value().to_vec(),
                            )
                        })
                        .collect()
                });
            let _ = reply.send(r);
        }
        Op::Put(key, value, reply) => {
            let _ = reply.send(fenced(client, fence, TxnOp::put(key, value, None)).await);
        }
        Op::Delete(key, reply) => {
            let _ = reply.send(fenced(client, fence, TxnOp::delete(key, None)).await);
        }
    }
}

async fn fenced(
    client: &mut Client,
    fence: &Option<Fence>,
    op: TxnOp,
) -> Result<(), RegistryError> {
    let txn = match fence {
        Some(f) => Txn::new()
            .when(vec![Compare::create_revision(
                f.key.clone(),
                CompareOp::Equal,
                f.revision,
            )])
            .and_then(vec![op]),
        None => Txn::new().and_then(vec![op]),
    };
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| RegistryError::Storage(format!("etcd: {e}")))?;
    if resp.succeeded() {
        Ok(())
    } else {
        Err(RegistryError::Fenced)
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
        key: key.to_string(),
        why: e.to_string(),
    })
}

impl RegistryStore for EtcdRegistry {
    fn load(&self) -> Result<RegistrySnapshot, RegistryError> {
        let entries = self.call(Op::Load)?;
        let mut snap = RegistrySnapshot::default();
        let mut agents = BTreeMap::new();
        let mut frameworks = BTreeMap::new();
        let mut roles = BTreeMap::new();
        for (key, value) in entries {
            let Some(rest) = key.strip_prefix(&format!("{}/", self.prefix)) else {
                continue;
            };
            let Some((kind, id)) = rest.split_once('/') else {
                continue;
            };
            match kind {
                "agents" => {
                    agents.insert(id.to_string(), decode::<AgentRecord>(&key, &value)?);
                }
                "frameworks" => {
                    frameworks.insert(id.to_string(), decode::<FrameworkRecord>(&key, &value)?);
                }
                "roles" => {
                    roles.insert(id.to_string(), decode::<RoleRecord>(&key, &value)?);
                }
                _ => {}
            }
        }
        snap.agents = agents;
        snap.frameworks = frameworks;
        snap.roles = roles;
        Ok(snap)
    }

    fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), RegistryError> {
        self.put("agents", &agent.id, agent)
    }

    fn put_framework(&mut self, framework: &FrameworkRecord) -> Result<(), RegistryError> {
        self.put("frameworks", &framework.id, framework)
    }

    fn remove_framework(&mut self, id: &str) -> Result<(), RegistryError> {
        let key = self.key("frameworks", id);
        self.call(|tx| Op::Delete(key, tx))
    }

    fn put_role(&mut self, role: &RoleRecord) -> Result<(), RegistryError> {
        self.put("roles", &role.name, role)
    }
}
