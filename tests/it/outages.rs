//! Backends that go away and come back, for real: each test runs its own Kafka broker
//! (tansu) or S3 server (moto) and stops it — frozen with SIGSTOP (a hung peer: requests
//! time out) or killed (connections refused) — while the service runs, then brings it back.
//! PostgreSQL and Redis are the suite's. The binaries come from `scripts/services.sh`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{assert_error, production, statement};

/// A server this test owns.
pub(crate) struct Private {
    child: Option<Child>,
    port: u16,
    kind: Kind,
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Kafka,
    S3,
}

fn binary(var: &str, what: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the suite through scripts/run-tests.sh, which installs {what}"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Private {
    pub(crate) async fn start(kind: Kind) -> Private {
        let mut me = Private {
            child: None,
            port: free_port(),
            kind,
        };
        me.launch().await;
        me
    }

    async fn launch(&mut self) {
        let port = self.port;
        let mut cmd = match self.kind {
            Kind::Kafka => {
                let url = format!("tcp://127.0.0.1:{port}");
                let mut c = Command::new(binary("LEDGER_TEST_TANSU_BIN", "tansu"));
                c.args(["broker", "--listener-url", &url])
                    .args(["--advertised-listener-url", &url])
                    .args(["--storage-engine", "memory://tansu/"]);
                c
            }
            Kind::S3 => {
                let mut c = Command::new(binary("LEDGER_TEST_MOTO_BIN", "moto"));
                c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a private server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "private server on {port} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Kind::S3 = self.kind {
            // moto listens before it answers; a bucket PUT proves it serves.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = reqwest::get(format!("{}/", self.endpoint())).await
                    && r.status().is_success()
                {
                    break;
                }
                assert!(Instant::now() < deadline, "moto on {port} does not answer");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Frozen: the port still accepts connections, nothing answers.
    fn freeze(&self) {
        self.signal("-STOP");
    }

    fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Gone: connections are refused.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen process must be thawed to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

async fn readyz(base: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_refuses_creates_with_503_and_work_resumes_when_it_answers_again() {
    let broker = Private::start(Kind::Kafka).await;
    let backends = production().await;
    let app = backends
        .spawn(&[("APP_ENV_KAFKA_BROKERS", &broker.address())])
        .await;
    let token = app.user("ops", "merchant_operator", "m_acme").await;
    let before = app.create_id(&token, statement("m_acme", "2026-01")).await;
    app.wait_for(&token, &before, "COMPLETED", 90).await;

    broker.freeze();
    let t0 = Instant::now();
    let r = app.create(&token, statement("m_acme", "2026-02")).await;
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("5")
    );
    let body = assert_error(r, 503, "ENQUEUE_FAILED").await;
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "a create waited {:?} for a hung broker",
        t0.elapsed()
    );
    let refused = body["error"]["ledger"]["id"].as_str().unwrap().to_owned();
    let (status, ready) = readyz(&app.base).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["queue"]["status"], "failing", "{ready}");
    assert_eq!(ready["checks"]["store"]["status"], "ok", "{ready}");

    broker.thaw();
    let deadline = Instant::now() + Duration::from_secs(60);
    while readyz(&app.base).await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.retry(&token, &refused).await.status(), 202);
    let after = app.create_id(&token, statement("m_acme", "2026-03")).await;
    // The consumer's session may have expired while the broker was frozen: it rejoins.
    for id in [&refused, &after] {
        let done = app.wait_for(&token, id, "COMPLETED", 120).await;
        assert_eq!(done["attemptCount"], 1, "{done}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_that_goes_away_fails_jobs_retryably_and_downloads_with_503_until_it_is_back() {
    let mut s3 = Private::start(Kind::S3).await;
    let bucket = format!("outage-{}", uuid::Uuid::new_v4().simple());
    let make_bucket = |endpoint: String, bucket: String| async move {
        let r = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "bucket: {}", r.status());
    };
    make_bucket(s3.endpoint(), bucket.clone()).await;
    let backends = production().await;
    let storage_url = format!("s3://{bucket}/ledgers");
    let app = backends
        .spawn(&[
            ("APP_ENV_S3_ENDPOINT", &s3.endpoint()),
            ("APP_ENV_STORAGE_URL", &storage_url),
        ])
        .await;
    let token = app.user("ops", "merchant_operator", "m_acme").await;
    let stored = app.create_id(&token, statement("m_acme", "2026-01")).await;
    app.wait_for(&token, &stored, "COMPLETED", 90).await;
    let download = format!("/ledgers/{stored}/download");
    assert_eq!(app.get(&token, &download).await.status(), 200);

    s3.kill();
    let failing = app.create_id(&token, statement("m_acme", "2026-02")).await;
    let rejected = app.wait_for(&token, &failing, "REJECTED", 120).await;
    assert_eq!(
        rejected["failureReason"]["errorCode"], "JOB_EXECUTION_FAILED",
        "{rejected}"
    );
    assert_eq!(rejected["failureReason"]["retryable"], true);
    let r = app.get(&token, &download).await;
    assert_eq!(r.headers().get("retry-after").unwrap(), "5");
    assert_error(r, 503, "SERVICE_UNAVAILABLE").await;
    let (status, ready) = readyz(&app.base).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["storage"]["status"], "failing", "{ready}");

    // Storage is back, empty (moto keeps objects in memory) — an operator restored the
    // bucket but not its objects.
    s3.launch().await;
    make_bucket(s3.endpoint(), bucket.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(&app.base).await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.retry(&token, &failing).await.status(), 202);
    let done = app.wait_for(&token, &failing, "COMPLETED", 120).await;
    assert_eq!(done["attemptCount"], 2);
    let r = app
        .get(&token, &format!("/ledgers/{failing}/download"))
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("bookedAt,entryId,type"));
    // The object lost with the old server is reported, never served as something else.
    assert_error(app.get(&token, &download).await, 500, "INTERNAL").await;
    app.stop().await;
}
