//! Verifiable statements (SPEC §13): every completed file version gets a **manifest**, a
//! compact JWS (ES256) over what the file is — whose ledger, which period, the SHA-256 and
//! size of the plaintext document, and its control totals — signed with the service's
//! signing key, so that anyone holding the public keys (`/.well-known/jwks.json`) can check
//! a statement they were forwarded, offline (`ledger verify`).
//!
//! # What this module owns
//!
//! - The manifest's claims ([`Manifest`]) and their JSON names.
//! - Signing ([`ManifestSigner`]): the header is `{"alg":"ES256","kid":…}` with the key's
//!   RFC 7638 thumbprint as `kid`; the signature is the 64-byte `r ‖ s` of RFC 7518 §3.4.
//! - The JWKS the service publishes: the current key and the retired ones
//!   (`APP_ENV_SIGNING_KEYS_OLD`), public parts only.
//! - Verification ([`verify`]) against a JWKS, for `ledger verify` and the tests.
//!
//! # What it must never do
//!
//! - Print, log or put into an error the private key (`Debug` shows the kid only).
//! - Accept a manifest whose `alg` is not ES256 or whose `kid` is not in the JWKS given.

pub mod check;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey as _};
use p256::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

use crate::crypto::ec;
use crate::domain::ControlTotals;

/// The claims of a manifest (SPEC §13), in the order they are serialized.
/// Claims a newer service may add are accepted (and ignored) by an older verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `APP_ENV_SIGNING_ISSUER`.
    pub iss: String,
    /// The ledger's id.
    pub ledger_id: String,
    /// Whose ledger.
    pub merchant_id: String,
    /// STATEMENT or SUMMARY.
    #[serde(rename = "type")]
    pub ledger_type: String,
    /// The canonical period (`2026-10`, `2026-W14`, …).
    pub period: String,
    /// The IANA zone the period was cut in.
    pub timezone: String,
    /// PDF, CSV or XLSX.
    pub format: String,
    /// DRAFT or FINAL at generation.
    pub stage: String,
    /// The file version this manifest covers.
    pub version: u32,
    /// SHA-256 (hex) of the plaintext document.
    pub sha256: String,
    /// Size of the plaintext document in bytes.
    pub size_bytes: u64,
    /// Per currency, ordered by code: the self-check's totals.
    pub control_totals: Vec<ManifestTotals>,
    /// When the document was generated (RFC 3339, UTC).
    pub generated_at: String,
}

/// One currency's control totals, amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestTotals {
    /// ISO 4217 code.
    pub currency: String,
    /// Entries in that currency.
    pub entries: u64,
    /// Sum of the positive amounts.
    pub credits: i128,
    /// Sum of the negative amounts (zero or negative).
    pub debits: i128,
    /// Balance before the period's first entry.
    pub opening: i64,
    /// opening + credits + debits.
    pub closing: i128,
}

impl ManifestTotals {
    /// The totals of `totals`, one row per currency in code order.
    pub fn of(totals: &ControlTotals) -> Vec<ManifestTotals> {
        totals
            .currencies
            .iter()
            .map(|(currency, t)| ManifestTotals {
                currency: currency.to_string(),
                entries: t.count,
                credits: t.credits,
                debits: t.debits,
                opening: t.opening,
                closing: t.closing,
            })
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
    /// Extensions a verifier must understand (RFC 7515 §4.1.11): manifests use none, so a
    /// header naming any is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// Errors of the signing keys' configuration; never carry key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The current key is not a PKCS#8 PEM P-256 private key.
    #[error("expected the PKCS#8 PEM of a P-256 private key (`-----BEGIN PRIVATE KEY-----`)")]
    Current,
    /// A retired key is not a P-256 public key in PEM.
    #[error("key {0} is not the PEM of a P-256 public key (`-----BEGIN PUBLIC KEY-----`)")]
    Retired(usize),
    /// A retired key is given with its private part, which must not be kept around.
    #[error(
        "key {0} is a private key: give only the public key of a retired signing key (`openssl pkey -pubout`)"
    )]
    RetiredPrivate(usize),
}

/// Signs manifests with the current key; publishes it and the retired ones.
pub struct ManifestSigner {
    /// ring's P-256 signer: ~5× faster than the pure-Rust one, and a signature is made for
    /// every completed file (it was 4% of the CPU of `ledger-bench small`).
    fast: Option<ring::signature::EcdsaKeyPair>,
    rng: ring::rand::SystemRandom,
    key: SigningKey,
    kid: String,
    issuer: String,
    jwks: JwkSet,
}

