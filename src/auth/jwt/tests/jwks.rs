//! Keys from a JWKS URL: refetched on an unknown kid, rate-limited, kept through failures,
//! never waited for when known, refused past their maximum age, and a refresher that stops.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A one-route HTTP server answering every request with the current body, after the
/// current delay: a JWKS endpoint the test makes slow or unresponsive at will.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
}

impl JwksServer {
    fn set_body(&self, body: String) {
        *self.body.lock().expect("body") = body;
    }
    fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(body: String) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    let body = Arc::new(Mutex::new(body));
    let hits = Arc::new(AtomicUsize::new(0));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let (shared, counter, delay) = (body.clone(), hits.clone(), delay_ms.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (shared, counter, delay) = (shared.clone(), counter.clone(), delay.clone());
            // One task per connection: a slow answer must not hold up the next request.
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let wait = Duration::from_millis(delay.load(Ordering::SeqCst));
                tokio::time::sleep(wait).await;
                let body = shared.lock().expect("body").clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    JwksServer {
        url,
        body,
        hits,
        delay_ms,
    }
}

fn jwks_json(key: &DevKey) -> String {
    serde_json::to_string(&key.jwks()).expect("json")
}

/// A verifier over `url` whose refresher runs until the test ends.
async fn from_url(url: &str, opts: VerifierOptions) -> Verifier {
    Verifier::from_url(url, opts, &CancellationToken::new())
        .await
        .expect("from url")
}

#[tokio::test]
async fn jwks_url_source_refetches_on_unknown_kid_after_rotation() {
    let (_d1, old, _) = dev_key();
    let (_d2, new, _) = dev_key();
    let server = serve(jwks_json(&old)).await;
    let opts = VerifierOptions {
        min_refetch_interval: Duration::ZERO,
        ..VerifierOptions::default()
    };
    let v = from_url(&server.url, opts).await;
    assert!(v.ready().await.is_ok());
    assert_eq!(server.hits(), 1);

    let old_token = old.sign("a", HOUR, None, None).expect("sign");
    assert!(v.verify(&old_token).await.is_ok());
    assert_eq!(server.hits(), 1, "known kid: no fetch");

    server.set_body(jwks_json(&new));
    let new_token = new.sign("b", HOUR, None, None).expect("sign");
    assert_eq!(v.verify(&new_token).await.expect("rotated key").sub, "b");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn jwks_url_refetch_is_rate_limited_and_failures_keep_keys() {
    let (_d1, old, _) = dev_key();
    let (_d2, new, _) = dev_key();
    let server = serve(jwks_json(&old)).await;
    let v = from_url(&server.url, VerifierOptions::default()).await;
    server.set_body("not json".into());

    let new_token = new.sign("b", HOUR, None, None).expect("sign");
    for _ in 0..5 {
        expect_invalid(v.verify(&new_token).await, "unknown key id");
    }
    assert_eq!(server.hits(), 1, "within 30 s: no refetch");

    let fast = from_url(
        &server.url,
        VerifierOptions {
            min_refetch_interval: Duration::ZERO,
            ..VerifierOptions::default()
        },
    )
    .await;
    assert!(fast.ready().await.is_err(), "no keys were ever fetched");
    server.set_body(jwks_json(&old));
    // Readiness never waits for a fetch; the one it started (or the refresher's retry)
    // brings the keys in shortly.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fast.ready().await.is_err() {
        assert!(Instant::now() < deadline, "keys never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.set_body("not json".into());
    expect_invalid(fast.verify(&new_token).await, "unknown key id");
    let old_token = old.sign("a", HOUR, None, None).expect("sign");
    assert!(
        fast.verify(&old_token).await.is_ok(),
        "a failed fetch keeps the cached keys"
    );
}

#[tokio::test]
async fn jwks_url_down_at_start_is_not_ready() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    drop(listener);
    let v = from_url(&url, VerifierOptions::default()).await;
    assert!(matches!(v.ready().await, Err(AuthError::Keys(_))));
    let shutdown = CancellationToken::new();
    for bad in ["ftp://x/jwks", "not a url"] {
        assert!(
            Verifier::from_url(bad, VerifierOptions::default(), &shutdown)
                .await
                .is_err()
        );
    }
}

/// Waits until `server` has seen more than `hits` requests.
async fn wait_for_hit(server: &JwksServer, hits: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while server.hits() <= hits {
        assert!(Instant::now() < deadline, "no JWKS request arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_slow_jwks_never_delays_a_token_whose_kid_is_known() {
    let (_d1, known, _) = dev_key();
    let (_d2, rotated, _) = dev_key();
    let server = serve(jwks_json(&known)).await;
    let v = Arc::new(
        from_url(
            &server.url,
            VerifierOptions {
                min_refetch_interval: Duration::ZERO,
                refresh_interval: Duration::from_millis(300),
                ..VerifierOptions::default()
            },
        )
        .await,
    );
    let token = known.sign("a", HOUR, None, None).expect("sign");
    assert!(v.verify(&token).await.is_ok());

    // The identity provider now takes 10 s per answer (the client gives up after 5 s),
    // and the keys are due for a refresh.
    server.set_delay(Duration::from_secs(10));
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Unknown kids join one fetch and wait for it; nothing else does.
    let before_unknown = server.hits();
    let unknown = rotated.sign("b", HOUR, None, None).expect("sign");
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let (v, unknown) = (v.clone(), unknown.clone());
            tokio::spawn(async move { v.verify(&unknown).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..20 {
        let t0 = Instant::now();
        assert_eq!(v.verify(&token).await.expect("known kid").sub, "a");
        assert!(v.ready().await.is_ok());
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "a known kid waited {:?} for the JWKS",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(server.hits() > hits, "a refresh was under way meanwhile");
    for handle in waiting {
        expect_invalid(handle.await.expect("join"), "unknown key id");
    }
    assert!(
        server.hits() <= before_unknown + 1,
        "three unknown kids, at most one more fetch: {} then {}",
        before_unknown,
        server.hits()
    );
}

#[tokio::test]
async fn keys_past_their_maximum_age_are_refused_while_the_jwks_does_not_answer() {
    let (_d, key, _) = dev_key();
    let server = serve(jwks_json(&key)).await;
    let max_key_age = Duration::from_secs(3);
    let v = from_url(
        &server.url,
        VerifierOptions {
            min_refetch_interval: Duration::from_millis(500),
            refresh_interval: Duration::from_millis(500),
            max_key_age,
            ..VerifierOptions::default()
        },
    )
    .await;
    let token = key.sign("a", HOUR, None, None).expect("sign");
    // Refreshed in the background, the keys stay valid past their maximum age.
    tokio::time::sleep(max_key_age + Duration::from_secs(1)).await;
    assert!(v.verify(&token).await.is_ok());
    assert!(server.hits() >= 2, "refreshed: {}", server.hits());

    // The identity provider stops answering (the key may have been withdrawn there).
    server.set_delay(Duration::from_secs(3600));
    let down = Instant::now();
    let refused_after = loop {
        match v.verify(&token).await {
            Ok(_) => {}
            Err(AuthError::Keys(message)) => {
                assert!(message.contains("not refreshed"), "{message}");
                break down.elapsed();
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(
            down.elapsed() < max_key_age + Duration::from_secs(3),
            "keys still trusted {:?} after the JWKS went silent",
            down.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused_after > max_key_age - Duration::from_millis(600),
        "refused too early: {refused_after:?}"
    );
    match v.ready().await {
        Err(AuthError::Keys(message)) => assert!(message.contains("expired"), "{message}"),
        other => panic!("readiness must fail: {other:?}"),
    }

    // Back: the next retry brings fresh keys and the token is accepted again.
    server.set_delay(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(10);
    while v.verify(&token).await.is_err() {
        assert!(Instant::now() < deadline, "keys never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(v.ready().await.is_ok());
}

#[tokio::test]
async fn the_refresher_stops_on_shutdown_and_when_the_verifier_is_dropped() {
    let (_d, key, _) = dev_key();
    let server = serve(jwks_json(&key)).await;
    let opts = VerifierOptions {
        refresh_interval: Duration::from_millis(100),
        ..VerifierOptions::default()
    };
    let shutdown = CancellationToken::new();
    let stopped = Verifier::from_url(&server.url, opts.clone(), &shutdown)
        .await
        .expect("from url");
    let dropped = from_url(&server.url, opts).await;
    wait_for_hit(&server, 4, Duration::from_secs(3)).await;

    shutdown.cancel();
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.hits(), hits, "no fetch after shutdown and drop");
    // The cancelled one still verifies with the keys it has.
    let token = key.sign("a", HOUR, None, None).expect("sign");
    assert!(stopped.verify(&token).await.is_ok());
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_a_refresh_withdraws_its_key() {
    let (_d1, old, _) = dev_key();
    let (_d2, new, _) = dev_key();
    let server = serve(jwks_json(&old)).await;
    let opts = VerifierOptions {
        min_refetch_interval: Duration::ZERO,
        ..VerifierOptions::default()
    };
    let v = from_url(&server.url, opts).await;
    let old_token = old.sign("a", HOUR, None, None).expect("sign");
    assert!(v.verify(&old_token).await.is_ok());
    assert!(v.verify(&old_token).await.is_ok(), "remembered");
    // The issuer rotates and withdraws the old key; a token of the new key brings the
    // new set in.
    server.set_body(jwks_json(&new));
    let new_token = new.sign("b", HOUR, None, None).expect("sign");
    assert!(v.verify(&new_token).await.is_ok());
    expect_invalid(v.verify(&old_token).await, "unknown key id");
}
