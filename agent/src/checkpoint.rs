//! Checkpoints: what the agent must remember across a crash, on disk under
//! `<work_dir>/meta/`:
//!
//! - `resources`: the resources the agent registered with (a different set → new agent);
//! - `tasks/<framework>/<task>.ckpt`: one [`TaskRecord`] per task not yet forgotten: its
//!   infos, state, supervisor and not-yet-acknowledged status updates;
//! - `containers/<container-id>/exit`: written by the task's supervisor (see `supervisor`).
//!
//! Every file is written to a temp file, fsynced, renamed over the old one, and the
//! directory fsynced. Records carry a CRC32 so a torn or corrupted file is detected.
//! A single writer thread does the I/O; the agent holds a task's status updates back until
//! the record containing them is durable ("fsync before sending").

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use prost::Message;
use serde::{Deserialize, Serialize};

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt checkpoint {path}: {why} (it was moved aside to {path}.corrupt)")]
    Corrupt { path: PathBuf, why: String },
}

const MAGIC: &str = "brim-checkpoint 1";

/// The supervisor of a task, as checkpointed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorRef {
    pub pid: i32,
    pub start_time: u64,
}

/// One task as checkpointed. Protobuf messages are stored as hex of their encoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub framework: String,
    pub task: String,
    pub framework_id: String,
    pub container_id: String,
    pub sandbox: PathBuf,
    pub state: i32,
    pub message: String,
    pub exit_code: Option<i32>,
    pub supervisor: Option<SupervisorRef>,
    pub kill_grace_seconds: Option<f64>,
    pub started_time: f64,
    pub updated_time: f64,
    /// Unacknowledged status updates, oldest first.
    pub updates: Vec<String>,
}

pub fn to_hex(m: &impl Message) -> String {
    let bytes = m.encode_to_vec();
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn from_hex<M: Message + Default>(s: &str) -> Option<M> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    M::decode(bytes?.as_slice()).ok()
}

/// CRC-32 (IEEE), bitwise: records are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `MAGIC crc len\n` + JSON body.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut out = format!("{MAGIC} {:08x} {}\n", crc32(&body), body.len()).into_bytes();
    out.extend_from_slice(&body);
    out
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not UTF-8")?;
    let rest = header
        .strip_prefix(MAGIC)
        .ok_or_else(|| format!("unknown header `{header}`"))?;
    let mut it = rest.split_whitespace();
    let crc = it
        .next()
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or("bad checksum field")?;
    let len: usize = it
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("bad length field")?;
    let body = &bytes[nl + 1..];
    if body.len() != len {
        return Err(format!("truncated: {} bytes instead of {len}", body.len()));
    }
    if crc32(body) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid record: {e}"))
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// The checkpoint layout under a work dir.
#[derive(Clone, Debug)]
pub struct Layout {
    pub meta: PathBuf,
}

impl Layout {
    pub fn new(work_dir: &Path) -> Self {
        Layout {
            meta: work_dir.join("meta"),
        }
    }
    pub fn resources(&self) -> PathBuf {
        self.meta.join("resources")
    }
    pub fn tasks(&self) -> PathBuf {
        self.meta.join("tasks")
    }
    pub fn task(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.tasks()
            .join(framework_id)
            .join(format!("{task_id}.ckpt"))
    }
    pub fn containers(&self) -> PathBuf {
        self.meta.join("containers")
    }
    pub fn container(&self, container_id: &str) -> PathBuf {
        self.containers().join(container_id)
    }

    /// Every task record; unreadable or corrupt ones are moved aside and reported.
    pub fn load_tasks(&self) -> (Vec<TaskRecord>, Vec<CheckpointError>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let Ok(fws) = fs::read_dir(self.tasks()) else {
            return (records, errors);
        };
        for fw in fws.flatten() {
            let Ok(files) = fs::read_dir(fw.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                if path.extension().and_then(|e| e.to_str()) != Some("ckpt") {
                    continue;
                }
                let bytes = match fs::read(&path) {
                    Ok(b) => b,
                    Err(source) => {
                        errors.push(CheckpointError::Io { path, source });
                        continue;
                    }
                };
                match decode::<TaskRecord>(&bytes) {
                    Ok(r) => records.push(r),
                    Err(why) => {
                        let mut aside = path.as_os_str().to_owned();
                        aside.push(".corrupt");
                        let _ = fs::rename(&path, &aside);
                        errors.push(CheckpointError::Corrupt { path, why });
                    }
                }
            }
        }
        (records, errors)
    }

