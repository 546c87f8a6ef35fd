//! The fetcher: puts a task's URIs into its sandbox before the command starts.
//!
//! A URI is an absolute local path (or `file://` URL) or an `http://` URL on a loopback
//! address. Downloads are bounded in size; `.tar`, `.tar.gz`/`.tgz` and `.zip` archives can be
//! extracted (entries with `..`, absolute paths or links leaving the sandbox are refused);
//! `executable` makes the file mode 0755. With `cache`, the file is kept in a size-bounded
//! cache under the work dir shared by every task (least recently used files are evicted).
//!
//! Everything here is blocking: the agent runs it on a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use brim_proto::v1::Uri;

/// Why a URI could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URI `{uri}`: {why}")]
    InvalidUri { uri: String, why: String },
    #[error("cannot fetch `{uri}`: {why}")]
    Failed { uri: String, why: String },
    #[error("`{uri}` is larger than the fetcher limit of {limit} bytes: fetch a smaller file or split it")]
    TooLarge { uri: String, limit: u64 },
    #[error("cannot extract `{uri}`: {why}")]
    Extract { uri: String, why: String },
}

/// Fetcher limits.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// Where cached files live (shared by every task).
    pub cache_dir: PathBuf,
    /// Total size the cache may hold.
    pub cache_bytes: u64,
    /// Largest single file fetched.
    pub max_bytes: u64,
    /// Connect/read timeout of an HTTP download.
    pub timeout: Duration,
}

impl FetcherConfig {
    /// Defaults under `work_dir`: a 1 GiB cache and 512 MiB per file.
    pub fn new(work_dir: &Path) -> Self {
        FetcherConfig {
            cache_dir: work_dir.join("fetcher-cache"),
            cache_bytes: 1 << 30,
            max_bytes: 512 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Where a URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local(PathBuf),
    Http {
        host: String,
        port: u16,
        path: String,
    },
}

/// Parses and checks a URI; returns its source and the file name it gets in the sandbox.
pub fn parse(uri: &Uri) -> Result<(Source, String), FetchError> {
    let bad = |why: &str| FetchError::InvalidUri {
        uri: uri.value.clone(),
        why: why.to_string(),
    };
    let v = uri.value.as_str();
    if v.is_empty() {
        return Err(bad("empty: give an absolute path or an http:// URL"));
    }
    if v.contains('\0') || v.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    let source = if let Some(rest) = v.strip_prefix("http://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| bad("unclosed `[` in host"))?;
            (h, p.strip_prefix(':').unwrap_or(""))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (authority, ""),
            }
        };
        let port: u16 = if port.is_empty() {
            80
        } else {
            port.parse()
                .map_err(|_| bad("port is not a number between 0 and 65535"))?
        };
        if host.contains('@') {
            return Err(bad("credentials in URLs are not supported"));
        }
        let loopback = host == "localhost"
            || host
                .parse::<IpAddr>()
                .is_ok_and(|ip: IpAddr| ip.is_loopback());
        if !loopback {
            return Err(bad(
                "only loopback hosts (127.0.0.1, ::1, localhost) may be fetched over http",
            ));
        }
        if path
            .split(['?', '#'])
            .next()
            .is_some_and(|p| p.contains(' '))
        {
            return Err(bad("spaces must be percent-encoded"));
        }
        Source::Http {
            host: host.to_string(),
            port,
            path: path.to_string(),
        }
    } else if let Some(rest) = v.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(bad("file:// URLs need an absolute path (file:///path)"));
        }
        Source::Local(PathBuf::from(rest))
    } else if v.starts_with('/') {
        Source::Local(PathBuf::from(v))
    } else if v.contains("://") {
        return Err(bad(
            "unsupported scheme: use an absolute path, file:// or http://",
        ));
    } else {
        return Err(bad("relative paths are not allowed: give an absolute path"));
    };
    let name = if uri.output_file.is_empty() {
        let path = match &source {
            Source::Local(p) => p.to_string_lossy().into_owned(),
            Source::Http { path, .. } => path
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        path.rsplit('/').next().unwrap_or_default().to_string()
    } else {
        uri.output_file.clone()
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(bad(
            "cannot name the file in the sandbox: set output_file to a plain file name",
        ));
    }
    if matches!(name.as_str(), "stdout" | "stderr") {
        return Err(bad(
            "output file `stdout`/`stderr` is reserved for the task's output",
        ));
    }
    Ok((source, name))
}

