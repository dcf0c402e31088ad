//! The HTTP surface: `/v1/api/ledger/…` for the api role, and `/healthz`, `/readyz`,
//! `/metrics` for every process. HTTP only: handlers turn raw input into domain values at
//! the edge, call the use cases ([`crate::usecases`]), which check access, and answer their
//! results as views ([`views`]) and their errors as [`ApiError`].

pub mod batches;
pub mod console;
pub mod download;
pub mod error;
pub mod extract;
pub mod health;
pub mod ledgers;
pub mod manifest;
pub mod openapi;
mod params;
pub mod routes;
pub mod schedules;
pub mod state;
pub mod views;
pub mod webhooks;
pub mod ws;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use error::{ApiError, ErrorCode};
pub use health::OpsState;
pub use state::AppState;

/// The base path of the public API.
pub const BASE: &str = "/v1/api/ledger";

/// The router of a process: the API when `api` is set, plus the ops endpoints.
pub fn router(api: Option<AppState>, ops: OpsState) -> Router {
    let (ops_routes, _) = health::routes().split_for_parts();
    let mut app = ops_routes.with_state(ops);
    if let Some(state) = api {
        let (api, _) = routes::resources()
            .merge(openapi::routes())
            .split_for_parts();
        app = app.nest(BASE, api.merge(console::router()).with_state(state));
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