    /// Forgets every task and container (a new agent identity).
    pub fn wipe_tasks(&self) {
        let _ = fs::remove_dir_all(self.tasks());
        let _ = fs::remove_dir_all(self.containers());
    }
}

/// A write for the writer thread.
#[derive(Debug)]
pub enum Op {
    /// Write `bytes` to `path` unless a newer `seq` for `key` was already written.
    Write {
        key: (String, String),
        seq: u64,
        path: PathBuf,
        bytes: Vec<u8>,
        done: Option<tokio::sync::oneshot::Sender<io::Result<()>>>,
    },
    /// Remove these paths (files or directories).
    Remove {
        key: (String, String),
        seq: u64,
        paths: Vec<PathBuf>,
    },
}

/// Handle to the writer thread.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// Starts the writer thread; `durable` is called with `(key, seq)` of each write done.
    pub fn start(durable: impl Fn(Vec<((String, String), u64)>) + Send + 'static) -> Writer {
        let (tx, rx) = mpsc::channel::<Op>();
        let spawned = std::thread::Builder::new()
            .name("brim-checkpoint".into())
            .spawn(move || writer_loop(rx, durable));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the checkpoint writer; checkpoints are off");
        }
        Writer { tx }
    }

    pub fn send(&self, op: Op) {
        let _ = self.tx.send(op);
    }
}

fn writer_loop(rx: mpsc::Receiver<Op>, durable: impl Fn(Vec<((String, String), u64)>)) {
    let mut written: HashMap<(String, String), u64> = HashMap::new();
    while let Ok(first) = rx.recv() {
        // Coalesce: of several queued writes of one key only the newest goes to disk.
        let mut batch = vec![first];
        while let Ok(op) = rx.try_recv() {
            batch.push(op);
        }
        let mut newest: HashMap<(String, String), u64> = HashMap::new();
        for op in &batch {
            let (key, seq) = match op {
                Op::Write { key, seq, .. } | Op::Remove { key, seq, .. } => (key, *seq),
            };
            let e = newest.entry(key.clone()).or_insert(seq);
            *e = (*e).max(seq);
        }
        let mut done = Vec::new();
        // Writes of the batch are group-committed: temp files written, one sync of the
        // filesystem, renames, one more sync (instead of two fsyncs per file).
        let mut pending: Vec<Staged> = Vec::new();
        for op in batch {
            match op {
                Op::Write {
                    key,
                    seq,
                    path,
                    bytes,
                    done: ack,
                } => {
                    let stale = newest.get(&key).is_some_and(|&n| n > seq)
                        || written.get(&key).is_some_and(|&w| w >= seq);
                    if stale {
                        done.push((key, seq));
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(()));
                        }
                        continue;
                    }
                    written.insert(key.clone(), seq);
                    let tmp = stage(&path, &bytes);
                    pending.push(Staged {
                        key,
                        seq,
                        path,
                        tmp,
                        ack,
                    });
                }
                Op::Remove { key, seq, paths } => {
                    // Earlier writes land before anything is removed (batch order).
                    commit(&mut pending, &mut done);
                    if written.get(&key).is_some_and(|&w| w > seq) {
                        continue;
                    }
                    for p in paths {
                        let r = if p.is_dir() {
                            fs::remove_dir_all(&p)
                        } else {
                            fs::remove_file(&p)
                        };
                        if let Err(e) = r {
                            if e.kind() != io::ErrorKind::NotFound {
                                tracing::warn!(path = %p.display(), error = %e, "checkpoint removal failed");
                            }
                        }
                    }
                    written.remove(&key);
                }
            }
        }
        commit(&mut pending, &mut done);
        if !done.is_empty() {
            durable(done);
        }
    }
}

/// A checkpoint written to its temp file, waiting for [`commit`].
struct Staged {
    key: (String, String),
    seq: u64,
    path: PathBuf,
    tmp: io::Result<PathBuf>,
    ack: Option<tokio::sync::oneshot::Sender<io::Result<()>>>,
}

/// Writes `bytes` to `path`'s temp file (not synced yet).
fn stage(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    Ok(tmp)
}

