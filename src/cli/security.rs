//! TLS and token flags shared by every command, and `brim certs`.
//!
//! Daemons (`brim master`, `brim agent`) serve TLS with `--tls-cert/--tls-key/--tls-ca` or,
//! only when told `--insecure`, plaintext. Clients verify the master with `--tls-ca` (else the
//! CA `brim dev` made, in `~/.brim/dev/tls`), present `--tls-cert/--tls-key` (else `brim
//! dev`'s operator certificate) and send `--token`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use brim_security::{pki, ClientSecurity, ClientTls, TlsFiles};

pub(crate) use brim_security::DEV_CLIENT;

#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct SecurityArgs {
    /// PEM certificate: a daemon's own (served, and shown to the master by agents), or a
    /// client's (names its principal).
    #[arg(long, global = true, env = "BRIM_TLS_CERT", value_name = "PEM")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "BRIM_TLS_KEY", value_name = "PEM")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM certificate of the cluster CA: verifies servers and client certificates.
    #[arg(long, global = true, env = "BRIM_TLS_CA", value_name = "PEM")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Bearer token presented to the master (frameworks and operators).
    #[arg(long, global = true, env = "BRIM_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Plaintext instead of TLS: daemons serve it (with a warning), clients speak it. For
    /// a trusted machine or network only.
    #[arg(
        long,
        global = true,
        env = "BRIM_INSECURE",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub(crate) insecure: bool,
}

/// The directory `brim dev` keeps its throwaway CA and certificates in, by default (its
/// default work dir's `tls/`).
pub(crate) fn dev_tls_dir() -> PathBuf {
    brim_security::dev_tls_dir()
}

static CLIENT: OnceLock<ClientSecurity> = OnceLock::new();

/// How this client process reaches the master (set once by `main`; plaintext if unset).
pub(crate) fn client() -> ClientSecurity {
    CLIENT.get().cloned().unwrap_or_default()
}

impl SecurityArgs {
    fn own_pair(&self) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--tls-cert and --tls-key go together: pass both or neither"),
        }
    }

    /// A daemon's TLS files, or `None` with `--insecure`.
    pub(crate) fn node(&self, what: &str) -> anyhow::Result<Option<TlsFiles>> {
        let pair = self.own_pair()?;
        if self.insecure {
            if pair.is_some() || self.tls_ca.is_some() {
                anyhow::bail!(
                    "--insecure and --tls-* contradict each other: pass one or the other"
                );
            }
            // The master and the agent log the warning themselves.
            return Ok(None);
        }
        match (pair, &self.tls_ca) {
            (Some((cert, key)), Some(ca)) => Ok(Some(TlsFiles {
                cert,
                key,
                ca: ca.clone(),
            })),
            _ => anyhow::bail!(
                "brim {what} serves TLS: pass --tls-cert, --tls-key and --tls-ca (make a cluster CA and certificates with `brim certs`), or --insecure for plaintext"
            ),
        }
    }

    /// A client's settings: explicit flags, else `brim dev`'s CA, else an error.
    pub(crate) fn client(&self) -> anyhow::Result<ClientSecurity> {
        let options = brim_security::ClientOptions {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            token: self.token.clone(),
            insecure: self.insecure,
        };
        Ok(options.resolve(&dev_tls_dir())?)
    }

    /// Resolves the client settings once for this process.
    pub(crate) fn install_client(&self) -> anyhow::Result<()> {
        let c = self.client()?;
        let _ = CLIENT.set(c);
        Ok(())
    }
}

/// The client settings a daemon's own processes use to reach it (hosted frameworks): its
/// certificate as client identity.
pub(crate) fn loopback_client(tls: Option<&TlsFiles>) -> ClientSecurity {
    ClientSecurity {
        tls: tls.map(|f| ClientTls {
            ca: f.ca.clone(),
            identity: Some((f.cert.clone(), f.key.clone())),
        }),
        token: None,
    }
}

/// What `brim dev` uses: the given files for master and agent, or a throwaway CA in
/// `<work dir>/tls` with certificates for the master, the agent and the CLI (`operator`).
pub(crate) struct DevTls {
    pub(crate) master: TlsFiles,
    pub(crate) agent: TlsFiles,
    /// Where the CLI finds them, when they are generated.
    pub(crate) dir: Option<PathBuf>,
}

pub(crate) fn dev_tls(
    args: &SecurityArgs,
    work_dir: &Path,
    extra_host: Option<String>,
) -> anyhow::Result<Option<DevTls>> {
    if args.insecure || args.tls_ca.is_some() || args.tls_cert.is_some() {
        return Ok(args.node("dev")?.map(|f| DevTls {
            master: f.clone(),
            agent: f,
            dir: None,
        }));
    }
    let dir = work_dir.join("tls");
    let ca = pki::Pki::open_or_create(&dir, "brim dev CA (throwaway)")
        .with_context(|| format!("creating the dev CA in {}", dir.display()))?;
    let mut hosts = pki::local_hosts();
    hosts.extend(extra_host.filter(|h| !hosts.contains(h)));
    let master = ca.ensure("master", &hosts)?;
    let agent = ca.ensure("agent", &hosts)?;
    ca.ensure(DEV_CLIENT, &[])?;
    Ok(Some(DevTls {
        master,
        agent,
        dir: Some(dir),
    }))
}

#[derive(clap::Args)]
pub(crate) struct CertsArgs {
    /// Directory of the CA (`ca.pem`, `ca-key.pem`, created when missing) and certificates.
    pub(crate) dir: PathBuf,
    /// Certificates to issue, by principal name: `<dir>/<name>.pem` + `<dir>/<name>-key.pem`.
    pub(crate) names: Vec<String>,
    /// Host names and addresses the certificates are valid for as servers (repeat; default:
    /// this machine's names and loopback).
    #[arg(long = "host")]
    pub(crate) hosts: Vec<String>,
}

/// `brim certs DIR NAME...`: a cluster CA and certificates signed by it.
pub(crate) fn certs(a: CertsArgs) -> anyhow::Result<()> {
    let ca = pki::Pki::open_or_create(&a.dir, "brim cluster CA")?;
    println!("CA: {}", ca.ca().display());
    let hosts = if a.hosts.is_empty() {
        pki::local_hosts()
    } else {
        a.hosts
    };
    for name in &a.names {
        let files = ca.issue(name, &hosts)?;
        println!("{name}: {} {}", files.cert.display(), files.key.display());
    }
    Ok(())
}
