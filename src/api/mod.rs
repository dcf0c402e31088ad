//! The HTTP surface: `/v1/api/ledger/…` for the api role, and `/healthz`, `/readyz`,
//! `/metrics` for every process. Handlers turn raw input into domain values at the edge,
//! call `assert_merchant_access` before touching data, and answer errors as [`ApiError`].

pub mod download;
pub mod error;
pub mod extract;
pub mod health;
pub mod ledgers;
pub mod openapi;
pub mod ws;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;

use crate::auth::{Authorizer, Verifier};
use crate::crypto::Keyring;
use crate::domain::Snowflake;
use crate::notify::Notifier;
use crate::queue::Queue;
use crate::storage::ObjectStorage;
use crate::store::JobStore;

/// The base path of the public API.
pub const BASE: &str = "/v1/api/ledger";

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Queue (producing side).
    pub queue: Arc<dyn Queue>,
    /// Object storage.
    pub storage: Arc<dyn ObjectStorage>,
    /// Status events.
    pub notifier: Notifier,
    /// Decryption keys for downloads.
    pub keyring: Keyring,
    /// Token verification.
    pub verifier: Arc<Verifier>,
    /// Authorization decisions.
    pub authz: Arc<Authorizer>,
    /// Ledger ids.
    pub ids: Arc<Snowflake>,
    /// Fires on shutdown: WebSockets close with 1001.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// `/ws` settings: keep-alive, token leeway, replay age, sockets per subject.
    pub ws: ws::WsSettings,
    /// Open WebSockets per subject on this process.
    pub ws_sockets: ws::SocketCounts,
}

/// Everything `/readyz` checks and `/metrics` renders, for any role.
#[derive(Clone)]
pub struct OpsState {
    /// Named readiness checks of this process's backends.
    pub checks: Arc<Vec<health::Check>>,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
}

/// The routes under [`BASE`]. Each is registered with its `#[utoipa::path]` documentation
/// (`routes!`), so the served API and [`openapi::document`] come from this one list.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(ledgers::routes())
        .merge(ws::routes())
        .merge(openapi::routes())
}

/// The router of a process: the API when `api` is set, plus the ops endpoints.
pub fn router(api: Option<AppState>, ops: OpsState) -> Router {
    let (ops_routes, _) = health::routes().split_for_parts();
    let mut app = ops_routes.with_state(ops);
    if let Some(state) = api {
        let (api, _) = api_routes().split_for_parts();
        app = app.nest(BASE, api.with_state(state));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(middleware::from_fn(observe))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("a handler panicked".into()).into_response()
}

/// Gives each request an id (`X-Request-Id`, taken from the client when sane), logs one line
/// per request and records the HTTP metrics under the matched route template.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let mut response = error::REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    let labels = [
        ("route", route.clone()),
        ("method", method.to_string()),
        ("status", status.clone()),
    ];
    metrics::counter!("ledger_http_requests_total", &labels).increment(1);
    metrics::histogram!("ledger_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // Probes and scrapes come every few seconds from every replica: their lines are debug
    // (APP_ENV_LOG_LEVEL=debug shows them), unless one fails.
    let routine = method == Method::GET
        && matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics")
        && response.status().is_success();
    if routine {
        tracing::debug!(
            requestId = %id, method = %method, route = %route, status = %status,
            latencyMs = latency_ms, "http request"
        );
    } else {
        tracing::info!(
            requestId = %id, method = %method, route = %route, status = %status,
            latencyMs = latency_ms, "http request"
        );
    }
    response
}
