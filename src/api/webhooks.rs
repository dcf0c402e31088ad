//! The webhook resource over HTTP (SPEC §12): make an endpoint, list and read them, rotate a
//! secret, delete one, list its deliveries and redeliver one. Handlers turn raw input into
//! domain values, call the use case ([`Webhooks`](crate::usecases::Webhooks)) and answer
//! views.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, error_responses};
use super::extract::{JsonObject, Path, Query};
use super::ledgers::{encode_cursor, required};
use super::params::{documented_id, no_query, paging, snowflake_id};
use super::state::AppState;
use crate::auth::Caller;
use crate::domain::webhook::{
    Delivery, DeliveryStatus, DisabledReason, EventType, MAX_WEBHOOK_MERCHANTS, Webhook,
    check_event_types,
};
use crate::domain::{BatchId, InvalidInput, MerchantId};
use crate::usecases::webhooks::{WebhookRequest, WithSecret};

/// The webhook routes, relative to the API's base path; each handler documents itself.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, delete))
        .routes(routes!(rotate_secret))
        .routes(routes!(deliveries))
        .routes(routes!(redeliver))
}

/// The body of `POST /webhooks`. Unknown fields are refused.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateWebhook)]
#[allow(dead_code)] // Documentation only: `create` parses the body field by field for precise errors.
pub struct CreateWebhookBody {
    /// Where deliveries go: an `https` URL whose host is not a private, loopback or
    /// link-local address (checked again at every connection). `http` and private
    /// addresses only with `APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`.
    #[schema(example = "https://erp.example.com/hooks/ledger")]
    url: String,
    /// What to be told about, each once.
    #[schema(min_items = 1, max_items = 3)]
    events: Vec<EventType>,
    /// 1 to 1,000 merchants (you need `manage_webhooks` on each). Omitted or `null`: every
    /// merchant you may read, judged at delivery time (needs `manage_webhooks` on `*`).
    #[schema(example = json!(["m_acme"]), min_items = 1, max_items = 1000)]
    merchant_ids: Option<Vec<String>>,
}

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Webhook)]
pub struct WebhookBody {
    /// The endpoint id (a decimal string).
    #[schema(example = "383687767063789568")]
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// What it is told about.
    pub events: Vec<EventType>,
    /// The merchants it is told about; `null`: every merchant its creator may read.
    #[schema(required = true)]
    pub merchant_ids: Option<Vec<String>>,
    /// The signing secret (`whsec_` + base64 of 32 bytes): only in the answer of the
    /// creation and of a rotation. Keep it: it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When it stopped receiving deliveries; `null` while it receives them.
    #[schema(required = true)]
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why: `GONE` (it answered 410) or `FAILING` (every attempt failed for 5 days).
    #[schema(required = true)]
    pub disabled_reason: Option<DisabledReason>,
    /// When its current run of failed attempts began; `null` when the last attempt
    /// succeeded.
    #[schema(required = true)]
    pub failing_since: Option<DateTime<Utc>>,
    /// Its creator's subject; deliveries are judged against their grants.
    pub created_by: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

fn body(w: &Webhook, secret: Option<String>) -> WebhookBody {
    WebhookBody {
        id: w.id.to_string(),
        url: w.url.clone(),
        events: w.events.clone(),
        merchant_ids: w
            .merchants
            .as_ref()
            .map(|ms| ms.iter().map(|m| m.as_str().to_owned()).collect()),
        secret,
        disabled_at: w.disabled.map(|(at, _)| at),
        disabled_reason: w.disabled.map(|(_, r)| r),
        failing_since: w.failing_since,
        created_by: w.created_by.clone(),
        created_at: w.created_at,
    }
}

fn with_secret(created: WithSecret) -> WebhookBody {
    body(&created.webhook, Some(created.secret.to_string()))
}

/// A page of webhook endpoints.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPage {
    /// At most `limit` endpoints, newest first.
    pub items: Vec<WebhookBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]+$")]
    pub next_cursor: Option<String>,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WebhookDelivery)]
pub struct DeliveryBody {
    /// The delivery id (a decimal string).
    #[schema(example = "1207")]
    pub id: String,
    /// The endpoint.
    pub webhook_id: String,
    /// The event's id, sent as `webhook-id`: the same for every attempt and redelivery of
    /// the event.
    #[schema(example = "msg_1187")]
    pub message_id: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The ledger (or batch) the event is about.
    pub resource_id: String,
    /// `PENDING` (waiting for `nextAttemptAt`), `DELIVERED` (a 2xx answered it), `FAILED`
    /// (every attempt failed, or the endpoint answered 410 or was disabled), `SKIPPED` (not
    /// sent: the creator may no longer read the merchant, or the endpoint was deleted).
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The HTTP status of the last attempt; `null` when none was answered.
    #[schema(required = true)]
    pub last_http_status: Option<u16>,
    /// What went wrong last, in words.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the last attempt was made.
    #[schema(required = true)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (`PENDING` only).
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
}

