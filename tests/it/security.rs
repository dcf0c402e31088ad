//! Security as a client sees it: forged tokens are 401, tenants never see each other's
//! ledgers (not even their existence), roles limit what a caller may do, downloads carry
//! hardening headers, and no plaintext of a document is ever written to disk.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, assert_error, open_statement, spawn_app, statement};

const ALICE: &str = "alice";
const MALLORY: &str = "mallory";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn no_5xx(r: &reqwest::Response, what: &str) {
    assert!(!r.status().is_server_error(), "{what}: got {}", r.status());
}

/// The PEM of the key the app trusts (its dev key, or the production run's identity
/// provider).
fn dev_key_pem(app: &TestApp) -> String {
    crate::helpers::trusted_key(&app.config).1
}

fn dev_kid(app: &TestApp) -> String {
    crate::helpers::trusted_key(&app.config).0.kid().to_owned()
}

/// `claims` plus the audience the app requires, if any: a forged token must fail for the
/// reason it tests, not for a missing `aud`.
fn with_aud(app: &TestApp, mut claims: Value) -> Value {
    if let Some(aud) = &app.config.auth_audience {
        claims["aud"] = json!(aud);
    }
    claims
}

/// An ES256 token over arbitrary claims with an arbitrary PKCS#8 PEM key and `kid`.
fn es256(pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec pem");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// Sends `GET /ledgers?merchantId=m_acme` with the raw `Authorization` value (or none) and
/// asserts a 401 UNAUTHORIZED with `WWW-Authenticate: Bearer` whose body does not echo the
/// credential.
async fn assert_unauthorized(app: &TestApp, authorization: Option<&str>, what: &str) {
    let mut request = app.client.get(app.url("/ledgers?merchantId=m_acme"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let r = request.send().await.expect("request");
    no_5xx(&r, what);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate header"))
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate: {challenge}"
    );
    let status = r.status();
    let text = r.text().await.expect("body");
    assert_eq!(status, 401, "{what}: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{what}: {body}");
    assert!(body["error"]["requestId"].is_string(), "{what}: {body}");
    if let Some(value) = authorization {
        let credential = value.split_once(' ').map_or(value, |(_, t)| t).trim();
        if credential.len() >= 8 {
            assert!(
                !text.contains(credential),
                "{what}: the body echoes the token: {text}"
            );
            // Nor any sizeable piece of it (header, payload or signature of a JWT).
            for part in credential.split('.').filter(|p| p.len() >= 8) {
                assert!(
                    !text.contains(part),
                    "{what}: the body echoes part of the token: {text}"
                );
            }
        }
    }
}

#[tokio::test]
async fn forged_and_invalid_tokens_are_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    // Alice may read m_acme: a token that got through would answer 200.
    let good = app.user(ALICE, "merchant_admin", "m_acme").await;
    let r = app.get(&good, "/ledgers?merchantId=m_acme").await;
    assert_eq!(r.status(), 200, "control: a genuine token is accepted");

    let kid = dev_kid(&app);
    let pem = dev_key_pem(&app);
    let valid_claims = with_aud(
        &app,
        json!({ "sub": ALICE, "iat": now(), "exp": now() + 3600 }),
    );

    // No header, another scheme, garbage.
    assert_unauthorized(&app, None, "no Authorization header").await;
    assert_unauthorized(
        &app,
        Some("Basic YWxpY2U6cGFzc3dvcmQ="),
        "Basic credentials",
    )
    .await;
    assert_unauthorized(&app, Some("Bearer"), "Bearer without a token").await;
    assert_unauthorized(&app, Some("Bearer "), "Bearer with an empty token").await;
    assert_unauthorized(&app, Some("Bearer garbage-not-a-jwt"), "garbage").await;
    assert_unauthorized(&app, Some("Bearer a.b.c"), "three garbage segments").await;
    let long = format!(
        "Bearer {}.{}.{}",
        "e".repeat(4000),
        "p".repeat(8000),
        "s".repeat(4000)
    );
    assert_unauthorized(&app, Some(&long), "a 16 KB garbage token").await;
    // A header value that is not visible ASCII.
    let r = app
        .client
        .get(app.url("/ledgers?merchantId=m_acme"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe.\xc3\xa9.x")
                .expect("header"),
        )
        .send()
        .await
        .expect("request");
    no_5xx(&r, "non-ASCII token");
    assert_error(r, 401, "UNAUTHORIZED").await;
    assert_unauthorized(
        &app,
        Some(&format!("Token {good}")),
        "genuine token, other scheme",
    )
    .await;

    // HS256 with the public key material as the HMAC secret (algorithm confusion).
    let dev = crate::helpers::trusted_key(&app.config).0;
    let jwk = dev.jwks().keys[0].clone();
    let jwk_json = serde_json::to_string(&jwk).expect("jwk json");
    let coords = match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) => {
            vec![ec.x.clone(), ec.y.clone(), format!("{}{}", ec.x, ec.y)]
        }
        other => panic!("dev key is not EC: {other:?}"),
    };
    let secret = <p256::SecretKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
        .expect("dev key parses");
    let public_pem = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public pem");
    let mut hmac_secrets = vec![jwk_json, public_pem, kid.clone()];
    hmac_secrets.extend(coords);
    for hmac in &hmac_secrets {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &valid_claims,
            &EncodingKey::from_secret(hmac.as_bytes()),
        )
        .expect("hs256");
        assert_unauthorized(
            &app,
            Some(&format!("Bearer {token}")),
            "HS256 with public key material",
        )
        .await;
    }

    // alg: none (and its spellings), with and without a signature segment.
    let payload = b64(valid_claims.to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({ "alg": alg, "typ": "JWT", "kid": kid })
            .to_string()
            .as_bytes());
        assert_unauthorized(
            &app,
            Some(&format!("Bearer {header}.{payload}.")),
            "alg none",
        )
        .await;
        assert_unauthorized(
            &app,
            Some(&format!("Bearer {header}.{payload}")),
            "alg none, two segments",
        )
        .await;
    }

    // A genuine ES256 signature with the header's alg swapped: the signature no longer matches.
    let parts: Vec<&str> = good.split('.').collect();
    let swapped = b64(json!({ "alg": "ES384", "typ": "JWT", "kid": kid })
        .to_string()
        .as_bytes());
    assert_unauthorized(
        &app,
        Some(&format!("Bearer {swapped}.{}.{}", parts[1], parts[2])),
        "alg swapped",
    )
    .await;

    // A tampered payload under the genuine signature.
    let tampered = b64(json!({ "sub": "root", "exp": now() + 3600 })
        .to_string()
        .as_bytes());
    assert_unauthorized(
        &app,
        Some(&format!("Bearer {}.{tampered}.{}", parts[0], parts[2])),
        "tampered payload",
    )
    .await;

    // Expired beyond the 30 s leeway, signed with the genuine dev key.
    let expired = es256(
        &pem,
        Some(&kid),
        &with_aud(
            &app,
            json!({ "sub": ALICE, "iat": now() - 7200, "exp": now() - 120 }),
        ),
    );
    assert_unauthorized(&app, Some(&format!("Bearer {expired}")), "expired").await;

    // No exp at all.
    let no_exp = es256(
        &pem,
        Some(&kid),
        &with_aud(&app, json!({ "sub": ALICE, "iat": now() })),
    );
    assert_unauthorized(&app, Some(&format!("Bearer {no_exp}")), "no exp").await;

    // Wrong kid, no kid.
    let wrong_kid = es256(&pem, Some("not-the-dev-key"), &valid_claims);
    assert_unauthorized(&app, Some(&format!("Bearer {wrong_kid}")), "wrong kid").await;
    let no_kid = es256(&pem, None, &valid_claims);
    assert_unauthorized(&app, Some(&format!("Bearer {no_kid}")), "no kid").await;

    // Another P-256 key that claims the dev key's kid.
    let other = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let other_pem = other.to_pkcs8_pem(LineEnding::LF).expect("pkcs8");
    let impostor = es256(&other_pem, Some(&kid), &valid_claims);
    assert_unauthorized(
        &app,
        Some(&format!("Bearer {impostor}")),
        "another key, right kid",
    )
    .await;

    // Missing or empty sub.
    let no_sub = es256(
        &pem,
        Some(&kid),
        &with_aud(&app, json!({ "iat": now(), "exp": now() + 3600 })),
    );
    assert_unauthorized(&app, Some(&format!("Bearer {no_sub}")), "missing sub").await;
    let empty_sub = es256(
        &pem,
        Some(&kid),
        &with_aud(&app, json!({ "sub": "", "exp": now() + 3600 })),
    );
    assert_unauthorized(&app, Some(&format!("Bearer {empty_sub}")), "empty sub").await;

    // Our own hand-signed token with the genuine key is accepted (the forgeries above failed
    // for the reason each tests, not because of how they were built).
    let own = es256(&pem, Some(&kid), &valid_claims);
    let r = app.get(&own, "/ledgers?merchantId=m_acme").await;
    assert_eq!(
        r.status(),
        200,
        "control: a hand-signed genuine token is accepted"
    );
}

