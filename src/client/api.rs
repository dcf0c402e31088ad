//! The service's HTTP API as the client calls it: where it is ([`Endpoint`]), the calls the
//! batch commands make ([`Api`]), and what can go wrong, worded for the operator
//! ([`ClientError`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use url::Url;

use super::wire::{Batch, BatchLedger, ErrorBody, Page};
use crate::config::Secret;
use crate::domain::BatchId;

/// The API's base path, appended to the service's URL.
pub const BASE_PATH: &str = "/v1/api/ledger";
/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the service is and who the client is to it.
#[derive(Clone)]
pub struct Endpoint {
    /// The service's URL as given, without credentials: what messages name.
    shown: String,
    /// The API's base URL (`…/v1/api/ledger`), without a trailing slash.
    api: String,
    /// The bearer token.
    token: Secret,
    /// The TLS configuration of an `https` service (the system's roots); `None` for `http`.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("api", &self.api)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The service at `url` (`http` or `https`, optionally under a path prefix; a URL that
    /// already ends in the API's base path is taken as it is), called with `token`.
    pub fn new(url: &str, token: Secret) -> Result<Self, ClientError> {
        let mut parsed = Url::parse(url).map_err(|e| {
            ClientError::Usage(format!(
                "--url (LEDGER_URL): {e}; expected e.g. http://127.0.0.1:3000"
            ))
        })?;
        // Credentials in the URL are not ours to send or show: the token is the identity.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let bad = |why: &str| ClientError::Usage(format!("--url {}: {why}", parsed.as_str()));
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("expected an http:// or https:// URL"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("expected no query or fragment"));
        }
        check_token(token.expose())?;
        let tls = if parsed.scheme() == "https" {
            Some(Arc::new(tls_config()?))
        } else {
            None
        };
        let trimmed = parsed.as_str().trim_end_matches('/').to_owned();
        let api = if trimmed.ends_with(BASE_PATH) {
            trimmed.clone()
        } else {
            format!("{trimmed}{BASE_PATH}")
        };
        let shown = trimmed
            .strip_suffix(BASE_PATH)
            .unwrap_or(&trimmed)
            .to_owned();
        Ok(Self {
            shown,
            api,
            token,
            tls,
        })
    }

    /// The service's URL, as messages name it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The URL of `path` under the API's base path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// The WebSocket's URL: the API's with `ws`/`wss` for `http`/`https`.
    pub fn ws_url(&self) -> String {
        let rest = self.api.strip_prefix("http").unwrap_or(self.api.as_str());
        format!("ws{rest}/ws")
    }

    /// The bearer token.
    pub(super) fn token(&self) -> &Secret {
        &self.token
    }

    /// The TLS configuration of an `https` service.
    pub(super) fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }
}

/// Refuses a token no `Authorization` header can carry, without showing it.
fn check_token(token: &str) -> Result<(), ClientError> {
    if token.is_empty() {
        return Err(ClientError::Usage(
            "the token is empty: pass --token or set LEDGER_TOKEN".into(),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::Usage(
            "the token has characters a bearer token cannot have (spaces, line breaks or \
             non-ASCII); it is not shown"
                .into(),
        ));
    }
    Ok(())
}

/// A TLS client configuration trusting the system's roots (as the service's own database
/// and Redis connections do), on the ring provider the rest of the tree uses.
fn tls_config() -> Result<rustls::ClientConfig, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(ClientError::Usage(format!(
            "no trusted root certificates for https ({why}); install the system's CA \
             certificates or set SSL_CERT_FILE"
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Usage(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why a call failed, worded for the operator. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command line or environment is unusable (a bad URL, an empty token).
    #[error("{0}")]
    Usage(String),
    /// No connection could be made.
    #[error("cannot reach the ledger service at {url}: {reason}")]
    Unreachable {
        /// The service's URL.
        url: String,
        /// Why, e.g. `connection refused`.
        reason: String,
    },
    /// The service took too long.
    #[error("the ledger service at {url} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    TimedOut {
        /// The service's URL.
        url: String,
    },
    /// 401: the service does not accept the token.
    #[error("the token was refused: {0}")]
    Unauthorized(String),
    /// Any other error answer of the API.
    #[error("{0}")]
    Api(ApiError),
    /// An answer that is not the API's (a proxy's error page, a wrong URL).
    #[error("{url} answered {status}, which is not an answer of the ledger API (is --url right?)")]
    NotApi {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: StatusCode,
    },
    /// A success whose body is not what the API documents.
    #[error("unexpected answer from {url}: {reason}")]
    Unexpected {
        /// The URL asked.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// Whether the same call may succeed later without a change: the service unreachable,
    /// slow, or answering 502, 503 or 504 (a restart, a gateway between pods).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::TimedOut { .. } => true,
            ClientError::Api(e) => matches!(e.status.as_u16(), 502..=504),
            ClientError::NotApi { status, .. } => matches!(status.as_u16(), 502..=504),
            _ => false,
        }
    }
}

/// An error answer of the API, from its error body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code, e.g. `FORBIDDEN`.
    pub code: String,
    /// Readable explanation.
    pub message: String,
    /// VALIDATION_ERROR: the field that is wrong.
    pub field: Option<String>,
    /// The request's id, to find it in the service's logs.
    pub request_id: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.status.as_u16(), self.code)?;
        match &self.field {
            // The service's messages name the problem, not always the field.
            Some(field) if !self.message.contains(field.as_str()) => {
                write!(f, "{field}: {}", self.message)?
            }
            _ => f.write_str(&self.message)?,
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request {id})")?;
        }
        Ok(())
    }
}