/// Fetches URIs into sandboxes, with the shared cache.
#[derive(Debug)]
pub struct Fetcher {
    config: FetcherConfig,
    cache: Mutex<()>,
}

impl Fetcher {
    pub fn new(config: FetcherConfig) -> Self {
        Fetcher {
            config,
            cache: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &FetcherConfig {
        &self.config
    }

    /// Fetches every URI into `sandbox` (in order); the first failure stops.
    pub fn fetch_all(&self, uris: &[Uri], sandbox: &Path) -> Result<(), FetchError> {
        for uri in uris {
            self.fetch(uri, sandbox)?;
        }
        Ok(())
    }

    /// Fetches one URI into `sandbox`; returns the fetched file's path.
    pub fn fetch(&self, uri: &Uri, sandbox: &Path) -> Result<PathBuf, FetchError> {
        let (source, name) = parse(uri)?;
        let failed = |why: String| FetchError::Failed {
            uri: uri.value.clone(),
            why,
        };
        let dest = sandbox.join(&name);
        if uri.cache {
            self.fetch_cached(uri, &source, &dest)?;
        } else {
            self.download(uri, &source, &dest)?;
        }
        if uri.executable {
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                .map_err(|e| failed(format!("cannot make {} executable: {e}", dest.display())))?;
        }
        if uri.extract {
            if let Some(kind) = archive_kind(&name) {
                extract(&dest, kind, sandbox).map_err(|why| FetchError::Extract {
                    uri: uri.value.clone(),
                    why,
                })?;
            }
        }
        Ok(dest)
    }

    /// Copies or downloads `source` to `dest`, at most `max_bytes`; no `dest` on failure.
    fn download(&self, uri: &Uri, source: &Source, dest: &Path) -> Result<(), FetchError> {
        let res = self.download_to(uri, source, dest);
        if res.is_err() {
            let _ = fs::remove_file(dest);
        }
        res
    }

    fn download_to(&self, uri: &Uri, source: &Source, dest: &Path) -> Result<(), FetchError> {
        let failed = |why: String| FetchError::Failed {
            uri: uri.value.clone(),
            why,
        };
        let limit = self.config.max_bytes;
        let too_large = || FetchError::TooLarge {
            uri: uri.value.clone(),
            limit,
        };
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(dest)
            .map_err(|e| failed(format!("cannot create {}: {e}", dest.display())))?;
        let copied = match source {
            Source::Local(path) => {
                let meta = fs::metadata(path).map_err(|e| failed(e.to_string()))?;
                if !meta.is_file() {
                    return Err(failed("not a regular file".into()));
                }
                if meta.len() > limit {
                    return Err(too_large());
                }
                let f = File::open(path).map_err(|e| failed(e.to_string()))?;
                copy_bounded(f, &mut out, limit)
            }
            Source::Http { host, port, path } => {
                let body = http_get(host, *port, path, self.config.timeout, limit).map_err(
                    |e| match e {
                        HttpError::TooLarge => too_large(),
                        HttpError::Other(why) => failed(why),
                    },
                )?;
                copy_bounded(body, &mut out, limit)
            }
        };
        match copied {
            Ok(_) => Ok(()),
            Err(CopyError::TooLarge) => {
                let _ = fs::remove_file(dest);
                Err(too_large())
            }
            Err(CopyError::Io(e)) => {
                let _ = fs::remove_file(dest);
                Err(failed(e.to_string()))
            }
        }
    }

    /// Serves `dest` from the cache, filling it first when needed, then trims the cache.
    fn fetch_cached(&self, uri: &Uri, source: &Source, dest: &Path) -> Result<(), FetchError> {
        let failed = |why: String| FetchError::Failed {
            uri: uri.value.clone(),
            why,
        };
        let _guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let dir = &self.config.cache_dir;
        fs::create_dir_all(dir).map_err(|e| failed(format!("cache dir: {e}")))?;
        let entry = dir.join(format!("{:016x}", fnv1a(uri.value.as_bytes())));
        if !entry.is_file() {
            let tmp = dir.join(format!("tmp-{}", uuid::Uuid::new_v4()));
            self.download(uri, source, &tmp)?;
            fs::rename(&tmp, &entry).map_err(|e| failed(format!("cache: {e}")))?;
        }
        fs::copy(&entry, dest).map_err(|e| failed(format!("cannot copy from the cache: {e}")))?;
        // Mark it recently used.
        let _ = File::open(&entry).and_then(|f| f.set_modified(SystemTime::now()));
        trim_cache(dir, self.config.cache_bytes);
        Ok(())
    }
}

/// Gives every file under `dir` (not following symlinks) to `uid:gid`.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if entry.file_type()?.is_dir() {
            chown_tree(&path, uid, gid)?;
        }
    }
    Ok(())
}

