//! `GET /ledgers/{id}/download`: a ledger's document, decrypted and verified as it streams
//! (the use case opens it from the vault; this module only makes the HTTP response).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, error_responses};
use super::extract::{Path, Query};
use super::params::{LedgerIdPath, ledger_id};
use super::state::AppState;
use crate::auth::{Caller, Permission};
use crate::domain::InvalidInput;

/// The download route, relative to the API's base path.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(download))
}

/// The `version` query parameter of a download: a `u32` from 1 (the path macro's literals
/// cannot say `maximum = u32::MAX`).
pub(super) enum VersionParam {}

impl utoipa::IntoParams for VersionParam {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        vec![
            ParameterBuilder::new()
                .name("version")
                .parameter_in(ParameterIn::Query)
                .description(Some(
                    "Which version's file (default: the newest completed one)",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int64,
                        )))
                        .minimum(Some(1))
                        .maximum(Some(u32::MAX)),
                ))
                .build(),
        ]
    }
}

error_responses! {
    /// What a download can answer besides 200.
    DownloadErrors [Validation, Unauthorized, NotFound, JobNotReady, Shredded, Internal, ServiceUnavailable, KeyUnavailable]
}

/// The query of a route that takes only `version` (a download, a manifest): the version
/// asked for, if any; any other parameter, or a version that is not a positive integer, is
/// a 400.
pub(super) fn version_param(params: &HashMap<String, String>) -> Result<Option<u32>, ApiError> {
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "version") {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
    let version = params
        .get("version")
        .map(|raw| {
            raw.parse::<u32>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| InvalidInput::new("version", "expected a positive integer"))
        })
        .transpose()?;
    Ok(version)
}

/// Download a ledger's document, decrypted.
///
/// The plaintext is streamed as it is decrypted and verified; a file that fails verification
/// after the first byte ends the connection early (the body is shorter than its
/// `Content-Length`), never with wrong bytes. A deleted ledger is a 404.
#[utoipa::path(
    get,
    path = "/ledgers/{id}/download",
    tag = "ledgers",
    operation_id = "downloadLedger",
    params(
        LedgerIdPath,
        VersionParam,
    ),
    responses(
        (
            status = 200,
            description = "The document",
            content(
                ("application/pdf"),
                ("text/csv"),
                ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            ),
            headers(
                ("Content-Disposition" = String, description = "`attachment; filename=\"…\"; filename*=UTF-8''…`"),
                ("Content-Length" = u64, description = "Size of the plaintext"),
                ("ETag" = String, description = "The quoted hex SHA-256 of the plaintext"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
                ("Cache-Control" = String, description = "`no-store`"),
            ),
        ),
        DownloadErrors,
    ),
    security(("bearer" = [])),
)]
async fn download(
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
    let file = ledgers.open_file(&ledger, version).await?;
    let info = &file.info;
    let name = &info.file_name;
    let disposition = format!("attachment; filename=\"{name}\"; filename*=UTF-8''{name}");
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| ApiError::Internal(e.to_string()));
    let content_type = value(&info.content_type)?;
    let disposition = value(&disposition)?;
    let etag = value(&format!("\"{}\"", info.sha256))?;
    let size = info.size_bytes;
    let mut response = Response::new(Body::from_stream(file.content.into_stream()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::ETAG, etag);
    Ok(response)
}
