//! `brim version`: this binary's version and, when a master answers, the master's.

use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct VersionArgs {
    /// Also ask this master (host:port) for its version; defaults to BRIM_MASTER when set.
    #[arg(long, env = "BRIM_MASTER")]
    pub(crate) master: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What the master's `/version` said, or why it could not be asked.
async fn master_version(master: &str) -> Result<String, String> {
    let security = super::security::client();
    let http = security
        .reqwest_builder()
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = http
        .get(format!("{}/version", security.url(master)))
        .send()
        .await
        .map_err(|e| format!("unreachable ({})", root_cause(&e)))?;
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("unreadable /version: {e}"))?;
    body["version"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "no version in /version".to_string())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

pub(crate) async fn run(a: VersionArgs) -> anyhow::Result<()> {
    let client = env!("CARGO_PKG_VERSION");
    let master = match &a.master {
        Some(m) => Some((m.clone(), master_version(m).await)),
        None => None,
    };
    if a.json {
        let mut out = serde_json::json!({"client": {"name": "brim", "version": client}});
        if let Some((addr, v)) = &master {
            out["master"] = match v {
                Ok(v) => serde_json::json!({"address": addr, "version": v}),
                Err(e) => serde_json::json!({"address": addr, "error": e}),
            };
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("brim {client}");
    if let Some((addr, v)) = master {
        match v {
            Ok(v) => println!("master {addr}: brim {v}"),
            Err(e) => println!("master {addr}: {e}"),
        }
    }
    Ok(())
}