/// Bytes of disk a directory tree uses (allocated blocks, like `du`); unreadable parts count 0.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => m.blocks() * 512 + disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Deletes the least recently used cache files until the cache fits in `limit` bytes.
pub fn trim_cache(dir: &Path, limit: u64) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    e.path(),
                )
            })
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (_, len, path) in files {
        if total <= limit {
            break;
        }
        if fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

enum CopyError {
    TooLarge,
    Io(io::Error),
}

fn copy_bounded(mut from: impl Read, to: &mut impl Write, limit: u64) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Io(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(CopyError::TooLarge);
        }
        to.write_all(&buf[..n]).map_err(CopyError::Io)?;
    }
}

enum HttpError {
    TooLarge,
    Other(String),
}

/// A minimal HTTP/1.0 GET; returns the body reader (bounded by Content-Length if given).
fn http_get(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    limit: u64,
) -> Result<Box<dyn Read>, HttpError> {
    let other = |e: String| HttpError::Other(e);
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| other(format!("cannot resolve {host}: {e}")))?
        .find(|a| a.ip().is_loopback())
        .ok_or_else(|| other(format!("{host} does not resolve to a loopback address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| other(format!("cannot connect to {addr}: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| other(e.to_string()))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: brim-fetcher\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| other(format!("cannot send the request: {e}")))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| other(format!("cannot read the response: {e}")))?;
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| other(format!("not an HTTP response: {:?}", line.trim_end())))?;
    let mut length: Option<u64> = None;
    loop {
        let mut h = String::new();
        let n = reader
            .read_line(&mut h)
            .map_err(|e| other(format!("cannot read the response headers: {e}")))?;
        if n == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            }
        }
    }
    if code != 200 {
        return Err(other(format!(
            "server answered HTTP {code}: check the URL ({})",
            line.trim_end()
        )));
    }
    if let Some(len) = length {
        if len > limit {
            return Err(HttpError::TooLarge);
        }
        return Ok(Box::new(reader.take(len)));
    }
    Ok(Box::new(reader))
}

/// Archive formats the fetcher extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Tar,
    TarGz,
    Zip,
}

pub fn archive_kind(name: &str) -> Option<ArchiveKind> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".tar") {
        Some(ArchiveKind::Tar)
    } else if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
        Some(ArchiveKind::TarGz)
    } else if n.ends_with(".zip") {
        Some(ArchiveKind::Zip)
    } else {
        None
    }
}

/// An archive entry path that stays inside the sandbox: relative, no `..`, not empty.
pub fn safe_entry(name: &str) -> Result<PathBuf, String> {
    let p = Path::new(name);
    if name.is_empty() {
        return Err("entry with an empty name".into());
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "entry `{name}` contains `..`: refusing to extract it"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "entry `{name}` is an absolute path: refusing to extract it"
                ))
            }
        }
    }
    Ok(out)
}

