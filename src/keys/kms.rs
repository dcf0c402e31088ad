//! A minimal client of AWS KMS (or a server speaking its protocol): the four calls a root
//! key in KMS needs — [`KmsClient::encrypt`], [`KmsClient::decrypt`],
//! [`KmsClient::describe_key`] at start-up, and [`KmsClient::create_key`] for tests, benches
//! and the quick start. Hand-rolled over `reqwest` rather than the AWS SDK: KMS's JSON
//! protocol (a POST to `/` with `X-Amz-Target: TrentService.<Op>`) signed with AWS
//! Signature Version 4 ([`authorization`], a pure function).
//!
//! Failures are sorted for the caller: [`KmsError::Unavailable`] is worth retrying later
//! (KMS unreachable, slow, throttling or failing inside), [`KmsError::Denied`] needs an
//! operator (no permission, no such key, a disabled key, a ciphertext of another key or
//! context), [`KmsError::Config`] is a bad endpoint or missing credentials. Each call is
//! retried once, after [`RETRY_BACKOFF`], when it was `Unavailable`. Error messages name
//! the operation and KMS's error type, never a credential or plaintext; `Debug` shows the
//! endpoint and region only. Plaintexts (the request body of `Encrypt`, the response body
//! of `Decrypt`) are held in buffers wiped when dropped; copies the HTTP and TLS stack make
//! while sending or receiving are beyond this module's reach.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::Secret;

/// How long establishing a connection to KMS may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take, from sending it to the end of its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause before the one retry of a request that was `Unavailable`.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// The largest response body read (KMS answers with a few kilobytes at most).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// The longest part of a KMS error message quoted in a [`KmsError`].
const MAX_MESSAGE_CHARS: usize = 300;
/// The content type of KMS's JSON protocol.
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The service name SigV4 signs for.
const SERVICE: &str = "kms";

/// Where KMS is and who calls it (from `APP_ENV_KMS_*`). `Debug` prints no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsSettings {
    /// `http(s)://host[:port]` of a KMS-compatible server; `None` for AWS
    /// (`https://kms.{region}.amazonaws.com`).
    pub endpoint: Option<String>,
    /// The AWS region (`us-east-1`), part of every signature.
    pub region: String,
    /// Static access key id; with the secret, these credentials instead of the environment's.
    pub access_key_id: Option<String>,
    /// Static secret access key.
    pub secret_access_key: Option<Secret>,
    /// Session token of temporary static credentials.
    pub session_token: Option<Secret>,
}

/// Why a KMS call failed. The message names the operation and, when KMS answered, its error
/// type (`KMS Decrypt: AccessDeniedException: …`); it never holds a credential or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The client cannot be made: a bad endpoint, no credentials.
    #[error("{0}")]
    Config(String),
    /// Worth retrying later: KMS unreachable or too slow, a 5xx, `ThrottlingException`,
    /// `KMSInternalException`, `DependencyTimeoutException`, …
    #[error("{0}")]
    Unavailable(String),
    /// An operator must act: `AccessDeniedException`, `NotFoundException`,
    /// `DisabledException`, `KMSInvalidStateException`, `InvalidCiphertextException`,
    /// `IncorrectKeyException`, a key not `Enabled`, an answer that is not KMS's, …
    #[error("{0}")]
    Denied(String),
}

/// The credentials requests are signed with. `Debug` prints none of them.
#[derive(Clone)]
pub struct Credentials {
    /// The access key id (`AKIA…`, `ASIA…`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials, sent as `x-amz-security-token`.
    pub session_token: Option<Secret>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(***)")
    }
}

/// A client of one KMS endpoint in one region. Cheap to clone (the connection pool and
/// credentials are shared). `Debug` shows the endpoint and region only.
#[derive(Clone)]
pub struct KmsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The URL requests are posted to (the endpoint with the path `/`).
    url: url::Url,
    /// `scheme://host[:port]`, for messages and `Debug`.
    origin: String,
    region: String,
    credentials: Credentials,
}

impl fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsClient")
            .field("endpoint", &self.inner.origin)
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

