//! Image layers: a pure validator of tar entries ([`LayerCheck`]) and the unpacker that
//! applies its decisions without ever following a symlink ([`unpack`]).
//!
//! Layers come from images anyone can build, so every entry is treated as hostile:
//! absolute paths, `..`, device nodes, symlinks whose target climbs out of the root, hard
//! links to anything but a regular file of the same layer, and entries or layers over the
//! size bounds are refused with the entry's name. OCI whiteouts (`.wh.NAME`, the opaque
//! marker `.wh..wh..opq`) become overlayfs whiteouts (a 0:0 character device, the
//! `trusted.overlay.opaque` xattr) so that cached layers stack directly as overlay lower
//! directories; the copy fallback reads the same markers (see `store.rs`).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Prefix of OCI whiteout files.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// xattr overlayfs reads to make a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Bounds on what one layer may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLimits {
    /// Largest single file.
    pub max_entry_bytes: u64,
    /// Sum of the file sizes of one layer.
    pub max_layer_bytes: u64,
    /// Number of entries of one layer.
    pub max_entries: u64,
}

impl Default for LayerLimits {
    fn default() -> Self {
        LayerLimits {
            max_entry_bytes: 1 << 30,
            max_layer_bytes: 4 << 30,
            max_entries: 500_000,
        }
    }
}

/// The kind of a tar entry, as far as layers are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    CharDevice,
    BlockDevice,
    /// Anything else (sparse files, unknown type bytes): refused.
    Other(u8),
}

impl EntryKind {
    /// From a tar type flag byte.
    pub fn from_tar(flag: u8) -> EntryKind {
        match flag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'5' => EntryKind::Dir,
            b'2' => EntryKind::Symlink,
            b'1' => EntryKind::Hardlink,
            b'6' => EntryKind::Fifo,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            other => EntryKind::Other(other),
        }
    }
}

/// One tar entry's header, as the validator sees it.
#[derive(Clone, Debug)]
pub struct EntryHeader<'a> {
    pub path: &'a [u8],
    pub kind: EntryKind,
    pub size: u64,
    pub link: Option<&'a [u8]>,
    pub mode: u32,
}

/// What to do with an accepted entry. Paths are relative to the layer root, normalized
/// (no `.`, `..`, or leading `/`) and never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Dir {
        path: PathBuf,
        mode: u32,
    },
    File {
        path: PathBuf,
        mode: u32,
        size: u64,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    Hardlink {
        path: PathBuf,
        target: PathBuf,
    },
    Fifo {
        path: PathBuf,
        mode: u32,
    },
    /// Hide `path` of the layers below.
    Whiteout {
        path: PathBuf,
    },
    /// Hide everything the layers below have in directory `path`.
    Opaque {
        path: PathBuf,
    },
    /// The layer root itself (`./`): nothing to do.
    Skip,
}

/// Why a layer was refused.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {path:?} refused: {why}")]
    Refused { path: String, why: String },
    #[error("layer has more than {0} entries: refusing it as a tar bomb")]
    TooManyEntries(u64),
    #[error("layer unpacks to more than {limit} bytes (at {path:?}): refusing it")]
    TooLarge { path: String, limit: u64 },
    #[error("cannot read the layer: {0} (the image is corrupt or truncated)")]
    Read(#[source] io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "layer is compressed with {0}, which brim cannot unpack yet: rebuild it as tar or tar+gzip"
    )]
    Compression(&'static str),
}

fn refused(path: &[u8], why: impl Into<String>) -> LayerError {
    LayerError::Refused {
        path: String::from_utf8_lossy(path).into_owned(),
        why: why.into(),
    }
}

