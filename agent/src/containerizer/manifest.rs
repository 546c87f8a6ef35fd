//! Image metadata, parsed from bytes (pure; fuzzed by `fuzz/fuzz_targets/image_manifest.rs`):
//! the OCI image layout's `index.json`, OCI manifests and image configs, and the
//! `manifest.json` of `docker save` archives.

use std::path::PathBuf;

use serde::Deserialize;

/// Most layers an image may have (overlayfs stacks up to about 500; real images have tens).
pub const MAX_LAYERS: usize = 128;
/// Largest metadata file (index, manifest, config) read into memory.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Why image metadata was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("{what} is not valid JSON of the expected shape: {why}")]
    Json { what: &'static str, why: String },
    #[error("digest {0:?} is not `sha256:` and 64 lowercase hex digits")]
    Digest(String),
    #[error("the image index lists no linux/{0} image manifest")]
    NoManifest(String),
    #[error("the image has {0} layers, more than the {MAX_LAYERS} brim accepts")]
    TooManyLayers(usize),
    #[error("the image has no layers")]
    NoLayers,
    #[error("layer media type {0:?} is not supported (tar or tar+gzip layers only)")]
    LayerType(String),
    #[error("path {0:?} in manifest.json is not a plain relative path inside the archive")]
    Path(String),
}

fn json<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T, ManifestError> {
    serde_json::from_slice(bytes).map_err(|e| ManifestError::Json {
        what,
        why: e.to_string(),
    })
}

/// A checked `sha256:<hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, ManifestError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ManifestError::Digest(s.to_string()))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ManifestError::Digest(s.to_string()));
        }
        Ok(Digest(hex.to_string()))
    }
    /// From a computed hash.
    pub fn from_hex(hex: String) -> Digest {
        Digest(hex)
    }
    /// The 64 hex digits (safe as a file name).
    pub fn hex(&self) -> &str {
        &self.0
    }
    /// `blobs/sha256/<hex>` in an OCI layout.
    pub fn blob_path(&self) -> PathBuf {
        PathBuf::from("blobs/sha256").join(&self.0)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl TryFrom<RawDescriptor> for Descriptor {
    type Error = ManifestError;
    fn try_from(r: RawDescriptor) -> Result<Self, ManifestError> {
        Ok(Descriptor {
            media_type: r.media_type,
            digest: Digest::parse(&r.digest)?,
            size: r.size,
        })
    }
}

/// What an index entry points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexEntry {
    Manifest(Descriptor),
    /// A nested index (followed once by the provisioner).
    Index(Descriptor),
}

/// The OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Picks the image manifest for linux/`arch` from an `index.json` (entries without a
/// platform are taken as matching).
pub fn parse_index(bytes: &[u8], arch: &str) -> Result<IndexEntry, ManifestError> {
    #[derive(Deserialize)]
    struct Raw {
        manifests: Vec<RawDescriptor>,
    }
    let raw: Raw = json("index.json", bytes)?;
    for m in raw.manifests {
        let fits = m
            .platform
            .as_ref()
            .is_none_or(|p| p.os == "linux" && p.architecture == arch);
        if !fits {
            continue;
        }
        let nested = m.media_type == MT_INDEX || m.media_type == MT_DOCKER_LIST;
        let d = Descriptor::try_from(m)?;
        if nested {
            return Ok(IndexEntry::Index(d));
        }
        if d.media_type.is_empty()
            || d.media_type == MT_MANIFEST
            || d.media_type == MT_DOCKER_MANIFEST
        {
            return Ok(IndexEntry::Manifest(d));
        }
    }
    Err(ManifestError::NoManifest(arch.to_string()))
}

/// An image manifest: the config blob and the layers, bottom first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

fn check_layer_type(mt: &str) -> Result<(), ManifestError> {
    const OK: [&str; 5] = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
        "",
    ];
    if OK.contains(&mt) {
        Ok(())
    } else {
        Err(ManifestError::LayerType(mt.to_string()))
    }
}

fn check_layer_count(n: usize) -> Result<(), ManifestError> {
    match n {
        0 => Err(ManifestError::NoLayers),
        n if n > MAX_LAYERS => Err(ManifestError::TooManyLayers(n)),
        _ => Ok(()),
    }
}

