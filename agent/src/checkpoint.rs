//! Checkpoints: what the agent must remember across a crash, on disk under
//! `<work_dir>/meta/`:
//!
//! - `resources`: the resources the agent registered with (a different set → new agent);
//! - `tasks/<framework>/<task>.ckpt`: one [`TaskRecord`] per task not yet forgotten: its
//!   infos, state, supervisor and not-yet-acknowledged status updates;
//! - `containers/<container-id>/exit`: written by the task's supervisor (see `supervisor`).
//!
//! - `journal/<generation>.log`: the writer's group commit (see below).
//!
//! A single writer thread does the I/O. Each batch of changes is appended to the journal
//! and made durable with one fdatasync (group commit: one sync per batch however many
//! tasks it holds); the task files are then replaced (temp file + rename) without syncing.
//! A full journal is retired by a compactor thread once a sync of the filesystem made the
//! files it describes durable; after a crash [`Layout::replay_journal`] re-applies what is
//! left. Records and journal frames carry a CRC32 so a torn or corrupted file is detected.
//! The agent waits for durability where recovery depends on it: the supervisor record before
//! the task starts, terminal updates before they are sent (see `agent`).

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
    /// The writer's journal: task file changes not yet known to be synced.
    pub fn journal(&self) -> PathBuf {
        self.meta.join("journal")
    }

    /// Applies the journals a crash left behind to the task files, syncs them and deletes
    /// the journals. A torn or corrupt frame ends its journal (the agent died writing it:
    /// nothing after it was acknowledged) and is reported.
    pub fn replay_journal(&self) -> Vec<CheckpointError> {
        let mut errors = Vec::new();
        let files = journal_files(&self.journal());
        if files.is_empty() {
            return errors;
        }
        let mut applied = 0;
        for (_, path) in &files {
            let bytes = match fs::read(path) {
                Ok(b) => b,
                Err(source) => {
                    errors.push(CheckpointError::Io {
                        path: path.clone(),
                        source,
                    });
                    continue;
                }
            };
            let (entries, torn) = read_frames(&bytes);
            if let Some(why) = torn {
                tracing::warn!(journal = %path.display(), %why, "checkpoint journal ends in an incomplete write; ignoring its tail");
            }
            for e in &entries {
                if let Err(source) = apply(e) {
                    errors.push(CheckpointError::Io {
                        path: path.clone(),
                        source,
                    });
                }
                applied += 1;
            }
        }
        tracing::info!(
            journals = files.len(),
            entries = applied,
            "replayed checkpoint journal"
        );
        for (_, path) in &files {
            retire(path);
        }
        errors
    }

    /// Every task record (after replaying the journal); unreadable or corrupt ones are
    /// moved aside and reported.
    pub fn load_tasks(&self) -> (Vec<TaskRecord>, Vec<CheckpointError>) {
        let mut records = Vec::new();
        let mut errors = self.replay_journal();
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
        let _ = fs::remove_dir_all(self.journal());
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
    /// Answered once everything sent before it is in the task files too (not only in the
    /// journal).
    Barrier(mpsc::Sender<()>),
}

/// Handle to the writer thread.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// Starts the writer thread, journaling into `journal` (see [`Layout::journal`]; `None`:
    /// every file is fsynced on its own); `durable` is called with `(key, seq)` of each write
    /// done.
    pub fn start(
        journal: Option<PathBuf>,
        durable: impl Fn(Vec<((String, String), u64)>) + Send + 'static,
    ) -> Writer {
        let (tx, rx) = mpsc::channel::<Op>();
        let spawned = std::thread::Builder::new()
            .name("brim-checkpoint".into())
            .spawn(move || writer_loop(rx, journal, durable));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the checkpoint writer; checkpoints are off");
        }
        Writer { tx }
    }

    pub fn send(&self, op: Op) {
        let _ = self.tx.send(op);
    }
}

/// One journaled change: a task file's new content, or paths removed.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    Write { path: PathBuf, text: String },
    Remove { paths: Vec<PathBuf> },
}

