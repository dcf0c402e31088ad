//! How to reach a Redis server: its URL and, for `rediss://`, which CA its certificate must
//! chain to. Every Redis client of the service (event bus, policy cache, the `policy` CLI)
//! is made by [`RedisServer::client`], so TLS is set up in one place. Nothing here prints
//! the URL: it may hold a password.

use std::fmt;
use std::sync::Arc;

use super::Secret;

/// A Redis server to connect to.
#[derive(Clone)]
pub struct RedisServer {
    url: Secret,
    /// PEM certificates of a private CA that a `rediss://` server must chain to, instead of
    /// the system's trusted roots.
    root_ca: Option<Arc<[u8]>>,
}

impl RedisServer {
    /// The server at `url` (`redis://` or `rediss://`); a `rediss://` server's certificate
    /// is verified against the system's trusted roots, and its name against the URL's host.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            root_ca: None,
        }
    }

    /// Verifies a `rediss://` server against the CA certificates in `pem` instead of the
    /// system's roots. No effect on a plain `redis://` URL.
    pub fn with_root_ca(mut self, pem: impl Into<Arc<[u8]>>) -> Self {
        self.root_ca = Some(pem.into());
        self
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url.expose().starts_with("rediss://")
    }

    /// A client for this server (it connects on first use). Fails on an invalid URL or CA
    /// file; the error does not contain the URL.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.root_ca {
            Some(pem) if self.is_tls() => redis::Client::build_with_tls(
                self.url.expose(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
            _ => redis::Client::open(self.url.expose()),
        }
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("url", &self.url)
            .field("private_ca", &self.root_ca.is_some())
            .finish()
    }
}

/// What went wrong talking to Redis, for logs and readiness checks: the error kind, and for
/// a connection failure its cause (`Connection refused`, `invalid peer certificate:
/// UnknownIssuer`, …), which is what tells an operator a TLS problem from an outage. Never
/// the URL.
pub fn describe(e: &redis::RedisError) -> String {
    let kind = format!("{:?}", e.kind());
    match std::error::Error::source(e) {
        Some(cause) if e.is_io_error() => format!("{kind}: {cause}"),
        _ => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_never_printed() {
        let server = RedisServer::new("rediss://:hunter2@cache.internal:6380/0")
            .with_root_ca(b"-----BEGIN CERTIFICATE-----".to_vec());
        let shown = format!("{server:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("cache.internal"),
            "{shown}"
        );
        assert!(shown.contains("private_ca: true"), "{shown}");
    }

    #[test]
    fn only_rediss_urls_use_tls() {
        assert!(RedisServer::new("rediss://localhost:6380").is_tls());
        assert!(!RedisServer::new("redis://localhost:6379").is_tls());
        // A CA beside a plain URL is ignored rather than an error.
        let plain = RedisServer::new("redis://localhost:6379").with_root_ca(b"".to_vec());
        assert!(plain.client().is_ok());
    }
}
