//! Leader publication to ZooKeeper for Mesos clients that find their master with `zk://`
//! (`--zk zk://host:port[,host:port…]/path`): the leading master holds an ephemeral
//! sequential znode `<path>/json.info_<seq>` whose data is its `MasterInfo` in Mesos JSON,
//! exactly as a Mesos master does, so pymesos, the Mesos C++ detector and other clients that
//! read the lowest `json.info_` child find brim's leader. The node goes with the session:
//! explicitly when the master stops or loses leadership, by session expiry when it dies.
//!
//! A small client of the ZooKeeper wire protocol (jute: big-endian integers, length-prefixed
//! strings and buffers, every packet framed by its length) covering what publication needs:
//! connect, create, getChildren, getData, ping, closeSession. One request in flight at a
//! time; no watches.
//!
//! Architecture Invariants:
//! - decoding never trusts a length: a frame over `MAX_FRAME` or a length past the end of
//!   its frame is an error, never an allocation or a panic (fuzzed: `fuzz_targets/zk_reply.rs`);
//! - only the leader publishes, and it stops (closing its session) before `lead` returns.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Largest frame read from a server (ZooKeeper's own `jute.maxbuffer` default is 1 MiB).
pub const MAX_FRAME: usize = 1 << 20;
/// Prefix of the znodes Mesos masters publish their `MasterInfo` JSON under.
pub const NODE_PREFIX: &str = "json.info_";

/// `zk://host:port[,host:port…]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    pub servers: Vec<String>,
    /// Absolute, no trailing `/` (e.g. `/mesos`).
    pub path: String,
}

/// What went wrong talking to ZooKeeper.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZkError {
    #[error("`{url}` is not a ZooKeeper URL: {why} (expected zk://host:port[,host:port]/path)")]
    Url { url: String, why: &'static str },
    #[error("ZooKeeper frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")]
    FrameTooLarge { len: i64 },
    #[error("truncated ZooKeeper reply: {0}")]
    Truncated(&'static str),
    #[error("ZooKeeper answered xid {got}, expected {want}")]
    Xid { want: i32, got: i32 },
    #[error("ZooKeeper error {code} ({name}) on {op}")]
    Server {
        code: i32,
        name: &'static str,
        op: &'static str,
    },
    #[error("ZooKeeper session not established (the server refused it or expired it)")]
    NoSession,
    #[error("ZooKeeper at {servers}: {why}; check --zk and that ZooKeeper is running")]
    Io { servers: String, why: String },
}

impl std::str::FromStr for ZkUrl {
    type Err = ZkError;

    fn from_str(url: &str) -> Result<ZkUrl, ZkError> {
        let bad = |why| ZkError::Url {
            url: url.to_string(),
            why,
        };
        let rest = url
            .strip_prefix("zk://")
            .ok_or(bad("must start with zk://"))?;
        let (hosts, path) = rest.split_once('/').ok_or(bad("no path after the hosts"))?;
        if hosts.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let servers: Vec<String> = hosts.split(',').map(str::to_string).collect();
        for s in &servers {
            let (host, port) = s.rsplit_once(':').ok_or(bad("every host needs a :port"))?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad("every host needs a name and a port 1-65535"));
            }
        }
        let path = format!("/{}", path.trim_end_matches('/'));
        if path == "/" || path.contains("//") || path.split('/').any(|p| p == "." || p == "..") {
            return Err(bad("the path must name a znode, e.g. /mesos"));
        }
        Ok(ZkUrl { servers, path })
    }
}

/// ZooKeeper's name for an error code.
fn error_name(code: i32) -> &'static str {
    match code {
        -4 => "ConnectionLoss",
        -8 => "BadArguments",
        -101 => "NoNode",
        -102 => "NoAuth",
        -108 => "NoChildrenForEphemerals",
        -110 => "NodeExists",
        -112 => "SessionExpired",
        _ => "other",
    }
}

/// Operation codes.
pub mod op {
    pub const CREATE: i32 = 1;
    pub const GET_DATA: i32 = 4;
    pub const GET_CHILDREN: i32 = 8;
    pub const PING: i32 = 11;
    pub const CLOSE: i32 = -11;
}