#[tokio::test]
async fn every_endpoint_requires_a_token_except_openapi() {
    let app = spawn_app().await;
    let token = app.user(ALICE, "merchant_admin", "m_acme").await;
    let created = app.create_ok(&token, statement("m_acme", "2026-10")).await;
    let id = created["id"].as_str().expect("id").to_owned();

    // The genuine token with the first signature character changed.
    let (signed, signature) = token.rsplit_once('.').expect("jwt");
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("Bearer {signed}.{flipped}{}", &signature[1..]);
    let requests = [
        ("POST", "/ledgers".to_owned()),
        ("GET", "/ledgers".to_owned()),
        ("GET", format!("/ledgers/{id}")),
        ("GET", format!("/ledgers/{id}/events")),
        ("GET", format!("/ledgers/{id}/download")),
        ("GET", format!("/ledgers/{id}/manifest")),
        ("POST", format!("/ledgers/{id}/retry")),
        ("POST", format!("/ledgers/{id}/regenerate")),
        ("DELETE", format!("/ledgers/{id}")),
    ];
    for (method, path) in &requests {
        for auth in [None, Some(forged.as_str())] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut request = app.client.request(method.clone(), app.url(path));
            if *path == "/ledgers" && method == reqwest::Method::POST {
                request = request.json(&statement("m_acme", "2026-09"));
            }
            if let Some(value) = auth {
                request = request.header("authorization", value);
            }
            let r = request.send().await.expect("request");
            no_5xx(&r, path);
            assert!(
                r.headers()
                    .get("www-authenticate")
                    .is_some_and(|v| v.as_bytes().starts_with(b"Bearer")),
                "{method} {path}: no Bearer challenge"
            );
            assert_error(r, 401, "UNAUTHORIZED").await;
        }
    }
    // Nothing was created or changed by the refused calls.
    let list = app.get_json(&token, "/ledgers?merchantId=m_acme").await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1, "{list}");
    assert!(list["items"][0]["deletedAt"].is_null(), "{list}");

    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "the OpenAPI document is public");
}