fn delivery_body(d: &Delivery) -> DeliveryBody {
    DeliveryBody {
        id: d.id.to_string(),
        webhook_id: d.webhook_id.to_string(),
        message_id: d.message_id.clone(),
        event_type: d.event_type,
        resource_id: d.resource_id.to_string(),
        status: d.status,
        attempts: d.attempts,
        last_http_status: d.last_status,
        last_error: d.last_error.clone(),
        last_attempt_at: d.last_attempt_at,
        next_attempt_at: d.next_attempt_at,
        created_at: d.created_at,
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    /// At most `limit` deliveries, newest first.
    pub items: Vec<DeliveryBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]+$")]
    pub next_cursor: Option<String>,
}

/// The request of a body, validated field by field.
fn webhook_request(
    body: &Map<String, Value>,
    reach: crate::webhooks::network::Reach,
) -> Result<WebhookRequest, InvalidInput> {
    const FIELDS: [&str; 3] = ["url", "events", "merchantIds"];
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(InvalidInput::new(unknown.clone(), "unknown field"));
    }
    let url = required(body, "url")?;
    let events = match body.get("events") {
        None | Some(Value::Null) => return Err(InvalidInput::new("events", "is required")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(InvalidInput::new(
                    format!("events[{i}]"),
                    "expected a string",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(InvalidInput::new(
                "events",
                "expected an array of event types",
            ));
        }
    };
    let events = check_event_types(&events)?;
    let merchants = match body.get("merchantIds") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            if items.len() > MAX_WEBHOOK_MERCHANTS {
                return Err(InvalidInput::new(
                    "merchantIds",
                    format!("at most {MAX_WEBHOOK_MERCHANTS} merchants"),
                ));
            }
            let mut ids = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                let field = format!("merchantIds[{i}]");
                let Value::String(raw) = v else {
                    return Err(InvalidInput::new(field, "expected a merchant id"));
                };
                let id = MerchantId::parse(raw)
                    .map_err(|_| InvalidInput::new(field, "expected [A-Za-z0-9_-]{1,64}"))?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Some(ids)
        }
        Some(_) => {
            return Err(InvalidInput::new(
                "merchantIds",
                "expected an array of merchant ids, or omit it for every merchant you may read",
            ));
        }
    };
    WebhookRequest::new(url, events, merchants, reach)
}

/// The endpoint id of a path; a well-formed id no endpoint has is a 404.
fn webhook_id(raw: &str) -> Result<i64, ApiError> {
    snowflake_id::<BatchId>(raw, "no such webhook").map(BatchId::as_i64)
}

/// The delivery id of a path: a positive decimal; a well-formed one no delivery of the
/// endpoint has is a 404.
fn delivery_id(raw: &str) -> Result<i64, ApiError> {
    if !documented_id(raw) {
        return Err(
            InvalidInput::new("deliveryId", "expected a delivery id (a positive decimal)").into(),
        );
    }
    raw.parse::<i64>()
        .map_err(|_| ApiError::NotFound("no such delivery"))
}

/// The `{id}` of an endpoint's path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct WebhookIdPath {
    /// The endpoint id.
    #[param(pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")]
    id: String,
}

/// The `{id}` and `{deliveryId}` of a delivery's path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[serde(rename_all = "camelCase")]
struct DeliveryPath {
    /// The endpoint id.
    #[param(pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")]
    id: String,
    /// The delivery id.
    #[param(pattern = "^[1-9][0-9]{0,18}$", example = "1207")]
    delivery_id: String,
}

error_responses! {
    /// What making an endpoint can answer besides 201.
    CreateWebhookErrors [
        Validation, Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType, Internal,
        ServiceUnavailable, KeyUnavailable,
    ]
}

/// Make a webhook endpoint: be told when ledgers complete or are rejected, or batches finish.
///
/// Deliveries follow the Standard Webhooks specification: a `POST` of
/// `{"type","timestamp","data"}` (`data` is the ledger, or the batch, as the API shows it)
/// with `webhook-id`, `webhook-timestamp` and `webhook-signature` (HMAC-SHA256 with the
/// `secret` of this answer, shown only here and by `rotate-secret`). At least once, retried
/// with backoff for about a day and a half; a 2xx ends a delivery, a 410 disables the
/// endpoint, as do 5 days of failures. Each delivery is judged again against the creator's
/// grants: a merchant the creator may no longer read is not told about (`SKIPPED`).
/// `batch.completed` goes to endpoints of the batch's creator, and to endpoints without
/// `merchantIds` whose creator may read every merchant.
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "createWebhook",
    request_body(content = CreateWebhookBody, content_type = "application/json", description = "The endpoint; at most 1 MiB"),
    responses(
        (
            status = 201,
            description = "Made; the only answer (with rotate-secret's) that shows the secret",
            body = WebhookBody,
            headers(("Location" = String, description = "The endpoint's URL")),
            links(
                ("GetWebhook" = (operation_id = "getWebhook", parameters(("id" = "$response.body#/id")))),
            ),
        ),
        CreateWebhookErrors,
    ),
    security(("bearer" = [])),
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let request = webhook_request(&body, state.webhook_reach)?;
    let created = state.webhooks().create(&caller, request).await?;
    let id = created.webhook.id;
    let mut response =
        (StatusCode::CREATED, no_store(), Json(with_secret(created))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/webhooks/{id}", super::BASE)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// An answer holding a secret is never stored by a cache.
fn no_store() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}

