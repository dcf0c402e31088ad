//! `ApiError`: every failure a client can see, mapped to an [`ErrorCode`] (a stable wire
//! string with one status and one documented meaning). The body is always
//! `{"error":{"code","message","requestId"}}`; a 5xx says nothing but the request id to the
//! client and logs the whole cause. `error_responses!` documents, per handler, the codes it
//! can answer.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response as DocResponse, ResponseBuilder};

use super::views::{LedgerView, view};
use crate::domain::{InvalidInput, LedgerId, TransitionError};
use crate::usecases::LedgerError;

tokio::task_local! {
    /// The id of the request being served (set by the request middleware).
    pub static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".into())
}

/// A failure as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field or parameter is invalid.
    #[error("{0}")]
    Validation(InvalidInput),
    /// 400: the body is not valid JSON, or not an object.
    #[error("{0}")]
    MalformedBody(String),
    /// 401: no or an invalid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller may not do `permission` on the named merchant. Both are named: it is
    /// the caller's own request, so nothing leaks, and it says which grant is missing.
    #[error(
        "not allowed to {} merchant {merchant}: ask for a role that grants `{permission}` on \
         it ({})",
        permission.phrase(),
        one_of(&permission.granted_by())
    )]
    Forbidden {
        /// The merchant of the request.
        merchant: crate::domain::MerchantId,
        /// The action refused.
        permission: crate::auth::Permission,
    },
    /// 403: an audit read of deleted ledgers by a caller who is not platform_admin.
    #[error("includeDeleted=true is an audit read for platform_admin only")]
    AuditOnly,
    /// 403: something for `"*"` by a caller whose grants do not allow it (the message says
    /// what it needs).
    #[error("{0}")]
    EveryMerchantOnly(&'static str),
    /// 404: no such resource (also when the caller may not see it).
    #[error("{0}")]
    NotFound(&'static str),
    /// 405: the route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: a ledger with the same identity exists.
    #[error("a ledger for this merchant, type, period, timezone and format exists")]
    LedgerExists(LedgerId),
    /// 409: the ledger's status refuses the action.
    #[error("{}", .0.message)]
    Conflict(TransitionError),
    /// 409: the file is not there: still being generated, or the ledger was rejected (the
    /// message says which, and what to do).
    #[error("{0}")]
    NotReady(String),
    /// 410: the file was destroyed on purpose (its merchant's key shredded, or retention).
    #[error("{0}")]
    Shredded(String),
    /// 413: the body is over the limit.
    #[error("request body is larger than 1 MiB")]
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 429: the caller holds as many of a limited resource (WebSockets) as it may.
    #[error("{0}")]
    TooManyRequests(String),
    /// 422: the idempotency key was used with another body.
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    /// 503: the job is stored (REJECTED/ENQUEUE_FAILED) but could not be queued.
    #[error("the ledger was stored but could not be queued; retry it")]
    EnqueueFailed(Box<LedgerView>),
    /// 503: a backend did not answer.
    #[error("a backend is unavailable: {0}")]
    Unavailable(String),
    /// 503: the key of the file is unavailable (an operator's problem: a root key no
    /// longer configured, a KMS down or refusing).
    #[error("the key of this file is unavailable: {0}")]
    KeyUnavailable(String),
    /// 500: a bug or a broken invariant; details only in the log.
    #[error("internal error: {0}")]
    Internal(String),
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Every error code a response can carry. Each has one status; its wire string (`code` of
/// the error body) and its meaning (in the documented error responses) are declared here
/// only. `tests/it/openapi.rs` checks that the codes of every [`ApiError`] are exactly these,
/// each documented on an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    /// 400 `VALIDATION_ERROR`.
    Validation,
    /// 401 `UNAUTHORIZED`.
    Unauthorized,
    /// 403 `FORBIDDEN`.
    Forbidden,
    /// 404 `NOT_FOUND`.
    NotFound,
    /// 405 `METHOD_NOT_ALLOWED`.
    MethodNotAllowed,
    /// 409 `LEDGER_EXISTS`.
    LedgerExists,
    /// 409 `JOB_IN_PROGRESS`.
    JobInProgress,
    /// 409 `INVALID_STATE`.
    InvalidState,
    /// 409 `LEDGER_FINAL`.
    LedgerFinal,
    /// 409 `JOB_NOT_READY`.
    JobNotReady,
    /// 410 `SHREDDED`.
    Shredded,
    /// 413 `PAYLOAD_TOO_LARGE`.
    PayloadTooLarge,
    /// 415 `UNSUPPORTED_MEDIA_TYPE`.
    UnsupportedMediaType,
    /// 422 `IDEMPOTENCY_KEY_REUSED`.
    IdempotencyKeyReused,
    /// 429 `TOO_MANY_REQUESTS`.
    TooManyRequests,
    /// 500 `INTERNAL`.
    Internal,
    /// 503 `ENQUEUE_FAILED`.
    EnqueueFailed,
    /// 503 `SERVICE_UNAVAILABLE`.
    ServiceUnavailable,
    /// 503 `KEY_UNAVAILABLE`.
    KeyUnavailable,
}

impl ErrorCode {
    /// Every code, in the order of their statuses.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::Validation,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::LedgerExists,
        ErrorCode::JobInProgress,
        ErrorCode::InvalidState,
        ErrorCode::LedgerFinal,
        ErrorCode::JobNotReady,
        ErrorCode::Shredded,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::TooManyRequests,
        ErrorCode::Internal,
        ErrorCode::EnqueueFailed,
        ErrorCode::ServiceUnavailable,
        ErrorCode::KeyUnavailable,
    ];

    /// The wire string, and the status every response with this code has.
    const fn wire(self) -> (&'static str, StatusCode) {
        use ErrorCode as C;
        match self {
            C::Validation => ("VALIDATION_ERROR", StatusCode::BAD_REQUEST),
            C::Unauthorized => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
            C::Forbidden => ("FORBIDDEN", StatusCode::FORBIDDEN),
            C::NotFound => ("NOT_FOUND", StatusCode::NOT_FOUND),
            C::MethodNotAllowed => ("METHOD_NOT_ALLOWED", StatusCode::METHOD_NOT_ALLOWED),
            C::LedgerExists => ("LEDGER_EXISTS", StatusCode::CONFLICT),
            C::JobInProgress => ("JOB_IN_PROGRESS", StatusCode::CONFLICT),
            C::InvalidState => ("INVALID_STATE", StatusCode::CONFLICT),
            C::LedgerFinal => ("LEDGER_FINAL", StatusCode::CONFLICT),
            C::JobNotReady => ("JOB_NOT_READY", StatusCode::CONFLICT),
            C::Shredded => ("SHREDDED", StatusCode::GONE),
            C::PayloadTooLarge => ("PAYLOAD_TOO_LARGE", StatusCode::PAYLOAD_TOO_LARGE),
            C::UnsupportedMediaType => {
                ("UNSUPPORTED_MEDIA_TYPE", StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            C::IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", StatusCode::UNPROCESSABLE_ENTITY),
            C::TooManyRequests => ("TOO_MANY_REQUESTS", StatusCode::TOO_MANY_REQUESTS),
            C::Internal => ("INTERNAL", StatusCode::INTERNAL_SERVER_ERROR),
            C::EnqueueFailed => ("ENQUEUE_FAILED", StatusCode::SERVICE_UNAVAILABLE),
            C::ServiceUnavailable => ("SERVICE_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
            C::KeyUnavailable => ("KEY_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// The wire string, e.g. `LEDGER_NOT_FOUND`.
    pub const fn as_str(self) -> &'static str {
        self.wire().0
    }

    /// The status of every response with this code.
    pub const fn status(self) -> StatusCode {
        self.wire().1
    }

    /// The code of a state machine refusal (`TransitionError::code`).
    pub fn of_transition(e: &TransitionError) -> Self {
        match e.code {
            "JOB_IN_PROGRESS" => ErrorCode::JobInProgress,
            "LEDGER_FINAL" => ErrorCode::LedgerFinal,
            _ => ErrorCode::InvalidState,
        }
    }

    /// What the code means, for the documented error responses.
    pub const fn meaning(self) -> &'static str {
        use ErrorCode as C;
        match self {
            C::Validation => {
                "a field, parameter or header is invalid (`field` names it), or the body is not a JSON object"
            }
            C::Unauthorized => "no token, or a token that is not a valid ES256 JWT",
            C::Forbidden => "the caller may not do this for the named merchant",
            C::NotFound => "no such ledger or version (also when the caller may not see it)",
            C::MethodNotAllowed => "the path exists with other methods",
            C::LedgerExists => "a ledger with the same identity exists (`ledgerId` names it)",
            C::JobInProgress => "the ledger is PENDING or PROCESSING",
            C::InvalidState => "the ledger's status does not allow this",
            C::LedgerFinal => "the ledger is FINAL and cannot be regenerated",
            C::JobNotReady => "the ledger has no completed file yet",
            C::Shredded => {
                "the file was destroyed on purpose (its merchant's key was shredded, or retention removed it); the ledger's `file.shreddedAt` says when"
            }
            C::PayloadTooLarge => "the body is over 1 MiB",
            C::UnsupportedMediaType => "the body is not `application/json`",
            C::IdempotencyKeyReused => "the Idempotency-Key was used with another body",
            C::TooManyRequests => {
                "the subject already holds APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT WebSockets; close one first"
            }
            C::Internal => "a fault of the service; quote the requestId",
            C::EnqueueFailed => {
                "the ledger was stored but not queued: it is REJECTED/ENQUEUE_FAILED (in `ledger`), retry it"
            }
            C::ServiceUnavailable => {
                "a backend did not answer; try again after Retry-After seconds"
            }
            C::KeyUnavailable => {
                "the key that protects the file is unavailable (an operator has been alerted); try again after Retry-After seconds"
            }
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Declares an uninhabited type whose [`utoipa::IntoResponses`] documents the error responses
/// a handler can give: the [`ErrorCode`]s its body may carry, grouped by their status (the
/// documented schema of each status only admits its codes), with the headers that status
/// always has.
macro_rules! error_responses {
    ($($(#[$meta:meta])* $name:ident [$($code:ident),+ $(,)?])+) => {
        $(
            $(#[$meta])*
            enum $name {}

            impl utoipa::IntoResponses for $name {
                fn responses() -> std::collections::BTreeMap<
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::Response>,
                > {
                    $crate::api::error::describe_errors(&[$($crate::api::error::ErrorCode::$code),+])
                }
            }
        )+
    };
}
pub(crate) use error_responses;

/// The documented error responses for `codes`: per status, the codes its body may carry.
pub(crate) fn describe_errors(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<DocResponse>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(*code);
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let mut description = format!("{reason}.");
            for code in &codes {
                description.push_str(&format!("\n- `{}`: {}", code.as_str(), code.meaning()));
            }
            // The shared error body, narrowed to the codes this status can carry here.
            let narrowed = ObjectBuilder::new().property(
                "error",
                ObjectBuilder::new().property(
                    "code",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(codes.iter().map(|c| c.as_str()))),
                ),
            );
            let schema = AllOfBuilder::new()
                .item(Ref::from_schema_name("Error"))
                .item(narrowed);
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            );
            for (with, header) in [(401, "WWW-Authenticate"), (503, "Retry-After")] {
                if status == with {
                    response = response.header_ref(header, header_ref(header));
                }
            }
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

/// A reference to a header of `components.headers` (the document declares them).
pub(crate) fn header_ref(name: &str) -> Ref {
    Ref::new(format!("#/components/headers/{name}"))
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` member of an error body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Stable, machine-readable code; the status of the response follows from it.
    #[schema(schema_with = code_schema)]
    pub code: ErrorCode,
    /// Readable explanation (a 5xx says nothing but to quote the request id).
    pub message: String,
    /// The request's id, also in the `X-Request-Id` response header.
    pub request_id: String,
    /// VALIDATION_ERROR: the body field, query parameter or header that is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// LEDGER_EXISTS: the id of the ledger that exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[1-9][0-9]{0,18}$")]
    pub ledger_id: Option<String>,
    /// FORBIDDEN: the merchant the caller may not act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    /// FORBIDDEN: the action refused (`read`, `create`, `retry`, `regenerate`, `delete`,
    /// `download`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// ENQUEUE_FAILED: the ledger as stored, REJECTED with ENQUEUE_FAILED (retry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Box<LedgerView>>,
}

fn code_schema() -> utoipa::openapi::Object {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(codes))
        .description(Some(
            "Stable error code. 404 NOT_FOUND and 405 METHOD_NOT_ALLOWED also answer paths and \
             methods the API does not have.",
        ))
        .build()
}

impl ApiError {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            ApiError::Validation(_) | ApiError::MalformedBody(_) => C::Validation,
            ApiError::Unauthorized(_) => C::Unauthorized,
            ApiError::Forbidden { .. } | ApiError::AuditOnly | ApiError::EveryMerchantOnly(_) => {
                C::Forbidden
            }
            ApiError::NotFound(_) => C::NotFound,
            ApiError::MethodNotAllowed => C::MethodNotAllowed,
            ApiError::LedgerExists(_) => C::LedgerExists,
            ApiError::Conflict(t) => C::of_transition(t),
            ApiError::NotReady(_) => C::JobNotReady,
            ApiError::Shredded(_) => C::Shredded,
            ApiError::PayloadTooLarge => C::PayloadTooLarge,
            ApiError::UnsupportedMediaType => C::UnsupportedMediaType,
            ApiError::IdempotencyMismatch => C::IdempotencyKeyReused,
            ApiError::TooManyRequests(_) => C::TooManyRequests,
            ApiError::EnqueueFailed(_) => C::EnqueueFailed,
            ApiError::Unavailable(_) => C::ServiceUnavailable,
            ApiError::KeyUnavailable(_) => C::KeyUnavailable,
            ApiError::Internal(_) => C::Internal,
        }
    }

    /// The status and the stable code (its wire string) of this error.
    pub fn parts(&self) -> (StatusCode, &'static str) {
        let code = self.code();
        (code.status(), code.as_str())
    }

    /// The body of this error.
    pub fn error_body(&self) -> ErrorBody {
        let code = self.code();
        let status = code.status();
        let message = if status.is_server_error() && !matches!(self, ApiError::EnqueueFailed(_)) {
            // The cause is logged; the client only gets the id to quote.
            "the service could not complete the request; quote the requestId when reporting it"
                .to_owned()
        } else {
            self.to_string()
        };
        ErrorBody {
            error: ErrorDetail {
                code,
                message,
                request_id: request_id(),
                field: match self {
                    ApiError::Validation(invalid) => Some(invalid.field.clone()),
                    _ => None,
                },
                ledger_id: match self {
                    ApiError::LedgerExists(id) => Some(id.to_string()),
                    _ => None,
                },
                merchant_id: match self {
                    ApiError::Forbidden { merchant, .. } => Some(merchant.to_string()),
                    _ => None,
                },
                action: match self {
                    ApiError::Forbidden { permission, .. } => Some(permission.as_str()),
                    _ => None,
                },
                ledger: match self {
                    ApiError::EnqueueFailed(ledger) => Some(ledger.clone()),
                    _ => None,
                },
            },
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.error_body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code().status();
        if status.is_server_error() {
            tracing::error!(requestId = %request_id(), status = status.as_u16(), error = %self, "request failed");
        }
        let mut response = (status, Json(self.error_body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // A backend is down: worth asking again shortly, not at once.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::Validation(e)
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        ApiError::Conflict(e)
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Invalid(invalid) => ApiError::Validation(invalid),
            LedgerError::Forbidden {
                merchant,
                permission,
            } => ApiError::Forbidden {
                merchant,
                permission,
            },
            LedgerError::AuditOnly => ApiError::AuditOnly,
            LedgerError::EveryMerchantOnly(what) => ApiError::EveryMerchantOnly(what),
            LedgerError::NotFound(what) => ApiError::NotFound(what),
            LedgerError::Exists(id) => ApiError::LedgerExists(id),
            LedgerError::Conflict(t) => ApiError::Conflict(t),
            LedgerError::NotReady(m) => ApiError::NotReady(m),
            LedgerError::IdempotencyMismatch => ApiError::IdempotencyMismatch,
            LedgerError::EnqueueFailed(ledger) => ApiError::EnqueueFailed(Box::new(view(&ledger))),
            LedgerError::Unavailable(m) => ApiError::Unavailable(m),
            LedgerError::KeyUnavailable(m) => ApiError::KeyUnavailable(m),
            LedgerError::Shredded(m) => ApiError::Shredded(m),
            LedgerError::Internal(m) => ApiError::Internal(m),
        }
    }
}