/// A ledger id that does not exist (well-formed, far in the future of the Snowflake clock).
const ABSENT: &str = "7000000000000000000";

/// The error body of `method path` for `token`, asserting the status and code.
async fn error_of(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    status: u16,
    code: &str,
) -> Value {
    let r = match method {
        "GET" => app.get(token, path).await,
        "POST" => app.post(token, path).await,
        "DELETE" => app.delete(token, path).await,
        other => panic!("method {other}"),
    };
    no_5xx(&r, path);
    assert_error(r, status, code).await
}

#[tokio::test]
async fn another_tenant_cannot_see_or_touch_a_ledger() {
    let app = spawn_app().await;
    let alice = app.user(ALICE, "merchant_admin", "m_acme").await;
    let mallory = app.user(MALLORY, "merchant_admin", "m_tokyo").await;

    // A DRAFT ledger (a month still open), COMPLETED: regenerate and delete would work for
    // its owner, download too.
    let created = app.create_ok(&alice, open_statement("m_acme")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let before = app.wait_for(&alice, &id, "COMPLETED", 30).await;
    assert_eq!(before["stage"], "DRAFT", "{before}");
    let own = app
        .create_ok(&mallory, statement("m_tokyo", "2026-10"))
        .await;

    let endpoints = [
        ("GET", "/ledgers/{}"),
        ("GET", "/ledgers/{}/events"),
        ("GET", "/ledgers/{}/download"),
        ("GET", "/ledgers/{}/download?version=1"),
        ("POST", "/ledgers/{}/retry"),
        ("POST", "/ledgers/{}/regenerate"),
        ("DELETE", "/ledgers/{}"),
    ];
    for (method, template) in endpoints {
        let theirs = template.replace("{}", &id);
        let absent = template.replace("{}", ABSENT);
        let seen = error_of(&app, &mallory, method, &theirs, 404, "NOT_FOUND").await;
        let missing = error_of(&app, &mallory, method, &absent, 404, "NOT_FOUND").await;
        // No existence leak: the same answer as for an id that does not exist.
        assert_eq!(
            seen["error"]["code"], missing["error"]["code"],
            "{method} {template}"
        );
        assert_eq!(
            seen["error"]["message"], missing["error"]["message"],
            "{method} {template}"
        );
        let text = seen.to_string();
        assert!(
            !text.contains("m_acme"),
            "{method} {template} leaks the merchant: {text}"
        );
    }

    // Creating for or listing another merchant is 403.
    // The answer names the merchant and the missing permission (her own request: nothing
    // leaks) and which roles would grant it.
    let r = app.create(&mallory, statement("m_acme", "2026-09")).await;
    no_5xx(&r, "create for m_acme");
    let refused = assert_error(r, 403, "FORBIDDEN").await;
    assert_eq!(refused["error"]["merchantId"], "m_acme", "{refused}");
    assert_eq!(refused["error"]["action"], "create", "{refused}");
    assert_eq!(
        refused["error"]["message"],
        "not allowed to create ledgers of merchant m_acme: ask for a role that grants `create` \
         on it (merchant_operator, merchant_admin or platform_admin)"
    );
    let refused = error_of(
        &app,
        &mallory,
        "GET",
        "/ledgers?merchantId=m_acme",
        403,
        "FORBIDDEN",
    )
    .await;
    assert_eq!(refused["error"]["merchantId"], "m_acme", "{refused}");
    assert_eq!(refused["error"]["action"], "read", "{refused}");

    // Listing without a merchant shows only her own merchant's ledgers.
    let r = app.get(&mallory, "/ledgers").await;
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.expect("json");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], own["id"], "{list}");
    assert!(items.iter().all(|l| l["merchantId"] == "m_tokyo"), "{list}");
    // Nor with other filters that would match alice's ledger.
    let list: Value = app
        .get(
            &mallory,
            &format!(
                "/ledgers?period={}",
                created["period"].as_str().expect("period")
            ),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"], json!([]), "{list}");

    // Alice's ledger is untouched.
    let after = app.ledger(&alice, &id).await;
    assert_eq!(after["status"], "COMPLETED", "{after}");
    assert_eq!(after["version"], before["version"], "{after}");
    assert_eq!(after["attemptCount"], before["attemptCount"], "{after}");
    assert!(after["deletedAt"].is_null(), "{after}");
    assert_eq!(after["updatedAt"], before["updatedAt"], "{after}");
    // The only ledger of m_acme is still hers, and no create slipped through.
    let list = app.get_json(&alice, "/ledgers?merchantId=m_acme").await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1, "{list}");
}