/// Parses an OCI (or Docker v2) image manifest.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    #[derive(Deserialize)]
    struct Raw {
        config: RawDescriptor,
        layers: Vec<RawDescriptor>,
    }
    let raw: Raw = json("image manifest", bytes)?;
    check_layer_count(raw.layers.len())?;
    let layers = raw
        .layers
        .into_iter()
        .map(|l| {
            check_layer_type(&l.media_type)?;
            Descriptor::try_from(l)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Manifest {
        config: Descriptor::try_from(raw.config)?,
        layers,
    })
}

/// What the image says to run, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

/// Parses an image config blob (OCI or Docker); only `config` matters to brim.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, ManifestError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        config: Option<ImageConfig>,
    }
    let raw: Raw = json("image config", bytes)?;
    Ok(raw.config.unwrap_or_default())
}

/// The first image of a `docker save` archive's `manifest.json`: config and layer paths
/// inside the archive (checked to be plain relative paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerManifest {
    pub config: PathBuf,
    pub layers: Vec<PathBuf>,
}

pub fn parse_docker_manifest(bytes: &[u8]) -> Result<DockerManifest, ManifestError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "Layers")]
        layers: Vec<String>,
    }
    let raw: Vec<Raw> = json("manifest.json", bytes)?;
    let first = raw.into_iter().next().ok_or(ManifestError::NoLayers)?;
    check_layer_count(first.layers.len())?;
    let path = |p: &str| {
        super::layer::normalize(p.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| ManifestError::Path(p.to_string()))
    };
    Ok(DockerManifest {
        config: path(&first.config)?,
        layers: first
            .layers
            .iter()
            .map(|l| path(l))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn digests() {
        assert!(Digest::parse(D1).is_ok());
        assert_eq!(
            Digest::parse(D1).expect("d").blob_path(),
            PathBuf::from(format!("blobs/sha256/{}", &D1[7..]))
        );
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:aa",
            "sha256:ABC",
            "",
            &D1[..70],
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn picks_the_linux_manifest() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{MT_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
              {{"mediaType":"{MT_MANIFEST}","digest":"{D2}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        match parse_index(idx.as_bytes(), "amd64").expect("index") {
            IndexEntry::Manifest(d) => assert_eq!(d.digest.to_string(), D2),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_index(idx.as_bytes(), "s390x"),
            Err(ManifestError::NoManifest("s390x".into()))
        );
        assert!(parse_index(b"{}", "amd64").is_err());
        assert!(parse_index(b"\xff", "amd64").is_err());
    }

    #[test]
    fn manifests() {
        let m = format!(
            r#"{{"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":3}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":4}}]}}"#
        );
        let m = parse_manifest(m.as_bytes()).expect("manifest");
        assert_eq!(m.layers.len(), 1);
        let zstd = format!(
            r#"{{"config":{{"digest":"{D1}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{D2}"}}]}}"#
        );
        assert!(matches!(
            parse_manifest(zstd.as_bytes()),
            Err(ManifestError::LayerType(_))
        ));
        let none = format!(r#"{{"config":{{"digest":"{D1}"}},"layers":[]}}"#);
        assert_eq!(
            parse_manifest(none.as_bytes()),
            Err(ManifestError::NoLayers)
        );
    }

    #[test]
    fn configs() {
        let c = parse_config(br#"{"config":{"Cmd":["sh"],"Env":["PATH=/bin"],"WorkingDir":"/w"}}"#)
            .expect("config");
        assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(parse_config(b"{}").expect("empty"), ImageConfig::default());
    }

    #[test]
    fn docker_manifests() {
        let m = parse_docker_manifest(
            br#"[{"Config":"abc.json","RepoTags":["x:1"],"Layers":["l1/layer.tar","blobs/sha256/aa"]}]"#,
        )
        .expect("manifest");
        assert_eq!(m.layers[1], PathBuf::from("blobs/sha256/aa"));
        assert!(parse_docker_manifest(br#"[{"Config":"c","Layers":["../x"]}]"#).is_err());
        assert!(parse_docker_manifest(br#"[{"Config":"/etc/passwd","Layers":["a"]}]"#).is_err());
        assert!(parse_docker_manifest(b"[]").is_err());
    }
}
