//! Values that must not be printed: [`Secret`] (a password, a key, a token) and
//! [`SensitiveUrl`] (a URL that may carry one). Their `Debug` hides the value, so a logged
//! `Config` leaks nothing.

use std::fmt;

/// A secret value: printable only on purpose, and wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(value.into()))
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL setting that may carry a credential (user info, a token in its path or query):
/// usable as the URL, while `Debug` (so a logged `Config`) shows its scheme and host only.
#[derive(Clone, PartialEq, Eq)]
pub struct SensitiveUrl(pub url::Url);

impl std::ops::Deref for SensitiveUrl {
    type Target = url::Url;
    fn deref(&self) -> &url::Url {
        &self.0
    }
}

impl fmt::Debug for SensitiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/***",
            self.0.scheme(),
            self.0.host_str().unwrap_or("?")
        )
    }
}