/// Znode creation flags.
pub const EPHEMERAL: i32 = 1;
pub const SEQUENTIAL: i32 = 2;
const NODE_EXISTS: i32 = -110;
const PING_XID: i32 = -2;
const WATCH_XID: i32 = -1;

// ------------------------------------------------------------------------- jute encoding

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_i32(out, i32::try_from(b.len()).unwrap_or(i32::MAX));
    out.extend_from_slice(b);
}

/// A frame: the body prefixed with its length.
fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    put_bytes(&mut out, &body);
    out
}

/// ConnectRequest: protocol 0, no zxid seen, the session timeout, a new session.
pub fn connect_request(timeout: Duration) -> Vec<u8> {
    let mut b = Vec::with_capacity(44);
    put_i32(&mut b, 0);
    put_i64(&mut b, 0);
    put_i32(
        &mut b,
        i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
    );
    put_i64(&mut b, 0);
    put_bytes(&mut b, &[0; 16]);
    b.push(0); // not read-only
    frame(b)
}

/// A request: header (xid, op) and body.
pub fn request(xid: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 8);
    put_i32(&mut b, xid);
    put_i32(&mut b, op);
    b.extend_from_slice(body);
    frame(b)
}

/// Create body: path, data, ACL world:anyone with all permissions, flags.
pub fn create_body(path: &str, data: &[u8], flags: i32) -> Vec<u8> {
    let mut b = Vec::new();
    put_bytes(&mut b, path.as_bytes());
    put_bytes(&mut b, data);
    put_i32(&mut b, 1);
    put_i32(&mut b, 31); // READ|WRITE|CREATE|DELETE|ADMIN
    put_bytes(&mut b, b"world");
    put_bytes(&mut b, b"anyone");
    put_i32(&mut b, flags);
    b
}

/// getChildren / getData body: path, no watch.
pub fn path_body(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    put_bytes(&mut b, path.as_bytes());
    b.push(0);
    b
}

// ------------------------------------------------------------------------- jute decoding

/// A bounded reader over one frame.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ZkError> {
        if self.buf.len() < n {
            return Err(ZkError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, ZkError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, ZkError> {
        let hi = i64::from(self.i32(what)?);
        let lo = i64::from(self.i32(what)? as u32);
        Ok((hi << 32) | lo)
    }

    /// A length-prefixed buffer; -1 is an absent buffer (empty).
    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], ZkError> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(&[]);
        }
        self.take(len as usize, what)
    }

    fn string(&mut self, what: &'static str) -> Result<String, ZkError> {
        Ok(String::from_utf8_lossy(self.bytes(what)?).into_owned())
    }
}

/// The frame length announced by a 4-byte prefix, checked against [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, ZkError> {
    let len = i32::from_be_bytes(prefix);
    if len < 0 || len as usize > MAX_FRAME {
        return Err(ZkError::FrameTooLarge { len: len.into() });
    }
    Ok(len as usize)
}

/// ConnectResponse → (negotiated timeout, session id); a zero timeout means refused/expired.
pub fn parse_connect_response(frame: &[u8]) -> Result<(Duration, i64), ZkError> {
    let mut r = Reader { buf: frame };
    let _protocol = r.i32("protocol version")?;
    let timeout = r.i32("session timeout")?;
    let session = r.i64("session id")?;
    let _passwd = r.bytes("session password")?;
    if timeout <= 0 {
        return Err(ZkError::NoSession);
    }
    Ok((Duration::from_millis(timeout as u64), session))
}

/// A reply: (xid, error code, body).
pub fn parse_reply(frame: &[u8]) -> Result<(i32, i32, &[u8]), ZkError> {
    let mut r = Reader { buf: frame };
    let xid = r.i32("reply xid")?;
    let _zxid = r.i64("reply zxid")?;
    let err = r.i32("reply error")?;
    Ok((xid, err, r.buf))
}

/// Body of a create reply: the created path.
pub fn parse_created(body: &[u8]) -> Result<String, ZkError> {
    Reader { buf: body }.string("created path")
}

/// Body of a getChildren reply: the child names.
pub fn parse_children(body: &[u8]) -> Result<Vec<String>, ZkError> {
    let mut r = Reader { buf: body };
    let n = r.i32("children count")?;
    // Each name takes at least its 4-byte length: a count past that is a lie.
    if n < 0 || n as usize > body.len() / 4 {
        return Err(ZkError::Truncated("children"));
    }
    (0..n).map(|_| r.string("child name")).collect()
}