/// The calls of the batch commands.
#[derive(Debug, Clone)]
pub struct Api {
    endpoint: Endpoint,
    http: reqwest::Client,
}

/// What creating a batch answered.
#[derive(Debug)]
pub struct Created {
    /// The batch.
    pub batch: Batch,
    /// Whether it is an earlier batch of the same idempotency key.
    pub replayed: bool,
}

impl Api {
    /// A client of `endpoint`.
    pub fn new(endpoint: Endpoint) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ledger-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect would carry the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = endpoint.tls() {
            builder = builder.use_preconfigured_tls((*tls).clone());
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { endpoint, http })
    }

    /// Where the service is.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `POST /batches` with `body`, and `Idempotency-Key: key` when given.
    pub async fn create_batch(
        &self,
        body: &Value,
        key: Option<&str>,
    ) -> Result<Created, ClientError> {
        let url = self.endpoint.url("/batches");
        let mut request = self.http.post(&url).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = self.send(request, &url).await?;
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let batch = batch(&read_body(response, &url).await?, &url)?;
        Ok(Created { batch, replayed })
    }

    /// `GET /batches/{id}`: the batch, counted now.
    pub async fn batch(&self, id: BatchId) -> Result<Batch, ClientError> {
        let url = self.endpoint.url(&format!("/batches/{id}"));
        let response = self.send(self.http.get(&url), &url).await?;
        batch(&read_body(response, &url).await?, &url)
    }

    /// One page of `GET /batches/{id}/ledgers?status=…`, newest first.
    pub async fn batch_ledgers(
        &self,
        id: BatchId,
        status: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<BatchLedger>, ClientError> {
        let url = self.endpoint.url(&format!("/batches/{id}/ledgers"));
        let limit = limit.to_string();
        let mut query = vec![("status", status), ("limit", limit.as_str())];
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor));
        }
        let response = self.send(self.http.get(&url).query(&query), &url).await?;
        let body = read_body(response, &url).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
            url: url.clone(),
            reason: format!("not a page of ledgers: {e}"),
        })
    }

    /// Sends `request` with the token; an error answer becomes a [`ClientError`].
    async fn send(&self, request: RequestBuilder, url: &str) -> Result<Response, ClientError> {
        let response = request
            .bearer_auth(self.endpoint.token().expose())
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) if status == StatusCode::UNAUTHORIZED => {
                Err(ClientError::Unauthorized(error.message))
            }
            Ok(ErrorBody { error }) => Err(ClientError::Api(ApiError {
                status,
                code: error.code,
                message: error.message,
                field: error.field,
                request_id: error.request_id,
            })),
            Err(_) if status == StatusCode::UNAUTHORIZED => {
                Err(ClientError::Unauthorized(format!("{url} answered 401")))
            }
            Err(_) => Err(ClientError::NotApi {
                url: url.to_owned(),
                status,
            }),
        }
    }

    /// A failure to get an answer at all.
    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        let url = self.endpoint.shown().to_owned();
        if e.is_timeout() {
            return ClientError::TimedOut { url };
        }
        ClientError::Unreachable {
            url,
            reason: transport_reason(e),
        }
    }
}