error_responses! {
    /// What listing endpoints can answer besides 200.
    ListWebhookErrors [Validation, Unauthorized, Internal, ServiceUnavailable]
}

/// The caller's webhook endpoints, newest first.
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "listWebhooks",
    params(
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "The `nextCursor` of the previous page", pattern = "^[A-Za-z0-9_-]+$"),
    ),
    responses(
        (status = 200, description = "A page of endpoints (without secrets)", body = WebhookPage),
        ListWebhookErrors,
    ),
    security(("bearer" = [])),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<WebhookPage>, ApiError> {
    let (limit, before) = paging::<i64>(&params, &[])?;
    let (items, more) = state.webhooks().list(&caller, before, limit).await?;
    Ok(Json(WebhookPage {
        items: items.iter().map(|w| body(w, None)).collect(),
        next_cursor: more.map(encode_cursor),
    }))
}

error_responses! {
    /// What reading, rotating or deleting an endpoint can answer besides success.
    WebhookErrors [Validation, Unauthorized, NotFound, Internal, ServiceUnavailable]
    /// Errors of rotating a webhook's secret (sealed with the key of webhook secrets).
    RotateWebhookErrors [Validation, Unauthorized, NotFound, Internal, ServiceUnavailable, KeyUnavailable]
}

/// One webhook endpoint (without its secret).
///
/// Visible to its creator and to callers who may manage the webhooks of every merchant; to
/// anyone else (and once deleted) it is a 404.
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "webhooks",
    operation_id = "getWebhook",
    params(WebhookIdPath),
    responses(
        (status = 200, description = "The endpoint", body = WebhookBody),
        WebhookErrors,
    ),
    security(("bearer" = [])),
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<WebhookIdPath>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<WebhookBody>, ApiError> {
    no_query(&params)?;
    let webhook = state.webhooks().get(&caller, webhook_id(&path.id)?).await?;
    Ok(Json(body(&webhook, None)))
}

/// Delete a webhook endpoint.
///
/// Nothing more is delivered to it: its pending deliveries become `SKIPPED`. Afterwards the
/// id is a 404.
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    params(WebhookIdPath),
    responses(
        (status = 204, description = "Deleted"),
        WebhookErrors,
    ),
    security(("bearer" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<WebhookIdPath>,
) -> Result<StatusCode, ApiError> {
    state
        .webhooks()
        .delete(&caller, webhook_id(&path.id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give a webhook endpoint a new secret.
///
/// The answer shows the new secret (only here). For 24 hours every delivery is signed with
/// both the new and the old secret (two signatures in `webhook-signature`), so a receiver
/// can switch over without refusing a delivery; then only with the new one.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    operation_id = "rotateWebhookSecret",
    params(WebhookIdPath),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = WebhookBody),
        RotateWebhookErrors,
    ),
    security(("bearer" = [])),
)]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<WebhookIdPath>,
) -> Result<Response, ApiError> {
    let rotated = state
        .webhooks()
        .rotate_secret(&caller, webhook_id(&path.id)?)
        .await?;
    Ok((StatusCode::OK, no_store(), Json(with_secret(rotated))).into_response())
}

/// A webhook endpoint's deliveries, newest first.
///
/// Each with its status, attempts, the last HTTP status and error, and the next attempt.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    params(
        WebhookIdPath,
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "The `nextCursor` of the previous page", pattern = "^[A-Za-z0-9_-]+$"),
    ),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        WebhookErrors,
    ),
    security(("bearer" = [])),
)]
async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<WebhookIdPath>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let id = webhook_id(&path.id)?;
    let (limit, before) = paging::<i64>(&params, &[])?;
    let (items, more) = state
        .webhooks()
        .deliveries(&caller, id, before, limit)
        .await?;
    Ok(Json(DeliveryPage {
        items: items.iter().map(delivery_body).collect(),
        next_cursor: more.map(encode_cursor),
    }))
}

error_responses! {
    /// What a redelivery can answer besides 202.
    RedeliverErrors [Validation, Unauthorized, NotFound, InvalidState, Internal, ServiceUnavailable]
}

/// Send a delivery's event again.
///
/// A new delivery of the same event (the same `webhook-id`, so a receiver that has it
/// already can tell), due now, whatever the first one's status. A disabled endpoint
/// (`INVALID_STATE`) is not sent anything: make a new one.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/deliveries/{deliveryId}/redeliver",
    tag = "webhooks",
    operation_id = "redeliverWebhookDelivery",
    params(DeliveryPath),
    responses(
        (status = 202, description = "The new delivery, PENDING", body = DeliveryBody),
        RedeliverErrors,
    ),
    security(("bearer" = [])),
)]
async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<DeliveryPath>,
) -> Result<(StatusCode, Json<DeliveryBody>), ApiError> {
    let id = webhook_id(&path.id)?;
    let delivery = delivery_id(&path.delivery_id)?;
    let again = state.webhooks().redeliver(&caller, id, delivery).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery_body(&again))))
}