impl std::fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl ManifestSigner {
    /// A signer with `secret`, issuing as `issuer`, publishing `retired` too.
    pub fn new(secret: &SecretKey, issuer: &str, retired: &[PublicKey]) -> Self {
        let (current, kid) = ec::public_jwk(&secret.public_key());
        let mut keys = vec![current];
        for key in retired {
            let (jwk, old_kid) = ec::public_jwk(key);
            if old_kid != kid && !keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
                keys.push(jwk);
            }
        }
        let rng = ring::rand::SystemRandom::new();
        // The DER made here always holds the public key, which ring requires.
        let fast = secret.to_pkcs8_der().ok().and_then(|der| {
            ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                der.as_bytes(),
                &rng,
            )
            .ok()
        });
        if fast.is_none() {
            tracing::warn!(kid = %kid, "ring refused the manifest signing key; signing with the portable P-256 implementation (slower)");
        }
        Self {
            fast,
            rng,
            key: SigningKey::from(secret),
            kid,
            issuer: issuer.to_owned(),
            jwks: JwkSet { keys },
        }
    }

    /// A signer from the PEM of `APP_ENV_SIGNING_KEY` and of `APP_ENV_SIGNING_KEYS_OLD`.
    pub fn from_pem(current: &str, retired: &str, issuer: &str) -> Result<Self, KeyError> {
        let secret = parse_private(current).ok_or(KeyError::Current)?;
        let retired = parse_retired(retired)?;
        Ok(Self::new(&secret, issuer, &retired))
    }

    /// The current key's id (its RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The issuer manifests name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public keys: the current one first, then the retired ones.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// The compact JWS of `manifest` (its `iss` is this signer's).
    pub fn sign(&self, manifest: &Manifest) -> String {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
            crit: None,
        };
        // Serializing these plain structs cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let payload = serde_json::to_vec(manifest).unwrap_or_default();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        // Both give the fixed 64-byte r ‖ s of RFC 7518 §3.4.
        let signature = match self
            .fast
            .as_ref()
            .map(|k| k.sign(&self.rng, input.as_bytes()))
        {
            Some(Ok(signature)) => URL_SAFE_NO_PAD.encode(signature.as_ref()),
            Some(Err(_)) | None => {
                let signature: Signature = self.key.sign(input.as_bytes());
                URL_SAFE_NO_PAD.encode(signature.to_bytes())
            }
        };
        format!("{input}.{signature}")
    }
}

/// The PKCS#8 PEM of a new random P-256 key (what `APP_ENV_SIGNING_KEY` takes).
pub fn generate_key_pem() -> String {
    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
    SecretKey::random(&mut rand::rngs::OsRng)
        .to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .unwrap_or_default()
}

/// A PKCS#8 PEM P-256 private key; literal `\n` sequences (a PEM squeezed onto one line
/// of an environment file) are read as line breaks.
fn parse_private(pem: &str) -> Option<SecretKey> {
    let pem = pem.trim().replace("\\n", "\n");
    SecretKey::from_pkcs8_pem(&pem).ok()
}

/// Every PEM block of `text`, each a P-256 public key.
pub fn parse_retired(text: &str) -> Result<Vec<PublicKey>, KeyError> {
    let text = text.replace("\\n", "\n");
    let mut keys = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let n = keys.len() + 1;
        // The block ends after its END line's closing dashes.
        let end = block
            .find("-----END ")
            .and_then(|e| block[e + 9..].find("-----").map(|d| e + 9 + d + 5))
            .ok_or(KeyError::Retired(n))?;
        let pem = &block[..end];
        if pem.contains("PRIVATE KEY-----") {
            return Err(KeyError::RetiredPrivate(n));
        }
        let key = PublicKey::from_public_key_pem(pem).map_err(|_| KeyError::Retired(n))?;
        keys.push(key);
        rest = &block[end..];
    }
    if keys.is_empty() && !text.trim().is_empty() {
        return Err(KeyError::Retired(1));
    }
    Ok(keys)
}

/// Why a manifest does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("not a compact JWS manifest: {0}")]
    Malformed(String),
    /// The header names another algorithm.
    #[error("unsupported algorithm {0:?} (manifests are ES256)")]
    Algorithm(String),
    /// No key of the JWKS has the header's kid.
    #[error("no key with kid {0:?} in the JWKS")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("the signature does not match (the manifest was altered or not signed by this key)")]
    Signature,
}

/// Checks `jws` against `jwks`: the header's kid names a P-256 key of the set and the ES256
/// signature is that key's. Returns the claims and the kid.
pub fn verify(jws: &str, jwks: &JwkSet) -> Result<(Manifest, String), VerifyError> {
    let jws = jws.trim();
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("expected three parts".into()));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| VerifyError::Malformed(format!("{what} is not base64url")))
    };
    let header: Header = serde_json::from_slice(&decode(h, "header")?)
        .map_err(|e| VerifyError::Malformed(format!("header: {e}")))?;
    if header.alg != "ES256" {
        return Err(VerifyError::Algorithm(header.alg));
    }
    if header.crit.is_some() {
        return Err(VerifyError::Malformed(
            "the header names critical extensions (crit), which manifests never use".into(),
        ));
    }
    let key = jwks
        .keys
        .iter()
        .filter(|k| k.common.key_id.as_deref() == Some(header.kid.as_str()))
        .find_map(ec::jwk_public_key)
        .ok_or_else(|| VerifyError::UnknownKey(header.kid.clone()))?;
    let signature =
        Signature::from_slice(&decode(s, "signature")?).map_err(|_| VerifyError::Signature)?;
    VerifyingKey::from(&key)
        .verify(format!("{h}.{p}").as_bytes(), &signature)
        .map_err(|_| VerifyError::Signature)?;
    let manifest: Manifest = serde_json::from_slice(&decode(p, "payload")?)
        .map_err(|e| VerifyError::Malformed(format!("payload: {e}")))?;
    Ok((manifest, header.kid))
}

#[cfg(test)]
mod tests;
