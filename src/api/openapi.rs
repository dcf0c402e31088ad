//! The OpenAPI 3.1 document of the HTTP surface, generated from the code: the handlers'
//! `#[utoipa::path]` attributes, the wire types' `ToSchema` derives and the routers built
//! from them with `routes!`, so a route cannot be served undocumented nor documented
//! unserved. Served at `GET /v1/api/ledger/openapi.json` (public) and printed by
//! `ledger openapi`. This module owns the document's frame (info, servers, security schemes,
//! tags) and how error responses are described; it never describes a route itself.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, error_responses, header_ref};
use super::state::AppState;

/// The frame of the document: what no handler says.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ledger",
        description = include_str!("openapi.md"),
        license(name = "UNLICENSED"),
    ),
    servers((url = "/", description = "The service root: the API under `/v1/api/ledger`; `/healthz`, `/readyz` and `/metrics` outside it, without authentication")),
    components(schemas(
        ErrorBody,
        super::ws::frames::ServerFrame,
        super::ws::frames::ClientMessage,
    )),
    tags(
        (name = "ledgers", description = "Merchant ledgers: create, list, read, download, retry, regenerate, delete"),
        (name = "batches", description = "Many merchants' ledgers at once: create a batch, follow its counts, page its ledgers"),
        (name = "schedules", description = "Period close by itself: each closed period of a cadence becomes one run (a batch)"),
        (name = "webhooks", description = "Be told by HTTP when ledgers complete or are rejected and batches finish: signed per Standard Webhooks, at least once"),
        (name = "live", description = "Status events over WebSocket"),
        (name = "meta", description = "This document"),
        (name = "operations", description = "Liveness, readiness and metrics, outside the base path and without authentication"),
    ),
    modifiers(&Frame),
)]
struct ApiDoc;

/// Security schemes and the crate version.
struct Frame;

impl Modify for Frame {
    fn modify(&self, doc: &mut Document) {
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT signed with ES256 (any other algorithm is refused); its `sub` \
                         is the subject of every authorization decision",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "accessToken",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The same JWT as a query parameter, for WebSocket clients that cannot set headers (browsers)",
            ))),
        );
    }
}

/// The response headers several responses share.
fn add_shared_headers(doc: &mut Document) {
    let string = || Some(ObjectBuilder::new().schema_type(Type::String));
    let headers = [
        (
            "X-Request-Id",
            HeaderBuilder::new().schema(string()).description(Some(
                "The request's id: the caller's `X-Request-Id` when it is 1 to 128 visible \
                 ASCII characters, else a new UUID",
            )),
        ),
        (
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(string())
                .description(Some("`Bearer`")),
        ),
        (
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some("Seconds to wait before trying again")),
        ),
    ];
    let components = doc.components.get_or_insert_with(Default::default);
    for (name, header) in headers {
        let mut header = header.build();
        // The responses that name these headers always carry them. utoipa's `Header` has no
        // `required` field; its extensions serialise beside the fixed fields.
        header
            .extensions
            .get_or_insert_with(Default::default)
            .insert("required".into(), true.into());
        components.headers.insert(name.to_owned(), RefOr::T(header));
    }
    // Every response carries the request's id.
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response.headers.insert(
                        "X-Request-Id".into(),
                        RefOr::Ref(header_ref("X-Request-Id")),
                    );
                }
            }
        }
    }
}

fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
        &mut item.query,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The routes of this module, relative to the base path.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi))
}

/// The whole document, built from the same routers the service serves.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.merge(
        OpenApiRouter::<AppState>::new()
            .nest(super::BASE, super::routes::resources().merge(routes()))
            .into_openapi(),
    );
    doc.merge(super::health::routes().into_openapi());
    add_shared_headers(&mut doc);
    doc
}

static JSON: LazyLock<Result<String, String>> =
    LazyLock::new(|| document().to_pretty_json().map_err(|e| e.to_string()));

/// The document as pretty-printed JSON (built once).
pub fn json() -> Result<&'static str, ApiError> {
    JSON.as_deref()
        .map_err(|e| ApiError::Internal(format!("serialising the OpenAPI document: {e}")))
}

error_responses! {
    /// What serving this document can answer besides 200.
    DocumentErrors [Internal]
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "getOpenApi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
        DocumentErrors,
    ),
)]
async fn openapi() -> Result<Response, ApiError> {
    Ok(([(header::CONTENT_TYPE, "application/json")], json()?).into_response())
}

#[cfg(test)]
mod tests {
    use super::super::error::ErrorCode;
    use super::*;

    #[test]
    fn every_documented_error_code_is_a_code_of_the_api() {
        let doc = serde_json::to_value(document()).unwrap();
        let known: Vec<(u16, &str)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.status().as_u16(), c.as_str()))
            .collect();
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let Some(codes) = response
                        .pointer("/content/application~1json/schema/allOf/1/properties/error/properties/code/enum")
                    else {
                        continue;
                    };
                    let status: u16 = status.parse().unwrap();
                    for code in codes.as_array().unwrap() {
                        let code = code.as_str().unwrap();
                        assert!(
                            known.contains(&(status, code)),
                            "{method} {path}: {status} {code} is not an ErrorCode"
                        );
                        let description = response["description"].as_str().unwrap();
                        assert!(
                            description.contains(&format!("- `{code}`: ")),
                            "{code} has no meaning in {description}"
                        );
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 40, "only {seen} documented error codes");
    }
}
