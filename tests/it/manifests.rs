//! Verifiable statements (SPEC §13) as their users meet them: a recipient checks a forwarded
//! document with their own JOSE library (Python's jwcrypto, not the service's code) against
//! the published keys, and with `ledger verify`, online and offline; an altered file, a
//! truncated one or another key is caught and named.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use sha2::Digest as _;

use crate::helpers::{TestApp, assert_error, ledger_command, open_statement, spawn_app, statement};

/// A recipient's check in Python with jwcrypto: the manifest's signature against the JWKS
/// (the key chosen by the header's kid), the header, and the document's SHA-256 and size
/// against the claims. Prints the claims as JSON, or exits 1 naming the failure.
const RECIPIENT: &str = r#"
import hashlib, json, sys
from jwcrypto import jwk, jws
manifest, keys, document = open(sys.argv[1]).read(), open(sys.argv[2]).read(), open(sys.argv[3], 'rb').read()
keyset = jwk.JWKSet.from_json(keys)
token = jws.JWS()
token.deserialize(manifest)
header = token.jose_header
assert header['alg'] == 'ES256', header
key = keyset.get_key(header['kid'])
assert key is not None, 'no key ' + header['kid']
assert key.thumbprint() == header['kid'], 'kid is not the RFC 7638 thumbprint'
token.verify(key, alg='ES256')
claims = json.loads(token.payload)
if claims['sha256'] != hashlib.sha256(document).hexdigest():
    sys.exit('hash differs')
if claims['sizeBytes'] != len(document):
    sys.exit('size differs')
print(json.dumps(claims))
"#;

fn python() -> String {
    let python = std::env::var("LEDGER_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "LEDGER_TEST_PYTHON is not set: run the suite through scripts/run-tests.sh \
             (scripts/services.sh installs jwcrypto into its virtualenv and exports it)"
        )
    });
    assert!(
        Path::new(&python).is_file(),
        "{python} does not exist: scripts/services.sh makes the virtualenv"
    );
    python
}

