//! Liveness, readiness and metrics: served by every role, without authentication.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::ready::Ready;

type CheckFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Everything `/readyz` checks and `/metrics` renders, for any role.
#[derive(Clone)]
pub struct OpsState {
    /// Named readiness checks of this process's backends.
    pub checks: Arc<Vec<Check>>,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
}

/// A named readiness check of one backend.
#[derive(Clone)]
pub struct Check {
    /// The backend's name as `/readyz` reports it (`store`, `queue`, …).
    pub name: &'static str,
    run: CheckFn,
}

impl Check {
    /// A check named `name` asking `backend` whether it is ready.
    pub fn new<R: Ready + ?Sized + 'static>(name: &'static str, backend: Arc<R>) -> Self {
        Self {
            name,
            run: Arc::new(move || {
                let backend = backend.clone();
                Box::pin(async move { backend.ready().await })
            }),
        }
    }
}

/// A backend that takes longer than this is not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The operations routes, at the root (outside the API's base path).
pub(super) fn routes() -> OpenApiRouter<OpsState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `/healthz`: the process answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    #[schema(pattern = "^ok$", example = "ok")]
    pub status: &'static str,
}

/// `/readyz`: whether every backend of this process's roles answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(pattern = "^(ready|not_ready)$", example = "ready")]
    pub status: &'static str,
    /// The backends that did not answer (none when ready).
    pub failing: Vec<&'static str>,
    /// Each backend by name (`store`, `queue`, `storage`, …) with its state.
    pub checks: BTreeMap<&'static str, CheckState>,
}

/// One backend's readiness. The cause of a failure is logged, never served: `/readyz` is
/// unauthenticated.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckState {
    /// `ok` or `failing`.
    #[schema(pattern = "^(ok|failing)$", example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process answers.
///
/// Outside the base path (`/healthz` at the root), without authentication.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "The process answers", body = Liveness)),
)]
async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Readiness: every backend of this process's roles answers within 2 s.
///
/// Outside the base path (`/readyz` at the root), without authentication.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Every backend answers", body = Readiness),
        (status = 503, description = "At least one backend does not answer (`failing` names them)", body = Readiness),
    ),
)]
async fn readyz(State(ops): State<OpsState>) -> impl IntoResponse {
    let runs = ops.checks.iter().map(|c| async move {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (c.run)()).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_owned()),
        };
        (c.name, outcome)
    });
    let results = futures::future::join_all(runs).await;
    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    for (name, outcome) in results {
        match outcome {
            Ok(()) => {
                checks.insert(name, CheckState { status: "ok" });
            }
            Err(e) => {
                tracing::warn!(backend = name, error = %e, "readiness check failed");
                failing.push(name);
                // The cause is logged, not served: /readyz is unauthenticated.
                checks.insert(name, CheckState { status: "failing" });
            }
        }
    }
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if failing.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        failing,
        checks,
    };
    (status, Json(body))
}

/// Prometheus metrics in the text exposition format.
///
/// Outside the base path (`/metrics` at the root), without authentication.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((
        status = 200,
        description = "Every metric of this process (`ledger_jobs_total`, `ledger_http_requests_total`, …)",
        content_type = "text/plain",
        body = String,
    )),
)]
async fn metrics(State(ops): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render_metrics(&ops.metrics),
    )
}