/// The innermost cause of a transport error, in words (`connection refused`, a DNS or TLS
/// failure), with what to do about the common ones. reqwest's own message names the URL,
/// which the caller names already.
pub(super) fn transport_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let (mut refused, mut certificate) = (false, false);
    let mut innermost = e;
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        certificate |= matches!(tls_error(cause), Some(rustls::Error::InvalidCertificate(_)));
        innermost = cause;
        next = cause.source();
    }
    if refused {
        return "connection refused (is it running? --url or LEDGER_URL names it)".to_owned();
    }
    let reason = innermost.to_string();
    if certificate {
        format!("{reason} (a private CA is trusted with SSL_CERT_FILE=/path/ca.pem)")
    } else {
        reason
    }
}

/// The TLS error `e` is or wraps: an I/O error holding another (as the TLS stream's do) does
/// not name it as its source.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    tls_error(inner)
}

/// The body of a success.
async fn read_body(response: Response, url: &str) -> Result<bytes::Bytes, ClientError> {
    response.bytes().await.map_err(|e| ClientError::Unexpected {
        url: url.to_owned(),
        reason: format!("reading the body: {}", transport_reason(&e)),
    })
}

/// A batch from its JSON body.
fn batch(body: &[u8], url: &str) -> Result<Batch, ClientError> {
    Batch::from_json(body).map_err(|e| ClientError::Unexpected {
        url: url.to_owned(),
        reason: format!("not a batch: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Result<Endpoint, ClientError> {
        Endpoint::new(url, Secret::new("t.o.k"))
    }

    #[test]
    fn the_base_path_is_appended_once_and_credentials_dropped() {
        let e = endpoint("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            e.url("/batches"),
            "http://127.0.0.1:3000/v1/api/ledger/batches"
        );
        assert_eq!(e.ws_url(), "ws://127.0.0.1:3000/v1/api/ledger/ws");
        assert_eq!(e.shown(), "http://127.0.0.1:3000");
        let e = endpoint("http://u:pw@gw.internal/ledger/v1/api/ledger/").unwrap();
        assert_eq!(
            e.url("/batches"),
            "http://gw.internal/ledger/v1/api/ledger/batches"
        );
        assert_eq!(e.shown(), "http://gw.internal/ledger");
        assert!(!format!("{e:?}").contains("t.o.k"), "{e:?}");
        for bad in ["ftp://x", "localhost:3000", "http://x/?a=1"] {
            assert!(matches!(endpoint(bad), Err(ClientError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn a_token_no_header_can_carry_is_refused_without_showing_it() {
        for bad in ["", "abc def", "abc\n", "tökén"] {
            let e = Endpoint::new("http://x", Secret::new(bad)).unwrap_err();
            assert!(matches!(e, ClientError::Usage(_)), "{bad:?}");
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad), "{e}");
            }
        }
    }

    #[test]
    fn transport_errors_say_what_to_do_about_the_common_ones() {
        use std::io::{Error, ErrorKind};
        let refused = Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(
            transport_reason(&refused),
            "connection refused (is it running? --url or LEDGER_URL names it)"
        );
        // As the TLS stream reports an untrusted certificate: an I/O error in an I/O error.
        let untrusted = Error::new(
            ErrorKind::InvalidData,
            Error::new(
                ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ),
        );
        let reason = transport_reason(&untrusted);
        assert!(
            reason.starts_with("invalid peer certificate: UnknownIssuer"),
            "{reason}"
        );
        assert!(reason.contains("SSL_CERT_FILE"), "{reason}");
        let other = Error::other("failed to lookup address information");
        assert_eq!(
            transport_reason(&other),
            "failed to lookup address information"
        );
    }

    #[test]
    fn api_errors_name_status_code_field_and_request() {
        let e = ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "VALIDATION_ERROR".into(),
            message: "expected YYYY-MM".into(),
            field: Some("period".into()),
            request_id: Some("r1".into()),
        };
        assert_eq!(
            e.to_string(),
            "400 VALIDATION_ERROR: period: expected YYYY-MM (request r1)"
        );
        let forbidden = ClientError::Api(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "FORBIDDEN".into(),
            message: "not allowed to create for m_global".into(),
            field: None,
            request_id: None,
        });
        assert_eq!(
            forbidden.to_string(),
            "403 FORBIDDEN: not allowed to create for m_global"
        );
        assert!(!forbidden.is_transient());
    }
}