/// The operations this client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
    DescribeKey,
    CreateKey,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Encrypt => "Encrypt",
            Op::Decrypt => "Decrypt",
            Op::DescribeKey => "DescribeKey",
            Op::CreateKey => "CreateKey",
        }
    }

    /// Whether sending the request twice does no harm. A second `CreateKey` after a first
    /// that KMS may have carried out would leave a key nobody knows of.
    fn idempotent(self) -> bool {
        !matches!(self, Op::CreateKey)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed attempt, and whether trying again is harmless.
struct Failure {
    error: KmsError,
    /// The request surely had no effect (not connected, or refused before any work).
    not_carried_out: bool,
}

impl KmsClient {
    /// A client of `settings.endpoint` (AWS's endpoint of the region when unset), signing
    /// with the static credentials of `settings` when both parts are set, else with
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` from the
    /// environment. No credentials at all, half a pair, or a bad endpoint is
    /// [`KmsError::Config`]. Makes no request.
    pub fn new(settings: &KmsSettings) -> Result<Self, KmsError> {
        let credentials = resolve_credentials(settings, |name| std::env::var(name).ok())?;
        let region = settings.region.trim();
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(KmsError::Config(
                "KMS: the region must be a name such as us-east-1".into(),
            ));
        }
        let url = endpoint_url(settings.endpoint.as_deref(), region)?;
        let origin = url.origin().ascii_serialization();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| KmsError::Config(format!("KMS: cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                url,
                origin,
                region: region.to_owned(),
                credentials,
            }),
        })
    }

    /// `TrentService.Encrypt`: seals `plaintext` (1 to 4096 bytes) under `key_id` (a key id,
    /// key ARN, alias name or alias ARN) with `context` as its encryption context, which
    /// [`decrypt`](Self::decrypt) must be given again. Returns the `CiphertextBlob`.
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &[(&str, &str)],
    ) -> Result<Vec<u8>, KmsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            key_id: &'a str,
            plaintext: &'a str,
            #[serde(skip_serializing_if = "Context::is_empty")]
            encryption_context: Context<'a>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Response {
            ciphertext_blob: String,
        }
        let mut encoded = Zeroizing::new(String::with_capacity(plaintext.len().div_ceil(3) * 4));
        STANDARD.encode_string(plaintext, &mut encoded);
        let body = secret_json(
            &Request {
                key_id,
                plaintext: &encoded,
                encryption_context: Context(context),
            },
            encoded.len() + key_id.len(),
        );
        drop(encoded);
        let op = Op::Encrypt;
        let answer = self.call(op, body).await?;
        let response: Response = parse(op, &answer)?;
        STANDARD
            .decode(response.ciphertext_blob)
            .map_err(|_| unexpected(op, "CiphertextBlob is not base64"))
    }

    /// `TrentService.Decrypt` of `blob` with `KeyId` set, so that a ciphertext of another
    /// key is refused ([`KmsError::Denied`]), as is one sealed with another `context`.
    /// Returns the plaintext in a buffer wiped when dropped.
    pub async fn decrypt(
        &self,
        key_id: &str,
        blob: &[u8],
        context: &[(&str, &str)],
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            key_id: &'a str,
            ciphertext_blob: String,
            #[serde(skip_serializing_if = "Context::is_empty")]
            encryption_context: Context<'a>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Response<'a> {
            #[serde(borrow)]
            plaintext: Cow<'a, str>,
            key_id: Option<String>,
        }
        let op = Op::Decrypt;
        let body = serde_json::to_vec(&Request {
            key_id,
            ciphertext_blob: STANDARD.encode(blob),
            encryption_context: Context(context),
        })
        .map_err(|e| KmsError::Config(format!("KMS {op}: cannot encode the request: {e}")))?;
        let answer = self.call(op, Bytes::from(body)).await?;
        let response: Response<'_> = parse(op, &answer)?;
        // A string with escapes was copied out of the body: that copy is wiped too.
        let copy: Zeroizing<String>;
        let encoded: &str = match response.plaintext {
            Cow::Borrowed(s) => s,
            Cow::Owned(s) => {
                copy = Zeroizing::new(s);
                &copy
            }
        };
        if let Some(used) = response.key_id.as_deref()
            && !same_key(key_id, used)
        {
            // KMS itself refuses this (IncorrectKeyException); a server that does not is
            // not trusted either.
            return Err(KmsError::Denied(format!(
                "KMS {op}: IncorrectKeyException: the ciphertext is of key {used}, not {key_id}"
            )));
        }
        let mut plaintext = Zeroizing::new(Vec::with_capacity(encoded.len() / 4 * 3 + 3));
        STANDARD
            .decode_vec(encoded, &mut plaintext)
            .map_err(|_| unexpected(op, "Plaintext is not base64"))?;
        Ok(plaintext)
    }

    /// `TrentService.DescribeKey`: the key's ARN, when it exists and its `KeyState` is
    /// `Enabled`; any other state is [`KmsError::Denied`]. Called at start-up.
    pub async fn describe_key(&self, key_id: &str) -> Result<String, KmsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            key_id: &'a str,
        }
        let op = Op::DescribeKey;
        let metadata = self.key_metadata(op, &Request { key_id }).await?;
        let arn = metadata
            .arn
            .ok_or_else(|| unexpected(op, "KeyMetadata has no Arn"))?;
        match metadata.key_state.as_deref() {
            Some("Enabled") => Ok(arn),
            Some(state) => Err(KmsError::Denied(format!(
                "KMS {op}: key {arn} is {state}, not Enabled"
            ))),
            None => Err(unexpected(op, "KeyMetadata has no KeyState")),
        }
    }

    /// `TrentService.CreateKey` of a symmetric encryption key (`SYMMETRIC_DEFAULT`,
    /// `ENCRYPT_DECRYPT`) with `description`; returns its `KeyId`. For tests, benches and
    /// the quick start: the service itself never creates its root key.
    pub async fn create_key(&self, description: &str) -> Result<String, KmsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            description: &'a str,
            key_spec: &'static str,
            key_usage: &'static str,
        }
        let op = Op::CreateKey;
        let request = Request {
            description,
            key_spec: "SYMMETRIC_DEFAULT",
            key_usage: "ENCRYPT_DECRYPT",
        };
        self.key_metadata(op, &request)
            .await?
            .key_id
            .ok_or_else(|| unexpected(op, "KeyMetadata has no KeyId"))
    }

    /// The `KeyMetadata` KMS answers `op` with.
    async fn key_metadata(
        &self,
        op: Op,
        request: &impl Serialize,
    ) -> Result<KeyMetadata, KmsError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Response {
            key_metadata: KeyMetadata,
        }
        let body = serde_json::to_vec(request)
            .map_err(|e| KmsError::Config(format!("KMS {op}: cannot encode the request: {e}")))?;
        let answer = self.call(op, Bytes::from(body)).await?;
        Ok(parse::<Response>(op, &answer)?.key_metadata)
    }

    /// Sends `op` with `body`, once more after [`RETRY_BACKOFF`] when it was
    /// [`KmsError::Unavailable`] (and a second attempt can do no harm). The response body
    /// on success.
    async fn call(&self, op: Op, body: Bytes) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        match self.attempt(op, body.clone()).await {
            Ok(answer) => Ok(answer),
            Err(Failure {
                error: KmsError::Unavailable(_),
                not_carried_out,
            }) if op.idempotent() || not_carried_out => {
                tokio::time::sleep(RETRY_BACKOFF).await;
                self.attempt(op, body).await.map_err(|f| f.error)
            }
            Err(failure) => Err(failure.error),
        }
    }

    /// One signed request of `op`.
    async fn attempt(&self, op: Op, body: Bytes) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let inner = &*self.inner;
        let time = Utc::now();
        let headers = request_headers(op, time, &inner.credentials);
        let header_refs: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let authorization = authorization(
            &SigningInput {
                method: "POST",
                url: &inner.url,
                headers: &header_refs,
                body: &body,
                time,
                region: &inner.region,
                service: SERVICE,
            },
            &inner.credentials,
        );
        let mut request = inner.http.post(inner.url.clone()).body(body);
        for (name, value) in &header_refs {
            request = request.header(*name, *value);
        }
        let response = request
            .header("authorization", authorization)
            .send()
            .await
            .map_err(|e| transport_failure(op, &inner.origin, &e))?;
        let status = response.status();
        let error_type_header = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = read_body(response)
            .await
            .map_err(|e| transport_failure(op, &inner.origin, &e))?;
        let Some(answer) = answer else {
            return Err(Failure {
                error: unexpected(op, "the response is larger than 1 MiB"),
                not_carried_out: false,
            });
        };
        if status.is_success() {
            return Ok(answer);
        }
        Err(classify(
            op,
            status.as_u16(),
            error_type_header.as_deref(),
            &answer,
        ))
    }
}

/// The metadata fields this client reads.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata {
    key_id: Option<String>,
    arn: Option<String>,
    key_state: Option<String>,
}

/// An encryption context, serialized as the JSON object KMS expects.
struct Context<'a>(&'a [(&'a str, &'a str)]);

impl Context<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Context<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (*k, *v)))
    }
}

/// `value` as JSON in a buffer wiped when the last copy of the returned bytes is dropped,
/// sized up front (`secret_len` plus room for the rest) so it is not reallocated (which
/// would leave copies behind).
fn secret_json(value: &impl Serialize, secret_len: usize) -> Bytes {
    let mut buffer = Zeroizing::new(Vec::with_capacity(secret_len + 4096));
    serde_json::to_writer(&mut *buffer, value).expect("a request of strings encodes");
    Bytes::from_owner(buffer)
}

/// The response body, or `None` when it is larger than [`MAX_RESPONSE_BYTES`]; read into a
/// buffer wiped when dropped (a `Decrypt` answer holds the plaintext).
async fn read_body(
    mut response: reqwest::Response,
) -> Result<Option<Zeroizing<Vec<u8>>>, reqwest::Error> {
    let expected = response.content_length().unwrap_or(0) as usize;
    if expected > MAX_RESPONSE_BYTES {
        return Ok(None);
    }
    let mut body = Zeroizing::new(Vec::with_capacity(expected.max(1024)));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Ok(None);
        }
        if body.len() + chunk.len() > body.capacity() {
            // Grow into a fresh wiped buffer rather than let the vector move its bytes.
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (body.len() + chunk.len()).max(body.capacity() * 2),
            ));
            bigger.extend_from_slice(&body);
            body = bigger;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The successful answer to `op` as `T`; anything else is not KMS answering.
fn parse<'a, T: Deserialize<'a>>(op: Op, answer: &'a [u8]) -> Result<T, KmsError> {
    serde_json::from_slice(answer).map_err(|_| unexpected(op, "the response is not KMS's JSON"))
}

/// A successful response this client cannot read: most likely the endpoint is not KMS.
fn unexpected(op: Op, what: &str) -> KmsError {
    KmsError::Denied(format!(
        "KMS {op}: unexpected response ({what}); is the endpoint a KMS server?"
    ))
}

/// Whether the key KMS reports having used (an ARN) is the key asked for (a key id or ARN;
/// an alias cannot be compared and is taken as matching, KMS checked it).
fn same_key(asked: &str, used: &str) -> bool {
    if asked == used || asked.starts_with("alias/") || asked.contains(":alias/") {
        return true;
    }
    if asked.starts_with("arn:") {
        return false;
    }
    used.rsplit_once('/').is_some_and(|(_, id)| id == asked)
}

/// A request that got no answer: unreachable, timed out, or cut off. The message carries
/// the endpoint's origin and the cause, never the request.
fn transport_failure(op: Op, origin: &str, error: &reqwest::Error) -> Failure {
    if error.is_builder() {
        return Failure {
            error: KmsError::Config(format!(
                "KMS {op}: cannot build a request to {origin} (a credential holds a character \
                 not allowed in a header?)"
            )),
            not_carried_out: true,
        };
    }
    let what = if error.is_timeout() {
        format!(
            "no answer from {origin} within {} s",
            REQUEST_TIMEOUT.as_secs()
        )
    } else if error.is_connect() {
        format!("cannot connect to {origin}")
    } else {
        format!("request to {origin} failed")
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        cause.push_str(": ");
        cause.push_str(&e.to_string());
        source = e.source();
    }
    Failure {
        error: KmsError::Unavailable(format!("KMS {op}: {what}{cause}")),
        not_carried_out: error.is_connect(),
    }
}

/// KMS error types that say "try again later".
const RETRYABLE: &[&str] = &[
    "ThrottlingException",
    "LimitExceededException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "ServiceUnavailableException",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeoutException",
];

/// Refusals KMS makes before doing any work: a retry cannot duplicate anything.
const REFUSED_BEFORE_WORK: &[&str] = &["ThrottlingException", "LimitExceededException"];

/// The error of a non-2xx answer: its KMS error type from the body's `__type` (the part
/// after `#`) or the `x-amzn-ErrorType` header, and its message, cut short.
fn classify(op: Op, status: u16, error_type_header: Option<&str>, body: &[u8]) -> Failure {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
        message: Option<String>,
        #[serde(rename = "Message")]
        message_capitalised: Option<String>,
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let kind = parsed
        .as_ref()
        .and_then(|b| b.kind.as_deref())
        .map(|k| k.rsplit('#').next().unwrap_or(k))
        .or_else(|| error_type_header.map(|h| h.split(':').next().unwrap_or(h)))
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty());
    let message = parsed
        .as_ref()
        .and_then(|b| b.message.as_deref().or(b.message_capitalised.as_deref()))
        .map(clean_message);
    let what = match (&kind, message) {
        (Some(kind), Some(m)) if !m.is_empty() => format!("{kind}: {m}"),
        (Some(kind), _) => kind.clone(),
        (None, _) => format!("HTTP {status}"),
    };
    let message = format!("KMS {op}: {what}");
    let kind = kind.as_deref().unwrap_or("");
    let retryable = status >= 500 || status == 429 || RETRYABLE.contains(&kind);
    Failure {
        error: if retryable {
            KmsError::Unavailable(message)
        } else {
            KmsError::Denied(message)
        },
        not_carried_out: REFUSED_BEFORE_WORK.contains(&kind) || status == 429,
    }
}

/// A message from the server, one line, at most [`MAX_MESSAGE_CHARS`] characters.
fn clean_message(message: &str) -> String {
    let mut out: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

/// The credentials of `settings` when it has both parts, else those of the environment
/// (`env` reads a variable: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`).
fn resolve_credentials(
    settings: &KmsSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, KmsError> {
    let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    match (
        set(settings.access_key_id.clone()),
        settings
            .secret_access_key
            .as_ref()
            .filter(|s| !s.expose().trim().is_empty()),
    ) {
        (Some(access_key_id), Some(secret)) => {
            return Ok(Credentials {
                access_key_id: access_key_id.trim().to_owned(),
                secret_access_key: secret.clone(),
                session_token: settings
                    .session_token
                    .clone()
                    .filter(|t| !t.expose().trim().is_empty()),
            });
        }
        (None, None) => {}
        _ => {
            return Err(KmsError::Config(
                "KMS: the static credentials need both the access key id and the secret \
                 access key (APP_ENV_KMS_ACCESS_KEY_ID, APP_ENV_KMS_SECRET_ACCESS_KEY)"
                    .into(),
            ));
        }
    }
    match (
        set(env("AWS_ACCESS_KEY_ID")),
        set(env("AWS_SECRET_ACCESS_KEY")),
    ) {
        (Some(access_key_id), Some(secret)) => Ok(Credentials {
            access_key_id: access_key_id.trim().to_owned(),
            secret_access_key: Secret::new(secret),
            session_token: set(env("AWS_SESSION_TOKEN")).map(Secret::new),
        }),
        _ => Err(KmsError::Config(
            "KMS: no credentials: set APP_ENV_KMS_ACCESS_KEY_ID and \
             APP_ENV_KMS_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                .into(),
        )),
    }
}

/// The URL requests are posted to: `endpoint` (an `http(s)://host[:port]` with no path,
/// credentials, query or fragment), or AWS's endpoint of `region`.
fn endpoint_url(endpoint: Option<&str>, region: &str) -> Result<url::Url, KmsError> {
    let raw = match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) => e.to_owned(),
        None => format!("https://kms.{region}.amazonaws.com"),
    };
    let bad = |why: &str| KmsError::Config(format!("KMS: the endpoint {why}"));
    let url = url::Url::parse(&raw).map_err(|_| bad("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http(s):// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "must be http(s)://host[:port], without a path or query",
        ));
    }
    Ok(url)
}

