//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): a delivery carries
//! `webhook-id` (stable across retries of one event: receivers deduplicate on it),
//! `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature: v1,<base64 of
//! HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is the base64-decoded part of
//! the endpoint's `whsec_…` secret. The official verification libraries accept these
//! unchanged (the test suite checks with Python's `standardwebhooks`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use zeroize::Zeroizing;

use crate::crypto::{Binding, CryptoError, Keyring, decrypt_to_vec, encrypt_to_vec};

/// The prefix of a secret's text.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret.
const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// A secret's text is not `whsec_` + base64 of 24 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct InvalidSecret;

impl WebhookSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut key = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key }
    }

    /// Reads a secret's text, `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
        let key = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| InvalidSecret)?);
        if !(24..=64).contains(&key.len()) {
            return Err(InvalidSecret);
        }
        Ok(Self { key })
    }

    /// The secret's text, `whsec_<base64>`: shown to its owner once, stored by the service.
    pub fn expose(&self) -> Zeroizing<String> {
        // Written into one buffer of the final size: no copy of the text is left behind.
        let mut text = Zeroizing::new(String::with_capacity(
            SECRET_PREFIX.len() + self.key.len().div_ceil(3) * 4,
        ));
        text.push_str(SECRET_PREFIX);
        STANDARD.encode_string(&*self.key, &mut text);
        text
    }

    /// The `webhook-signature` value for one attempt: `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let mut context = hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

/// The headers of one attempt, in the order they are sent. `previous` is a secret a
/// rotation replaced while it still signs: its signature follows the current one's,
/// separated by a space, so a receiver holding either secret accepts the delivery.
pub fn headers(
    secret: &WebhookSecret,
    previous: Option<&WebhookSecret>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let mut signature = secret.sign(id, timestamp, body);
    if let Some(previous) = previous {
        signature.push(' ');
        signature.push_str(&previous.sign(id, timestamp, body));
    }
    [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

/// The binding version of a sealed secret: no ledger version reaches it, and webhook ids
/// come from the same generator as ledger ids, so a sealed secret can never be opened as a
/// ledger's file or the other way round.
const SEALED_SECRET_VERSION: u32 = u32::MAX;

impl WebhookSecret {
    /// The secret sealed under `keyring`'s current master key for endpoint `webhook_id`
    /// (base64 of the envelope of [`crate::crypto`]): how the store keeps it.
    pub fn seal(&self, keyring: &Keyring, webhook_id: i64) -> Result<String, CryptoError> {
        let sealed = encrypt_to_vec(keyring, binding(webhook_id), &self.key)?;
        Ok(STANDARD.encode(sealed))
    }

    /// Opens what [`Self::seal`] made for `webhook_id` (with any of `keyring`'s keys).
    pub fn unseal(keyring: &Keyring, webhook_id: i64, sealed: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| CryptoError::Malformed("a sealed webhook secret is not base64"))?;
        let key = Zeroizing::new(decrypt_to_vec(keyring, binding(webhook_id), &bytes)?);
        Ok(Self { key })
    }
}

fn binding(webhook_id: i64) -> Binding {
    Binding {
        ledger_id: webhook_id,
        version: SEALED_SECRET_VERSION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signs_as_published() {
        // The example of the Standard Webhooks specification (and of its libraries' tests).
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused_without_their_text() {
        let secret = WebhookSecret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        let again = WebhookSecret::parse(&text).unwrap();
        assert_eq!(again.sign("m", 1, b"x"), secret.sign("m", 1, b"x"));
        assert_ne!(
            WebhookSecret::generate().sign("m", 1, b"x"),
            secret.sign("m", 1, b"x")
        );
        for bad in [
            "",
            "whsec_",
            "whsec_!!!",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_c2hvcnQ=",
        ] {
            assert_eq!(
                WebhookSecret::parse(bad).unwrap_err(),
                InvalidSecret,
                "{bad}"
            );
        }
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
    }

    /// The reference library of the specification (Python `standardwebhooks`, installed by
    /// scripts/services.sh) accepts what this module signs, and refuses a changed body.
    #[test]
    fn the_reference_library_verifies_these_signatures() {
        let python = std::env::var("LEDGER_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "LEDGER_TEST_PYTHON is not set: run the tests through scripts/run-tests.sh \
                 (scripts/services.sh installs standardwebhooks into its virtualenv)"
            )
        });
        const RECEIVER: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, body, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    Webhook(secret).verify(body.encode(), headers)
    print("verified")
except Exception as e:
    print("refused: %s" % e)
"#;
        let secret = WebhookSecret::generate();
        let body =
            r#"{"type":"ledger.completed","timestamp":"2026-12-05T00:00:00Z","data":{"id":"1"}}"#;
        let now = chrono::Utc::now().timestamp();
        let headers: serde_json::Map<String, serde_json::Value> = headers(
            &secret,
            None,
            "msg_383687767063789568",
            now,
            body.as_bytes(),
        )
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
        .collect();
        let run = |body: &str| {
            let out = std::process::Command::new(&python)
                .args(["-c", RECEIVER, &secret.expose(), body])
                .arg(serde_json::Value::Object(headers.clone()).to_string())
                .output()
                .expect("run python");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        assert_eq!(run(body), "verified");
        assert!(run(&body.replace('1', "2")).starts_with("refused"));
    }

    #[test]
    fn the_signature_covers_id_timestamp_and_body() {
        let secret = WebhookSecret::generate();
        let base = secret.sign("msg_1", 100, b"{}");
        assert_ne!(secret.sign("msg_2", 100, b"{}"), base);
        assert_ne!(secret.sign("msg_1", 101, b"{}"), base);
        assert_ne!(secret.sign("msg_1", 100, b"{ }"), base);
        let [(n1, id), (n2, ts), (n3, sig)] = headers(&secret, None, "msg_1", 100, b"{}");
        assert_eq!((n1, id.as_str()), ("webhook-id", "msg_1"));
        assert_eq!((n2, ts.as_str()), ("webhook-timestamp", "100"));
        assert_eq!((n3, sig), ("webhook-signature", base.clone()));
        let old = WebhookSecret::generate();
        let [_, _, (_, both)] = headers(&secret, Some(&old), "msg_1", 100, b"{}");
        assert_eq!(both, format!("{base} {}", old.sign("msg_1", 100, b"{}")));
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_endpoint_and_holds_no_clear_text() {
        let keyring = Keyring::new(
            crate::crypto::MasterKey::from_base64(&crate::crypto::generate_key_base64()).unwrap(),
            Vec::new(),
        );
        let secret = WebhookSecret::generate();
        let sealed = secret.seal(&keyring, 42).unwrap();
        let text = secret.expose();
        let key = text.strip_prefix(SECRET_PREFIX).unwrap();
        assert!(!sealed.contains(key));
        let opened = WebhookSecret::unseal(&keyring, 42, &sealed).unwrap();
        assert_eq!(*opened.expose(), *text);
        assert!(
            WebhookSecret::unseal(&keyring, 43, &sealed).is_err(),
            "another endpoint's"
        );
        assert!(WebhookSecret::unseal(&keyring, 42, "not base64!").is_err());
        let other = Keyring::new(
            crate::crypto::MasterKey::from_base64(&crate::crypto::generate_key_base64()).unwrap(),
            Vec::new(),
        );
        assert!(
            WebhookSecret::unseal(&other, 42, &sealed).is_err(),
            "another master key"
        );
    }
}