/// A relative path without `.`/`..` components and no leading `/`; `None` for the root.
pub fn normalize(path: &[u8]) -> Result<Option<PathBuf>, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.starts_with(b"/") {
        return Err("absolute path".into());
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(path)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` in the path".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// True when the symlink at `link` (relative to the root) with `target` resolves, lexically,
/// inside the root. Absolute targets are resolved from the container's root, so they never
/// leave it; relative ones must not climb above it.
pub fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth = link.components().count().saturating_sub(1) as i64;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    true
}

/// The running check of one layer: entry count and total size so far.
#[derive(Debug)]
pub struct LayerCheck {
    limits: LayerLimits,
    entries: u64,
    bytes: u64,
}

impl LayerCheck {
    pub fn new(limits: LayerLimits) -> Self {
        LayerCheck {
            limits,
            entries: 0,
            bytes: 0,
        }
    }

    /// Decides what to do with the next entry (pure: no I/O).
    pub fn check(&mut self, h: &EntryHeader<'_>) -> Result<Action, LayerError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(LayerError::TooManyEntries(self.limits.max_entries));
        }
        let path = match normalize(h.path).map_err(|why| refused(h.path, why))? {
            Some(p) => p,
            None if h.kind == EntryKind::Dir => return Ok(Action::Skip),
            None => return Err(refused(h.path, "only a directory may name the layer root")),
        };
        let mode = h.mode & 0o7777;
        let name = path.file_name().map_or(&b""[..], |n| n.as_bytes());
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if name == OPAQUE_MARKER.as_bytes() {
                return Ok(Action::Opaque { path: parent });
            }
            if hidden.is_empty()
                || hidden == b"."
                || hidden == b".."
                || hidden.starts_with(WHITEOUT_PREFIX.as_bytes())
            {
                return Err(refused(h.path, "malformed whiteout name"));
            }
            return Ok(Action::Whiteout {
                path: parent.join(OsStr::from_bytes(hidden)),
            });
        }
        match h.kind {
            EntryKind::Dir => Ok(Action::Dir { path, mode }),
            EntryKind::File => {
                if h.size > self.limits.max_entry_bytes {
                    return Err(refused(
                        h.path,
                        format!(
                            "{} bytes, over the per-file limit of {} bytes",
                            h.size, self.limits.max_entry_bytes
                        ),
                    ));
                }
                self.bytes = self.bytes.saturating_add(h.size);
                if self.bytes > self.limits.max_layer_bytes {
                    return Err(LayerError::TooLarge {
                        path: String::from_utf8_lossy(h.path).into_owned(),
                        limit: self.limits.max_layer_bytes,
                    });
                }
                Ok(Action::File {
                    path,
                    mode,
                    size: h.size,
                })
            }
            EntryKind::Symlink => {
                let target = h
                    .link
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| refused(h.path, "symlink without a target"))?;
                let target = PathBuf::from(OsStr::from_bytes(target));
                if !symlink_stays_inside(&path, &target) {
                    return Err(refused(
                        h.path,
                        format!(
                            "symlink to {} escapes the root filesystem",
                            target.display()
                        ),
                    ));
                }
                Ok(Action::Symlink { path, target })
            }
            EntryKind::Hardlink => {
                let raw = h
                    .link
                    .ok_or_else(|| refused(h.path, "hard link without a target"))?;
                let target = normalize(raw)
                    .map_err(|why| refused(h.path, format!("hard link target: {why}")))?
                    .ok_or_else(|| refused(h.path, "hard link to the layer root"))?;
                Ok(Action::Hardlink { path, target })
            }
            EntryKind::Fifo => Ok(Action::Fifo { path, mode }),
            EntryKind::CharDevice | EntryKind::BlockDevice => Err(refused(
                h.path,
                "device nodes are not allowed in images (the runtime creates /dev)",
            )),
            EntryKind::Other(t) => Err(refused(
                h.path,
                format!("unsupported tar entry type {:?}", t as char),
            )),
        }
    }
}

fn werr(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes sure every parent of `rel` under `root` is a real directory (created if missing),
/// never a symlink: nothing is ever written through a link.
pub(crate) fn ensure_parents(root: &Path, rel: &Path) -> Result<(), LayerError> {
    let mut cur = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(LayerError::Refused {
                    path: rel.display().to_string(),
                    why: format!(
                    "its parent {} is not a directory (a symlink?): refusing to write through it",
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                ),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(werr(&cur))?;
            }
            Err(e) => return Err(werr(&cur)(e)),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (not following a symlink); directories only when `dirs`.
fn clear(path: &Path, dirs: bool) -> Result<(), LayerError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if dirs {
                fs::remove_dir_all(path).map_err(werr(path))?;
            }
            Ok(())
        }
        Ok(_) => fs::remove_file(path).map_err(werr(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(werr(path)(e)),
    }
}

/// Creates an overlayfs whiteout (character device 0:0) at `path`.
pub(crate) fn make_whiteout(path: &Path) -> Result<(), LayerError> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0)
        .map_err(|e| werr(path)(io::Error::from_raw_os_error(e as i32)))
}

/// Unpacks one (uncompressed) tar layer into the empty directory `dest`. Returns the bytes
/// of file content written.
pub fn unpack(reader: impl Read, dest: &Path, limits: LayerLimits) -> Result<u64, LayerError> {
    let as_root = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(reader);
    let mut check = LayerCheck::new(limits);
    let mut written = 0u64;
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for entry in archive.entries().map_err(LayerError::Read)? {
        let mut entry = entry.map_err(LayerError::Read)?;
        let raw_path = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let header = entry.header();
        let kind = EntryKind::from_tar(header.entry_type().as_byte());
        if matches!(
            header.entry_type(),
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader
        ) {
            continue;
        }
        let size = header.entry_size().map_err(LayerError::Read)?;
        let mode = header.mode().unwrap_or(0o644);
        let owner = (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        );
        let action = check.check(&EntryHeader {
            path: &raw_path,
            kind,
            size,
            link: link.as_deref(),
            mode,
        })?;
        let chown = |p: &Path| -> Result<(), LayerError> {
            if as_root {
                std::os::unix::fs::lchown(p, Some(owner.0), Some(owner.1)).map_err(werr(p))?;
            }
            Ok(())
        };
        match action {
            Action::Skip => {}
            Action::Dir { path, mode } => {
                ensure_parents(dest, &path)?;
                let full = dest.join(&path);
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        clear(&full, false)?;
                        fs::create_dir(&full).map_err(werr(&full))?;
                    }
                    Err(_) => fs::create_dir(&full).map_err(werr(&full))?,
                }
                chown(&full)?;
                // Modes last: a read-only directory must still take its entries.
                dirs.push((full, mode));
            }
            Action::File { path, mode, size } => {
                ensure_parents(dest, &path)?;
                let full = dest.join(&path);
                clear(&full, true)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&full)
                    .map_err(werr(&full))?;
                let n = io::copy(&mut (&mut entry).take(size), &mut f).map_err(LayerError::Read)?;
                if n != size {
                    return Err(LayerError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} is truncated", path.display()),
                    )));
                }
                written += n;
                chown(&full)?;
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(werr(&full))?;
            }
            Action::Symlink { path, target } => {
                ensure_parents(dest, &path)?;
                let full = dest.join(&path);
                clear(&full, true)?;
                std::os::unix::fs::symlink(&target, &full).map_err(werr(&full))?;
                chown(&full)?;
            }
            Action::Hardlink { path, target } => {
                ensure_parents(dest, &path)?;
                ensure_parents(dest, &target)?;
                let src = dest.join(&target);
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(refused(
                            &raw_path,
                            format!(
                            "hard link to {}, which is not a regular file earlier in this layer",
                            target.display()
                        ),
                        ))
                    }
                }
                let full = dest.join(&path);
                clear(&full, true)?;
                fs::hard_link(&src, &full).map_err(werr(&full))?;
            }
            Action::Fifo { path, mode } => {
                ensure_parents(dest, &path)?;
                let full = dest.join(&path);
                clear(&full, true)?;
                nix::unistd::mkfifo(
                    &full,
                    nix::sys::stat::Mode::from_bits_truncate(mode as libc::mode_t),
                )
                .map_err(|e| werr(&full)(io::Error::from_raw_os_error(e as i32)))?;
                chown(&full)?;
            }
            Action::Whiteout { path } => {
                ensure_parents(dest, &path)?;
                let full = dest.join(&path);
                clear(&full, true)?;
                make_whiteout(&full)?;
            }
            Action::Opaque { path } => {
                let full = dest.join(&path);
                if !path.as_os_str().is_empty() {
                    ensure_parents(dest, &path)?;
                    match fs::symlink_metadata(&full) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => {
                            return Err(refused(&raw_path, "opaque marker in a non-directory"))
                        }
                        Err(_) => fs::create_dir(&full).map_err(werr(&full))?,
                    }
                }
                xattr::set(&full, OVERLAY_OPAQUE_XATTR, b"y").map_err(werr(&full))?;
            }
        }
    }
    for (dir, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(werr(&dir))?;
    }
    Ok(written)
}

/// Unpacks a layer blob (tar, or tar+gzip told from its magic bytes) into `dest`.
pub fn unpack_blob(blob: &Path, dest: &Path, limits: LayerLimits) -> Result<u64, LayerError> {
    let mut f = File::open(blob).map_err(LayerError::Read)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut f, &mut magic).map_err(LayerError::Read)?;
    let f = File::open(blob).map_err(LayerError::Read)?;
    let f = io::BufReader::new(f);
    match &magic[..n] {
        [0x1f, 0x8b, ..] => unpack(flate2::read::MultiGzDecoder::new(f), dest, limits),
        [0x28, 0xb5, 0x2f, 0xfd] => Err(LayerError::Compression("zstd")),
        [b'B', b'Z', b'h', ..] => Err(LayerError::Compression("bzip2")),
        [0xfd, b'7', b'z', b'X'] => Err(LayerError::Compression("xz")),
        _ => unpack(f, dest, limits),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(path: &'a str, kind: EntryKind, link: Option<&'a str>) -> EntryHeader<'a> {
        EntryHeader {
            path: path.as_bytes(),
            kind,
            size: 10,
            link: link.map(str::as_bytes),
            mode: 0o755,
        }
    }

    fn check(e: EntryHeader<'_>) -> Result<Action, LayerError> {
        LayerCheck::new(LayerLimits::default()).check(&e)
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize(b"./bin/sh"), Ok(Some(PathBuf::from("bin/sh"))));
        assert_eq!(normalize(b"bin//sh/"), Ok(Some(PathBuf::from("bin/sh"))));
        assert_eq!(normalize(b"./"), Ok(None));
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a/../../etc").is_err());
        assert!(normalize(b"..").is_err());
        assert!(normalize(b"").is_err());
    }

    #[test]
    fn refuses_hostile_entries() {
        for bad in [
            h("/etc/passwd", EntryKind::File, None),
            h("../x", EntryKind::File, None),
            h("a/../../x", EntryKind::Dir, None),
            h("dev/sda", EntryKind::BlockDevice, None),
            h("dev/null", EntryKind::CharDevice, None),
            h("x", EntryKind::Other(b'S'), None),
            h("link", EntryKind::Symlink, Some("../../etc")),
            h("a/b/link", EntryKind::Symlink, Some("../../../etc/shadow")),
            h("link", EntryKind::Symlink, Some("")),
            h("hl", EntryKind::Hardlink, Some("/etc/shadow")),
            h("hl", EntryKind::Hardlink, Some("../x")),
            h(".wh.", EntryKind::File, None),
            h("a/.wh..", EntryKind::File, None),
            h("./", EntryKind::File, None),
        ] {
            let name = String::from_utf8_lossy(bad.path).into_owned();
            assert!(check(bad).is_err(), "{name} must be refused");
        }
    }

    #[test]
    fn accepts_ordinary_entries() {
        assert_eq!(
            check(h("./bin/sh", EntryKind::Symlink, Some("/bin/busybox"))).expect("abs link"),
            Action::Symlink {
                path: "bin/sh".into(),
                target: "/bin/busybox".into()
            }
        );
        assert!(check(h("usr/lib/x", EntryKind::Symlink, Some("../../lib/x"))).is_ok());
        assert!(check(h("a/b", EntryKind::Hardlink, Some("./a/c"))).is_ok());
        assert_eq!(
            check(h("./", EntryKind::Dir, None)).expect("root"),
            Action::Skip
        );
        assert!(matches!(
            check(h("run/fifo", EntryKind::Fifo, None)),
            Ok(Action::Fifo { .. })
        ));
    }

    #[test]
    fn whiteouts() {
        assert_eq!(
            check(h("etc/.wh.motd", EntryKind::File, None)).expect("whiteout"),
            Action::Whiteout {
                path: "etc/motd".into()
            }
        );
        assert_eq!(
            check(h("var/cache/.wh..wh..opq", EntryKind::File, None)).expect("opaque"),
            Action::Opaque {
                path: "var/cache".into()
            }
        );
        assert_eq!(
            check(h(".wh..wh..opq", EntryKind::File, None)).expect("opaque root"),
            Action::Opaque { path: "".into() }
        );
    }

    #[test]
    fn size_bounds() {
        let limits = LayerLimits {
            max_entry_bytes: 100,
            max_layer_bytes: 150,
            max_entries: 3,
        };
        let mut c = LayerCheck::new(limits);
        let file = |size| EntryHeader {
            path: b"f",
            kind: EntryKind::File,
            size,
            link: None,
            mode: 0o644,
        };
        assert!(matches!(
            c.check(&file(101)),
            Err(LayerError::Refused { .. })
        ));
        assert!(c.check(&file(100)).is_ok());
        assert!(matches!(
            c.check(&file(60)),
            Err(LayerError::TooLarge { .. })
        ));
        let mut c = LayerCheck::new(limits);
        for _ in 0..3 {
            assert!(c.check(&file(1)).is_ok());
        }
        assert!(matches!(
            c.check(&file(1)),
            Err(LayerError::TooManyEntries(3))
        ));
    }

    #[test]
    fn symlink_escape_is_lexical() {
        assert!(symlink_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!symlink_stays_inside(
            Path::new("a/b"),
            Path::new("../../c")
        ));
        assert!(symlink_stays_inside(
            Path::new("a/b"),
            Path::new("x/../../c")
        ));
        assert!(!symlink_stays_inside(
            Path::new("b"),
            Path::new("x/../../c")
        ));
        assert!(symlink_stays_inside(Path::new("b"), Path::new("/../../c")));
    }

    /// Builds a tar in memory with raw headers (the tar crate's builder refuses `..`).
    fn raw_tar(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data, link) in entries {
            let mut hd = [0u8; 512];
            hd[..name.len()].copy_from_slice(name.as_bytes());
            hd[100..108].copy_from_slice(b"0000755\0");
            hd[108..116].copy_from_slice(b"0000000\0");
            hd[116..124].copy_from_slice(b"0000000\0");
            hd[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
            hd[136..148].copy_from_slice(b"00000000000\0");
            hd[156] = *kind;
            hd[157..157 + link.len()].copy_from_slice(link.as_bytes());
            hd[257..263].copy_from_slice(b"ustar\0");
            hd[263..265].copy_from_slice(b"00");
            hd[148..156].copy_from_slice(b"        ");
            let sum: u32 = hd.iter().map(|&b| b as u32).sum();
            hd[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            out.extend_from_slice(&hd);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn unpack_raw(
        entries: &[(&str, u8, &[u8], &str)],
    ) -> (tempfile::TempDir, Result<u64, LayerError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("layer");
        fs::create_dir(&dest).expect("mkdir");
        let r = unpack(
            io::Cursor::new(raw_tar(entries)),
            &dest,
            LayerLimits::default(),
        );
        (dir, r)
    }

    #[test]
    fn unpacks_files_dirs_links() {
        let (dir, r) = unpack_raw(&[
            ("bin/", b'5', b"", ""),
            ("bin/busybox", b'0', b"#!elf", ""),
            ("bin/sh", b'2', b"", "busybox"),
            ("bin/ash", b'1', b"", "bin/busybox"),
            ("etc/.wh.motd", b'0', b"", ""),
        ]);
        assert_eq!(r.expect("unpack"), 5);
        let l = dir.path().join("layer");
        assert_eq!(fs::read(l.join("bin/busybox")).expect("file"), b"#!elf");
        assert_eq!(
            fs::read_link(l.join("bin/sh")).expect("link"),
            PathBuf::from("busybox")
        );
        assert_eq!(fs::read(l.join("bin/ash")).expect("hardlink"), b"#!elf");
        assert!(l.join("etc").is_dir());
    }

    #[test]
    fn never_writes_through_a_symlink() {
        // A symlink to the outside, then a file "inside" it: the second entry must fail
        // and nothing may appear outside the layer.
        let outside = tempfile::tempdir().expect("outside");
        let target = outside.path().display().to_string();
        let (dir, r) = unpack_raw(&[
            ("escape", b'2', b"", &target),
            ("escape/pwned", b'0', b"x", ""),
        ]);
        let e = r.expect_err("must refuse");
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(!outside.path().join("pwned").exists());
        drop(dir);
        // Traversal and absolute names, refused before anything is written.
        for name in ["../evil", "/tmp/brim-evil-abs", "a/../../evil"] {
            let (dir, r) = unpack_raw(&[(name, b'0', b"x", "")]);
            assert!(r.is_err(), "{name}");
            assert!(!dir.path().join("evil").exists());
        }
        assert!(!Path::new("/tmp/brim-evil-abs").exists());
        // A device node.
        let (_d, r) = unpack_raw(&[("null", b'3', b"", "")]);
        assert!(r.expect_err("device").to_string().contains("device"));
    }

    #[test]
    fn truncated_or_huge_entries_fail_cleanly() {
        let mut t = raw_tar(&[("big", b'0', b"0123456789", "")]);
        t.truncate(512 + 4);
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(unpack(io::Cursor::new(t), dir.path(), LayerLimits::default()).is_err());
        let limits = LayerLimits {
            max_entry_bytes: 5,
            ..LayerLimits::default()
        };
        let t = raw_tar(&[("big", b'0', b"0123456789", "")]);
        let dir = tempfile::tempdir().expect("tempdir");
        let e = unpack(io::Cursor::new(t), dir.path(), limits).expect_err("too big");
        assert!(e.to_string().contains("per-file limit"), "{e}");
        assert!(!dir.path().join("big").exists(), "refused before writing");
    }
}
