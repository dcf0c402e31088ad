//! Verifiable statements over HTTP (SPEC §13): `GET /ledgers/{id}/manifest`, a file
//! version's signed manifest (same access as its download), and
//! `GET /.well-known/jwks.json`, the public keys that verify manifests (no authentication:
//! recipients of a statement have no account).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::download::{VersionParam, version_param};
use super::error::{ApiError, error_responses};
use super::extract::{Path, Query};
use super::params::{LedgerIdPath, ledger_id};
use super::state::AppState;
use crate::auth::{Caller, Permission};

/// The manifest and key routes, relative to the API's base path.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(manifest))
        .routes(routes!(jwks))
}

error_responses! {
    /// What a manifest request can answer besides 200.
    ManifestErrors [Validation, Unauthorized, NotFound, JobNotReady, Shredded, Internal, ServiceUnavailable]
    /// What the key set can answer besides 200.
    JwksErrors [Internal]
}

/// A ledger file version's manifest.
///
/// A compact JWS (ES256, header `kid` = the signing key's RFC 7638 thumbprint) over
/// `{iss, ledgerId, merchantId, type, period, timezone, format, stage, version, sha256,
/// sizeBytes, controlTotals, generatedAt}`, `sha256` and `sizeBytes` being those of the
/// plaintext document the download serves. Verify it with the keys of
/// `/.well-known/jwks.json`, or offline with `ledger verify`.
#[utoipa::path(
    get,
    path = "/ledgers/{id}/manifest",
    tag = "ledgers",
    operation_id = "getLedgerManifest",
    params(
        LedgerIdPath,
        VersionParam,
    ),
    responses(
        (
            status = 200,
            description = "The manifest, a compact JWS",
            content_type = "application/jose",
            body = String,
            headers(
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
                ("Cache-Control" = String, description = "`no-store`"),
            ),
        ),
        ManifestErrors,
    ),
    security(("bearer" = [])),
)]
async fn manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<LedgerIdPath>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let version = version_param(&params)?;
    let ledgers = state.ledgers();
    let ledger = ledgers
        .load(&caller, ledger_id(&path.id)?, Permission::Download, None)
        .await?;
    let jws = ledgers.manifest(&ledger, version).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jose"),
            ),
            (
                header::HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        jws,
    )
        .into_response())
}

/// The public keys that verify manifests.
///
/// A JWK Set: the current signing key first, then the retired ones
/// (`APP_ENV_SIGNING_KEYS_OLD`), so that manifests signed before a rotation still verify.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "meta",
    operation_id = "getManifestKeys",
    responses(
        (status = 200, description = "The JWK Set of the manifest signing keys", content_type = "application/jwk-set+json", body = Object),
        JwksErrors,
    ),
)]
async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(&*state.manifest_keys)
        .map_err(|e| ApiError::Internal(format!("serializing the JWKS: {e}")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response())
}