/// Extracts `archive` into `into`.
pub fn extract(archive: &Path, kind: ArchiveKind, into: &Path) -> Result<(), String> {
    match kind {
        ArchiveKind::Tar => {
            let f = File::open(archive).map_err(|e| e.to_string())?;
            extract_tar(BufReader::new(f), into)
        }
        ArchiveKind::TarGz => {
            let f = File::open(archive).map_err(|e| e.to_string())?;
            let mut child = Command::new("gzip")
                .arg("-dc")
                .stdin(f)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run gzip: {e}"))?;
            let out = child.stdout.take().ok_or("gzip has no stdout")?;
            let res = extract_tar(BufReader::new(out), into);
            let st = child.wait_with_output().map_err(|e| e.to_string())?;
            res?;
            if !st.status.success() {
                return Err(format!(
                    "not a valid gzip file: {}",
                    String::from_utf8_lossy(&st.stderr).trim()
                ));
            }
            Ok(())
        }
        ArchiveKind::Zip => extract_zip(archive, into),
    }
}

fn octal(field: &[u8]) -> Result<u64, String> {
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| format!("bad number {s:?} in a tar header"))
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Extracts a (ustar/GNU) tar stream: files, directories and symlinks that stay inside.
pub fn extract_tar(mut r: impl Read, into: &Path) -> Result<(), String> {
    let mut header = [0u8; 512];
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    loop {
        if let Err(e) = r.read_exact(&mut header) {
            return if e.kind() == io::ErrorKind::UnexpectedEof {
                Err("truncated tar archive".into())
            } else {
                Err(e.to_string())
            };
        }
        if header.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let size = octal(&header[124..136])?;
        let mode = octal(&header[100..108])? as u32;
        let kind = header[156];
        let padded = size.div_ceil(512) * 512;
        let mut name = cstr(&header[0..100]);
        if &header[257..262] == b"ustar" {
            let prefix = cstr(&header[345..500]);
            if !prefix.is_empty() && header[263] == b'0' {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(n) = long_name.take() {
            name = n;
        }
        let link = long_link.take().unwrap_or_else(|| cstr(&header[157..257]));
        match kind {
            b'L' | b'K' => {
                if size > 64 * 1024 {
                    return Err("tar long name too long".into());
                }
                let mut buf = vec![0u8; padded as usize];
                r.read_exact(&mut buf).map_err(|e| e.to_string())?;
                let s = cstr(&buf[..size as usize]);
                if kind == b'L' {
                    long_name = Some(s);
                } else {
                    long_link = Some(s);
                }
                continue;
            }
            b'x' | b'g' => {
                // pax headers (paths in them are ignored: the ustar name is checked instead)
                io::copy(&mut (&mut r).take(padded), &mut io::sink()).map_err(|e| e.to_string())?;
                continue;
            }
            _ => {}
        }
        let rel = safe_entry(&name)?;
        let dest = into.join(&rel);
        if rel.as_os_str().is_empty() {
            io::copy(&mut (&mut r).take(padded), &mut io::sink()).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        ensure_inside(into, &dest)?;
        match kind {
            b'0' | 0 | b'7' => {
                let _ = fs::remove_file(&dest);
                let mut f = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&dest)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
                let copied = io::copy(&mut (&mut r).take(size), &mut f)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
                if copied != size {
                    return Err("truncated tar archive".into());
                }
                io::copy(&mut (&mut r).take(padded - size), &mut io::sink())
                    .map_err(|e| e.to_string())?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o755 | 0o600))
                    .map_err(|e| e.to_string())?;
            }
            b'5' => {
                fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
                io::copy(&mut (&mut r).take(padded), &mut io::sink())
                    .map_err(|e| e.to_string())?;
            }
            b'2' => {
                // The target is resolved relative to the link's directory.
                let base = rel.parent().unwrap_or(Path::new(""));
                let target = Path::new(&link);
                let mut depth: i32 = base.components().count() as i32;
                for c in target.components() {
                    match c {
                        Component::Normal(_) => depth += 1,
                        Component::ParentDir => depth -= 1,
                        Component::CurDir => {}
                        _ => {
                            return Err(format!(
                                "entry `{name}` links to the absolute path `{link}`: refusing to extract it"
                            ))
                        }
                    }
                    if depth < 0 {
                        return Err(format!(
                            "entry `{name}` links outside the sandbox (`{link}`): refusing to extract it"
                        ));
                    }
                }
                let _ = fs::remove_file(&dest);
                std::os::unix::fs::symlink(target, &dest)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
                io::copy(&mut (&mut r).take(padded), &mut io::sink())
                    .map_err(|e| e.to_string())?;
            }
            other => {
                return Err(format!(
                    "entry `{name}` has unsupported type {:?} (hard links and devices are not extracted)",
                    other as char
                ))
            }
        }
    }
}

