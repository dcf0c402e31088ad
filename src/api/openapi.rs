//! The OpenAPI 3.1 document of the HTTP surface, generated from the code: the handlers'
//! `#[utoipa::path]` attributes, the wire types' `ToSchema` derives and the routers built
//! from them with `routes!`, so a route cannot be served undocumented nor documented
//! unserved. Served at `GET /v1/api/ledger/openapi.json` (public) and printed by
//! `ledger openapi`. This module owns the document's frame (info, servers, security schemes,
//! tags) and how error responses are described; it never describes a route itself.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi as Document, Ref, RefOr, Response as DocResponse, ResponseBuilder,
};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState, BASE};

/// Declares an uninhabited type whose [`utoipa::IntoResponses`] documents the error responses
/// a handler can give: per status, the codes the body may carry (the documented schema only
/// admits those), with the headers that status always has.
macro_rules! error_responses {
    ($($(#[$meta:meta])* $name:ident { $($status:literal => [$($code:literal),+ $(,)?]),+ $(,)? })+) => {
        $(
            $(#[$meta])*
            enum $name {}

            impl utoipa::IntoResponses for $name {
                fn responses() -> std::collections::BTreeMap<
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::Response>,
                > {
                    $crate::api::openapi::describe_errors(&[$(($status, &[$($code),+])),+])
                }
            }
        )+
    };
}
pub(crate) use error_responses;

/// What each error code means, for the response descriptions.
fn meaning(code: &str) -> &'static str {
    match code {
        "VALIDATION_ERROR" => {
            "a field, parameter or header is invalid (`field` names it), or the body is not a JSON object"
        }
        "UNAUTHORIZED" => "no token, or a token that is not a valid ES256 JWT",
        "FORBIDDEN" => "the caller may not do this for the named merchant",
        "NOT_FOUND" => "no such ledger or version (also when the caller may not see it)",
        "METHOD_NOT_ALLOWED" => "the path exists with other methods",
        "LEDGER_EXISTS" => "a ledger with the same identity exists (`ledgerId` names it)",
        "JOB_IN_PROGRESS" => "the ledger is PENDING or PROCESSING",
        "INVALID_STATE" => "the ledger's status does not allow this",
        "LEDGER_FINAL" => "the ledger is FINAL and cannot be regenerated",
        "JOB_NOT_READY" => "the ledger has no completed file yet",
        "PAYLOAD_TOO_LARGE" => "the body is over 1 MiB",
        "UNSUPPORTED_MEDIA_TYPE" => "the body is not `application/json`",
        "IDEMPOTENCY_KEY_REUSED" => "the Idempotency-Key was used with another body",
        "TOO_MANY_REQUESTS" => {
            "the subject already holds APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT WebSockets; close one first"
        }
        "INTERNAL" => "a fault of the service; quote the requestId",
        "ENQUEUE_FAILED" => {
            "the ledger was stored but not queued: it is REJECTED/ENQUEUE_FAILED (in `ledger`), retry it"
        }
        "SERVICE_UNAVAILABLE" => "a backend did not answer; try again after Retry-After seconds",
        _ => "",
    }
}

/// The documented error responses for `cases`: per status, the error codes its body may carry.
pub(crate) fn describe_errors(cases: &[(u16, &[&str])]) -> BTreeMap<String, RefOr<DocResponse>> {
    cases
        .iter()
        .map(|&(status, codes)| {
            let reason = axum::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let mut description = format!("{reason}.");
            for code in codes {
                description.push_str(&format!("\n- `{code}`: {}", meaning(code)));
            }
            // The shared error body, narrowed to the codes this status can carry here.
            let narrowed = ObjectBuilder::new().property(
                "error",
                ObjectBuilder::new().property(
                    "code",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(codes.iter().copied())),
                ),
            );
            let schema = AllOfBuilder::new()
                .item(Ref::from_schema_name("Error"))
                .item(narrowed);
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            );
            if status == 401 {
                response = response.header_ref("WWW-Authenticate", header_ref("WWW-Authenticate"));
            }
            if status == 503 {
                response = response.header_ref("Retry-After", header_ref("Retry-After"));
            }
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

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
        super::ws::ServerFrame,
        super::ws::ClientMessage,
    )),
    tags(
        (name = "ledgers", description = "Merchant ledgers: create, list, read, download, retry, regenerate, delete"),
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

/// A reference to a header of `components.headers`.
fn header_ref(name: &str) -> Ref {
    Ref::new(format!("#/components/headers/{name}"))
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
            .nest(BASE, super::api_routes())
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
    DocumentErrors {
        500 => ["INTERNAL"],
    }
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
    use super::super::error::CODES;
    use super::*;

    #[test]
    fn every_documented_error_code_is_a_code_of_the_api() {
        let doc = serde_json::to_value(document()).unwrap();
        let known: Vec<(u16, &str)> = CODES.to_vec();
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
                            "{method} {path}: {status} {code} is not in error::CODES"
                        );
                        assert!(!meaning(code).is_empty(), "{code} has no meaning");
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 40, "only {seen} documented error codes");
    }
}