/// Makes staged checkpoints durable: sync the filesystem, rename each into place, sync
/// again (the renames). Falls back to per-file fsyncs when syncfs fails.
fn commit(pending: &mut Vec<Staged>, done: &mut Vec<((String, String), u64)>) {
    if pending.is_empty() {
        return;
    }
    let sync = |dir: &Path| -> io::Result<()> {
        let f = File::open(dir)?;
        nix::unistd::syncfs(&f).map_err(io::Error::from)
    };
    let dir = pending.iter().find_map(|s| {
        s.tmp
            .as_ref()
            .ok()
            .and_then(|t| t.parent())
            .map(Path::to_path_buf)
    });
    let synced = dir.as_deref().map(sync);
    let mut acks = Vec::new();
    for s in pending.drain(..) {
        let res = s.tmp.and_then(|tmp| {
            if !matches!(synced, Some(Ok(()))) {
                File::open(&tmp)?.sync_all()?;
            }
            fs::rename(&tmp, &s.path)?;
            if !matches!(synced, Some(Ok(()))) {
                File::open(s.path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
            }
            Ok(())
        });
        if let Err(e) = &res {
            tracing::error!(path = %s.path.display(), error = %e, "checkpoint write failed");
        }
        if let Some(ack) = s.ack {
            acks.push((ack, res));
        }
        done.push((s.key, s.seq));
    }
    let mut failed = None;
    if let (Some(dir), Some(Ok(()))) = (dir, synced) {
        if let Err(e) = sync(&dir) {
            tracing::error!(error = %e, "checkpoint sync failed");
            failed = Some(e);
        }
    }
    // Only now is everything on disk: the acks let tasks start.
    for (ack, res) in acks {
        let res = match (&failed, res) {
            (Some(e), Ok(())) => Err(io::Error::new(e.kind(), e.to_string())),
            (_, r) => r,
        };
        let _ = ack.send(res);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brim_proto::v1::TaskStatus;

    fn record() -> TaskRecord {
        TaskRecord {
            framework: String::new(),
            task: String::new(),
            framework_id: "fw".into(),
            container_id: "c".into(),
            sandbox: PathBuf::from("/w/s"),
            state: 3,
            message: "m".into(),
            exit_code: None,
            supervisor: Some(SupervisorRef {
                pid: 42,
                start_time: 7,
            }),
            kill_grace_seconds: None,
            started_time: 1.0,
            updated_time: 2.0,
            updates: vec![to_hex(&TaskStatus {
                task_id: "t".into(),
                ..Default::default()
            })],
        }
    }

    #[test]
    fn crc_matches_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trips_and_detects_corruption() {
        let r = record();
        let bytes = encode(&r);
        assert_eq!(decode::<TaskRecord>(&bytes).expect("decode"), r);
        let s: TaskStatus = from_hex(&r.updates[0]).expect("hex");
        assert_eq!(s.task_id, "t");
        let check = |bytes: &[u8], why: &str| {
            let e = decode::<TaskRecord>(bytes).expect_err("must fail");
            assert!(e.contains(why), "{e} does not mention {why}");
        };
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        check(&flipped, "checksum");
        check(&bytes[..bytes.len() - 3], "truncated");
        check(b"garbage", "no header");
        check(b"hello\n{}", "unknown header");
        check(b"", "no header");
    }

    #[test]
    fn load_moves_corrupt_files_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Layout::new(dir.path());
        write_atomic(&l.task("fw", "good"), &encode(&record())).expect("write");
        write_atomic(&l.task("fw", "bad"), b"brim-checkpoint 1 00000000 2\n{}").expect("write");
        let (records, errors) = l.load_tasks();
        assert_eq!(records.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("checksum"), "{}", errors[0]);
        assert!(dir.path().join("meta/tasks/fw/bad.ckpt.corrupt").exists());
        let (records, errors) = l.load_tasks();
        assert_eq!((records.len(), errors.len()), (1, 0));
    }

    #[tokio::test]
    async fn writer_group_commits_a_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Layout::new(dir.path());
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Writer::start(move |done| {
            let _ = tx.send(done);
        });
        let mut acks = Vec::new();
        for i in 0..50 {
            let (ack, wait) = tokio::sync::oneshot::channel();
            w.send(Op::Write {
                key: ("fw".into(), format!("t{i}")),
                seq: 1,
                path: l.task("fw", &format!("t{i}")),
                bytes: encode(&record()),
                done: Some(ack),
            });
            acks.push(wait);
        }
        // A newer write of t0 in the same batch wins; a removal of t1 comes after its write.
        w.send(Op::Remove {
            key: ("fw".into(), "t1".into()),
            seq: 2,
            paths: vec![l.task("fw", "t1")],
        });
        for a in acks {
            a.await.expect("ack").expect("written");
        }
        let mut durable = 0;
        while durable < 50 {
            durable += rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("durable")
                .len();
        }
        let (records, errors) = l.load_tasks();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records.len(), 49, "t1 removed, the others on disk");
        let tmp = std::fs::read_dir(l.tasks().join("fw"))
            .expect("dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
            .count();
        assert_eq!(tmp, 0, "no temp files left");
    }
}
