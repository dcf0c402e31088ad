//! Fetching one page (of a merchant's entries or of the merchant list): the request with its
//! bearer token, what each status means, the body piece by piece with a bound on each wait,
//! and retries of transient failures with backoff and `Retry-After`. No error it returns
//! carries the token or the URL.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use url::Url;

use super::HttpSource;
use crate::domain::MerchantId;
use crate::source::SourceError;

/// Upper bound of one computed backoff delay, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Upper bound of a `Retry-After` delay: an upstream asking for an hour must not park a job.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A request or a body that did not go through.
pub(super) enum Failure {
    /// Worth another attempt; `after` is the upstream's `Retry-After`.
    Transient {
        reason: String,
        after: Option<Duration>,
    },
    /// Final.
    Fatal(SourceError),
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Self::Fatal(e)
    }
}

/// What a request fetches: it names the request in logs and says what a 404 means.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resource<'a> {
    /// A page of this merchant's entries: 404 is an unknown merchant.
    Entries(&'a MerchantId),
    /// A page of the merchant list: 404 is a refused request like any other 4xx.
    Merchants,
}

impl<'a> Resource<'a> {
    fn merchant(self) -> Option<&'a str> {
        match self {
            Self::Entries(id) => Some(id.as_str()),
            Self::Merchants => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Entries(_) => "entries",
            Self::Merchants => "merchants",
        }
    }
}

impl HttpSource {
    /// Sends one request for `url`: the answer of a 2xx status, its body still to read.
    pub(super) async fn request(
        &self,
        resource: Resource<'_>,
        url: &Url,
    ) -> Result<Response, Failure> {
        let mut request = self
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json");
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response =
            match tokio::time::timeout(self.options.request_timeout, request.send()).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    return Err(Failure::Transient {
                        reason: describe(&e),
                        after: None,
                    });
                }
                Err(_) => return Err(self.no_answer("no answer")),
            };
        let status = response.status();
        let code = status.as_u16();
        if status.is_success() {
            return Ok(response);
        }
        Err(match status {
            StatusCode::NOT_FOUND => match resource {
                Resource::Entries(id) => {
                    Failure::Fatal(SourceError::UnknownMerchant(id.to_string()))
                }
                Resource::Merchants => refused(code),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Failure::Fatal(SourceError::Unavailable(format!(
                    "the source refused the credentials (HTTP {code})"
                )))
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => Failure::Transient {
                reason: format!("the source answered HTTP {code}"),
                after: retry_after(&response),
            },
            s if s.is_server_error() => Failure::Transient {
                reason: format!("the source answered HTTP {code}"),
                after: retry_after(&response),
            },
            s if s.is_redirection() => Failure::Fatal(SourceError::Invalid(format!(
                "the source answered with a redirect (HTTP {code}), which is not followed"
            ))),
            _ => refused(code),
        })
    }

    /// The next piece of a body (`None` at its end). Each wait is bounded by the request
    /// timeout: an upstream trickling bytes, or gone silent, is a transient failure. Time the
    /// consumer takes between pieces does not count.
    pub(super) async fn chunk(&self, response: &mut Response) -> Result<Option<Bytes>, Failure> {
        match tokio::time::timeout(self.options.request_timeout, response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(Failure::Transient {
                reason: format!("the answer broke off: {}", describe(&e)),
                after: None,
            }),
            Err(_) => Err(self.no_answer("the answer stalled")),
        }
    }

    fn no_answer(&self, what: &str) -> Failure {
        Failure::Transient {
            reason: format!(
                "{what} within {} ms",
                self.options.request_timeout.as_millis()
            ),
            after: None,
        }
    }

    /// Waits before retry number `*retries + 1` of a transient failure, or gives up.
    pub(super) async fn before_retry(
        &self,
        resource: Resource<'_>,
        retries: &mut u32,
        reason: String,
        after: Option<Duration>,
    ) -> Result<(), SourceError> {
        if *retries >= self.options.max_retries {
            return Err(SourceError::Unavailable(format!(
                "{reason} (gave up after {} attempts)",
                *retries + 1
            )));
        }
        let delay = match after {
            Some(after) => after.min(MAX_RETRY_AFTER),
            None => backoff(self.options.initial_backoff, *retries),
        };
        *retries += 1;
        tracing::warn!(
            resource = resource.name(),
            merchantId = resource.merchant(),
            retry = *retries,
            of = self.options.max_retries,
            delay_ms = delay.as_millis() as u64,
            reason = %reason,
            "[HttpSource] transient failure, retrying"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// A 4xx the upstream will answer again: not worth a retry.
fn refused(code: u16) -> Failure {
    Failure::Fatal(SourceError::Invalid(format!(
        "the source refused the request (HTTP {code})"
    )))
}

/// `initial * 2^retry`, capped, with "equal jitter" (a random point in the upper half) so
/// many workers failing together do not retry in lockstep.
fn backoff(initial: Duration, retry: u32) -> Duration {
    let full = initial
        .saturating_mul(1_u32.checked_shl(retry).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    let half = full / 2;
    let jitter_ms = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

/// `Retry-After` in seconds; the HTTP-date form is rare from APIs and falls back to backoff.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A reqwest error without its URL (whose query holds the cursor and window), as the kind of
/// failure and its causes.
pub(super) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the body could not be read"
    } else {
        "the request failed"
    };
    let mut message = kind.to_owned();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for retry in 0..40 {
            let full = Duration::from_millis(200)
                .saturating_mul(1_u32.checked_shl(retry).unwrap_or(u32::MAX))
                .min(MAX_BACKOFF);
            let got = backoff(Duration::from_millis(200), retry);
            assert!(got >= full / 2 && got <= full, "{retry}: {got:?}");
        }
    }
}
