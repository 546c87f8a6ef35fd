//! Following a task's stdout/stderr through the agent's sandbox HTTP endpoint
//! (`GET /sandbox/{framework_id}/{task_id}/{stdout|stderr}?offset=N`), and prefixing lines
//! when several tasks share one terminal.

use std::time::Duration;

use tokio::sync::watch;

/// Why a sandbox file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid agent address `{0}`: expected host:port")]
    InvalidAddress(String),
    #[error("cannot read {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the agent answered HTTP {status} for {url}")]
    Status { url: String, status: u16 },
}

/// Which sandbox file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxFile {
    Stdout,
    Stderr,
}

impl SandboxFile {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxFile::Stdout => "stdout",
            SandboxFile::Stderr => "stderr",
        }
    }
}

/// Reads one sandbox file incrementally.
#[derive(Clone, Debug)]
pub struct SandboxReader {
    http: reqwest::Client,
    url: reqwest::Url,
    offset: u64,
}

impl SandboxReader {
    /// `agent_http_address` is the offer's `agent_http_address` (host:port), read over
    /// plain HTTP, or with an explicit scheme (`https://host:port` for an agent serving TLS).
    pub fn new(
        http: reqwest::Client,
        agent_http_address: &str,
        framework_id: &str,
        task_id: &str,
        file: SandboxFile,
    ) -> Result<Self, SandboxError> {
        let invalid = || SandboxError::InvalidAddress(agent_http_address.to_string());
        let (scheme, host_port) = match agent_http_address.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
            Some(_) => return Err(invalid()),
            None => ("http", agent_http_address),
        };
        if host_port.is_empty() || host_port.contains('/') {
            return Err(invalid());
        }
        let url =
            reqwest::Url::parse(&format!("{scheme}://{host_port}/")).map_err(|_| invalid())?;
        Self::at(http, url, &[], framework_id, task_id, file, invalid)
    }

    /// Reads through the master's sandbox proxy (`<master_url>/agents/<agent>/sandbox/...`):
    /// for clients that authenticate with a token, since agents serving TLS hand task
    /// output only to certified clients. `master_url` is `http(s)://host:port`.
    pub fn via_master(
        http: reqwest::Client,
        master_url: &str,
        agent_id: &str,
        framework_id: &str,
        task_id: &str,
        file: SandboxFile,
    ) -> Result<Self, SandboxError> {
        let invalid = || SandboxError::InvalidAddress(master_url.to_string());
        let url = reqwest::Url::parse(master_url).map_err(|_| invalid())?;
        if !matches!(url.scheme(), "http" | "https") || agent_id.is_empty() {
            return Err(invalid());
        }
        Self::at(
            http,
            url,
            &["agents", agent_id],
            framework_id,
            task_id,
            file,
            invalid,
        )
    }

    fn at(
        http: reqwest::Client,
        mut url: reqwest::Url,
        prefix: &[&str],
        framework_id: &str,
        task_id: &str,
        file: SandboxFile,
        invalid: impl Fn() -> SandboxError,
    ) -> Result<Self, SandboxError> {
        url.path_segments_mut()
            .map_err(|()| invalid())?
            .pop_if_empty()
            .extend(prefix)
            .extend(["sandbox", framework_id, task_id, file.as_str()]);
        Ok(SandboxReader {
            http,
            url,
            offset: 0,
        })
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// New bytes since the last read; empty when there is nothing new yet, including when the
    /// agent does not know the task yet (404: not launched, or never will be).
    pub async fn read(&mut self) -> Result<Vec<u8>, SandboxError> {
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("offset", &self.offset.to_string());
        let unreachable = |e: reqwest::Error| SandboxError::Unreachable {
            url: url.to_string(),
            message: e.to_string(),
        };
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(unreachable)?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(SandboxError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let body = resp.bytes().await.map_err(unreachable)?;
        self.offset += body.len() as u64;
        Ok(body.to_vec())
    }

    /// Polls every `interval`, passing new bytes to `sink`, until `finished` holds `true` (or
    /// its sender is gone) and the file is drained. After `finished`, gives up on the third
    /// failed read in a row and returns that error.
    pub async fn follow(
        mut self,
        finished: watch::Receiver<bool>,
        interval: Duration,
        mut sink: impl FnMut(&[u8]) + Send,
    ) -> Result<(), SandboxError> {
        let mut failures_after_finish = 0;
        loop {
            let done = *finished.borrow() || finished.has_changed().is_err();
            match self.read().await {
                Ok(bytes) if !bytes.is_empty() => {
                    sink(&bytes);
                    continue;
                }
                Ok(_) if done => return Ok(()),
                Ok(_) => {}
                Err(e) if done => {
                    failures_after_finish += 1;
                    if failures_after_finish >= 3 {
                        return Err(e);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "sandbox read failed; retrying"),
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// Longest partial line held back waiting for its newline.
const MAX_PARTIAL_LINE: usize = 64 * 1024;

/// Puts `prefix` in front of every line; only whole lines come out (so lines of different
/// tasks never interleave), the rest waits for more bytes or [`LinePrefixer::finish`].
#[derive(Clone, Debug)]
pub struct LinePrefixer {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl LinePrefixer {
    pub fn new(prefix: impl Into<String>) -> Self {
        LinePrefixer {
            prefix: prefix.into().into_bytes(),
            partial: Vec::new(),
        }
    }

    /// Prefixed complete lines from `bytes` (plus what was held back).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        let cut = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if self.partial.len() > MAX_PARTIAL_LINE => self.partial.len(),
            None => return out,
        };
        let rest = self.partial.split_off(cut);
        for line in self.partial.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(line);
        }
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        self.partial = rest;
        out
    }

    /// What is held back, prefixed and newline-terminated (empty when nothing is).
    pub fn finish(&mut self) -> Vec<u8> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        let mut out = self.prefix.clone();
        out.append(&mut self.partial);
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_whole_lines_only() {
        let mut p = LinePrefixer::new("[1] ");
        assert_eq!(p.push(b"hel"), b"");
        assert_eq!(p.push(b"lo\nwor"), b"[1] hello\n");
        assert_eq!(p.push(b"ld\n\nx\n"), b"[1] world\n[1] \n[1] x\n");
        assert_eq!(p.push(b"tail"), b"");
        assert_eq!(p.finish(), b"[1] tail\n");
        assert_eq!(p.finish(), b"");
    }

    #[test]
    fn very_long_lines_are_not_held_forever() {
        let mut p = LinePrefixer::new("[0] ");
        let long = vec![b'a'; MAX_PARTIAL_LINE + 1];
        let out = p.push(&long);
        assert_eq!(out.len(), long.len() + 5);
        assert!(out.starts_with(b"[0] aaa"));
    }

    #[test]
    fn sandbox_urls_escape_ids() {
        let r = SandboxReader::new(
            reqwest::Client::new(),
            "127.0.0.1:5051",
            "f 1",
            "t/1",
            SandboxFile::Stderr,
        )
        .unwrap_or_else(|e| panic!("valid: {e}"));
        assert_eq!(
            r.url.as_str(),
            "http://127.0.0.1:5051/sandbox/f%201/t%2F1/stderr"
        );
        assert!(
            SandboxReader::new(reqwest::Client::new(), "", "f", "t", SandboxFile::Stdout).is_err()
        );
    }
}