#[tokio::test]
async fn a_viewer_reads_and_downloads_but_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.user(ALICE, "merchant_admin", "m_acme").await;
    app.grant(ALICE, "merchant_admin", "m_broken").await;
    let viewer = app.user("victor", "merchant_viewer", "m_acme").await;
    app.grant("victor", "merchant_viewer", "m_broken").await;

    // A DRAFT COMPLETED ledger (regenerate and delete would work) and a REJECTED one
    // (retry would work).
    let draft = app.create_ok(&admin, open_statement("m_acme")).await;
    let draft_id = draft["id"].as_str().expect("id").to_owned();
    let draft = app.wait_for(&admin, &draft_id, "COMPLETED", 30).await;
    let broken = app
        .create_ok(&admin, statement("m_broken", "2026-10"))
        .await;
    let broken_id = broken["id"].as_str().expect("id").to_owned();
    let broken = app.wait_for(&admin, &broken_id, "REJECTED", 30).await;

    // Reads and downloads work.
    for path in [
        format!("/ledgers/{draft_id}"),
        format!("/ledgers/{draft_id}/events"),
        format!("/ledgers/{draft_id}/download"),
        format!("/ledgers/{broken_id}"),
        "/ledgers?merchantId=m_acme".to_owned(),
        "/ledgers".to_owned(),
    ] {
        let r = app.get(&viewer, &path).await;
        assert_eq!(r.status(), 200, "viewer GET {path}");
    }
    let list = app.get_json(&viewer, "/ledgers").await;
    assert_eq!(list["items"].as_array().expect("items").len(), 2, "{list}");

    // Creating is 403.
    let r = app.create(&viewer, statement("m_acme", "2026-10")).await;
    no_5xx(&r, "viewer create");
    assert_error(r, 403, "FORBIDDEN").await;

    // Changing is refused with a 4xx and a code (the API answers 404: a ledger the caller
    // may not act on is treated like a missing one).
    let refusals = [
        ("POST", format!("/ledgers/{broken_id}/retry")),
        ("POST", format!("/ledgers/{draft_id}/regenerate")),
        ("DELETE", format!("/ledgers/{draft_id}")),
        ("DELETE", format!("/ledgers/{broken_id}")),
    ];
    for (method, path) in &refusals {
        error_of(&app, &viewer, method, path, 404, "NOT_FOUND").await;
    }

    // Nothing changed.
    let after = app.ledger(&admin, &draft_id).await;
    for field in [
        "status",
        "version",
        "attemptCount",
        "deletedAt",
        "updatedAt",
        "file",
    ] {
        assert_eq!(after[field], draft[field], "{field}: {after}");
    }
    let after = app.ledger(&admin, &broken_id).await;
    for field in [
        "status",
        "version",
        "attemptCount",
        "deletedAt",
        "updatedAt",
        "failureReason",
    ] {
        assert_eq!(after[field], broken[field], "{field}: {after}");
    }
    let list = app.get_json(&admin, "/ledgers?merchantId=m_acme").await;
    assert_eq!(
        list["items"].as_array().expect("items").len(),
        1,
        "no create slipped through: {list}"
    );

    // The same actions by the admin work (the refusals were about the role).
    let r = app
        .post(&admin, &format!("/ledgers/{broken_id}/retry"))
        .await;
    assert_eq!(r.status(), 202, "admin retry");
    let r = app
        .post(&admin, &format!("/ledgers/{draft_id}/regenerate"))
        .await;
    assert_eq!(r.status(), 202, "admin regenerate");
}

