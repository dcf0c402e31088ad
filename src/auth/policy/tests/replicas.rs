//! Replicas sharing the policy snapshot through Redis (`LEDGER_TEST_REDIS_URL`, or localhost): a
//! forged or stale snapshot grants nothing, a published change is seen at once, and a Redis
//! that is down sends every reload back to the store.

use super::*;

fn redis_url() -> String {
    std::env::var("LEDGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A missing Redis fails the test (it must not pass by falling back to the store).
async fn require_redis() -> String {
    let url = redis_url();
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    let pong = tokio::time::timeout(Duration::from_secs(5), ping).await;
    assert!(
        matches!(pong, Ok(Ok(_))),
        "no Redis at {url} (LEDGER_TEST_REDIS_URL); scripts/run-tests.sh starts one"
    );
    url
}

/// A key prefix and channel of this test's own.
fn unique_config() -> PolicyCacheConfig {
    let id = uuid::Uuid::new_v4().simple();
    PolicyCacheConfig::default()
        .key_prefix(format!("ledger:test:{id}:policy"))
        .channel(format!("ledger.test.{id}.policy"))
}

async fn until_subscribed(authorizers: &[&Authorizer]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !authorizers.iter().all(|a| a.redis_subscribed()) {
        assert!(
            Instant::now() < deadline,
            "the policy subscription did not come up at {}",
            redis_url()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `subject` may no longer `perm` on `merchant`; fails after `within`.
async fn until_denied(
    a: &Authorizer,
    subject: &str,
    merchant: &str,
    perm: Permission,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while a
        .allowed(subject, &m(merchant), perm)
        .await
        .expect("decision")
    {
        assert!(
            Instant::now() < deadline,
            "{subject} still allowed to {perm} on {merchant} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A plain connection to the test's Redis, to read and write the shared snapshot directly.
async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

/// Deletes the snapshot a test left in Redis.
async fn forget_snapshot(raw: &mut redis::aio::MultiplexedConnection, config: &PolicyCacheConfig) {
    let () = redis::cmd("DEL")
        .arg(config.grants_key())
        .query_async(raw)
        .await
        .expect("DEL");
}

/// An authorizer over `source` sharing its snapshot through the test's Redis.
fn replica(
    source: &Arc<MemorySource>,
    url: &str,
    config: &PolicyCacheConfig,
    shutdown: CancellationToken,
) -> Authorizer {
    Authorizer::with_redis_config(
        source.clone(),
        LONG,
        &RedisServer::new(url.to_owned()),
        config,
        shutdown,
    )
    .expect("authorizer with Redis")
}

#[tokio::test]
async fn a_forged_redis_snapshot_grants_nothing() {
    let url = require_redis().await;
    let config = unique_config();
    let source = MemorySource::with(&[("mallory", "merchant_viewer", "m_2")]);
    let shutdown = CancellationToken::new();
    let a = replica(&source, &url, &config, shutdown.clone());
    until_subscribed(&[&a]).await;
    assert!(!may(&a, "mallory", "m_1", Permission::Read, "decision").await);
    let lists = source.lists.load(Ordering::SeqCst);

    // Someone with write access to Redis adds a platform_admin grant to the snapshot,
    // keeping its revision (it sits in the same value), and announces a change.
    let mut raw = connect(&url).await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(config.grants_key())
        .query_async(&mut raw)
        .await
        .expect("the snapshot was cached");
    let mut forged: serde_json::Value = serde_json::from_slice(&stored).expect("json");
    forged["grants"]
        .as_array_mut()
        .expect("grants")
        .push(serde_json::json!(["mallory", "platform_admin", "*"]));
    let _: () = redis::cmd("SET")
        .arg(config.grants_key())
        .arg(forged.to_string())
        .query_async(&mut raw)
        .await
        .expect("SET");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(config.channel_name())
        .arg("changed")
        .query_async(&mut raw)
        .await
        .expect("PUBLISH");

    // The reload finds the forged snapshot, sees its digest differ from the store's,
    // and reads the store instead.
    let deadline = Instant::now() + Duration::from_secs(5);
    while source.lists.load(Ordering::SeqCst) == lists {
        assert!(
            !may(&a, "mallory", "m_1", Permission::Read, "decision").await,
            "the forged snapshot was used"
        );
        assert!(
            Instant::now() < deadline,
            "no reload after the announcement"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for merchant in ["m_1", "m_3"] {
        assert!(
            !a.allowed("mallory", &m(merchant), Permission::Read)
                .await
                .expect("decision"),
            "mallory on {merchant}"
        );
    }
    assert!(may(&a, "mallory", "m_2", Permission::Read, "decision").await);
    // The honest snapshot was written back over the forged one.
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(config.grants_key())
        .query_async(&mut raw)
        .await
        .expect("snapshot");
    assert!(!String::from_utf8_lossy(&stored).contains("platform_admin"));
    shutdown.cancel();
}

#[tokio::test]
async fn replicas_share_the_snapshot_and_see_a_published_revoke_at_once() {
    let url = require_redis().await;
    let config = unique_config();
    let source = MemorySource::with(&[
        ("alice", "merchant_admin", "m_1"),
        ("bob", "merchant_viewer", "m_1"),
    ]);
    let shutdown = CancellationToken::new();
    let (a, b) = (
        replica(&source, &url, &config, shutdown.clone()),
        replica(&source, &url, &config, shutdown.clone()),
    );
    until_subscribed(&[&a, &b]).await;

    // The first replica lists the grants from the store and caches them in Redis...
    assert!(may(&a, "alice", "m_1", Permission::Delete, "decision").await);
    assert_eq!(source.lists.load(Ordering::SeqCst), 1);
    // ...the second reads them from Redis.
    assert!(may(&b, "alice", "m_1", Permission::Delete, "decision").await);
    assert_eq!(source.lists.load(Ordering::SeqCst), 1);
    let mut raw = connect(&url).await;
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(config.grants_key())
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!(
        ttl_ms > 0 && ttl_ms <= 10 * LONG.as_millis() as i64,
        "snapshot TTL {ttl_ms} ms"
    );

    // A revoke is committed and announced: both replicas see it well within their
    // (hour-long) TTL.
    source.revoke("alice", "merchant_admin", "m_1", true);
    publish_policy_change_with(&RedisServer::new(url.clone()), &config)
        .await
        .expect("announce");
    let started = Instant::now();
    until_denied(
        &a,
        "alice",
        "m_1",
        Permission::Delete,
        Duration::from_secs(1),
    )
    .await;
    until_denied(
        &b,
        "alice",
        "m_1",
        Permission::Delete,
        Duration::from_secs(1),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(may(&b, "bob", "m_1", Permission::Read, "decision").await);
    // The announcement deleted the old snapshot; the first replica to reload listed
    // the store once and the other read its write-back from Redis.
    assert_eq!(source.lists.load(Ordering::SeqCst), 2);

    // A Redis snapshot never hides a store failure: the revision comes from the store.
    source.failing.store(true, Ordering::SeqCst);
    b.invalidate();
    assert!(matches!(
        b.allowed("bob", &m("m_1"), Permission::Read).await,
        Err(AuthError::Backend(_))
    ));
    source.failing.store(false, Ordering::SeqCst);

    // The shutdown token stops the subscribers; decisions go on.
    shutdown.cancel();
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.redis_subscribed() || b.redis_subscribed() {
        assert!(Instant::now() < deadline, "subscribers still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(may(&a, "bob", "m_1", Permission::Read, "decision").await);
    forget_snapshot(&mut raw, &config).await;
}

#[tokio::test]
async fn a_snapshot_of_another_revision_or_garbage_is_not_used() {
    let url = require_redis().await;
    let config = unique_config();
    let source = MemorySource::with(&[("alice", "merchant_admin", "m_1")]);
    let mut raw = connect(&url).await;
    // A stale snapshot (an older revision granting more) and then garbage.
    let stale = r#"{"revision":0,"grants":[["mallory","platform_admin","*"]]}"#;
    for value in [stale, "not json"] {
        let () = redis::cmd("SET")
            .arg(config.grants_key())
            .arg(value)
            .query_async(&mut raw)
            .await
            .expect("SET");
        let a = replica(&source, &url, &config, CancellationToken::new());
        assert!(
            !may(&a, "mallory", "m_1", Permission::Read, "decision").await,
            "{value}"
        );
        assert!(may(&a, "alice", "m_1", Permission::Delete, "decision").await);
    }
    assert_eq!(source.lists.load(Ordering::SeqCst), 2);
    // The store's grants were written back at the current revision.
    let cached: String = redis::cmd("GET")
        .arg(config.grants_key())
        .query_async(&mut raw)
        .await
        .expect("GET");
    assert!(
        cached.contains("alice") && !cached.contains("mallory"),
        "{cached}"
    );
    forget_snapshot(&mut raw, &config).await;
}

#[tokio::test]
async fn redis_down_falls_back_to_the_store() {
    let source = MemorySource::with(&[("alice", "merchant_admin", "m_1")]);
    let a = Authorizer::with_redis(source.clone(), LONG, "redis://127.0.0.1:9")
        .expect("authorizer (connects in the background)");
    let from_store =
        |subject: &'static str, perm| may(&a, subject, "m_1", perm, "decision from the store");
    let started = Instant::now();
    assert!(from_store("alice", Permission::Delete).await);
    assert!(!from_store("bob", Permission::Read).await);
    source.revoke("alice", "merchant_admin", "m_1", true);
    source.grant("bob", "merchant_viewer", "m_1");
    a.invalidate();
    assert!(!from_store("alice", Permission::Delete).await);
    assert!(from_store("bob", Permission::Read).await);
    assert_eq!(source.lists.load(Ordering::SeqCst), 2);
    assert!(!a.redis_subscribed());
    // Refused connections fail fast, and after one failure Redis is skipped for a
    // while, so a dead Redis does not slow decisions down.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A store failure is still an error, never "allowed".
    source.failing.store(true, Ordering::SeqCst);
    a.invalidate();
    assert!(matches!(
        a.allowed("bob", &m("m_1"), Permission::Read).await,
        Err(AuthError::Backend(_))
    ));
}

#[tokio::test]
async fn the_redis_url_never_appears_in_an_error() {
    let source = MemorySource::with(&[]);
    let secret = "s3cret-pw";
    let bad = format!("rediss+nope://user:{secret}@example.invalid:1/0");
    let err = Authorizer::with_redis(source.clone(), LONG, &bad).expect_err("bad URL");
    assert!(!err.to_string().contains(secret), "{err}");
    assert!(!err.to_string().contains("example.invalid"), "{err}");

    let unreachable = format!("redis://user:{secret}@127.0.0.1:9/0");
    let err = publish_policy_change(&unreachable)
        .await
        .expect_err("nobody listens on port 9");
    assert!(matches!(err, AuthError::Backend(_)));
    assert!(!err.to_string().contains(secret), "{err}");
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    let err = publish_policy_change(&bad).await.expect_err("bad URL");
    assert!(!err.to_string().contains(secret), "{err}");
}

#[test]
fn redis_outside_a_runtime_is_an_error_not_a_panic() {
    let source = MemorySource::with(&[]);
    let err =
        Authorizer::with_redis(source, LONG, "redis://127.0.0.1:6379").expect_err("no runtime");
    assert!(matches!(err, AuthError::Backend(_)));
}