/// Journal files roll over to the next generation past this size; the old one is deleted
/// once the files it describes are synced (by the compactor thread).
const JOURNAL_LIMIT: u64 = 8 << 20;

/// The append-only journal of the writer thread (`meta/journal/<generation>.log`).
struct Journal {
    dir: PathBuf,
    file: Option<(u64, File)>,
    size: u64,
    compactor: Option<mpsc::Sender<PathBuf>>,
}

impl Journal {
    fn new(dir: PathBuf) -> Self {
        Journal {
            dir,
            file: None,
            size: 0,
            compactor: None,
        }
    }

    /// Appends `frames` and makes them durable with one fdatasync.
    fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            fs::create_dir_all(&self.dir)?;
            // Past every generation on disk, even ones recovery has not replayed yet.
            let gen = journal_files(&self.dir).last().map_or(1, |(g, _)| g + 1);
            let f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(journal_path(&self.dir, gen))?;
            File::open(&self.dir)?.sync_all()?;
            self.file = Some((gen, f));
            self.size = 0;
        }
        let Some((_, f)) = self.file.as_mut() else {
            return Err(io::Error::other("journal not open"));
        };
        f.write_all(frames)?;
        f.sync_data()?;
        self.size += frames.len() as u64;
        Ok(())
    }

    fn full(&self) -> bool {
        self.size >= JOURNAL_LIMIT
    }

    /// Starts the next generation when this one is full; the compactor retires the old one.
    /// The task files must be up to date first (see `flush`).
    fn maybe_roll(&mut self) {
        if !self.full() {
            return;
        }
        let Some((gen, f)) = self.file.take() else {
            return;
        };
        drop(f);
        let old = journal_path(&self.dir, gen);
        if self.compactor.is_none() {
            let (tx, rx) = mpsc::channel::<PathBuf>();
            let spawned = std::thread::Builder::new()
                .name("brim-ckpt-compact".into())
                .spawn(move || {
                    while let Ok(path) = rx.recv() {
                        retire(&path);
                    }
                });
            if spawned.is_ok() {
                self.compactor = Some(tx);
            }
        }
        match &self.compactor {
            Some(tx) => {
                let _ = tx.send(old);
            }
            None => retire(&old),
        }
    }
}

fn journal_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("{gen:020}.log"))
}