/// Refuses a destination whose existing parent resolves outside `root` (through a symlink
/// extracted earlier).
fn ensure_inside(root: &Path, dest: &Path) -> Result<(), String> {
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    let parent = dest
        .parent()
        .ok_or("entry without a parent")?
        .canonicalize()
        .map_err(|e| e.to_string())?;
    if !parent.starts_with(&root) {
        return Err(format!(
            "entry `{}` resolves outside the sandbox: refusing to extract it",
            dest.display()
        ));
    }
    Ok(())
}

/// Extracts a zip with `unzip` after checking every entry name (and refusing symlinks).
fn extract_zip(archive: &Path, into: &Path) -> Result<(), String> {
    let run = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("unzip")
            .args(args)
            .arg(archive)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run unzip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "not a valid zip file: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for name in run(&["-Z1"])?.lines() {
        safe_entry(name)?;
    }
    for line in run(&["-Z", "-s"])?.lines() {
        if line.starts_with('l') {
            return Err(
                "the zip holds symbolic links: links are not extracted from zip files".into(),
            );
        }
    }
    let out = Command::new("unzip")
        .args(["-q", "-o"])
        .arg(archive)
        .arg("-d")
        .arg(into)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unzip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "unzip failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::net::TcpListener;

    use super::*;

    fn uri(v: &str) -> Uri {
        Uri {
            value: v.into(),
            ..Default::default()
        }
    }

    fn check_parse(v: &str, expected: Result<(Source, &str), &str>) {
        match (parse(&uri(v)), expected) {
            (Ok((s, n)), Ok((es, en))) => {
                assert_eq!(s, es, "{v}");
                assert_eq!(n, en, "{v}");
            }
            (Err(e), Err(why)) => {
                let m = e.to_string();
                assert!(m.contains(why), "{v}: {m}");
            }
            (got, want) => panic!("{v}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_uris() {
        let http = |host: &str, port, path: &str| Source::Http {
            host: host.into(),
            port,
            path: path.into(),
        };
        check_parse(
            "/opt/app.tar",
            Ok((Source::Local("/opt/app.tar".into()), "app.tar")),
        );
        check_parse(
            "file:///opt/run.sh",
            Ok((Source::Local("/opt/run.sh".into()), "run.sh")),
        );
        check_parse(
            "http://127.0.0.1:8080/a/b.zip?x=1",
            Ok((http("127.0.0.1", 8080, "/a/b.zip?x=1"), "b.zip")),
        );
        check_parse("http://localhost/x", Ok((http("localhost", 80, "/x"), "x")));
        check_parse("http://[::1]:81/y", Ok((http("::1", 81, "/y"), "y")));
        check_parse("", Err("empty"));
        check_parse("relative/path", Err("relative paths"));
        check_parse("ftp://127.0.0.1/x", Err("unsupported scheme"));
        check_parse("https://127.0.0.1/x", Err("unsupported scheme"));
        check_parse("http://10.0.0.1/x", Err("only loopback"));
        check_parse("http://example.com/x", Err("only loopback"));
        check_parse("http://127.0.0.1:99999/x", Err("port"));
        check_parse("http://u@127.0.0.1/x", Err("credentials"));
        check_parse("http://127.0.0.1/", Err("output_file"));
        check_parse("/", Err("output_file"));
        check_parse("file://etc/passwd", Err("absolute path"));
        check_parse("/a\nb", Err("control"));
        check_parse("/tmp/stdout", Err("reserved"));
        let mut u = uri("/tmp/x");
        u.output_file = "../evil".into();
        assert!(parse(&u).is_err());
        u.output_file = "ok.bin".into();
        assert_eq!(parse(&u).expect("parse").1, "ok.bin");
    }

    #[test]
    fn refuses_unsafe_entries() {
        for bad in ["../x", "a/../../x", "/etc/shadow", "a/../b", ""] {
            assert!(safe_entry(bad).is_err(), "{bad}");
        }
        assert_eq!(safe_entry("./a/b").expect("ok"), PathBuf::from("a/b"));
    }

    /// Builds a tar (ustar) archive in memory.
    fn tar(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data, link) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000755");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[156] = *kind;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn extracts_tar_and_refuses_traversal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = tar(&[
            ("bin/", b'5', b"", ""),
            ("bin/run.sh", b'0', b"#!/bin/sh\necho hi\n", ""),
            ("link", b'2', b"", "bin/run.sh"),
        ]);
        extract_tar(Cursor::new(ok), dir.path()).expect("extract");
        assert_eq!(
            fs::read_to_string(dir.path().join("bin/run.sh")).expect("read"),
            "#!/bin/sh\necho hi\n"
        );
        let mode = fs::metadata(dir.path().join("bin/run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_to_string(dir.path().join("link")).expect("via link"),
            "#!/bin/sh\necho hi\n"
        );
        for (entries, why) in [
            (vec![("../evil", b'0', &b"x"[..], "")], "contains `..`"),
            (vec![("/etc/evil", b'0', &b"x"[..], "")], "absolute path"),
            (vec![("l", b'2', &b""[..], "/etc")], "absolute path `/etc`"),
            (vec![("a/l", b'2', &b""[..], "../../etc")], "links outside"),
            (vec![("h", b'1', &b""[..], "/etc/shadow")], "hard links"),
        ] {
            let e = extract_tar(Cursor::new(tar(&entries)), dir.path()).expect_err("refused");
            assert!(e.contains(why), "{e}");
        }
        assert!(!dir.path().parent().expect("p").join("evil").exists());
        let e = extract_tar(Cursor::new(vec![1u8; 100]), dir.path()).expect_err("truncated");
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn fetches_local_files_executable_and_extracts_archives() {
        let src = tempfile::tempdir().expect("tempdir");
        let sandbox = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let f = Fetcher::new(FetcherConfig::new(work.path()));
        fs::write(src.path().join("tool"), "#!/bin/sh\n").expect("write");
        let mut u = uri(&format!("file://{}", src.path().join("tool").display()));
        u.executable = true;
        let p = f.fetch(&u, sandbox.path()).expect("fetch");
        assert_eq!(
            fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o755
        );

        fs::write(
            src.path().join("app.tar"),
            tar(&[("app/hello.txt", b'0', b"hello", "")]),
        )
        .expect("write");
        let mut u = uri(&src.path().join("app.tar").display().to_string());
        u.extract = true;
        f.fetch(&u, sandbox.path()).expect("fetch tar");
        assert_eq!(
            fs::read_to_string(sandbox.path().join("app/hello.txt")).expect("read"),
            "hello"
        );

        // gzip'd tar through the system gzip
        let gz = src.path().join("app2.tgz");
        fs::write(
            src.path().join("app2.tar"),
            tar(&[("two.txt", b'0', b"2", "")]),
        )
        .expect("write");
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "gzip -c {} > {}",
                src.path().join("app2.tar").display(),
                gz.display()
            ))
            .status()
            .expect("gzip");
        assert!(st.success());
        let mut u = uri(&gz.display().to_string());
        u.extract = true;
        f.fetch(&u, sandbox.path()).expect("fetch tgz");
        assert_eq!(
            fs::read_to_string(sandbox.path().join("two.txt")).expect("read"),
            "2"
        );

        // a zip with an entry escaping the sandbox is refused
        let zdir = src.path().join("z");
        fs::create_dir_all(zdir.join("a")).expect("mkdir");
        fs::write(src.path().join("secret"), "s").expect("write");
        let zip = src.path().join("evil.zip");
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && zip -q {} a/../../secret",
                zdir.display(),
                zip.display()
            ))
            .status()
            .expect("zip");
        assert!(st.success());
        let mut u = uri(&zip.display().to_string());
        u.extract = true;
        let e = f.fetch(&u, sandbox.path()).expect_err("evil zip");
        assert!(e.to_string().contains("contains `..`"), "{e}");

        // a good zip
        fs::write(zdir.join("a/z.txt"), "zz").expect("write");
        let good = src.path().join("good.zip");
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && zip -q -r {} a",
                zdir.display(),
                good.display()
            ))
            .status()
            .expect("zip");
        assert!(st.success());
        let mut u = uri(&good.display().to_string());
        u.extract = true;
        f.fetch(&u, sandbox.path()).expect("fetch zip");
        assert_eq!(
            fs::read_to_string(sandbox.path().join("a/z.txt")).expect("read"),
            "zz"
        );

        let e = f
            .fetch(&uri("/nonexistent/brim-file"), sandbox.path())
            .expect_err("missing");
        assert!(
            e.to_string()
                .contains("cannot fetch `/nonexistent/brim-file`"),
            "{e}"
        );
    }

    /// Serves `body` (with `status`) to every connection until dropped.
    fn serve(status: &'static str, body: Vec<u8>, content_length: bool) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let mut head = format!("HTTP/1.0 {status}\r\n");
                if content_length {
                    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
                }
                head.push_str("\r\n");
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        });
        port
    }

    #[test]
    fn fetches_http_with_size_limit_and_cache() {
        let sandbox = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let mut cfg = FetcherConfig::new(work.path());
        cfg.max_bytes = 1000;
        cfg.cache_bytes = 1500;
        let f = Fetcher::new(cfg.clone());
        let port = serve("200 OK", b"payload".to_vec(), true);
        let mut u = uri(&format!("http://127.0.0.1:{port}/dir/file.txt"));
        u.cache = true;
        f.fetch(&u, sandbox.path()).expect("fetch");
        assert_eq!(
            fs::read_to_string(sandbox.path().join("file.txt")).expect("read"),
            "payload"
        );
        assert_eq!(fs::read_dir(&cfg.cache_dir).expect("cache").count(), 1);

        let missing = serve("404 Not Found", b"nope".to_vec(), true);
        let e = f
            .fetch(
                &uri(&format!("http://127.0.0.1:{missing}/x")),
                sandbox.path(),
            )
            .expect_err("404");
        assert!(e.to_string().contains("HTTP 404"), "{e}");

        for with_length in [true, false] {
            let big = serve("200 OK", vec![b'x'; 5000], with_length);
            let e = f
                .fetch(&uri(&format!("http://127.0.0.1:{big}/big")), sandbox.path())
                .expect_err("too large");
            assert!(matches!(e, FetchError::TooLarge { .. }), "{e}");
            assert!(!sandbox.path().join("big").exists());
        }

        // connection refused
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = closed.local_addr().expect("addr").port();
        drop(closed);
        let e = f
            .fetch(&uri(&format!("http://127.0.0.1:{p}/x")), sandbox.path())
            .expect_err("refused");
        assert!(e.to_string().contains("cannot connect"), "{e}");

        // the cache stays within its bound: 3 × 700 bytes > 1500
        for i in 0..3 {
            let port = serve("200 OK", vec![b'y'; 700], true);
            let mut u = uri(&format!("http://127.0.0.1:{port}/f{i}"));
            u.cache = true;
            f.fetch(&u, sandbox.path()).expect("fetch");
        }
        let total: u64 = fs::read_dir(&cfg.cache_dir)
            .expect("cache")
            .flatten()
            .map(|e| e.metadata().expect("meta").len())
            .sum();
        assert!(total <= 1500, "cache holds {total} bytes");
    }
}