#[tokio::test]
async fn platform_admin_sees_every_merchant() {
    let app = spawn_app().await;
    let alice = app.user(ALICE, "merchant_admin", "m_acme").await;
    let mallory = app.user(MALLORY, "merchant_admin", "m_tokyo").await;
    let root = app.user("root", "platform_admin", "*").await;

    let acme = app.create_ok(&alice, statement("m_acme", "2026-10")).await;
    let tokyo = app
        .create_ok(&mallory, statement("m_tokyo", "2026-10"))
        .await;
    let global = app.create_ok(&root, statement("m_global", "2026-10")).await;

    let list = app.get_json(&root, "/ledgers").await;
    let ids: Vec<&Value> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| &l["id"])
        .collect();
    assert_eq!(
        ids,
        vec![&global["id"], &tokyo["id"], &acme["id"]],
        "{list}"
    );
    for (merchant, ledger) in [
        ("m_acme", &acme),
        ("m_tokyo", &tokyo),
        ("m_global", &global),
    ] {
        let id = ledger["id"].as_str().expect("id");
        let r = app.get(&root, &format!("/ledgers/{id}")).await;
        assert_eq!(r.status(), 200, "root reads {merchant}");
        let r = app
            .get(&root, &format!("/ledgers?merchantId={merchant}"))
            .await;
        assert_eq!(r.status(), 200, "root lists {merchant}");
    }
    // Tenants still see only their own.
    let list = app.get_json(&alice, "/ledgers").await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1, "{list}");
    assert_eq!(list["items"][0]["id"], acme["id"], "{list}");
}