/// Body of a getData reply: the data (the Stat after it is not needed).
pub fn parse_data(body: &[u8]) -> Result<Vec<u8>, ZkError> {
    Ok(Reader { buf: body }.bytes("node data")?.to_vec())
}

/// Fuzzing entry point (`fuzz/fuzz_targets/zk_reply.rs`): every decoder on `bytes`. Not an API.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8]) {
    if let Some(prefix) = bytes.first_chunk::<4>() {
        let _ = frame_len(*prefix);
    }
    let _ = parse_connect_response(bytes);
    if let Ok((_, _, body)) = parse_reply(bytes) {
        let _ = parse_created(body);
        let _ = parse_children(body);
        let _ = parse_data(body);
    }
}

// ------------------------------------------------------------------------- MasterInfo

/// The leader's `MasterInfo` as Mesos masters write it to ZooKeeper: `id`, `ip` (Mesos's
/// integer), `port`, `hostname`, `pid` `master@ip:port`, `address` and `version`.
pub fn master_info(master_id: &str, advertise: &str) -> Value {
    let mut info = crate::mesos::json::master_info(master_id, advertise);
    if let Some(m) = info.as_object_mut() {
        m.insert("pid".into(), Value::String(format!("master@{advertise}")));
    }
    info
}

/// The current leader's `MasterInfo` from a list of children and their data, the way Mesos
/// detectors choose: the `json.info_` child with the lowest sequence number.
pub fn leader_child(children: &[String]) -> Option<&String> {
    children
        .iter()
        .filter(|c| c.starts_with(NODE_PREFIX))
        .min_by_key(|c| c[NODE_PREFIX.len()..].parse::<u64>().unwrap_or(u64::MAX))
}

// ------------------------------------------------------------------------- session

/// One ZooKeeper session over one TCP connection.
pub struct Session {
    stream: TcpStream,
    xid: i32,
    /// Negotiated session timeout.
    pub timeout: Duration,
    servers: String,
}

impl Session {
    /// Connects to the first server of `url` that answers and opens a new session.
    pub async fn connect(url: &ZkUrl, timeout: Duration) -> Result<Session, ZkError> {
        let servers = url.servers.join(",");
        let io = |why: String| ZkError::Io {
            servers: servers.clone(),
            why,
        };
        let mut last = io("no servers".into());
        for s in &url.servers {
            let stream =
                match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(s)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        last = io(format!("{s}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        last = io(format!("{s}: connect timed out"));
                        continue;
                    }
                };
            let mut session = Session {
                stream,
                xid: 0,
                timeout,
                servers: servers.clone(),
            };
            session.send(&connect_request(timeout)).await?;
            let reply = session.read_frame().await?;
            let (negotiated, _id) = parse_connect_response(&reply)?;
            session.timeout = negotiated;
            return Ok(session);
        }
        Err(last)
    }

