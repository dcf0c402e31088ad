//! A merchant's locale: a well-formed BCP 47 language tag (RFC 5646), kept in its canonical
//! case (`de-DE`, `zh-Hant-TW`, `sr-Latn-RS`). Only its syntax is checked here — a tag no
//! registry lists is still a tag; which tags a document can honour, and the fallback for the
//! others, is the renderer's table (`render::locale`).

use std::fmt;

use super::InvalidInput;

/// The longest tag accepted, in characters: RFC 5646 §4.4.1 asks implementations to keep
/// at least 35; anything near this limit is certainly not a locale a document needs.
pub const MAX_TAG_CHARS: usize = 64;

/// The "irregular" grandfathered tags of RFC 5646 §2.2.8: well-formed although they do not
/// follow the grammar. (The "regular" ones, like `zh-min-nan`, do.)
const IRREGULAR: [&str; 17] = [
    "en-gb-oed",
    "i-ami",
    "i-bnn",
    "i-default",
    "i-enochian",
    "i-hak",
    "i-klingon",
    "i-lux",
    "i-mingo",
    "i-navajo",
    "i-pwn",
    "i-tao",
    "i-tay",
    "i-tsu",
    "sgn-be-fr",
    "sgn-be-nl",
    "sgn-ch-de",
];

/// A well-formed BCP 47 language tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale {
    /// The tag in canonical case.
    tag: String,
    /// Length of the primary language subtag (0 for a private-use or irregular tag).
    language: u8,
    /// Where the region subtag sits in `tag`, if there is one.
    region: Option<(u8, u8)>,
}

impl Locale {
    /// Parses a BCP 47 tag (case-insensitive; `_` is not a separator). The message of a
    /// refusal never repeats the value: it may be stored at rest.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let refuse = |why: &str| {
            InvalidInput::new(
                "locale",
                format!("{why}; expected a BCP 47 language tag such as de-DE"),
            )
        };
        if raw.is_empty() {
            return Err(refuse("empty"));
        }
        if raw.chars().count() > MAX_TAG_CHARS {
            return Err(refuse(&format!("longer than {MAX_TAG_CHARS} characters")));
        }
        if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(refuse("not made of letters, digits and hyphens"));
        }
        let lower = raw.to_ascii_lowercase();
        if IRREGULAR.contains(&lower.as_str()) {
            return Ok(Self {
                tag: lower,
                language: 0,
                region: None,
            });
        }
        let subtags: Vec<&str> = lower.split('-').collect();
        if subtags.iter().any(|s| s.is_empty() || s.len() > 8) {
            return Err(refuse("malformed"));
        }
        let parts = grammar(&subtags).ok_or_else(|| refuse("malformed"))?;
        // Canonical case (RFC 5646 §2.1.1): script in title case, region in upper case,
        // everything else in lower case; extensions and private use are left lower.
        let mut tag = String::with_capacity(lower.len());
        let mut region = None;
        for (i, subtag) in subtags.iter().enumerate() {
            if i > 0 {
                tag.push('-');
            }
            if Some(i) == parts.script {
                let mut chars = subtag.chars();
                if let Some(first) = chars.next() {
                    tag.push(first.to_ascii_uppercase());
                    tag.push_str(chars.as_str());
                }
            } else if Some(i) == parts.region {
                let at = u8::try_from(tag.len()).map_err(|_| refuse("malformed"))?;
                tag.push_str(&subtag.to_ascii_uppercase());
                let len = u8::try_from(subtag.len()).map_err(|_| refuse("malformed"))?;
                region = Some((at, len));
            } else {
                tag.push_str(subtag);
            }
        }
        let language = if parts.private_only {
            0
        } else {
            u8::try_from(subtags[0].len()).map_err(|_| refuse("malformed"))?
        };
        Ok(Self {
            tag,
            language,
            region,
        })
    }

    /// The tag in canonical case.
    pub fn as_str(&self) -> &str {
        &self.tag
    }

    /// The primary language subtag in lower case (`de`); `None` for a private-use tag
    /// (`x-…`) or an irregular grandfathered one (`i-klingon`).
    pub fn language(&self) -> Option<&str> {
        (self.language > 0).then(|| &self.tag[..usize::from(self.language)])
    }

    /// The region subtag in upper case (`DE`, `419`), if the tag has one.
    pub fn region(&self) -> Option<&str> {
        self.region
            .map(|(at, len)| &self.tag[usize::from(at)..usize::from(at) + usize::from(len)])
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag)
    }
}

/// Which subtags of a tag are its script and region.
struct Parts {
    script: Option<usize>,
    region: Option<usize>,
    private_only: bool,
}