#[tokio::test]
async fn a_revoked_grant_takes_effect_at_once() {
    let app = spawn_app().await;
    let alice = app.user(ALICE, "merchant_admin", "m_acme").await;
    let created = app.create_ok(&alice, statement("m_acme", "2026-10")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let bob = app.user("bob", "merchant_viewer", "m_acme").await;
    assert_eq!(app.get(&bob, &format!("/ledgers/{id}")).await.status(), 200);
    assert_eq!(
        app.get(&bob, "/ledgers?merchantId=m_acme").await.status(),
        200
    );

    app.revoke("bob", "merchant_viewer", "m_acme").await;
    error_of(
        &app,
        &bob,
        "GET",
        &format!("/ledgers/{id}"),
        404,
        "NOT_FOUND",
    )
    .await;
    error_of(
        &app,
        &bob,
        "GET",
        &format!("/ledgers/{id}/download"),
        404,
        "NOT_FOUND",
    )
    .await;
    error_of(
        &app,
        &bob,
        "GET",
        "/ledgers?merchantId=m_acme",
        403,
        "FORBIDDEN",
    )
    .await;
    let list = app.get_json(&bob, "/ledgers").await;
    assert_eq!(list["items"], json!([]), "{list}");

    // Revoking the admin grant takes create and delete away too.
    app.revoke(ALICE, "merchant_admin", "m_acme").await;
    let r = app.create(&alice, statement("m_acme", "2026-09")).await;
    assert_error(r, 403, "FORBIDDEN").await;
    error_of(
        &app,
        &alice,
        "DELETE",
        &format!("/ledgers/{id}"),
        404,
        "NOT_FOUND",
    )
    .await;
    // And granting again restores it.
    app.grant(ALICE, "merchant_admin", "m_acme").await;
    let after = app.ledger(&alice, &id).await;
    assert!(after["deletedAt"].is_null(), "{after}");
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ascii header")
}

#[tokio::test]
async fn download_carries_hardening_headers_and_the_exact_file() {
    let app = spawn_app().await;
    let alice = app.user(ALICE, "merchant_admin", "m_acme").await;
    let created = app.create_ok(&alice, statement("m_acme", "2026-10")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let done = app.wait_for(&alice, &id, "COMPLETED", 30).await;
    let file = &done["file"];
    let sha = file["sha256"].as_str().expect("sha256");
    let name = file["fileName"].as_str().expect("fileName");
    assert_eq!(sha.len(), 64, "{file}");

    for path in [
        format!("/ledgers/{id}/download"),
        format!("/ledgers/{id}/download?version=1"),
    ] {
        let r = app.get(&alice, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            header(&r, "content-type"),
            file["contentType"].as_str().expect("contentType")
        );
        assert!(header(&r, "content-type").starts_with("text/csv"), "{path}");
        let disposition = header(&r, "content-disposition");
        assert!(
            disposition.starts_with(&format!("attachment; filename=\"{name}\"")),
            "{path}: Content-Disposition: {disposition}"
        );
        assert!(
            disposition.contains("filename*=UTF-8''"),
            "{path}: Content-Disposition: {disposition}"
        );
        assert!(
            !name.contains(['"', '/', '\\', '\r', '\n']),
            "unsafe file name {name}"
        );
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&r, "cache-control"), "no-store", "{path}");
        assert_eq!(header(&r, "etag"), format!("\"{sha}\""), "{path}");
        let body = r.bytes().await.expect("body");
        assert_eq!(
            body.len() as u64,
            file["sizeBytes"].as_u64().expect("sizeBytes"),
            "{path}"
        );
        assert_eq!(hex::encode(Sha256::digest(&body)), sha, "{path}");
        assert!(body.starts_with(b"bookedAt,entryId,"), "{path}");
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_plaintext_of_a_document_reaches_the_disk() {
    let app = spawn_app().await;
    let alice = app.user(ALICE, "merchant_admin", "m_acme").await;
    let created = app.create_ok(&alice, statement("m_acme", "2026-10")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    app.wait_for(&alice, &id, "COMPLETED", 30).await;
    let r = app.download(&alice, &id).await;
    assert_eq!(r.status(), 200);
    let csv_bytes = r.bytes().await.expect("body");

    // What the document says that no file on disk may say.
    let mut reader = csv::Reader::from_reader(&csv_bytes[..]);
    let columns = reader.headers().expect("header").clone();
    let entry_col = columns
        .iter()
        .position(|c| c == "entryId")
        .expect("entryId column");
    let description_col = columns
        .iter()
        .position(|c| c == "description")
        .expect("description column");
    let mut secrets: Vec<String> = Vec::new();
    for row in reader.records() {
        let row = row.expect("csv row");
        let entry = &row[entry_col];
        if !entry.is_empty() {
            secrets.push(entry.to_owned());
        }
        let description = &row[description_col];
        if description.len() >= 6 {
            secrets.push(description.to_owned());
        }
    }
    secrets.sort();
    secrets.dedup();
    assert!(
        secrets.iter().any(|s| s == "tx_00000074"),
        "the October statement holds tx_00000074"
    );
    assert!(
        secrets.len() > 50,
        "too few rows to mean anything: {}",
        secrets.len()
    );
    // The whole header line as well.
    secrets.push(
        String::from_utf8_lossy(
            &csv_bytes[..csv_bytes.iter().position(|b| *b == b'\n').expect("newline")],
        )
        .into_owned(),
    );

    // Embedded: the SQLite files and the objects; production: the dev key only.
    let files = files_under(app.data_dir.path());
    assert!(!files.is_empty(), "{files:?}");
    for path in &files {
        let bytes = std::fs::read(path).expect("read");
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{} holds plaintext {secret:?}",
                path.display()
            );
        }
    }

    // The object as stored, through the storage port (a local directory or S3).
    let storage = ledger::app::open_storage(&app.config).unwrap();
    let recorded = app
        .store
        .get_file(id.parse::<ledger::domain::LedgerId>().expect("id"), 1)
        .await
        .expect("store")
        .expect("a recorded file");
    let key = recorded.object_key;
    assert_eq!(
        key,
        format!("ledgers/m_acme/{id}/v1.a1.csv.enc"),
        "one object per attempt"
    );
    let mut object = storage
        .read(&key)
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    let sealed = object.read_to_end().await.unwrap();
    assert!(
        !sealed.starts_with(b"bookedAt"),
        "the object starts with the CSV header"
    );
    assert!(
        sealed.len() > csv_bytes.len(),
        "a sealed object is larger than its plaintext"
    );
    assert!(
        !contains(&sealed, &csv_bytes[..64]),
        "the object holds the start of the plaintext"
    );
}

/// Another valid object of the same ledger and version (what another attempt would seal,
/// written over the recorded one) decrypts as well as the real one: the download refuses it
/// on its header, before the 200 and before any byte.
#[tokio::test]
async fn a_replaced_object_is_refused_before_any_byte() {
    let app = spawn_app().await;
    let alice = app.user(ALICE, "merchant_admin", "m_acme").await;
    let created = app.create_ok(&alice, statement("m_acme", "2026-10")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    app.wait_for(&alice, &id, "COMPLETED", 30).await;
    let ledger_id = id.parse::<ledger::domain::LedgerId>().expect("id");
    let recorded = app
        .store
        .get_file(ledger_id, 1)
        .await
        .expect("store")
        .expect("a recorded file");

    // Sealed with the very merchant key of the file: a valid object of the same ledger and
    // version, just not the one recorded.
    let keys = ledger::app::keys(
        &app.config,
        ledger::app::keyring(&app.config).expect("keyring"),
        app.store.clone(),
    )
    .await
    .expect("keys");
    let keyring = keys
        .opening(
            &ledger::domain::MerchantId::parse("m_acme").expect("merchant"),
            recorded.key_id.as_deref().expect("a merchant key"),
        )
        .await
        .expect("the merchant key");
    let binding = ledger::crypto::Binding {
        ledger_id: ledger_id.as_i64(),
        version: 1,
    };
    let forged = ledger::crypto::encrypt_to_vec(&keyring, binding, b"bookedAt,entryId\nforged\n")
        .expect("seal");
    let storage = ledger::app::open_storage(&app.config).expect("storage");
    let mut writer = storage.writer(&recorded.object_key).await.expect("writer");
    writer.write(forged.into()).await.expect("write");
    writer.finish().await.expect("finish");

    let r = app.get(&alice, &format!("/ledgers/{id}/download")).await;
    assert_error(r, 500, "INTERNAL").await;
}

/// Redis database of the forged-snapshot test: keys are per database, so no other test's
/// api process writes the policy snapshot this test forges (pub/sub is shared, harmlessly).
const FORGERY_REDIS_DB: u8 = 9;

#[tokio::test]
async fn a_forged_policy_snapshot_in_redis_grants_nothing() {
    let base =
        std::env::var("LEDGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis_url = format!("{}/{FORGERY_REDIS_DB}", base.trim_end_matches('/'));
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        vars: vec![
            ("APP_ENV_REDIS_URL", redis_url.clone()),
            // Decisions would be cached for ten minutes: only the announcement reloads.
            ("APP_ENV_POLICY_CACHE_TTL_MS", "600000".into()),
        ],
        ..Default::default()
    })
    .await;
    let mallory = app.user(MALLORY, "merchant_viewer", "m_tokyo").await;
    let r = app.get(&mallory, "/ledgers?merchantId=m_acme").await;
    assert_eq!(r.status(), 403, "the snapshot is now cached in Redis");

    // Anyone who can write to Redis makes mallory platform_admin in the cached snapshot,
    // keeping its revision, and announces a policy change.
    let mut redis = redis::Client::open(redis_url.as_str())
        .expect("redis client")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("no Redis at {redis_url}: {e}"));
    let key = "ledger:policy:grants";
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut redis)
        .await
        .expect("the api process cached its snapshot");
    let mut forged: Value = serde_json::from_slice(&stored).expect("snapshot json");
    forged["grants"]
        .as_array_mut()
        .expect("grants")
        .push(json!([MALLORY, "platform_admin", "*"]));
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(forged.to_string())
        .query_async(&mut redis)
        .await
        .expect("SET");
    let _: i64 = redis::cmd("PUBLISH")
        .arg("ledger.policy")
        .arg("changed")
        .query_async(&mut redis)
        .await
        .expect("PUBLISH");

    // The api reloads, finds the forged snapshot, sees it does not hash to the digest the
    // job store holds for that revision, and uses the store.
    let rejected = || async {
        let text = reqwest::get(format!("{}/metrics", app.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix("ledger_policy_snapshots_rejected_total "))
            .map(|v| v.trim().parse::<f64>().expect("number"))
            .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rejected().await < 1.0 {
        for path in ["/ledgers?merchantId=m_acme", "/ledgers?merchantId=m_global"] {
            let r = app.get(&mallory, path).await;
            assert_eq!(r.status(), 403, "{path}: the forged grant was used");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the forged snapshot was never read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = app.get(&mallory, "/ledgers?merchantId=m_acme").await;
    assert_eq!(r.status(), 403);
    let r = app.get(&mallory, "/ledgers?merchantId=m_tokyo").await;
    assert_eq!(r.status(), 200, "her own grant still works");
    app.stop().await;
}

/// The identity provider of a test: serves a JWKS on port 0, answering after a delay the
/// test changes (a slow or an unreachable provider).
struct IdentityProvider {
    url: String,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl IdentityProvider {
    async fn start(jwks: String) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let delay_ms = std::sync::Arc::new(AtomicU64::new(0));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (delay, counter) = (delay_ms.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (delay, jwks) = (delay.clone(), jwks.clone());
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let wait = std::time::Duration::from_millis(delay.load(Ordering::SeqCst));
                    tokio::time::sleep(wait).await;
                    ([("content-type", "application/json")], jwks)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            delay_ms,
            hits,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn answer_after(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }
}

#[tokio::test]
async fn a_slow_identity_provider_delays_nobody_and_an_unreachable_ones_keys_expire() {
    use std::time::{Duration, Instant};
    let issuer_dir = tempfile::tempdir().unwrap();
    let (issuer, _) =
        ledger::auth::DevKey::load_or_create(&issuer_dir.path().join("idp.pem")).unwrap();
    let idp = IdentityProvider::start(serde_json::to_string(&issuer.jwks()).unwrap()).await;
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        vars: vec![
            ("APP_ENV_AUTH_JWKS_URL", idp.url.clone()),
            ("APP_ENV_AUTH_JWKS_MAX_AGE_SECS", "6".into()),
        ],
        ..Default::default()
    })
    .await;
    app.grant(ALICE, "merchant_viewer", "m_acme").await;
    let token = issuer
        .sign(
            ALICE,
            Duration::from_secs(3600),
            None,
            app.config.auth_audience.as_deref(),
        )
        .unwrap();
    assert_eq!(app.get(&token, "/ledgers").await.status(), 200);
    let readyz = || async {
        app.client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(readyz().await.status(), 200);

    // The provider now takes 10 s to answer; a token with a key it has not published yet
    // (a rotation) makes the service ask it.
    idp.answer_after(Duration::from_secs(10));
    let slow_since = Instant::now();
    let hits = idp.hits();
    let rotated = app.token(ALICE); // signed by a key the provider does not serve
    let unknown = {
        let (client, url) = (app.client.clone(), app.url("/ledgers"));
        tokio::spawn(async move { client.get(url).bearer_auth(rotated).send().await })
    };
    // The keys are refreshed every 3 s (half the maximum age): the next refresh gets stuck
    // on the provider, and the keys are good for 3 s more from when it starts.
    while idp.hits() <= hits {
        assert!(slow_since.elapsed() < Duration::from_secs(4), "no refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stuck_since = Instant::now();
    // Meanwhile a known key answers at once, and so does readiness.
    while stuck_since.elapsed() < Duration::from_millis(2000) {
        let t0 = Instant::now();
        assert_eq!(app.get(&token, "/ledgers").await.status(), 200);
        assert_eq!(readyz().await.status(), 200);
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "a known key waited {:?} on the identity provider",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(unknown.await.unwrap().unwrap().status(), 401);

    // It never answers in time again: 6 s after the last refresh the keys are refused.
    let refused = loop {
        let r = app.get(&token, "/ledgers").await;
        if r.status() == 401 {
            break r;
        }
        assert_eq!(r.status(), 200);
        assert!(
            slow_since.elapsed() < Duration::from_secs(8),
            "keys still trusted {:?} after the provider went silent",
            slow_since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let body = assert_error(refused, 401, "UNAUTHORIZED").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not refreshed"),
        "{body}"
    );
    let r = readyz().await;
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("auth"), "{text}");
    app.stop().await;
}