    fn io(&self, why: impl std::fmt::Display) -> ZkError {
        ZkError::Io {
            servers: self.servers.clone(),
            why: why.to_string(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ZkError> {
        self.stream.write_all(bytes).await.map_err(|e| self.io(e))
    }

    /// Reads one frame, waiting at most the session timeout.
    async fn read_frame(&mut self) -> Result<Vec<u8>, ZkError> {
        let deadline = self.timeout.max(Duration::from_secs(1));
        let read = async {
            let mut prefix = [0u8; 4];
            self.stream.read_exact(&mut prefix).await?;
            let len = frame_len(prefix).map_err(std::io::Error::other)?;
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        match tokio::time::timeout(deadline, read).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(e)) => Err(self.io(e)),
            Err(_) => Err(self.io("no reply within the session timeout")),
        }
    }

    /// Sends a request and returns the body of its reply (skipping watch events).
    async fn call(&mut self, op: i32, name: &'static str, body: &[u8]) -> Result<Vec<u8>, ZkError> {
        let xid = if op == op::PING {
            PING_XID
        } else {
            self.xid = self.xid.wrapping_add(1).max(1);
            self.xid
        };
        self.send(&request(xid, op, body)).await?;
        loop {
            let frame = self.read_frame().await?;
            let (got, err, body) = parse_reply(&frame)?;
            if got == WATCH_XID {
                continue;
            }
            if got != xid {
                return Err(ZkError::Xid { want: xid, got });
            }
            if err != 0 {
                return Err(ZkError::Server {
                    code: err,
                    name: error_name(err),
                    op: name,
                });
            }
            return Ok(body.to_vec());
        }
    }

    /// Creates a znode; returns its path (with the sequence number when `SEQUENTIAL`).
    pub async fn create(&mut self, path: &str, data: &[u8], flags: i32) -> Result<String, ZkError> {
        let body = self
            .call(op::CREATE, "create", &create_body(path, data, flags))
            .await?;
        parse_created(&body)
    }

    /// Creates `path` and its parents as persistent znodes where missing.
    pub async fn ensure_path(&mut self, path: &str) -> Result<(), ZkError> {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            match self.create(&prefix, &[], 0).await {
                Ok(_)
                | Err(ZkError::Server {
                    code: NODE_EXISTS, ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn children(&mut self, path: &str) -> Result<Vec<String>, ZkError> {
        let body = self
            .call(op::GET_CHILDREN, "getChildren", &path_body(path))
            .await?;
        parse_children(&body)
    }

    pub async fn data(&mut self, path: &str) -> Result<Vec<u8>, ZkError> {
        let body = self.call(op::GET_DATA, "getData", &path_body(path)).await?;
        parse_data(&body)
    }

    pub async fn ping(&mut self) -> Result<(), ZkError> {
        self.call(op::PING, "ping", &[]).await.map(|_| ())
    }

    /// Ends the session: its ephemeral znodes go at once.
    pub async fn close(mut self) -> Result<(), ZkError> {
        self.call(op::CLOSE, "closeSession", &[]).await.map(|_| ())
    }
}

/// Resolves once `stop` is true (or its sender is gone), holding no borrow across awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Publishes `info` as the leader under `url.path` until `stop` turns true, then closes the
/// session (removing the node). A lost session is replaced by a new one with a new node.
pub async fn publish(url: ZkUrl, info: Value, mut stop: watch::Receiver<bool>) {
    let data = info.to_string().into_bytes();
    let node = format!("{}/{NODE_PREFIX}", url.path);
    let mut backoff = Duration::from_millis(250);
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = async {
            let mut s = Session::connect(&url, Duration::from_secs(4)).await?;
            s.ensure_path(&url.path).await?;
            let created = s.create(&node, &data, EPHEMERAL | SEQUENTIAL).await?;
            Ok::<_, ZkError>((s, created))
        };
        let attempt = tokio::select! {
            r = attempt => r,
            _ = stopped(&mut stop) => return,
        };
        let (mut session, created) = match attempt {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!("ZooKeeper leader publication failed: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        tracing::info!(znode = %created, "leader published to ZooKeeper for Mesos clients");
        let every = session.timeout / 3;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {
                    if let Err(e) = session.ping().await {
                        tracing::warn!("ZooKeeper session lost ({e}); publishing again");
                        break;
                    }
                }
                _ = stopped(&mut stop) => {
                    match session.close().await {
                        Ok(()) => tracing::info!(znode = %created, "leader unpublished from ZooKeeper"),
                        Err(e) => tracing::warn!("closing the ZooKeeper session: {e}; the node goes when it expires"),
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: ZkUrl = "zk://a:2181,b:2182/mesos/".parse().expect("url");
        assert_eq!(u.servers, vec!["a:2181", "b:2182"]);
        assert_eq!(u.path, "/mesos");
        let deep: ZkUrl = "zk://127.0.0.1:2181/a/b".parse().expect("url");
        assert_eq!(deep.path, "/a/b");
        for bad in [
            "http://a:1/m",
            "zk://a:1",
            "zk://a/m",
            "zk://a:0/m",
            "zk://:1/m",
            "zk://u:p@a:1/m",
            "zk://a:1/",
            "zk://a:1/x//y",
            "zk://a:1/x/../y",
        ] {
            assert!(bad.parse::<ZkUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_like_jute() {
        let c = create_body("/m/json.info_", b"{}", EPHEMERAL | SEQUENTIAL);
        let mut want = Vec::new();
        want.extend_from_slice(&13i32.to_be_bytes());
        want.extend_from_slice(b"/m/json.info_");
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(b"{}");
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&31i32.to_be_bytes());
        want.extend_from_slice(&5i32.to_be_bytes());
        want.extend_from_slice(b"world");
        want.extend_from_slice(&6i32.to_be_bytes());
        want.extend_from_slice(b"anyone");
        want.extend_from_slice(&3i32.to_be_bytes());
        assert_eq!(c, want);
        let r = request(7, op::CREATE, &[9]);
        assert_eq!(r, [0, 0, 0, 9, 0, 0, 0, 7, 0, 0, 0, 1, 9]);
        let conn = connect_request(Duration::from_secs(4));
        assert_eq!(
            frame_len([conn[0], conn[1], conn[2], conn[3]]),
            Ok(conn.len() - 4)
        );
    }

    #[test]
    fn decodes_replies_and_refuses_lying_lengths() {
        let mut frame = Vec::new();
        put_i32(&mut frame, 3);
        put_i64(&mut frame, 99);
        put_i32(&mut frame, 0);
        put_i32(&mut frame, 2);
        put_bytes(&mut frame, b"json.info_0000000001");
        put_bytes(&mut frame, b"log_replicas");
        let (xid, err, body) = parse_reply(&frame).expect("reply");
        assert_eq!((xid, err), (3, 0));
        let children = parse_children(body).expect("children");
        assert_eq!(children, vec!["json.info_0000000001", "log_replicas"]);
        // A count or length past the end is an error, not an allocation.
        assert!(parse_children(&[0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_data(&[0, 0, 0, 9, 1]).is_err());
        assert!(parse_reply(&[0, 0]).is_err());
        assert_eq!(
            frame_len([0x7f, 0, 0, 0]),
            Err(ZkError::FrameTooLarge { len: 0x7f00_0000 })
        );
        assert!(frame_len([0xff, 0xff, 0xff, 0xff]).is_err());
        let mut refused = Vec::new();
        put_i32(&mut refused, 0);
        put_i32(&mut refused, 0);
        put_i64(&mut refused, 0);
        put_bytes(&mut refused, &[0; 16]);
        assert_eq!(parse_connect_response(&refused), Err(ZkError::NoSession));
    }

    /// The committed seeds of the `zk_reply` fuzz target are valid replies.
    #[test]
    fn fuzz_seeds_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/zk_reply");
        let seed =
            |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            parse_connect_response(&seed("seed-connect")),
            Ok((Duration::from_secs(4), 0x1234))
        );
        let created = seed("seed-created");
        let (_, err, body) = parse_reply(&created).expect("reply");
        assert_eq!(err, 0);
        assert_eq!(
            parse_created(body).as_deref(),
            Ok("/mesos/json.info_0000000000")
        );
        let children = seed("seed-children");
        let (_, _, body) = parse_reply(&children).expect("reply");
        assert_eq!(parse_children(body).map(|c| c.len()), Ok(2));
        let data = seed("seed-data");
        let (_, _, body) = parse_reply(&data).expect("reply");
        assert!(parse_data(body).is_ok_and(|d| d.starts_with(b"{\"pid\"")));
        let exists = seed("seed-nodeexists");
        assert_eq!(parse_reply(&exists).map(|(_, e, _)| e), Ok(NODE_EXISTS));
    }

    #[test]
    fn leader_is_the_lowest_sequence() {
        let kids: Vec<String> = [
            "json.info_0000000012",
            "log_replicas",
            "json.info_0000000003",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(
            leader_child(&kids).map(String::as_str),
            Some("json.info_0000000003")
        );
        assert_eq!(leader_child(&["log_replicas".to_string()]), None);
    }

    #[test]
    fn master_info_has_the_mesos_shape() {
        let m = master_info("m1", "127.0.0.1:5050");
        assert_eq!(m["pid"], "master@127.0.0.1:5050");
        assert_eq!(m["ip"], 16_777_343u32);
        assert_eq!(m["port"], 5050);
        assert_eq!(m["address"]["ip"], "127.0.0.1");
        assert_eq!(m["hostname"], "127.0.0.1");
        assert_eq!(m["id"], "m1");
        assert!(m["version"].is_string());
    }
}
