//! `ApiError`: every failure a client can see, mapped to a status and a stable code. The body
//! is always `{"error":{"code","message","requestId"}}`; a 5xx says nothing but the request
//! id to the client and logs the whole cause.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AccessError;
use crate::domain::{InvalidInput, LedgerId, TransitionError};
use crate::store::StoreError;

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
        "not allowed to {permission} ledgers of merchant {merchant}: ask for a role that grants \
         `{permission}` on it ({})",
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
    EnqueueFailed(Box<super::ledgers::LedgerView>),
    /// 503: a backend did not answer.
    #[error("a backend is unavailable: {0}")]
    Unavailable(String),
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

/// Every error code a response can carry, with its status: the `code` enum of the documented
/// error body. `tests/it/openapi.rs` checks that the codes of every [`ApiError`] are exactly
/// these, each documented on an operation.
pub const CODES: &[(u16, &str)] = &[
    (400, "VALIDATION_ERROR"),
    (401, "UNAUTHORIZED"),
    (403, "FORBIDDEN"),
    (404, "NOT_FOUND"),
    (405, "METHOD_NOT_ALLOWED"),
    (409, "LEDGER_EXISTS"),
    (409, "JOB_IN_PROGRESS"),
    (409, "INVALID_STATE"),
    (409, "LEDGER_FINAL"),
    (409, "JOB_NOT_READY"),
    (413, "PAYLOAD_TOO_LARGE"),
    (415, "UNSUPPORTED_MEDIA_TYPE"),
    (422, "IDEMPOTENCY_KEY_REUSED"),
    (429, "TOO_MANY_REQUESTS"),
    (500, "INTERNAL"),
    (503, "ENQUEUE_FAILED"),
    (503, "SERVICE_UNAVAILABLE"),
];

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
    pub code: &'static str,
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
    pub ledger: Option<Box<super::ledgers::LedgerView>>,
}

fn code_schema() -> utoipa::openapi::Object {
    let mut codes: Vec<&str> = CODES.iter().map(|(_, c)| *c).collect();
    codes.dedup();
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
    /// The status and the stable code of this error.
    pub fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation(_) | ApiError::MalformedBody(_) => {
                (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::Forbidden { .. } | ApiError::AuditOnly => {
                (StatusCode::FORBIDDEN, "FORBIDDEN")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::LedgerExists(_) => (StatusCode::CONFLICT, "LEDGER_EXISTS"),
            ApiError::Conflict(t) => (StatusCode::CONFLICT, t.code),
            ApiError::NotReady(_) => (StatusCode::CONFLICT, "JOB_NOT_READY"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            ApiError::IdempotencyMismatch => {
                (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
            }
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
            ApiError::EnqueueFailed(_) => (StatusCode::SERVICE_UNAVAILABLE, "ENQUEUE_FAILED"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    /// The body of this error.
    pub fn error_body(&self) -> ErrorBody {
        let (status, code) = self.parts();
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
        let (status, _) = self.parts();
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(m) => ApiError::Internal(m),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Denied {
                merchant,
                permission,
            } => ApiError::Forbidden {
                merchant,
                permission,
            },
            AccessError::Backend(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        ApiError::Conflict(e)
    }
}
