//! A small certificate authority on disk (rcgen): `brim dev` makes a throwaway one so the
//! secure path is the default path, and `brim certs` makes one for a real cluster.
//!
//! Layout of the directory: `ca.pem` + `ca-key.pem` (the CA), and `<name>.pem` +
//! `<name>-key.pem` per issued certificate, whose subject common name is `<name>` (the
//! principal it authenticates as). Keys are written with mode 0600.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::tls::{ClientTls, TlsFiles};

/// Why the CA directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate name `{0}` must be 1-64 letters, digits, `.`, `_` or `-`")]
    BadName(String),
}

/// A CA whose key is on disk.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// The file names of a certificate issued under `dir`.
pub fn cert_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// The node files (`<name>.pem`, `<name>-key.pem`, `ca.pem`) of a certificate under `dir`.
pub fn node_files(dir: &Path, name: &str) -> TlsFiles {
    let (cert, key) = cert_files(dir, name);
    TlsFiles {
        cert,
        key,
        ca: dir.join("ca.pem"),
    }
}

/// Client settings from a directory: `ca.pem`, and `<name>.pem` + `<name>-key.pem` when
/// they exist.
pub fn client_files(dir: &Path, name: &str) -> ClientTls {
    let (cert, key) = cert_files(dir, name);
    ClientTls {
        ca: dir.join("ca.pem"),
        identity: (cert.exists() && key.exists()).then_some((cert, key)),
    }
}

/// Host names and addresses a certificate for this machine should carry.
pub fn local_hosts() -> Vec<String> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !hosts.iter().any(|x| x == h) {
            hosts.push(h.to_string());
        }
    }
    hosts
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadName(name.to_string()))
    }
}

impl Pki {
    /// Opens the CA in `dir`, creating the directory and a new CA (named `ca_name`) when
    /// there is none yet.
    pub fn open_or_create(dir: &Path, ca_name: &str) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let (cert_path, key_path) = cert_files(dir, "ca");
        if cert_path.exists() && key_path.exists() {
            let key = KeyPair::from_pem(&read(&key_path)?)?;
            let issuer = Issuer::from_ca_cert_pem(&read(&cert_path)?, key)?;
            return Ok(Pki {
                dir: dir.to_path_buf(),
                issuer,
            });
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate's path.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `<name>.pem` + `<name>-key.pem`: common name `name` (the principal it
    /// authenticates as), valid for `hosts` (DNS names or IP addresses) as a server and as a
    /// client. Overwrites an existing pair.
    pub fn issue(&self, name: &str, hosts: &[String]) -> Result<TlsFiles, PkiError> {
        check_name(name)?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = node_files(&self.dir, name);
        write(&files.key, &key.serialize_pem(), true)?;
        write(&files.cert, &cert.pem(), false)?;
        Ok(files)
    }

    /// `issue`, unless both files already exist.
    pub fn ensure(&self, name: &str, hosts: &[String]) -> Result<TlsFiles, PkiError> {
        let files = node_files(&self.dir, name);
        if files.cert.exists() && files.key.exists() {
            return Ok(files);
        }
        self.issue(name, hosts)
    }
}
