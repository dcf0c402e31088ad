//! `ledger verify FILE --manifest M.jws --jwks URL|PATH`: checks a statement someone was
//! given against its manifest (SPEC §13), offline with a JWKS file or against a service's
//! published keys. Needs no configuration and no account.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use jsonwebtoken::jwk::JwkSet;

use crate::manifest::check::{Outcome, check_file, describe};

/// The most a JWKS may weigh: a key set is a few hundred bytes a key.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// What `ledger verify` was asked.
#[derive(Debug, Clone)]
pub struct VerifyArgs {
    /// The document (PDF, CSV or XLSX) as downloaded.
    pub file: PathBuf,
    /// The manifest, as `GET /ledgers/{id}/manifest` answered it.
    pub manifest: PathBuf,
    /// The keys: an `http(s)://` URL (the service's `/.well-known/jwks.json`) or a file.
    pub jwks: String,
}

/// The outcome, or why the check could not be made (unreadable file, unreachable keys).
pub async fn run(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    let jws = std::fs::read_to_string(&args.manifest)
        .with_context(|| format!("reading the manifest {}", args.manifest.display()))?;
    let jwks = load_jwks(&args.jwks).await?;
    let file = args.file.clone();
    tokio::task::spawn_blocking(move || check_file(&file, &jws, &jwks))
        .await
        .context("the check stopped")?
        .with_context(|| format!("reading {}", args.file.display()))
}

/// The lines to print for `outcome`, and the exit status: 0 verified, 1 not.
pub fn report(outcome: &Outcome) -> (Vec<String>, u8) {
    match outcome {
        Outcome::Verified { manifest, kid } => (describe(manifest, kid), 0),
        Outcome::Mismatch(problems) => {
            let mut lines = vec!["NOT verified:".to_owned()];
            lines.extend(problems.iter().map(|p| format!("  {p}")));
            (lines, 1)
        }
    }
}

async fn load_jwks(source: &str) -> anyhow::Result<JwkSet> {
    let bytes = if source.starts_with("https://") || source.starts_with("http://") {
        let url = url::Url::parse(source).with_context(|| format!("{source} is not a URL"))?;
        // The key set is what the check trusts: over plain http anyone on the path could
        // hand over their own keys.
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if url.scheme() == "http" && !loopback {
            bail!(
                "the JWKS must be fetched over https (plain http only from this machine): {source}"
            );
        }
        fetch(source).await?
    } else {
        std::fs::read(Path::new(source)).with_context(|| format!("reading the JWKS {source}"))?
    };
    serde_json::from_slice(&bytes).with_context(|| format!("{source} is not a JWK Set"))
}

async fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        // A redirect could lead elsewhere, over http: the key set comes from the URL given.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("fetching the JWKS {url}"))?;
    if !response.status().is_success() {
        bail!("fetching the JWKS {url}: HTTP {}", response.status());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            bail!("the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