/// Journal files in `dir`, oldest generation first.
fn journal_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let gen = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
            Some((gen, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Syncs the filesystem (every file a journal describes is on disk afterwards), then deletes
/// the journal.
fn retire(journal: &Path) {
    let dir = journal.parent().unwrap_or(Path::new("."));
    let synced = File::open(dir).and_then(|f| nix::unistd::syncfs(&f).map_err(io::Error::from));
    if let Err(e) = synced {
        tracing::warn!(journal = %journal.display(), error = %e, "cannot sync checkpoints; the journal is kept");
        return;
    }
    if let Err(e) = fs::remove_file(journal) {
        tracing::warn!(journal = %journal.display(), error = %e, "cannot delete a retired journal");
    }
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// Frames of a journal: `encode`d entries back to back. Stops at the first torn or corrupt
/// frame (the tail of a write the agent died in); returns the entries before it and why.
fn read_frames(bytes: &[u8]) -> (Vec<Entry>, Option<String>) {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return (out, Some("torn header at the end".into()));
        };
        let len = std::str::from_utf8(&rest[..nl])
            .ok()
            .and_then(|h| h.split_whitespace().nth(3))
            .and_then(|l| l.parse::<usize>().ok());
        let Some(len) = len.filter(|&l| nl + 1 + l <= rest.len()) else {
            return (out, Some("torn frame at the end".into()));
        };
        let (frame, tail) = rest.split_at(nl + 1 + len);
        match decode::<Entry>(frame) {
            Ok(e) => out.push(e),
            Err(why) => return (out, Some(why)),
        }
        rest = tail;
    }
    (out, None)
}

/// Applies a journal entry to the task files (not synced: the journal is the durable copy).
fn apply(entry: &Entry) -> io::Result<()> {
    match entry {
        Entry::Write { path, text } => {
            let tmp = stage(path, text.as_bytes())?;
            fs::rename(&tmp, path)
        }
        Entry::Remove { paths } => {
            for p in paths {
                let r = if p.is_dir() {
                    fs::remove_dir_all(p)
                } else {
                    fs::remove_file(p)
                };
                match r {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

fn writer_loop(
    rx: mpsc::Receiver<Op>,
    journal_dir: Option<PathBuf>,
    durable: impl Fn(Vec<((String, String), u64)>),
) {
    let mut written: HashMap<(String, String), u64> = HashMap::new();
    let mut journal = journal_dir.map(Journal::new);
    let mut dirty: HashMap<PathBuf, String> = HashMap::new();
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
                Op::Barrier(_) => continue,
            };
            let e = newest.entry(key.clone()).or_insert(seq);
            *e = (*e).max(seq);
        }
        let mut done = Vec::new();
        let mut acks = Vec::new();
        let mut entries = Vec::new();
        let mut barriers = Vec::new();
        for op in batch {
            match op {
                Op::Barrier(tx) => barriers.push(tx),
                Op::Write {
                    key,
                    seq,
                    path,
                    bytes,
                    done: ack,
                } => {
                    done.push((key.clone(), seq));
                    let stale = newest.get(&key).is_some_and(|&n| n > seq)
                        || written.get(&key).is_some_and(|&w| w >= seq);
                    if let Some(ack) = ack {
                        acks.push(ack);
                    }
                    if stale {
                        continue;
                    }
                    written.insert(key, seq);
                    let text = String::from_utf8(bytes)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    entries.push(Entry::Write { path, text });
                }
                Op::Remove { key, seq, paths } => {
                    if written.get(&key).is_some_and(|&w| w > seq) {
                        continue;
                    }
                    written.remove(&key);
                    entries.push(Entry::Remove { paths });
                }
            }
        }
        // Group commit: the whole batch is one append and one fdatasync of the journal;
        // the task files are then updated without syncing (the journal is replayed after a
        // crash). Without a journal, every file is written with its own fsyncs.
        let frames: Vec<u8> = entries.iter().flat_map(encode).collect();
        let journaled = match journal.as_mut() {
            Some(j) if !entries.is_empty() => j.append(&frames).map_err(|e| {
                tracing::error!(error = %e, "checkpoint journal write failed; writing files one by one");
            }),
            _ => Err(()),
        };
        let mut failed: Option<io::Error> = None;
        if journaled.is_err() {
            for e in &entries {
                let r = match e {
                    Entry::Write { path, text } => write_atomic(path, text.as_bytes()),
                    Entry::Remove { .. } => apply(e),
                };
                if let Err(err) = r {
                    tracing::error!(entry = ?entry_path(e), error = %err, "checkpoint write failed");
                    failed = Some(err);
                }
            }
        }
        // Durable now: the acks let tasks start (journaled entries reach their files below,
        // off the launch path).
        for ack in acks {
            let _ = ack.send(match &failed {
                Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
                None => Ok(()),
            });
        }
        if !done.is_empty() {
            durable(done);
        }
        if journaled.is_ok() {
            // Task files are only read after a crash, when the journal is replayed over
            // them: their writes wait (coalesced per task) until the journal rolls over; a
            // task forgotten before that never gets a file at all.
            for e in entries {
                match e {
                    Entry::Write { path, text } => {
                        dirty.insert(path, text);
                    }
                    Entry::Remove { paths } => {
                        for p in &paths {
                            dirty.retain(|d, _| !d.starts_with(p));
                        }
                        if let Err(err) = apply(&Entry::Remove { paths }) {
                            tracing::error!(error = %err, "checkpoint removal failed");
                        }
                    }
                }
            }
        }
        if let Some(j) = journal.as_mut() {
            if j.full() || !barriers.is_empty() {
                flush(&mut dirty);
            }
            j.maybe_roll();
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
    flush(&mut dirty);
}

/// Writes the task files whose changes are only in the journal so far.
fn flush(dirty: &mut HashMap<PathBuf, String>) {
    for (path, text) in dirty.drain() {
        let r = stage(&path, text.as_bytes()).and_then(|tmp| fs::rename(&tmp, &path));
        if let Err(e) = r {
            tracing::error!(path = %path.display(), error = %e, "checkpoint file update failed (the journal has it)");
        }
    }
}

fn entry_path(e: &Entry) -> String {
    match e {
        Entry::Write { path, .. } => path.display().to_string(),
        Entry::Remove { paths } => format!("{paths:?}"),
    }
}

/// Writes `bytes` to `path`'s temp file (not synced).
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
        let w = Writer::start(Some(l.journal()), move |done| {
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
        let (tx, idle) = std::sync::mpsc::channel();
        w.send(Op::Barrier(tx));
        idle.recv().expect("barrier");
        let journals = journal_files(&l.journal());
        assert_eq!(journals.len(), 1, "one journal generation");
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

    #[test]
    fn replays_the_journal_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Layout::new(dir.path());
        // The previous agent: t1 and t2 journaled, t1 removed again, t3's frame torn — and
        // it died before any task file was written.
        write_atomic(&l.task("fw", "t1"), &encode(&record())).expect("old t1");
        let mut newer = record();
        newer.state = 4;
        let entries = [
            Entry::Write {
                path: l.task("fw", "t2"),
                text: String::from_utf8(encode(&newer)).expect("utf8"),
            },
            Entry::Remove {
                paths: vec![l.task("fw", "t1")],
            },
        ];
        let mut frames: Vec<u8> = entries.iter().flat_map(encode).collect();
        let torn = encode(&Entry::Write {
            path: l.task("fw", "t3"),
            text: String::from_utf8(encode(&newer)).expect("utf8"),
        });
        frames.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::create_dir_all(l.journal()).expect("dir");
        std::fs::write(journal_path(&l.journal(), 7), &frames).expect("journal");

        let (records, errors) = l.load_tasks();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].state, 4);
        assert!(l.task("fw", "t2").exists());
        assert!(!l.task("fw", "t1").exists());
        assert!(!l.task("fw", "t3").exists(), "a torn frame is not applied");
        assert!(
            journal_files(&l.journal()).is_empty(),
            "replayed journals are retired"
        );

        // A new writer starts a later generation and its files are readable at once.
        let w = Writer::start(Some(l.journal()), |_| {});
        let (ack, wait) = tokio::sync::oneshot::channel();
        w.send(Op::Write {
            key: ("fw".into(), "t4".into()),
            seq: 1,
            path: l.task("fw", "t4"),
            bytes: encode(&record()),
            done: Some(ack),
        });
        wait.blocking_recv().expect("ack").expect("written");
        let gens: Vec<u64> = journal_files(&l.journal())
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        assert_eq!(gens, vec![1]);
        // Durable in the journal; the task file itself is written lazily.
        assert!(!l.task("fw", "t4").exists());
        let (tx, idle) = std::sync::mpsc::channel();
        w.send(Op::Barrier(tx));
        idle.recv().expect("barrier");
        assert!(l.task("fw", "t4").exists());
    }

    #[test]
    fn reads_frames_up_to_corruption() {
        let e = Entry::Remove {
            paths: vec![PathBuf::from("/x")],
        };
        let mut bytes = encode(&e);
        bytes.extend(encode(&e));
        assert_eq!(read_frames(&bytes).0.len(), 2);
        let n = bytes.len();
        bytes[n - 3] ^= 0x20;
        let (entries, why) = read_frames(&bytes);
        assert_eq!(entries.len(), 1);
        assert!(why.is_some_and(|w| w.contains("checksum")));
        assert!(read_frames(b"garbage").1.is_some());
        assert!(read_frames(b"").1.is_none());
    }
}
