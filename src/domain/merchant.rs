//! Merchant ids: `[A-Za-z0-9_-]{1,64}`, the only form that reaches storage keys and queries.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::InvalidInput;

/// A validated merchant id. It is safe inside an object key or a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MerchantId(String);

impl MerchantId {
    /// Parses a merchant id; anything outside `[A-Za-z0-9_-]{1,64}` is refused.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "merchantId",
                "must match [A-Za-z0-9_-]{1,64}",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MerchantId {
    type Error = InvalidInput;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<MerchantId> for String {
    fn from(value: MerchantId) -> Self {
        value.0
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["m_1", "A-z_09", &"x".repeat(64)] {
            assert!(MerchantId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "../etc",
            "m 1",
            "m/1",
            "m.1",
            "é",
            &"x".repeat(65),
            "m\0",
        ] {
            assert!(MerchantId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
