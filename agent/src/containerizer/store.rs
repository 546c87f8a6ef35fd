//! The image provisioner: finds an image (OCI layout directory, OCI or `docker save`
//! archive, local or fetched), unpacks its layers once into a content-addressed cache with a
//! size bound, and assembles a root filesystem per container (overlayfs, or a copy when
//! overlay is unavailable).
//!
//! Layout under `<work_dir>/oci/`:
//! - `layers/<sha256 hex>/fs/` — one unpacked layer (overlay whiteouts), `size` (bytes of
//!   file content), `used` (its mtime orders eviction);
//! - `containers/<container id>/` — `image/` (staging of an archive, removed once used),
//!   `layers` (the digests the rootfs uses, top last), `rootfs/` (the overlay mount or the
//!   copy), `upper/`, `work/`, `config.json` (written by `oci.rs`).
//!
//! Architecture Invariant: nothing is written outside `<work_dir>/oci/`; layer content is
//! only ever written by [`super::layer::unpack`].

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use brim_proto::v1::{image::Kind, Image, Uri};
use sha2::{Digest as _, Sha256};

use super::layer::{self, LayerError, LayerLimits, OVERLAY_OPAQUE_XATTR};
use super::manifest::{self, Digest, ImageConfig, IndexEntry, ManifestError};

/// Why an image could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0} not found on this agent: give an absolute path to an OCI image layout directory or an image tarball, or an http:// URI")]
    NotFound(String),
    #[error("image {uri} is not an OCI image layout (no index.json) nor a `docker save` archive (no manifest.json)")]
    UnknownFormat { uri: String },
    #[error("image {uri}: {source}")]
    Manifest {
        uri: String,
        #[source]
        source: ManifestError,
    },
    #[error("image {uri}: blob {digest} is corrupt (its content hashes to sha256:{actual})")]
    DigestMismatch {
        uri: String,
        digest: String,
        actual: String,
    },
    #[error("image {uri}: {path} is missing or unreadable: {source}")]
    Blob {
        uri: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("image {uri}: {source}")]
    Layer {
        uri: String,
        #[source]
        source: LayerError,
    },
    #[error("cannot fetch image {uri}: {source}")]
    Fetch {
        uri: String,
        #[source]
        source: crate::fetcher::FetchError,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How a container's root filesystem was assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootfsKind {
    Overlay,
    Copy,
}

/// A container's root filesystem, ready for the runtime.
#[derive(Debug)]
pub struct Provisioned {
    pub rootfs: PathBuf,
    pub config: ImageConfig,
    pub kind: RootfsKind,
}

/// Settings of the image store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `<work_dir>/oci`.
    pub root: PathBuf,
    /// Bound on the unpacked layer cache (layers in use are never evicted).
    pub cache_bytes: u64,
    pub limits: LayerLimits,
    /// Try overlayfs first (tests turn it off to exercise the copy).
    pub overlay: bool,
}

/// The layer cache and the per-container root filesystems.
#[derive(Debug)]
pub struct ImageStore {
    config: StoreConfig,
    fetcher: Arc<crate::fetcher::Fetcher>,
    /// Serializes provisioning and eviction (a layer is never evicted while being used).
    lock: Mutex<()>,
}

/// A resolved image: where its blobs are and which layers, bottom first.
struct Resolved {
    config: ImageConfig,
    /// (digest, blob path, whether the digest is the manifest's and must be verified).
    layers: Vec<(Digest, PathBuf, bool)>,
}

impl ImageStore {
    pub fn new(config: StoreConfig, fetcher: Arc<crate::fetcher::Fetcher>) -> Self {
        ImageStore {
            config,
            fetcher,
            lock: Mutex::new(()),
        }
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.config.root.join("containers")
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }
    fn layers_dir(&self) -> PathBuf {
        self.config.root.join("layers")
    }

