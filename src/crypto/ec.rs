//! P-256 key pairs kept in files of the data dir (the embedded default's dev token key and
//! manifest signing key), and their public JWKs.
//!
//! A key file is PKCS#8 PEM, mode 0600, created once: written whole to a staged file,
//! fsynced, then linked under its name — the link is the lock, so of several processes
//! starting together exactly one key wins and the others read it, and a crash never leaves
//! a half-written key under the name — and the directory is fsynced, so the key survives a
//! power loss. An existing file is never overwritten, even when unreadable. Nothing here
//! prints, logs or puts into an error the private key.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, KeyAlgorithm, PublicKeyUse,
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};

/// How long a process that lost the creation race waits for the winner's file to be
/// complete before giving up.
const REREAD_ATTEMPTS: u32 = 40;
const REREAD_PAUSE: Duration = Duration::from_millis(25);

/// What to do with a key file others than its owner may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposed {
    /// Use it, with a WARN.
    Warn,
    /// Refuse it: whoever read it could sign as the service.
    Refuse,
}

/// Loads the P-256 key at `path`, creating it (and its directory, mode 0700) when absent.
/// The flag is true when this call created it. `what` names the key in errors ("dev key").
pub fn load_or_create(
    path: &Path,
    what: &str,
    exposed: Exposed,
) -> Result<(SecretKey, bool), String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {}", parent.display(), e.kind()))?;
    }
    if path.exists() {
        return Ok((read_settled(path, what, exposed)?, false));
    }
    let secret = SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| format!("cannot encode the new {what}"))?;
    let mut staged = path.as_os_str().to_owned();
    staged.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let staged = std::path::PathBuf::from(staged);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .and_then(|mut file| {
            file.write_all(pem.as_bytes())?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(format!(
            "cannot write {what} {}: {}",
            path.display(),
            e.kind()
        ));
    }
    // The link fails if another process's key is already there: that one wins.
    let linked = std::fs::hard_link(&staged, path);
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("cannot sync {}: {}", dir.display(), e.kind()))?;
            }
            Ok((secret, true))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Ok((read_settled(path, what, exposed)?, false))
        }
        Err(e) => Err(format!(
            "cannot create {what} {}: {}",
            path.display(),
            e.kind()
        )),
    }
}

/// Reads an existing key, waiting briefly when it is still being written by the process
/// that won the creation race.
fn read_settled(path: &Path, what: &str, exposed: Exposed) -> Result<SecretKey, String> {
    for attempt in 0..REREAD_ATTEMPTS {
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                if let Ok(secret) = SecretKey::from_pkcs8_pem(&pem) {
                    check_exposure(path, what, exposed)?;
                    return Ok(secret);
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound && attempt > 0 => {
                return Err(format!(
                    "{what} {} disappeared while being created",
                    path.display()
                ));
            }
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(format!(
                    "cannot read {what} {}: {}",
                    path.display(),
                    e.kind()
                ));
            }
            Err(_) => {}
        }
        std::thread::sleep(REREAD_PAUSE);
    }
    Err(format!(
        "{what} {} is not a PKCS#8 P-256 private key (left untouched)",
        path.display()
    ))
}

fn check_exposure(path: &Path, what: &str, exposed: Exposed) -> Result<(), String> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        if exposed == Exposed::Refuse {
            return Err(format!(
                "{what} {} is accessible to group or others: refused (chmod 600 it if nobody \
                 else read it, or remove it to generate a new one)",
                path.display()
            ));
        }
        tracing::warn!(path = %path.display(), key = what, "key file is accessible to group or others; expected mode 0600");
    }
    Ok(())
}

/// The public JWK of `key` (ES256, `use: sig`) with its RFC 7638 thumbprint as `kid`, and
/// that kid.
pub fn public_jwk(key: &PublicKey) -> (Jwk, String) {
    let point = key.to_encoded_point(false);
    // An uncompressed point of a valid public key always has both coordinates.
    let coordinate = |c: Option<&p256::FieldBytes>| {
        URL_SAFE_NO_PAD.encode(c.map(|c| &c[..]).unwrap_or_default())
    };
    let (x, y) = (coordinate(point.x()), coordinate(point.y()));
    let kid = thumbprint(&x, &y);
    let jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::ES256),
            key_id: Some(kid.clone()),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x,
            y,
        }),
    };
    (jwk, kid)
}

/// The P-256 public key of a JWK (`kty: EC`, `crv: P-256`), if it is one.
pub fn jwk_public_key(jwk: &Jwk) -> Option<PublicKey> {
    let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        return None;
    };
    if ec.curve != EllipticCurve::P256 {
        return None;
    }
    let x = URL_SAFE_NO_PAD.decode(&ec.x).ok()?;
    let y = URL_SAFE_NO_PAD.decode(&ec.y).ok()?;
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(4);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    PublicKey::from_sec1_bytes(&sec1).ok()
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_whole_and_alone_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/k.pem");
        let (first, created) = load_or_create(&path, "k", Exposed::Refuse).unwrap();
        assert!(created);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["k.pem"], "no staged file is left");
        let (again, created) = load_or_create(&path, "k", Exposed::Refuse).unwrap();
        assert!(!created);
        assert_eq!(first.to_bytes(), again.to_bytes());
    }

    #[test]
    fn a_key_others_may_read_is_refused_or_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        load_or_create(&path, "k", Exposed::Refuse).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path, "signing key", Exposed::Refuse).unwrap_err();
        assert!(err.contains("accessible to group or others"), "{err}");
        assert!(load_or_create(&path, "dev key", Exposed::Warn).is_ok());
    }
}