/// The headers of a request of `op` made at `time`, all of them signed (besides `host`,
/// which [`authorization`] takes from the URL).
fn request_headers(
    op: Op,
    time: DateTime<Utc>,
    credentials: &Credentials,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", CONTENT_TYPE.to_owned()),
        ("x-amz-date", amz_date(time)),
        ("x-amz-target", format!("TrentService.{}", op.name())),
    ];
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token", token.expose().to_owned()));
    }
    headers
}

/// SigV4's timestamp: `20240102T030405Z`.
fn amz_date(time: DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

/// What Signature Version 4 signs of one request.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    /// `POST`, `GET`, …
    pub method: &'a str,
    /// The request's URL: its host (with a port that is not the scheme's default) is the
    /// signed `host` header; its path and query are signed too.
    pub url: &'a url::Url,
    /// The other headers sent and signed, any case; `x-amz-date` must be `time`'s.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body; its SHA-256 is signed.
    pub body: &'a [u8],
    /// When the request is signed (its date is part of the credential scope).
    pub time: DateTime<Utc>,
    /// The region (`us-east-1`).
    pub region: &'a str,
    /// The service (`kms`).
    pub service: &'a str,
}

/// The `Authorization` header value of a request signed with AWS Signature Version 4
/// (`AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`). Pure: the same input
/// gives the same value.
pub fn authorization(input: &SigningInput<'_>, credentials: &Credentials) -> String {
    let date_time = amz_date(input.time);
    let date = &date_time[..8];
    let scope = format!("{date}/{}/{}/aws4_request", input.region, input.service);

    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), collapse_spaces(v)))
        .collect();
    if !headers.iter().any(|(n, _)| n == "host") {
        headers.push(("host".into(), host_header(input.url)));
    }
    headers.sort();
    // Several values of one name are signed as one, comma-separated, in their order.
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        match merged.last_mut() {
            Some((last, values)) if *last == name => {
                values.push(',');
                values.push_str(&value);
            }
            _ => merged.push((name, value)),
        }
    }
    let signed_headers = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = merged.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method.to_ascii_uppercase(),
        canonical_uri(input.url),
        canonical_query(input.url),
        canonical_headers,
        signed_headers,
        hex::encode(Sha256::digest(input.body)),
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );

    let secret = Zeroizing::new(format!("AWS4{}", credentials.secret_access_key.expose()));
    let mut key = hmac(secret.as_bytes(), date.as_bytes());
    for part in [input.region, input.service, "aws4_request"] {
        key = hmac(&*key, part.as_bytes());
    }
    let signature = hex::encode(*hmac(&*key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    )
}