    /// Provisions `image` for container `id`: resolves it, makes sure every layer is in the
    /// cache, assembles `containers/<id>/rootfs`. Blocking.
    pub fn provision(&self, image: &Image, id: &str) -> Result<Provisioned, ImageError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.container_dir(id);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let staging = dir.join("image");
        let result = self.provision_in(image, &dir, &staging);
        let _ = fs::remove_dir_all(&staging);
        let provisioned = result?;
        self.evict(&HashSet::new());
        Ok(provisioned)
    }

    fn provision_in(
        &self,
        image: &Image,
        dir: &Path,
        staging: &Path,
    ) -> Result<Provisioned, ImageError> {
        let uri = image.uri.clone();
        let source = self.locate(&uri, staging)?;
        let kind = Kind::try_from(image.kind).unwrap_or(Kind::Auto);
        let layout_dir = if source.is_dir() {
            source
        } else {
            if kind == Kind::OciLayout {
                return Err(ImageError::UnknownFormat { uri });
            }
            let into = staging.join("content");
            fs::create_dir_all(&into).map_err(io_err("create", &into))?;
            layer::unpack_blob(&source, &into, self.config.limits).map_err(|source| {
                ImageError::Layer {
                    uri: uri.clone(),
                    source,
                }
            })?;
            into
        };
        let resolved = if layout_dir.join("index.json").is_file() && kind != Kind::DockerArchive {
            resolve_oci(&uri, &layout_dir)?
        } else if layout_dir.join("manifest.json").is_file() && kind != Kind::OciArchive {
            resolve_docker(&uri, &layout_dir)?
        } else {
            return Err(ImageError::UnknownFormat { uri });
        };
        let mut hexes = Vec::new();
        for (digest, blob, verify) in &resolved.layers {
            self.ensure_layer(&uri, digest, blob, *verify)?;
            hexes.push(digest.hex().to_string());
        }
        let list = dir.join("layers");
        fs::write(&list, hexes.join("\n")).map_err(io_err("write", &list))?;
        let (rootfs, kind) = self.assemble(dir, &hexes)?;
        Ok(Provisioned {
            rootfs,
            config: resolved.config,
            kind,
        })
    }

    /// The image as a local path: absolute paths and file:// as they are, http(s):// fetched
    /// (through the fetcher's cache) into `staging`.
    fn locate(&self, uri: &str, staging: &Path) -> Result<PathBuf, ImageError> {
        if uri.starts_with("http://") || uri.starts_with("https://") {
            fs::create_dir_all(staging).map_err(io_err("create", staging))?;
            let u = Uri {
                value: uri.to_string(),
                cache: true,
                output_file: "image.tar".into(),
                ..Default::default()
            };
            return self
                .fetcher
                .fetch(&u, staging)
                .map_err(|source| ImageError::Fetch {
                    uri: uri.to_string(),
                    source,
                });
        }
        let path = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
        if !path.is_absolute() || !path.exists() {
            return Err(ImageError::NotFound(uri.to_string()));
        }
        Ok(path)
    }

    /// Unpacks one layer into the cache unless it is there; marks it used.
    fn ensure_layer(
        &self,
        uri: &str,
        digest: &Digest,
        blob: &Path,
        verify: bool,
    ) -> Result<(), ImageError> {
        let layers = self.layers_dir();
        let dest = layers.join(digest.hex());
        if dest.join("fs").is_dir() {
            touch(&dest.join("used"));
            return Ok(());
        }
        if verify {
            let actual = sha256_file(blob).map_err(|source| ImageError::Blob {
                uri: uri.to_string(),
                path: blob.display().to_string(),
                source,
            })?;
            if actual != digest.hex() {
                return Err(ImageError::DigestMismatch {
                    uri: uri.to_string(),
                    digest: digest.to_string(),
                    actual,
                });
            }
        }
        let tmp = layers.join(format!("tmp-{}", uuid::Uuid::new_v4()));
        let fs_dir = tmp.join("fs");
        fs::create_dir_all(&fs_dir).map_err(io_err("create", &fs_dir))?;
        let unpacked = layer::unpack_blob(blob, &fs_dir, self.config.limits);
        let size = match unpacked {
            Ok(n) => n,
            Err(source) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(ImageError::Layer {
                    uri: uri.to_string(),
                    source,
                });
            }
        };
        let _ = fs::write(tmp.join("size"), size.to_string());
        touch(&tmp.join("used"));
        if fs::rename(&tmp, &dest).is_err() {
            // Someone else unpacked it meanwhile (another agent on the same work dir).
            let _ = fs::remove_dir_all(&tmp);
        }
        Ok(())
    }

    /// Mounts an overlay of the layers at `dir/rootfs` (or copies them there).
    fn assemble(&self, dir: &Path, hexes: &[String]) -> Result<(PathBuf, RootfsKind), ImageError> {
        let rootfs = dir.join("rootfs");
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        for d in [&rootfs, &upper, &work] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        let lowers: Vec<String> = hexes
            .iter()
            .rev()
            .map(|h| self.layers_dir().join(h).join("fs").display().to_string())
            .collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        // The kernel takes one page of mount options.
        if self.config.overlay
            && opts.len() < 4000
            && !lowers.iter().any(|l| l.contains([',', ':']))
        {
            let r = nix::mount::mount(
                Some("overlay"),
                &rootfs,
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(opts.as_str()),
            );
            match r {
                Ok(()) => return Ok((rootfs, RootfsKind::Overlay)),
                Err(e) => {
                    tracing::info!(error = %e, "overlayfs unavailable, copying the image's layers instead")
                }
            }
        }
        for h in hexes {
            let src = self.layers_dir().join(h).join("fs");
            apply_layer(&src, &rootfs).map_err(io_err("copy a layer into", &rootfs))?;
        }
        Ok((rootfs, RootfsKind::Copy))
    }

    /// Unmounts and removes a container's directory. Refuses to remove a rootfs that is still
    /// mounted (it would reach into the cache).
    pub fn release(&self, id: &str) -> Result<(), ImageError> {
        let dir = self.container_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        let rootfs = dir.join("rootfs");
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        if let (Ok(a), Ok(b)) = (fs::metadata(&dir), fs::metadata(&rootfs)) {
            if a.dev() != b.dev() {
                return Err(ImageError::Io {
                    action: "unmount",
                    path: rootfs,
                    source: io::Error::other("still mounted"),
                });
            }
        }
        fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))
    }

    /// The container directories that exist (for recovery).
    pub fn containers(&self) -> Vec<String> {
        fs::read_dir(self.containers_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Evicts least recently used layers no container uses until the cache fits its bound;
    /// removes unfinished unpackings. Returns the evicted digests.
    pub fn evict(&self, extra_in_use: &HashSet<String>) -> Vec<String> {
        let mut in_use = extra_in_use.clone();
        for id in self.containers() {
            if let Ok(t) = fs::read_to_string(self.container_dir(&id).join("layers")) {
                in_use.extend(t.lines().map(str::to_string));
            }
        }
        let mut layers = Vec::new();
        for e in fs::read_dir(self.layers_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tmp-") {
                // Unfinished (the agent died while unpacking) unless it is being written
                // right now, which the lock rules out for this agent.
                continue;
            }
            let size = fs::read_to_string(e.path().join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let used = fs::metadata(e.path().join("used"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            layers.push(CachedLayer { name, size, used });
        }
        let victims = eviction_plan(&layers, &in_use, self.config.cache_bytes);
        for v in &victims {
            let _ = fs::remove_dir_all(self.layers_dir().join(v));
        }
        victims
    }

    /// Removes leftovers of interrupted unpackings (at start-up).
    pub fn remove_partial(&self) {
        for e in fs::read_dir(self.layers_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A cached layer as eviction sees it.
#[derive(Clone, Debug)]
pub struct CachedLayer {
    pub name: String,
    pub size: u64,
    pub used: std::time::SystemTime,
}

/// Which layers to evict so that the cache fits `bound`: least recently used first, never
/// one in use (pure).
pub fn eviction_plan(layers: &[CachedLayer], in_use: &HashSet<String>, bound: u64) -> Vec<String> {
    let mut total: u64 = layers.iter().map(|l| l.size).sum();
    let mut candidates: Vec<&CachedLayer> = layers
        .iter()
        .filter(|l| !in_use.contains(&l.name))
        .collect();
    candidates.sort_by_key(|l| l.used);
    let mut out = Vec::new();
    for l in candidates {
        if total <= bound {
            break;
        }
        total -= l.size;
        out.push(l.name.clone());
    }
    out
}

fn touch(path: &Path) {
    let _ = File::create(path);
}

/// sha256 of a file, as hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_bounded(uri: &str, path: &Path) -> Result<Vec<u8>, ImageError> {
    let blob = |source| ImageError::Blob {
        uri: uri.to_string(),
        path: path.display().to_string(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(blob)?;
    if !meta.is_file() {
        return Err(blob(io::Error::other("not a regular file")));
    }
    if meta.len() > manifest::MAX_JSON_BYTES {
        return Err(blob(io::Error::other(format!(
            "{} bytes, more than the {} a metadata file may have",
            meta.len(),
            manifest::MAX_JSON_BYTES
        ))));
    }
    fs::read(path).map_err(blob)
}

/// Reads a blob of an OCI layout and checks it hashes to its digest.
fn read_verified(uri: &str, layout: &Path, d: &Digest) -> Result<Vec<u8>, ImageError> {
    let bytes = read_bounded(uri, &layout.join(d.blob_path()))?;
    let actual = hex(&Sha256::digest(&bytes));
    if actual != d.hex() {
        return Err(ImageError::DigestMismatch {
            uri: uri.to_string(),
            digest: d.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

fn resolve_oci(uri: &str, layout: &Path) -> Result<Resolved, ImageError> {
    let m = |source| ImageError::Manifest {
        uri: uri.to_string(),
        source,
    };
    let index = read_bounded(uri, &layout.join("index.json"))?;
    let arch = manifest::host_arch();
    let mut entry = manifest::parse_index(&index, arch).map_err(m)?;
    if let IndexEntry::Index(d) = &entry {
        let nested = read_verified(uri, layout, &d.digest)?;
        entry = manifest::parse_index(&nested, arch).map_err(m)?;
    }
    let IndexEntry::Manifest(d) = entry else {
        return Err(m(ManifestError::NoManifest(arch.to_string())));
    };
    let man = manifest::parse_manifest(&read_verified(uri, layout, &d.digest)?).map_err(m)?;
    let config =
        manifest::parse_config(&read_verified(uri, layout, &man.config.digest)?).map_err(m)?;
    Ok(Resolved {
        config,
        layers: man
            .layers
            .into_iter()
            .map(|l| {
                let p = layout.join(l.digest.blob_path());
                (l.digest, p, true)
            })
            .collect(),
    })
}

fn resolve_docker(uri: &str, dir: &Path) -> Result<Resolved, ImageError> {
    let m = |source| ImageError::Manifest {
        uri: uri.to_string(),
        source,
    };
    let man = manifest::parse_docker_manifest(&read_bounded(uri, &dir.join("manifest.json"))?)
        .map_err(m)?;
    let config = manifest::parse_config(&read_bounded(uri, &dir.join(&man.config))?).map_err(m)?;
    let mut layers = Vec::new();
    for l in man.layers {
        let p = dir.join(&l);
        let meta = fs::symlink_metadata(&p).map_err(|source| ImageError::Blob {
            uri: uri.to_string(),
            path: l.display().to_string(),
            source,
        })?;
        if !meta.is_file() {
            return Err(ImageError::Blob {
                uri: uri.to_string(),
                path: l.display().to_string(),
                source: io::Error::other("not a regular file"),
            });
        }
        // docker save names layers by path: their content is their identity.
        let hex = sha256_file(&p).map_err(|source| ImageError::Blob {
            uri: uri.to_string(),
            path: l.display().to_string(),
            source,
        })?;
        layers.push((Digest::from_hex(hex), p, false));
    }
    Ok(Resolved { config, layers })
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    matches!(xattr::get(dir, OVERLAY_OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies one cached layer onto a root filesystem directory, the way overlayfs would show
/// it: whiteouts remove, opaque directories replace, everything else is copied. Never
/// follows a symlink in `dst`.
pub fn apply_layer(src: &Path, dst: &Path) -> io::Result<()> {
    if is_opaque(src) {
        for e in fs::read_dir(dst)? {
            remove_any(&e?.path())?;
        }
    }
    for e in fs::read_dir(src)? {
        let e = e?;
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s)?;
        if is_whiteout(&m) {
            remove_any(&d)?;
            continue;
        }
        if m.is_dir() {
            match fs::symlink_metadata(&d) {
                Ok(dm) if dm.is_dir() => {}
                _ => {
                    remove_any(&d)?;
                    fs::create_dir(&d)?;
                }
            }
            apply_layer(&s, &d)?;
            fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        } else {
            remove_any(&d)?;
            if m.file_type().is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
            } else if m.file_type().is_fifo() {
                nix::unistd::mkfifo(
                    &d,
                    nix::sys::stat::Mode::from_bits_truncate((m.mode() & 0o7777) as libc::mode_t),
                )
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            } else if m.is_file() {
                fs::copy(&s, &d)?;
            } else {
                continue;
            }
        }
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::lchown(&d, Some(m.uid()), Some(m.gid()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn l(name: &str, size: u64, t: u64) -> CachedLayer {
        CachedLayer {
            name: name.into(),
            size,
            used: UNIX_EPOCH + Duration::from_secs(t),
        }
    }

    #[test]
    fn evicts_lru_unused_layers_until_within_bound() {
        let layers = [
            l("a", 100, 1),
            l("b", 100, 2),
            l("c", 100, 3),
            l("d", 100, 4),
        ];
        let none = HashSet::new();
        assert!(eviction_plan(&layers, &none, 400).is_empty());
        assert_eq!(eviction_plan(&layers, &none, 250), vec!["a", "b"]);
        let in_use: HashSet<String> = ["a".to_string()].into();
        assert_eq!(eviction_plan(&layers, &in_use, 250), vec!["b", "c"]);
        let all: HashSet<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert!(eviction_plan(&layers, &all, 0).is_empty());
    }

    /// A tar layer from (path, content or symlink target, kind) entries.
    fn layer(entries: &[(&str, &str, char)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data, kind) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o755);
            match kind {
                'd' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, path, std::io::empty()).expect("dir");
                }
                'l' => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, data).expect("link");
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).expect("file");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    /// Writes an OCI layout of `layers` (bottom first; the second one gzip'd) into `dir`.
    fn oci_layout(dir: &Path, layers: &[Vec<u8>]) {
        use std::io::Write as _;
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).expect("blobs");
        let put = |bytes: &[u8]| {
            let d = hex(&Sha256::digest(bytes));
            fs::write(blobs.join(&d), bytes).expect("blob");
            (d, bytes.len())
        };
        let mut descs = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let bytes = if i == 1 {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(l).expect("gzip");
                gz.finish().expect("gzip")
            } else {
                l.clone()
            };
            let (d, n) = put(&bytes);
            descs.push(format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{d}","size":{n}}}"#
            ));
        }
        let (cd, cn) = put(br#"{"config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}}"#);
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{cd}","size":{cn}}},"layers":[{}]}}"#,
            descs.join(",")
        );
        let (md, mn) = put(m.as_bytes());
        fs::write(
            dir.join("index.json"),
            format!(r#"{{"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{md}","size":{mn}}}]}}"#),
        )
        .expect("index");
    }

    fn store(root: &Path, overlay: bool, cache_bytes: u64) -> ImageStore {
        let fetcher = Arc::new(crate::fetcher::Fetcher::new(
            crate::fetcher::FetcherConfig::new(root),
        ));
        ImageStore::new(
            StoreConfig {
                root: root.join("oci"),
                cache_bytes,
                limits: LayerLimits::default(),
                overlay,
            },
            fetcher,
        )
    }

    #[test]
    fn provisions_layouts_by_copy_and_overlay_and_evicts() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: whiteouts (mknod), trusted xattrs and overlay mounts need root");
            assert!(
                std::env::var("BRIM_TEST_REQUIRE_ALL").is_err(),
                "needs root"
            );
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let img = t.path().join("img");
        oci_layout(
            &img,
            &[
                layer(&[
                    ("etc", "", 'd'),
                    ("etc/motd", "hello", 'f'),
                    ("etc/keep", "kept", 'f'),
                    ("var/cache/old", "o", 'f'),
                    ("bin/sh", "/bin/busybox", 'l'),
                ]),
                layer(&[
                    ("etc/.wh.motd", "", 'f'),
                    ("var/cache/.wh..wh..opq", "", 'f'),
                    ("var/cache/new", "n", 'f'),
                ]),
            ],
        );
        let image = Image {
            kind: 0,
            uri: img.display().to_string(),
        };
        for overlay in [false, true] {
            let st = store(t.path(), overlay, 1 << 30);
            let id = format!("c-{overlay}");
            let p = st.provision(&image, &id).expect("provision");
            assert_eq!(
                p.kind,
                if overlay {
                    RootfsKind::Overlay
                } else {
                    RootfsKind::Copy
                }
            );
            assert_eq!(p.config.cmd, Some(vec!["/bin/sh".to_string()]));
            let r = &p.rootfs;
            assert!(!r.join("etc/motd").exists(), "whiteout ({overlay})");
            assert_eq!(
                fs::read_to_string(r.join("etc/keep")).expect("keep"),
                "kept"
            );
            assert!(!r.join("var/cache/old").exists(), "opaque ({overlay})");
            assert!(r.join("var/cache/new").exists());
            assert_eq!(
                fs::read_link(r.join("bin/sh")).expect("link"),
                PathBuf::from("/bin/busybox")
            );
            st.release(&id).expect("release");
            assert!(!st.container_dir(&id).exists());
        }
        // Both layers stay cached (within the bound)...
        let layers = t.path().join("oci/layers");
        assert_eq!(fs::read_dir(&layers).expect("layers").count(), 2);
        // ...and go once the bound is tiny and no container uses them.
        assert_eq!(store(t.path(), false, 0).evict(&HashSet::new()).len(), 2);
        // A corrupt blob is refused, with nothing cached.
        let man = fs::read_dir(img.join("blobs/sha256"))
            .expect("blobs")
            .flatten()
            .map(|e| e.path())
            .find(|p| fs::read_to_string(p).is_ok_and(|t| t.contains("layers")))
            .expect("manifest blob");
        let text = fs::read_to_string(&man).expect("manifest");
        let last = text.rfind("sha256:").expect("layer digest") + 7;
        let tampered = text[last..last + 64].to_string();
        let layer_blob = img.join("blobs/sha256").join(&tampered);
        fs::write(&layer_blob, b"tampered").expect("tamper");
        let e = store(t.path(), false, 1 << 30)
            .provision(&image, "c-bad")
            .expect_err("corrupt");
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert!(
            !layers.join(&tampered).exists(),
            "a corrupt layer was cached"
        );
        // An unknown image.
        let e = store(t.path(), false, 1 << 30)
            .provision(
                &Image {
                    kind: 0,
                    uri: "/nonexistent/img".into(),
                },
                "c-x",
            )
            .expect_err("unknown");
        assert!(matches!(e, ImageError::NotFound(_)), "{e}");
    }

    #[test]
    fn copy_applies_whiteouts_and_opaque_dirs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: whiteouts (mknod) and trusted xattrs need root");
            assert!(
                std::env::var("BRIM_TEST_REQUIRE_ALL").is_err(),
                "needs root"
            );
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let (l1, l2, root) = (
            t.path().join("l1"),
            t.path().join("l2"),
            t.path().join("root"),
        );
        for d in [&l1, &l2, &root] {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::create_dir_all(l1.join("etc")).expect("etc");
        fs::write(l1.join("etc/motd"), "hi").expect("motd");
        fs::write(l1.join("etc/keep"), "k").expect("keep");
        fs::create_dir_all(l1.join("var/cache")).expect("cache");
        fs::write(l1.join("var/cache/old"), "o").expect("old");
        fs::create_dir_all(l2.join("etc")).expect("etc2");
        layer::make_whiteout(&l2.join("etc/motd")).expect("whiteout");
        fs::create_dir_all(l2.join("var/cache")).expect("cache2");
        xattr::set(l2.join("var/cache"), OVERLAY_OPAQUE_XATTR, b"y").expect("xattr");
        fs::write(l2.join("var/cache/new"), "n").expect("new");
        apply_layer(&l1, &root).expect("l1");
        apply_layer(&l2, &root).expect("l2");
        assert!(!root.join("etc/motd").exists());
        assert_eq!(
            fs::read_to_string(root.join("etc/keep")).expect("keep"),
            "k"
        );
        assert!(!root.join("var/cache/old").exists());
        assert!(root.join("var/cache/new").exists());
    }
}