/// jwcrypto's verdict on `manifest` for `document` with `jwks`: the claims, or the failure.
fn recipient_check(
    dir: &Path,
    manifest: &str,
    jwks: &str,
    document: &[u8],
) -> Result<Value, String> {
    let (m, k, d) = (dir.join("m.jws"), dir.join("jwks.json"), dir.join("doc"));
    std::fs::write(&m, manifest).unwrap();
    std::fs::write(&k, jwks).unwrap();
    std::fs::write(&d, document).unwrap();
    let out = std::process::Command::new(python())
        .args(["-c", RECIPIENT])
        .args([&m, &k, &d])
        .output()
        .expect("run python");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("claims json"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn text(app: &TestApp, token: &str, path: &str) -> (u16, String, String) {
    let r = app.get(token, path).await;
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, r.text().await.unwrap())
}

async fn jwks(app: &TestApp) -> String {
    let r = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the JWKS needs no token");
    assert_eq!(r.headers()["content-type"], "application/jwk-set+json");
    r.text().await.unwrap()
}

/// `ledger verify`, run without blocking the runtime the service of the test answers on.
async fn verify(file: &Path, manifest: &Path, jwks: &str) -> Output {
    let mut command = ledger_command();
    command
        .args(["verify"])
        .arg(file)
        .arg("--manifest")
        .arg(manifest)
        .args(["--jwks", jwks]);
    tokio::process::Command::from(command)
        .output()
        .await
        .expect("run ledger verify")
}

#[tokio::test]
async fn a_recipient_verifies_a_statement_with_its_own_jose_library() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_viewer", "m_acme").await;
    let admin = app.user("root", "platform_admin", "*").await;
    let (id, done) = app
        .completed(&admin, statement("m_acme", "2026-10"), 30)
        .await;

    let (status, kind, manifest) = text(&app, &token, &format!("/ledgers/{id}/manifest")).await;
    assert_eq!(
        (status, kind.as_str()),
        (200, "application/jose"),
        "{manifest}"
    );
    let document = app.download(&token, &id).await.bytes().await.unwrap();
    let keys = jwks(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let claims = recipient_check(dir.path(), &manifest, &keys, &document).unwrap();
    assert_eq!(claims["iss"], "ledger");
    assert_eq!(claims["ledgerId"], id.as_str());
    assert_eq!(claims["merchantId"], "m_acme");
    assert_eq!(claims["type"], "STATEMENT");
    assert_eq!(claims["period"], "2026-10");
    assert_eq!(claims["format"], "CSV");
    assert_eq!(claims["stage"], "FINAL");
    assert_eq!(claims["version"], 1);
    assert_eq!(claims["timezone"], done["timezone"]);
    assert_eq!(claims["sha256"], done["file"]["sha256"]);
    assert_eq!(claims["sizeBytes"], done["file"]["sizeBytes"]);
    assert!(
        claims["generatedAt"].as_str().unwrap().ends_with('Z'),
        "{claims}"
    );
    // The control totals are the document's: each currency's entries are its entry rows in
    // the CSV (the rows with an entryId), and its closing is opening + credits + debits.
    let totals = claims["controlTotals"].as_array().unwrap();
    let mut rows = std::collections::BTreeMap::<String, u64>::new();
    for record in csv::Reader::from_reader(&document[..]).records() {
        let record = record.unwrap();
        if !record[1].is_empty() {
            *rows.entry(record[5].to_owned()).or_default() += 1;
        }
    }
    let counted: std::collections::BTreeMap<String, u64> = totals
        .iter()
        .map(|t| {
            (
                t["currency"].as_str().unwrap().to_owned(),
                t["entries"].as_u64().unwrap(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(!counted.is_empty(), "{claims}");
    assert_eq!(counted, rows, "entries per currency: manifest vs CSV rows");
    for t in totals {
        let (opening, credits, debits, closing) = (
            t["opening"].as_i64().unwrap(),
            t["credits"].as_i64().unwrap(),
            t["debits"].as_i64().unwrap(),
            t["closing"].as_i64().unwrap(),
        );
        assert_eq!(opening + credits + debits, closing, "{t}");
        assert!(debits <= 0 && credits >= 0, "{t}");
    }

    // A file altered on the way is refused by the recipient's own check.
    let mut altered = document.to_vec();
    let last = altered.len() - 2;
    altered[last] ^= 1;
    assert!(
        recipient_check(dir.path(), &manifest, &keys, &altered)
            .unwrap_err()
            .contains("hash differs")
    );
    // A manifest altered on the way does not verify.
    let mut parts: Vec<String> = manifest.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replacen('A', "B", 1);
    let forged = parts.join(".");
    assert!(recipient_check(dir.path(), &forged, &keys, &document).is_err());
    app.stop().await;
}

#[tokio::test]
async fn ledger_verify_vouches_for_the_document_online_and_offline_and_names_mismatches() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_admin", "m_acme").await;
    let (id, _) = app
        .completed(&token, statement("m_acme", "2026-10"), 30)
        .await;
    let (_, _, manifest) = text(&app, &token, &format!("/ledgers/{id}/manifest")).await;
    let document = app.download(&token, &id).await.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (file, m, keys) = (
        dir.path().join("statement.csv"),
        dir.path().join("statement.jws"),
        dir.path().join("jwks.json"),
    );
    std::fs::write(&file, &document).unwrap();
    std::fs::write(&m, &manifest).unwrap();
    std::fs::write(&keys, jwks(&app).await).unwrap();

    // Offline, with a saved JWKS, and online, with the service's URL.
    let jwks_url = app.url("/.well-known/jwks.json");
    for source in [keys.to_str().unwrap(), jwks_url.as_str()] {
        let out = verify(&file, &m, source).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{source}: {out:?}");
        assert!(
            stdout.contains(&format!("verified: ledger {id} version 1: FINAL STATEMENT CSV of merchant m_acme for 2026-10")),
            "{stdout}"
        );
        assert!(stdout.contains("totals "), "{stdout}");
    }

    // One byte changed: the hash is named. Cut short: hash and size.
    let mut altered = document.to_vec();
    altered[0] ^= 0x20;
    std::fs::write(&file, &altered).unwrap();
    let out = verify(&file, &m, keys.to_str().unwrap()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.contains("NOT verified") && stdout.contains("hash:"),
        "{stdout}"
    );
    std::fs::write(&file, &document[..document.len() / 2]).unwrap();
    let out = verify(&file, &m, keys.to_str().unwrap()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.contains("hash:") && stdout.contains("size:"),
        "{stdout}"
    );

    // Keys of another service: the signature is named.
    std::fs::write(&file, &document).unwrap();
    let other = spawn_app().await;
    std::fs::write(&keys, jwks(&other).await).unwrap();
    let out = verify(&file, &m, keys.to_str().unwrap()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout.contains("signature:"), "{stdout}");

    // The check cannot be made: exit 2, with the reason.
    let out = verify(&dir.path().join("missing.csv"), &m, jwks_url.as_str()).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.csv"));
    // Keys over plain http from another machine are not trusted.
    let out = verify(&file, &m, "http://keys.example.com/jwks.json").await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be fetched over https"),
        "{out:?}"
    );
    other.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn each_version_has_its_manifest_and_access_is_the_downloads() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_operator", "m_acme").await;
    let stranger = app.user("mallory", "platform_admin", "m_other").await;
    let (id, _) = app.completed(&token, open_statement("m_acme"), 30).await;
    let r = app.regenerate(&token, &id).await;
    assert_eq!(r.status(), 202);
    let v2 = app.wait_for(&token, &id, "COMPLETED", 30).await;
    let keys = jwks(&app).await;
    let dir = tempfile::tempdir().unwrap();
    for (path, version) in [
        (format!("/ledgers/{id}/manifest"), 2),
        (format!("/ledgers/{id}/manifest?version=2"), 2),
        (format!("/ledgers/{id}/manifest?version=1"), 1),
    ] {
        let (status, _, manifest) = text(&app, &token, &path).await;
        assert_eq!(status, 200, "{path}: {manifest}");
        let document = app
            .get(&token, &format!("/ledgers/{id}/download?version={version}"))
            .await
            .bytes()
            .await
            .unwrap();
        let claims = recipient_check(dir.path(), &manifest, &keys, &document).unwrap();
        assert_eq!(
            (claims["version"].as_u64(), claims["stage"].as_str()),
            (Some(version), Some("DRAFT"))
        );
    }
    assert_eq!(v2["file"]["version"], 2);
    assert_error(
        app.get(&token, &format!("/ledgers/{id}/manifest?version=3"))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get(&token, &format!("/ledgers/{id}/manifest?version=0"))
            .await,
        400,
        "VALIDATION_ERROR",
    )
    .await;
    assert_error(
        app.get(&token, &format!("/ledgers/{id}/manifest?v=1"))
            .await,
        400,
        "VALIDATION_ERROR",
    )
    .await;
    // Someone who may not read the merchant learns nothing, not even that it exists.
    assert_error(
        app.get(&stranger, &format!("/ledgers/{id}/manifest")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let anonymous = reqwest::get(app.url(&format!("/ledgers/{id}/manifest")))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // The headers of a manifest: not cached, not sniffed.
    let r = app.get(&token, &format!("/ledgers/{id}/manifest")).await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    // A ledger without a file has no manifest yet, and the answer says why.
    let broken = app.user("bob", "merchant_admin", "m_broken").await;
    let created = app
        .create_ok(&broken, statement("m_broken", "2026-10"))
        .await;
    let bid = created["id"].as_str().unwrap().to_owned();
    app.wait_for(&broken, &bid, "REJECTED", 30).await;
    assert_error(
        app.get(&broken, &format!("/ledgers/{bid}/manifest")).await,
        409,
        "JOB_NOT_READY",
    )
    .await;

    // A deleted ledger's manifest is gone with it.
    let admin = app.user("carol", "merchant_admin", "m_acme").await;
    assert_eq!(
        app.delete(&admin, &format!("/ledgers/{id}")).await.status(),
        204
    );
    assert_error(
        app.get(&token, &format!("/ledgers/{id}/manifest")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_pdf_summary_is_vouched_for_too() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_admin", "m_acme").await;
    let body = serde_json::json!({ "merchantId": "m_acme", "type": "SUMMARY", "period": "2026-10", "format": "PDF" });
    let (id, done) = app.completed(&token, body, 30).await;
    let (_, _, manifest) = text(&app, &token, &format!("/ledgers/{id}/manifest")).await;
    let document = app.download(&token, &id).await.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let claims = recipient_check(dir.path(), &manifest, &jwks(&app).await, &document).unwrap();
    assert_eq!(
        claims["sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(&document))
    );
    assert_eq!(
        (claims["type"].as_str(), claims["format"].as_str()),
        (Some("SUMMARY"), Some("PDF"))
    );
    assert_eq!(claims["sizeBytes"], done["file"]["sizeBytes"]);
    app.stop().await;
}
