//! `ledger verify FILE --manifest M.jws --jwks URL|PATH`: whether a document is the one a
//! manifest vouches for, offline (a JWKS file) or against the service's published keys.

use std::io::Read as _;
use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use sha2::{Digest, Sha256};

use super::{Manifest, VerifyError, verify};

/// What `ledger verify` found.
#[derive(Debug)]
pub enum Outcome {
    /// The signature holds and the file is the document it describes.
    Verified {
        /// The claims.
        manifest: Box<Manifest>,
        /// The key that signed it.
        kid: String,
    },
    /// What does not match, one line each (signature, hash, size).
    Mismatch(Vec<String>),
}

/// Checks the document at `file` against the manifest text `jws` and the keys `jwks`.
pub fn check_file(file: &Path, jws: &str, jwks: &JwkSet) -> std::io::Result<Outcome> {
    let (manifest, kid) = match verify(jws, jwks) {
        Ok(ok) => ok,
        Err(e @ (VerifyError::Signature | VerifyError::UnknownKey(_))) => {
            return Ok(Outcome::Mismatch(vec![format!("signature: {e}")]));
        }
        Err(e) => return Ok(Outcome::Mismatch(vec![format!("manifest: {e}")])),
    };
    let (sha256, size) = digest(file)?;
    let mut problems = Vec::new();
    if !sha256.eq_ignore_ascii_case(&manifest.sha256) {
        problems.push(format!(
            "hash: the file's SHA-256 is {sha256}, the manifest vouches for {}",
            manifest.sha256
        ));
    }
    if size != manifest.size_bytes {
        problems.push(format!(
            "size: the file has {size} bytes, the manifest vouches for {}",
            manifest.size_bytes
        ));
    }
    Ok(if problems.is_empty() {
        Outcome::Verified {
            manifest: Box::new(manifest),
            kid,
        }
    } else {
        Outcome::Mismatch(problems)
    })
}

/// The SHA-256 (hex) and size of the file at `path`, read in pieces.
fn digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The lines `ledger verify` prints for a verified document.
pub fn describe(manifest: &Manifest, kid: &str) -> Vec<String> {
    let mut lines = vec![
        format!(
            "verified: ledger {} version {}: {} {} {} of merchant {} for {} ({})",
            manifest.ledger_id,
            manifest.version,
            manifest.stage,
            manifest.ledger_type,
            manifest.format,
            manifest.merchant_id,
            manifest.period,
            manifest.timezone
        ),
        format!(
            "document: sha256 {}, {} bytes, generated {}",
            manifest.sha256, manifest.size_bytes, manifest.generated_at
        ),
        format!("signed by: {} (key {kid})", manifest.iss),
    ];
    for t in &manifest.control_totals {
        lines.push(format!(
            "totals {}: {} entries, opening {}, credits {}, debits {}, closing {} (minor units)",
            t.currency, t.entries, t.opening, t.credits, t.debits, t.closing
        ));
    }
    lines
}