/// HMAC-SHA256 of `data` under `key`, in a buffer wiped when dropped (the signing keys are
/// derived from the secret).
fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The `host` header a client sends to `url`: the host, and the port when it is not the
/// scheme's default.
fn host_header(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// A header value trimmed, with runs of spaces made one.
fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The path, each byte outside the unreserved set and `/` percent-encoded (so an encoded
/// path is encoded again, as SigV4 wants for every service but S3).
fn canonical_uri(url: &url::Url) -> String {
    match url.path() {
        "" => "/".into(),
        path => uri_encode(path.as_bytes(), true),
    }
}

/// The query's pairs, decoded, then each name and value encoded and the pairs sorted.
fn canonical_query(url: &url::Url) -> String {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            (
                uri_encode(k.as_bytes(), false),
                uri_encode(v.as_bytes(), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `bytes` with everything but `A-Z a-z 0-9 - _ . ~` (and `/` when `keep_slash`) written as
/// `%XX`.
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
        }
    }

    fn settings(endpoint: &str) -> KmsSettings {
        KmsSettings {
            endpoint: Some(endpoint.into()),
            region: "us-east-1".into(),
            access_key_id: Some("test".into()),
            secret_access_key: Some(Secret::new("test")),
            session_token: None,
        }
    }

    mod signing {
        use super::*;

        /// One request both this module and botocore sign.
        struct Case {
            method: &'static str,
            url: &'static str,
            /// Every header sent besides `host`, `x-amz-date` and `x-amz-security-token`
            /// included (botocore sets those two itself).
            headers: Vec<(&'static str, String)>,
            body: &'static str,
            time: DateTime<Utc>,
            region: &'static str,
            service: &'static str,
            credentials: Credentials,
        }

        fn at(rfc3339: &str) -> DateTime<Utc> {
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .with_timezone(&Utc)
        }

        fn cases() -> Vec<Case> {
            let kms = |op: Op, url, body, time: &str, region, token: Option<&str>| {
                let (time, credentials) = (at(time), credentials(token));
                Case {
                    method: "POST",
                    url,
                    // Exactly what the client sends.
                    headers: request_headers(op, time, &credentials),
                    body,
                    time,
                    region,
                    service: SERVICE,
                    credentials,
                }
            };
            let time = at("2015-08-30T12:36:00Z");
            vec![
                kms(
                    Op::Encrypt,
                    "https://kms.us-east-1.amazonaws.com/",
                    r#"{"KeyId":"alias/root","Plaintext":"AAECAw=="}"#,
                    "2024-01-02T03:04:05Z",
                    "us-east-1",
                    None,
                ),
                kms(
                    Op::Decrypt,
                    "http://127.0.0.1:19000/",
                    r#"{"KeyId":"1234abcd-12ab-34cd-56ef-1234567890ab","CiphertextBlob":"AQID","EncryptionContext":{"merchant":"m-1"}}"#,
                    "2025-12-31T23:59:59Z",
                    "eu-west-3",
                    Some("FwoGZXIvYXdzEJr//////////wEaDH+token="),
                ),
                Case {
                    method: "GET",
                    url: "https://example.amazonaws.com:8443/a%20b/c~d?b=2&a=1&a=0&c=x%2Fy",
                    headers: vec![
                        ("X-Custom", "  two   spaces  ".into()),
                        ("x-amz-date", amz_date(time)),
                    ],
                    body: "",
                    time,
                    region: "us-east-1",
                    service: "service",
                    credentials: credentials(None),
                },
            ]
        }

        fn ours(case: &Case) -> String {
            let url = url::Url::parse(case.url).unwrap();
            let headers: Vec<(&str, &str)> =
                case.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            authorization(
                &SigningInput {
                    method: case.method,
                    url: &url,
                    headers: &headers,
                    body: case.body.as_bytes(),
                    time: case.time,
                    region: case.region,
                    service: case.service,
                },
                &case.credentials,
            )
        }

        /// botocore's `SigV4Auth` (the AWS SDK for Python's signer) signs the same requests
        /// through its public `add_auth`, with its clock pinned to each case's instant.
        const BOTOCORE: &str = r#"
import datetime, json, sys
from unittest import mock
import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
out = []
for c in json.loads(sys.argv[1]):
    creds = Credentials(c["access_key_id"], c["secret_access_key"], c["session_token"])
    request = AWSRequest(method=c["method"], url=c["url"], data=c["body"].encode(), headers=c["headers"])
    now = datetime.datetime.strptime(c["timestamp"], "%Y%m%dT%H%M%SZ")
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=now):
        SigV4Auth(creds, c["service"], c["region"]).add_auth(request)
    assert request.headers["X-Amz-Date"] == c["timestamp"]
    out.append(request.headers["Authorization"])
print(json.dumps(out))
"#;

        fn botocore(cases: &[Case]) -> Vec<String> {
            let moto = std::env::var("LEDGER_TEST_MOTO_BIN").unwrap_or_else(|_| {
                panic!(
                    "LEDGER_TEST_MOTO_BIN is not set: run the tests under scripts/services.sh \
                     (`source scripts/services.sh`, or scripts/run-tests.sh); its virtualenv's \
                     python has botocore, which checks these signatures"
                )
            });
            let python = std::path::Path::new(&moto)
                .parent()
                .expect("LEDGER_TEST_MOTO_BIN is a path")
                .join("python");
            let input: Vec<serde_json::Value> = cases
                .iter()
                .map(|c| {
                    let headers: serde_json::Map<String, serde_json::Value> = c
                        .headers
                        .iter()
                        .filter(|(n, _)| {
                            !n.eq_ignore_ascii_case("x-amz-date")
                                && !n.eq_ignore_ascii_case("x-amz-security-token")
                        })
                        .map(|(n, v)| ((*n).to_owned(), v.clone().into()))
                        .collect();
                    serde_json::json!({
                        "method": c.method,
                        "url": c.url,
                        "headers": headers,
                        "body": c.body,
                        "timestamp": amz_date(c.time),
                        "region": c.region,
                        "service": c.service,
                        "access_key_id": c.credentials.access_key_id,
                        "secret_access_key": c.credentials.secret_access_key.expose(),
                        "session_token": c.credentials.session_token.as_ref().map(Secret::expose),
                    })
                })
                .collect();
            let out = std::process::Command::new(&python)
                .args(["-c", BOTOCORE, &serde_json::to_string(&input).unwrap()])
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
            assert!(
                out.status.success(),
                "botocore failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).expect("botocore printed a JSON list")
        }

        #[test]
        fn botocore_computes_the_same_authorization() {
            let cases = cases();
            let expected = botocore(&cases);
            assert_eq!(expected.len(), cases.len());
            for (case, expected) in cases.iter().zip(&expected) {
                assert_eq!(&ours(case), expected, "{} {}", case.method, case.url);
            }
        }

        #[test]
        fn the_signature_covers_the_body_time_and_secret() {
            let case = &cases()[0];
            let base = ours(case);
            assert!(base.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240102/us-east-1/kms/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
            ));
            let with = |f: &dyn Fn(&mut Case)| {
                let mut c = cases().remove(0);
                f(&mut c);
                ours(&c)
            };
            assert_ne!(base, with(&|c| c.body = "{}"));
            assert_ne!(base, with(&|c| c.time = at("2024-01-02T03:04:06Z")));
            assert_ne!(
                base,
                with(&|c| c.credentials.secret_access_key = Secret::new("other"))
            );
            assert!(!base.contains(case.credentials.secret_access_key.expose()));
        }

        #[test]
        fn the_host_drops_a_default_port_only() {
            let host = |u: &str| host_header(&url::Url::parse(u).unwrap());
            assert_eq!(
                host("https://kms.eu-west-1.amazonaws.com:443/"),
                "kms.eu-west-1.amazonaws.com"
            );
            assert_eq!(host("http://127.0.0.1:80/"), "127.0.0.1");
            assert_eq!(host("http://127.0.0.1:19000/"), "127.0.0.1:19000");
            assert_eq!(host("http://[::1]:4566/"), "[::1]:4566");
        }
    }

    mod errors {
        use super::*;

        fn kind(f: Failure) -> (&'static str, String, bool) {
            let not_carried_out = f.not_carried_out;
            match f.error {
                KmsError::Config(m) => ("config", m, not_carried_out),
                KmsError::Unavailable(m) => ("unavailable", m, not_carried_out),
                KmsError::Denied(m) => ("denied", m, not_carried_out),
            }
        }

        #[test]
        fn kms_error_types_are_sorted_into_retry_or_operator() {
            let (k, m, _) = kind(classify(
                Op::Decrypt,
                400,
                None,
                br#"{"__type":"com.amazonaws.kms#AccessDeniedException","message":"User is not authorized"}"#,
            ));
            assert_eq!(
                (k, m.as_str()),
                (
                    "denied",
                    "KMS Decrypt: AccessDeniedException: User is not authorized"
                )
            );
            let (k, m, _) = kind(classify(
                Op::Encrypt,
                400,
                None,
                br#"{"__type":"NotFoundException","Message":"Key 'x' does not exist"}"#,
            ));
            assert_eq!(
                (k, m.as_str()),
                (
                    "denied",
                    "KMS Encrypt: NotFoundException: Key 'x' does not exist"
                )
            );
            for retryable in [
                "ThrottlingException",
                "KMSInternalException",
                "DependencyTimeoutException",
            ] {
                let body = format!(r#"{{"__type":"{retryable}"}}"#);
                let (k, m, _) = kind(classify(Op::DescribeKey, 400, None, body.as_bytes()));
                assert_eq!(
                    (k, m),
                    ("unavailable", format!("KMS DescribeKey: {retryable}"))
                );
            }
            let (k, m, _) = kind(classify(Op::Encrypt, 503, None, b"<html>busy</html>"));
            assert_eq!((k, m.as_str()), ("unavailable", "KMS Encrypt: HTTP 503"));
            let (k, m, _) = kind(classify(
                Op::Encrypt,
                400,
                Some("DisabledException:http://internal.amazon.com/"),
                b"",
            ));
            assert_eq!(
                (k, m.as_str()),
                ("denied", "KMS Encrypt: DisabledException")
            );
            let (k, m, _) = kind(classify(Op::Encrypt, 403, None, b"forbidden"));
            assert_eq!((k, m.as_str()), ("denied", "KMS Encrypt: HTTP 403"));
        }

        #[test]
        fn only_a_refusal_before_any_work_allows_a_second_create_key() {
            let throttled = classify(
                Op::CreateKey,
                400,
                None,
                br#"{"__type":"ThrottlingException"}"#,
            );
            assert!(throttled.not_carried_out);
            let internal = classify(
                Op::CreateKey,
                500,
                None,
                br#"{"__type":"KMSInternalException"}"#,
            );
            assert!(!internal.not_carried_out);
            assert!(Op::Decrypt.idempotent() && !Op::CreateKey.idempotent());
        }

        #[test]
        fn long_or_multiline_messages_are_cut() {
            let long = format!(r#"{{"__type":"X","message":"a\nb{}"}}"#, "c".repeat(1000));
            let (_, m, _) = kind(classify(Op::Encrypt, 400, None, long.as_bytes()));
            assert!(!m.contains('\n'));
            assert!(m.chars().count() < 400, "{m}");
        }

        #[test]
        fn a_decrypting_key_must_be_the_one_asked_for() {
            let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
            assert!(same_key("1234abcd-12ab-34cd-56ef-1234567890ab", arn));
            assert!(same_key(arn, arn));
            assert!(same_key("alias/root", arn));
            assert!(same_key(
                "arn:aws:kms:us-east-1:123456789012:alias/root",
                arn
            ));
            assert!(!same_key("ffffffff-12ab-34cd-56ef-1234567890ab", arn));
            assert!(!same_key(
                "arn:aws:kms:us-east-1:123456789012:key/ffffffff-12ab-34cd-56ef-1234567890ab",
                arn
            ));
        }
    }

    mod setup {
        use super::*;

        #[test]
        fn credentials_come_from_settings_else_the_environment() {
            let env = |pairs: &'static [(&'static str, &'static str)]| {
                move |name: &str| {
                    pairs
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| (*v).to_owned())
                }
            };
            let from_settings = resolve_credentials(
                &settings("http://x"),
                env(&[
                    ("AWS_ACCESS_KEY_ID", "ENV"),
                    ("AWS_SECRET_ACCESS_KEY", "env"),
                ]),
            )
            .unwrap();
            assert_eq!(from_settings.access_key_id, "test");
            let none = KmsSettings {
                access_key_id: None,
                secret_access_key: None,
                ..settings("http://x")
            };
            let from_env = resolve_credentials(
                &none,
                env(&[
                    ("AWS_ACCESS_KEY_ID", "ENV"),
                    ("AWS_SECRET_ACCESS_KEY", "env-secret"),
                    ("AWS_SESSION_TOKEN", "env-token"),
                ]),
            )
            .unwrap();
            assert_eq!(
                (
                    from_env.access_key_id.as_str(),
                    from_env.secret_access_key.expose(),
                    from_env.session_token.as_ref().map(Secret::expose)
                ),
                ("ENV", "env-secret", Some("env-token"))
            );
            let missing = resolve_credentials(&none, env(&[("AWS_ACCESS_KEY_ID", "ENV")]));
            assert!(matches!(missing, Err(KmsError::Config(m)) if m.contains("no credentials")));
            let half = KmsSettings {
                secret_access_key: None,
                ..settings("http://x")
            };
            assert!(matches!(
                resolve_credentials(&half, env(&[])),
                Err(KmsError::Config(_))
            ));
        }

        #[test]
        fn an_endpoint_is_a_bare_origin() {
            assert_eq!(
                endpoint_url(None, "eu-west-3").unwrap().as_str(),
                "https://kms.eu-west-3.amazonaws.com/"
            );
            assert_eq!(
                endpoint_url(Some("http://127.0.0.1:19000"), "us-east-1")
                    .unwrap()
                    .as_str(),
                "http://127.0.0.1:19000/"
            );
            for bad in [
                "kms.example",
                "ftp://kms.example",
                "https://user:pw@kms.example",
                "https://kms.example/prefix",
                "https://kms.example/?a=1",
            ] {
                let err = endpoint_url(Some(bad), "us-east-1").unwrap_err();
                assert!(matches!(&err, KmsError::Config(_)), "{bad}: {err:?}");
                assert!(!err.to_string().contains("pw"), "{err}");
            }
            let bad_region = KmsSettings {
                region: "us east".into(),
                ..settings("http://127.0.0.1:1")
            };
            assert!(matches!(
                KmsClient::new(&bad_region),
                Err(KmsError::Config(_))
            ));
        }

        #[test]
        fn debug_prints_no_secret() {
            let settings = KmsSettings {
                endpoint: Some("http://127.0.0.1:19000".into()),
                region: "eu-west-3".into(),
                access_key_id: Some("AKIAEXAMPLE".into()),
                secret_access_key: Some(Secret::new("s3cret-access-key")),
                session_token: Some(Secret::new("s3ssion-t0ken")),
            };
            let client = KmsClient::new(&settings).unwrap();
            let debug = format!("{client:?} {settings:?} {:?}", client.inner.credentials);
            for secret in ["s3cret-access-key", "s3ssion-t0ken"] {
                assert!(!debug.contains(secret), "{secret} in {debug}");
            }
            let client_debug = format!("{client:?}");
            assert!(!client_debug.contains("AKIAEXAMPLE"), "{client_debug}");
            assert!(
                client_debug.contains("http://127.0.0.1:19000")
                    && client_debug.contains("eu-west-3"),
                "{client_debug}"
            );
        }
    }

    /// Against moto's KMS (on the S3 server's port, started by scripts/services.sh).
    mod moto {
        use super::*;

        fn endpoint() -> String {
            std::env::var("LEDGER_TEST_S3_ENDPOINT")
                .unwrap_or_else(|_| "http://127.0.0.1:19000".into())
        }

        fn client() -> KmsClient {
            KmsClient::new(&settings(&endpoint())).unwrap()
        }

        async fn new_key(client: &KmsClient) -> String {
            client
                .create_key("ledger kms test")
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "no KMS (moto) at {}: {e}; run the tests under scripts/services.sh",
                        endpoint()
                    )
                })
        }

        #[tokio::test]
        async fn a_key_is_created_described_and_seals_with_its_context() {
            let client = client();
            let key = new_key(&client).await;
            let arn = client.describe_key(&key).await.unwrap();
            assert!(arn.starts_with("arn:aws:kms:us-east-1:"), "{arn}");
            assert!(arn.ends_with(&format!("key/{key}")), "{arn}");
            // The ARN names the key as well as its id does.
            assert_eq!(client.describe_key(&arn).await.unwrap(), arn);

            let plaintext = b"a merchant key: 32 bytes of it..";
            let context = [("merchant", "m-42"), ("purpose", "merchant-key")];
            let blob = client.encrypt(&key, plaintext, &context).await.unwrap();
            assert!(!blob.windows(plaintext.len()).any(|w| w == plaintext));
            let opened = client.decrypt(&key, &blob, &context).await.unwrap();
            assert_eq!(opened.as_slice(), plaintext);
            // The context's order does not matter; its content does.
            let reordered = [context[1], context[0]];
            assert_eq!(
                client
                    .decrypt(&arn, &blob, &reordered)
                    .await
                    .unwrap()
                    .as_slice(),
                plaintext
            );
            let other_context = [("merchant", "m-43"), ("purpose", "merchant-key")];
            match client.decrypt(&key, &blob, &other_context).await {
                Err(KmsError::Denied(m)) => {
                    assert!(m.starts_with("KMS Decrypt: "), "{m}");
                    assert!(!m.contains("merchant key"), "{m}");
                }
                other => panic!("decrypt with another context: {other:?}"),
            }
            match client.decrypt(&key, &blob, &[]).await {
                Err(KmsError::Denied(_)) => {}
                other => panic!("decrypt without the context: {other:?}"),
            }
        }

        #[tokio::test]
        async fn a_blob_of_another_key_is_refused() {
            let client = client();
            let (key, other) = (new_key(&client).await, new_key(&client).await);
            let blob = client.encrypt(&key, b"data key", &[]).await.unwrap();
            match client.decrypt(&other, &blob, &[]).await {
                Err(KmsError::Denied(m)) => assert!(m.starts_with("KMS Decrypt: "), "{m}"),
                other => panic!("decrypt with another key id: {other:?}"),
            }
        }

        #[tokio::test]
        async fn an_unknown_key_is_denied() {
            let client = client();
            let unknown = uuid::Uuid::new_v4().to_string();
            match client.describe_key(&unknown).await {
                Err(KmsError::Denied(m)) => {
                    assert!(m.starts_with("KMS DescribeKey: NotFoundException"), "{m}")
                }
                other => panic!("describe of an unknown key: {other:?}"),
            }
            match client.encrypt(&unknown, b"x", &[]).await {
                Err(KmsError::Denied(m)) => assert!(m.starts_with("KMS Encrypt: "), "{m}"),
                other => panic!("encrypt under an unknown key: {other:?}"),
            }
        }

        #[tokio::test]
        async fn a_closed_port_is_unavailable() {
            let port = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            };
            let client = KmsClient::new(&KmsSettings {
                secret_access_key: Some(Secret::new("closed-port-secret")),
                ..settings(&format!("http://127.0.0.1:{port}"))
            })
            .unwrap();
            let started = std::time::Instant::now();
            match client
                .encrypt("alias/root", b"plain-secret-bytes", &[])
                .await
            {
                Err(KmsError::Unavailable(m)) => {
                    assert!(
                        m.starts_with(&format!(
                            "KMS Encrypt: cannot connect to http://127.0.0.1:{port}"
                        )),
                        "{m}"
                    );
                    for secret in ["closed-port-secret", "plain-secret-bytes"] {
                        assert!(!m.contains(secret), "{m}");
                    }
                }
                other => panic!("a closed port: {other:?}"),
            }
            // Tried twice, with the back-off between.
            assert!(started.elapsed() >= RETRY_BACKOFF);
            assert!(matches!(
                client.describe_key("alias/root").await,
                Err(KmsError::Unavailable(_))
            ));
        }
    }
}