fn alpha(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphabetic())
}

fn digit(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks the `langtag / privateuse` grammar of RFC 5646 §2.1 over lower-case subtags (each
/// already 1–8 letters or digits):
///
/// ```text
/// langtag    = language ["-" script] ["-" region] *("-" variant) *("-" extension) ["-" privateuse]
/// language   = 2*3ALPHA ["-" extlang] / 4ALPHA / 5*8ALPHA ; extlang = 3ALPHA *2("-" 3ALPHA)
/// script     = 4ALPHA                 ; region   = 2ALPHA / 3DIGIT
/// variant    = 5*8alphanum / (DIGIT 3alphanum)
/// extension  = singleton 1*("-" (2*8alphanum))   ; singleton = alphanum except "x"
/// privateuse = "x" 1*("-" (1*8alphanum))
/// ```
fn grammar(subtags: &[&str]) -> Option<Parts> {
    let mut parts = Parts {
        script: None,
        region: None,
        private_only: false,
    };
    let private = |rest: &[&str]| !rest.is_empty();
    let first = *subtags.first()?;
    if first == "x" {
        parts.private_only = true;
        return private(&subtags[1..]).then_some(parts);
    }
    if !alpha(first) || first.len() < 2 {
        return None;
    }
    let mut i = 1;
    if first.len() <= 3 {
        let mut extlangs = 0;
        while extlangs < 3 && subtags.get(i).is_some_and(|s| s.len() == 3 && alpha(s)) {
            extlangs += 1;
            i += 1;
        }
    }
    if subtags.get(i).is_some_and(|s| s.len() == 4 && alpha(s)) {
        parts.script = Some(i);
        i += 1;
    }
    if subtags
        .get(i)
        .is_some_and(|s| (s.len() == 2 && alpha(s)) || (s.len() == 3 && digit(s)))
    {
        parts.region = Some(i);
        i += 1;
    }
    while subtags
        .get(i)
        .is_some_and(|s| s.len() >= 5 || (s.len() == 4 && s.as_bytes()[0].is_ascii_digit()))
    {
        i += 1;
    }
    while subtags.get(i).is_some_and(|s| s.len() == 1 && *s != "x") {
        let start = i + 1;
        let mut end = start;
        while subtags.get(end).is_some_and(|s| s.len() >= 2) {
            end += 1;
        }
        if end == start {
            return None;
        }
        i = end;
    }
    match subtags.get(i) {
        None => Some(parts),
        Some(&"x") => private(&subtags[i + 1..]).then_some(parts),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_tags_are_kept_in_canonical_case() {
        for (raw, canonical, language, region) in [
            ("de-DE", "de-DE", Some("de"), Some("DE")),
            ("DE-de", "de-DE", Some("de"), Some("DE")),
            ("en", "en", Some("en"), None),
            ("ja-jp", "ja-JP", Some("ja"), Some("JP")),
            ("zh-hant-tw", "zh-Hant-TW", Some("zh"), Some("TW")),
            ("es-419", "es-419", Some("es"), Some("419")),
            ("de-CH-1996", "de-CH-1996", Some("de"), Some("CH")),
            ("sl-rozaj-biske", "sl-rozaj-biske", Some("sl"), None),
            ("zh-yue-HK", "zh-yue-HK", Some("zh"), Some("HK")),
            ("en-US-u-nu-latn", "en-US-u-nu-latn", Some("en"), Some("US")),
            ("de-DE-x-ledger", "de-DE-x-ledger", Some("de"), Some("DE")),
            ("x-whatever", "x-whatever", None, None),
            ("i-klingon", "i-klingon", None, None),
            ("art-lojban", "art-lojban", Some("art"), None),
        ] {
            let l = Locale::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(
                (l.as_str(), l.language(), l.region()),
                (canonical, language, region),
                "{raw}"
            );
        }
    }

    #[test]
    fn malformed_tags_are_refused_without_echoing_them() {
        for raw in [
            "",
            "de_DE",
            "de DE",
            "d",
            "1de",
            "de-",
            "-de",
            "de--DE",
            "de-DE-x",
            "de-DE-x-accounting",
            "de-a",
            "de-a-x-y",
            "toolongsubtag",
            "de-DE-ß",
            "en-US-u",
            "en-12",
            &format!("en{}", "-abcdefgh".repeat(8)),
        ] {
            let e = Locale::parse(raw).expect_err(raw);
            assert_eq!(e.field, "locale", "{raw}");
            assert!(e.message.contains("BCP 47"), "{raw}: {e}");
            if raw.len() > 5 {
                assert!(!e.message.contains(raw), "{raw}: {e}");
            }
        }
    }
}
