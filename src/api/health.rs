//! Liveness, readiness and metrics: served by every role, without authentication.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::OpsState;

type CheckFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A named readiness check of one backend.
#[derive(Clone)]
pub struct Check {
    /// The backend's name as `/readyz` reports it (`store`, `queue`, …).
    pub name: &'static str,
    run: CheckFn,
}

impl Check {
    /// A check named `name` running `f`.
    pub fn new<F, Fut>(name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            run: Arc::new(move || Box::pin(f())),
        }
    }
}

/// A backend that takes longer than this is not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn router(ops: OpsState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

use axum::Json;

async fn readyz(State(ops): State<OpsState>) -> impl IntoResponse {
    let runs = ops.checks.iter().map(|c| async move {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (c.run)()).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_owned()),
        };
        (c.name, outcome)
    });
    let results = futures::future::join_all(runs).await;
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    for (name, outcome) in results {
        match outcome {
            Ok(()) => {
                checks.insert(name.into(), json!({ "status": "ok" }));
            }
            Err(e) => {
                tracing::warn!(backend = name, error = %e, "readiness check failed");
                failing.push(name);
                // The cause is logged, not served: /readyz is unauthenticated.
                checks.insert(name.into(), json!({ "status": "failing" }));
            }
        }
    }
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if failing.is_empty() { "ready" } else { "not_ready" },
        "failing": failing,
        "checks": checks,
    });
    (status, Json(body))
}

async fn metrics(State(ops): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render_metrics(&ops.metrics),
    )
}
