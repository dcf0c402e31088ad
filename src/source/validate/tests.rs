//! Tests of validation: the fast and slow paths agree on every line of a table, messages
//! name the path and never echo the data, and order, uniqueness and indices span pages.

use serde::de::{self, IgnoredAny};

use super::loose::json_error;
use super::*;
use crate::source::contract::{mid, validation_cases};
use crate::source::page::{WholePage, read_whole};

/// A page read as it streams, in pieces of 7 bytes.
fn parse_page(
    json: &[u8],
    expected: &MerchantId,
    validator: &mut EntryValidator,
) -> Result<WholePage, SourceError> {
    read_whole(json, expected, validator, 7)
}

/// The typed path alone, for comparing verdicts.
fn fast(line: &str) -> bool {
    match serde_json::from_slice::<RawEntry<'_>>(line.as_bytes()) {
        Ok(raw) => EntryValidator::new().accept(raw.parts(), 0).is_ok(),
        Err(_) => false,
    }
}

/// The loose path alone, as a complete validator.
fn slow(line: &str) -> Result<Entry, SourceError> {
    let value = serde_json::from_slice::<Loose>(line.as_bytes())
        .map_err(|e| SourceError::Invalid(format!("invalid JSON ({})", json_error(&e))))?;
    let parts = entry_parts(&value, "entries[0]")?;
    EntryValidator::new().accept(parts, 0).map(Checked::entry)
}

const OK_PREFIX: &str =
    r#""id":"tx_1","bookedAt":"2026-10-01T08:15:00Z","type":"PAYMENT","currency":"EUR""#;

fn with_amount(amount: &str) -> String {
    format!(r#"{{{OK_PREFIX},"amount":{amount}}}"#)
}

/// Lines both paths must judge alike; `true` when they are valid.
fn table() -> Vec<(String, bool)> {
    let mut t: Vec<(String, bool)> = vec![
        (with_amount("1999"), true),
        (with_amount("-1999"), true),
        (with_amount("0"), true),
        // serde_json reads `-0` as the float -0.0: refused by both paths.
        (with_amount("-0"), false),
        (with_amount("9223372036854775807"), true),
        (with_amount("-9223372036854775808"), true),
        (with_amount("19.99"), false),
        (with_amount("1.0"), false),
        (with_amount("1e3"), false),
        (with_amount("1E3"), false),
        (with_amount("-1e-3"), false),
        (with_amount("9223372036854775808"), false),
        (with_amount("-9223372036854775809"), false),
        (with_amount("18446744073709551616"), false),
        (with_amount(r#""1999""#), false),
        (with_amount("null"), false),
        (with_amount("true"), false),
        (with_amount("[1]"), false),
        (with_amount("{}"), false),
        (with_amount("1999,\"amount\":1"), false),
        (with_amount("1,\"extra\":{\"a\":[1,2,{\"b\":null}]},\"extra\":1"), true),
        (with_amount("1,\"description\":\"Café, \\\"quoted\\\"\\nline\""), true),
        (with_amount("1,\"description\":null"), false),
        (with_amount("1,\"description\":5"), false),
        (with_amount("1,\"reference\":null"), true),
        (with_amount("1,\"reference\":\"ord_\\u0031\""), true),
        (with_amount("1,\"reference\":[]"), false),
        (with_amount("1,\"reference\":\"\\ud800\""), false),
        (r#"{"id":"\u0074x","bookedAt":"2026-10-01T08:15:00\u005A","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), true),
        (r#"{"bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
        (r#"{"id":1,"bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
        (r#"{"id":"","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
        (r#"{"id":"a","bookedAt":"2026-10-01","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
        (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00+05:30","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), true),
        (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00.123456Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), true),
        (r#"{"id":"a","bookedAt":"2026-13-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
        (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00Z","type":"fee","amount":-1,"currency":"EUR"}"#.into(), false),
        (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"XYZ"}"#.into(), false),
        (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1}"#.into(), false),
        (format!(r#"{{"id":"{}","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}}"#, "é".repeat(128)), true),
        (format!(r#"{{"id":"{}","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}}"#, "é".repeat(129)), false),
        ("[]".into(), false),
        ("null".into(), false),
        ("\"x\"".into(), false),
        ("{".into(), false),
        (format!("{} trailing", with_amount("1")), false),
        (format!("{}\r\n", with_amount("1")), true),
        (format!("  {}  ", with_amount("1")), true),
    ];
    t.push((with_amount("1,\"extra\":1e999"), true));
    t
}

#[test]
fn fast_and_slow_paths_agree() {
    for (line, valid) in table() {
        let slow = slow(&line);
        assert_eq!(fast(&line), valid, "fast path on {line}");
        assert_eq!(slow.is_ok(), valid, "slow path on {line}: {slow:?}");
        // The combined path: same verdict, and the slow path's message.
        let combined = EntryValidator::new().next_from_json(line.as_bytes());
        assert_eq!(combined.is_ok(), valid, "{line}");
        if let (Err(got), Err(SourceError::Invalid(expected))) = (&combined, &slow)
            && !expected.starts_with("invalid JSON")
        {
            assert_eq!(got, &SourceError::Invalid(expected.clone()), "{line}");
        }
    }
}

#[test]
fn id_set_finds_repeats_across_growth() {
    let mut set = IdSet::default();
    for i in 0..100_000u64 {
        assert!(set.insert(id_hash(&format!("tx_{i}"))));
    }
    for i in (0..100_000u64).step_by(997) {
        assert!(!set.insert(id_hash(&format!("tx_{i}"))));
    }
    assert!(set.insert(0));
    assert!(!set.insert(1), "0 and 1 share a slot value");
    assert_eq!(set.len, 100_001);
    assert!(set.slots.len() * 3 >= 4 * set.len);
}

#[test]
fn id_hashes_of_usual_ids_neither_collide_nor_crowd_slots() {
    let mut seen = std::collections::HashSet::new();
    // Low 16 bits, as a 65,536-slot table would use them.
    let mut slots = vec![0u32; 1 << 16];
    let ids = (3_100_000..3_700_000u64)
        .map(|i| format!("tx_{i:08}"))
        .chain((0..200_000u64).map(|i| format!("{i}")))
        .chain((0..200_000u64).map(|i| format!("8c1f{i:028x}-payout-{}", i % 7)));
    for id in ids {
        let h = id_hash(&id);
        assert!(seen.insert(h), "{id} collides");
        slots[(h & 0xFFFF) as usize] += 1;
    }
    // 1,000,000 hashes in 65,536 slots: about 15 each if spread.
    let fullest = slots.iter().max().copied().unwrap_or(0);
    assert!(fullest < 45, "{fullest}");
    assert_ne!(
        id_hash("a"),
        id_hash("a\0"),
        "the length is part of the hash"
    );
}

#[test]
fn hand_read_timestamps_match_chrono() {
    for raw in [
        "2026-10-01T08:15:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2024-02-29T12:00:00Z",
        "2026-02-29T12:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-12-31T24:00:00Z",
        "2026-12-31T23:60:00Z",
        "2016-12-31T23:59:60Z",
        "2026-10-01t08:15:00z",
        "2026-10-01 08:15:00Z",
        "2026-10-01T08:15:00+00:00",
        "+026-10-01T08:15:00Z",
        "2026-1a-01T08:15:00Z",
    ] {
        let chrono = DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        assert_eq!(parse_booked_at(raw), chrono, "{raw}");
    }
}

#[test]
fn messages_name_the_path() {
    let mut v = EntryValidator::new();
    assert!(v.next_from_json(with_amount("1").as_bytes()).is_ok());
    let err = v
        .next_from_json(with_amount("19.99").as_bytes())
        .unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("entries[1].amount: expected integer, found a decimal number".into())
    );
    let long = format!(
        r#"{{"id":"a","bookedAt":"{}","type":"FEE","amount":1,"currency":"EUR"}}"#,
        "9".repeat(500)
    );
    let entry = |id: &str, at: &str, kind: &str, currency: &str, extra: &str| {
        format!(
            r#"{{"id":"{id}","bookedAt":"{at}","type":"{kind}","amount":1,"currency":"{currency}"{extra}}}"#
        )
    };
    let at = "2026-10-01T08:15:00Z";
    for (line, message) in [
        (
            with_amount(r#""19.99""#),
            "entries[0].amount: expected integer, found a string",
        ),
        (
            with_amount("1e3"),
            "entries[0].amount: expected integer, found a decimal number",
        ),
        (
            with_amount("-1e-3"),
            "entries[0].amount: expected integer, found a decimal number",
        ),
        (
            with_amount("true"),
            "entries[0].amount: expected integer, found a boolean",
        ),
        (
            with_amount("null"),
            "entries[0].amount: expected integer, found null",
        ),
        (
            with_amount("[1]"),
            "entries[0].amount: expected integer, found an array",
        ),
        (
            with_amount("{}"),
            "entries[0].amount: expected integer, found an object",
        ),
        (
            with_amount("9223372036854775808"),
            "entries[0].amount: integer out of range",
        ),
        (
            with_amount("-9223372036854775809"),
            "entries[0].amount: integer out of range",
        ),
        (
            with_amount("18446744073709551616"),
            "entries[0].amount: integer out of range",
        ),
        (
            with_amount("1,\"description\":5"),
            "entries[0].description: expected string, found an integer",
        ),
        (
            with_amount("1,\"reference\":2.5"),
            "entries[0].reference: expected string, found a decimal number",
        ),
        (
            r#"{"id":1,"bookedAt":"x"}"#.to_owned(),
            "entries[0].id: expected string, found an integer",
        ),
        (
            entry("a", "2026-10-01", "FEE", "EUR", ""),
            "entries[0].bookedAt: expected an RFC 3339 timestamp with offset",
        ),
        (
            long,
            "entries[0].bookedAt: expected an RFC 3339 timestamp with offset",
        ),
        (
            entry("a", at, "fee", "EUR", ""),
            "entries[0].type: expected one of PAYMENT, REFUND, FEE, PAYOUT, ADJUSTMENT, CHARGEBACK",
        ),
        (
            entry("a", at, "FEE", "XYZ", ""),
            "entries[0].currency: unknown currency code (3 characters)",
        ),
        (
            entry("a", at, "FEE", "E", ""),
            "entries[0].currency: unknown currency code (1 character)",
        ),
        (
            entry("a", at, "FEE", "€UR", ""),
            "entries[0].currency: unknown currency code (3 characters)",
        ),
        (
            entry(&"x".repeat(129), at, "FEE", "EUR", ""),
            "entries[0].id: longer than 128 characters (129)",
        ),
        (
            "{".to_owned(),
            "entries[0]: invalid JSON (EOF while parsing an object at line 1 column 1)",
        ),
        (
            r#"{"id":"secret\q"}"#.to_owned(),
            "entries[0]: invalid JSON (invalid escape at line 1 column 15)",
        ),
        (
            with_amount("1 secret"),
            "entries[0]: invalid JSON (expected `,` or `}` at line 1 column 93)",
        ),
        (
            "\"secret\"".to_owned(),
            "entries[0]: expected an object, found a string",
        ),
    ] {
        assert_eq!(
            EntryValidator::new().next_from_json(line.as_bytes()),
            Err(SourceError::Invalid(message.into())),
            "{line}"
        );
        assert_eq!(
            slow(&line).err(),
            Some(SourceError::Invalid(
                message.replace("entries[0]: invalid JSON", "invalid JSON")
            )),
            "{line}"
        );
    }
    // A message serde_json could carry with input in it is reduced to its position.
    let custom = <serde_json::Error as de::Error>::custom("invalid type: `19.99`");
    assert_eq!(json_error(&custom), "unreadable value at line 0 column 0");
}

/// Every scalar value literally in `json` (string contents raw and unescaped, numbers as
/// written and as serde_json renders them), keys and `true`/`false`/`null` left out.
fn literals(json: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            let mut end = 1;
            let bytes = rest.as_bytes();
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let raw = &rest[1..end.min(rest.len())];
            rest = &rest[(end + 1).min(rest.len())..];
            if rest.trim_start().starts_with(':') {
                continue;
            }
            out.push(raw.to_owned());
            if let Ok(text) = serde_json::from_str::<String>(&format!("\"{raw}\"")) {
                out.push(text);
            }
        } else if "{}[],:".contains(c) || c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else {
            let end = rest
                .find(|c: char| "{}[],:\"".contains(c) || c.is_whitespace())
                .unwrap_or(rest.len());
            let token = &rest[..end];
            rest = &rest[end..];
            if ["true", "false", "null"].contains(&token) {
                continue;
            }
            out.push(token.to_owned());
            if let Ok(n) = serde_json::from_str::<serde_json::Number>(token) {
                out.push(n.to_string());
            }
            if let Ok(v) = token.parse::<f64>() {
                out.push(v.to_string());
            }
        }
    }
    out.retain(|l| !l.is_empty());
    out
}

/// `message` without its `[n]` indices holds none of `literals` of at least `min` chars.
/// The schema's own words (entry type names) are not data and may appear.
fn assert_echoes_nothing(message: &str, literals: &[String], min: usize, case: &str) {
    let mut text = String::new();
    let mut rest = message;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let tail = &rest[open + 1..];
        let digits = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        if digits > 0 && tail[digits..].starts_with(']') {
            rest = &tail[digits + 1..];
        } else {
            text.push('[');
            rest = tail;
        }
    }
    text.push_str(rest);
    for literal in literals {
        if literal.chars().count() < min || EntryType::parse(literal).is_some() {
            continue;
        }
        assert!(
            !text.contains(literal.as_str()),
            "{case}: message {message:?} echoes {literal:?}"
        );
    }
}

#[test]
fn messages_never_echo_the_data() {
    let mut checked = 0;
    for (name, data, message) in validation_cases() {
        // Every value of the data set, good entries included (a message comparing two
        // entries must name neither); the merchant ids may be shown.
        let mut values = Vec::new();
        for json in data.entries.iter().chain(&data.opening) {
            values.extend(literals(json));
        }
        values.extend(data.timezone.clone());
        values.extend(data.locale.as_ref().map(|l| l.trim_matches('"').to_owned()));
        values.push(data.name.clone());
        values.retain(|v| *v != data.merchant_id && *v != data.header_id);
        assert!(!values.is_empty(), "{name}");
        let got = parse_page(
            data.json().as_bytes(),
            &mid(&data.merchant_id),
            &mut EntryValidator::new(),
        );
        assert_eq!(got, Err(SourceError::Invalid(message.into())), "{name}");
        assert_echoes_nothing(message, &values, 1, name);
        checked += 1;
    }
    assert!(checked >= 20, "{checked}");
    // The fast/slow table too, for the lines that are JSON at all (a syntax error names
    // serde_json's own words); one-character values (`a`, `1`) are words of any message.
    for (line, _) in table() {
        if serde_json::from_str::<IgnoredAny>(&line).is_err() {
            continue;
        }
        if let Err(SourceError::Invalid(message)) =
            EntryValidator::new().next_from_json(line.as_bytes())
        {
            assert_echoes_nothing(&message, &literals(&line), 2, &line);
        }
    }
}

#[test]
fn entry_fields_are_kept() {
    let line = r#"{"id":"tx_9","bookedAt":"2026-10-01T10:15:00+02:00","type":"CHARGEBACK","amount":-1999,"currency":"JPY","description":"Café, \"x\"\n","reference":null,"future":{"a":1}}"#;
    let e = EntryValidator::new()
        .next_from_json(line.as_bytes())
        .unwrap();
    assert_eq!(e.id, "tx_9");
    assert_eq!(e.booked_at.to_rfc3339(), "2026-10-01T08:15:00+00:00");
    assert_eq!((e.entry_type, e.amount), (EntryType::Chargeback, -1999));
    assert_eq!(e.currency.code(), "JPY");
    assert_eq!(e.description, "Café, \"x\"\n");
    assert_eq!(e.reference, "");
}

#[test]
fn order_and_uniqueness_span_the_stream() {
    let line = |id: &str, at: &str| {
        format!(r#"{{"id":"{id}","bookedAt":"{at}","type":"FEE","amount":-1,"currency":"EUR"}}"#)
    };
    let first = |v: &mut EntryValidator| {
        for (id, at) in [
            ("b", "2026-01-01T00:00:00Z"),
            ("c", "2026-01-01T00:00:00Z"),
            ("a", "2026-01-02T00:00:00Z"),
        ] {
            v.next_from_json(line(id, at).as_bytes()).unwrap();
        }
        assert_eq!(v.count(), 3);
    };
    // A repeated id is found at the latest where the stream ends (ids are checked in
    // groups: see `pending`)…
    let mut v = EntryValidator::new();
    first(&mut v);
    v.next_from_json(line("b", "2026-01-03T00:00:00Z").as_bytes())
        .unwrap();
    assert_eq!(
        v.finish(),
        Err(SourceError::Invalid(
            "entries[3].id: repeated entry id".into()
        ))
    );
    // …and before any later error, so the earliest problem is the one told.
    let mut v = EntryValidator::new();
    first(&mut v);
    v.next_from_json(line("b", "2026-01-03T00:00:00Z").as_bytes())
        .unwrap();
    let err = v
        .next_from_json(
            line("z", "2026-01-03T00:00:00Z")
                .replace("EUR", "EURO")
                .as_bytes(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("entries[3].id: repeated entry id".into())
    );
    // An entry that is both repeated and out of order is told repeated, as before groups.
    let mut v = EntryValidator::new();
    first(&mut v);
    let err = v
        .next_from_json(line("b", "2025-12-31T00:00:00Z").as_bytes())
        .unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("entries[3].id: repeated entry id".into())
    );
    let mut v = EntryValidator::new();
    first(&mut v);
    let err = v
        .next_from_json(line("z", "2026-01-01T21:00:00-02:00").as_bytes())
        .unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("entries[3].bookedAt: out of order (before entries[2])".into())
    );
    assert_eq!(v.finish(), Ok(()));
    // A group of ids is checked as it fills up, without waiting for the end.
    let mut v = EntryValidator::new();
    let mut at = chrono::DateTime::<chrono::Utc>::from_timestamp(1_767_225_600, 0).unwrap();
    let mut found = None;
    for i in 0..100 {
        at += chrono::TimeDelta::seconds(1);
        let id = if i == 50 {
            "tx_7".to_owned()
        } else {
            format!("tx_{i}")
        };
        let stamp = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        if let Err(e) = v.next_from_json(line(&id, &stamp).as_bytes()) {
            found = Some((i, e));
            break;
        }
    }
    let (at_entry, err) = found.expect("found before the end");
    assert!(at_entry < 50 + PENDING as u64 + 1, "{at_entry}");
    assert_eq!(
        err,
        SourceError::Invalid("entries[50].id: repeated entry id".into())
    );
}

fn page(entries: &str, cursor: &str) -> String {
    format!(
        r#"{{"merchant":{{"id":"m_1","name":"Acme GmbH","timezone":"Europe/Berlin"}},"openingBalances":[{{"currency":"EUR","amount":125000}}],"entries":[{entries}],"nextCursor":{cursor}}}"#
    )
}

#[test]
fn pages_share_one_validator() {
    let e = |id: &str, at: &str| {
        format!(
            r#"{{"id":"{id}","bookedAt":"{at}","type":"PAYMENT","amount":1999,"currency":"EUR"}}"#
        )
    };
    let mut v = EntryValidator::new();
    let first = page(
        &format!(
            "{},{}",
            e("tx_1", "2026-10-01T08:15:00Z"),
            e("tx_2", "2026-10-01T09:00:00Z")
        ),
        r#""c2""#,
    );
    let p1 = parse_page(first.as_bytes(), &mid("m_1"), &mut v).unwrap();
    assert_eq!(p1.next_cursor.as_deref(), Some("c2"));
    assert_eq!(p1.entries.len(), 2);
    assert_eq!(p1.header.merchant.name, "Acme GmbH");
    assert_eq!(p1.header.opening_balances[0].amount, 125_000);
    let second = page(
        &format!(
            "{},{}",
            e("tx_3", "2026-10-02T00:00:00Z"),
            e("tx_1", "2026-10-03T00:00:00Z")
        ),
        "null",
    );
    let err = parse_page(second.as_bytes(), &mid("m_1"), &mut v).unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("entries[3].id: repeated entry id".into())
    );
    // A typed failure on a later page still counts indices across pages.
    let mut v = EntryValidator::new();
    parse_page(first.as_bytes(), &mid("m_1"), &mut v).unwrap();
    let third = page(
        &e("tx_3", "2026-10-01T09:00:00Z").replace("1999", "19.99"),
        "null",
    );
    let err = parse_page(third.as_bytes(), &mid("m_1"), &mut v).unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("entries[2].amount: expected integer, found a decimal number".into())
    );
    let err = parse_page(
        page("", "7").as_bytes(),
        &mid("m_1"),
        &mut EntryValidator::new(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("nextCursor: expected string, found an integer".into())
    );
    let err = parse_page(b"[]", &mid("m_1"), &mut EntryValidator::new()).unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("document: expected an object, found an array".into())
    );
    let missing = r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":[]}"#;
    let err = parse_page(missing.as_bytes(), &mid("m_1"), &mut EntryValidator::new()).unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("entries: missing, expected array".into())
    );
}

#[test]
fn header_rules() {
    let ok = r#"{"merchant":{"id":"m_1","name":"A","timezone":null,"logo":"x"},"openingBalances":[],"entries":null}"#;
    let h = parse_header(ok.as_bytes(), &mid("m_1")).unwrap();
    assert_eq!((h.merchant.timezone, h.opening_balances.len()), (None, 0));
    for (raw, message) in [
        (
            r#"{"merchant":{"id":"m_1","name":"A","timezone":"Mars/Base"},"openingBalances":[]}"#,
            "merchant.timezone: unknown time zone",
        ),
        (
            r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":[{"currency":"EUR","amount":1.5}]}"#,
            "openingBalances[0].amount: expected integer, found a decimal number",
        ),
        (
            r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":[{"currency":"EUR"}]}"#,
            "openingBalances[0].amount: missing, expected integer",
        ),
        (
            r#"{"merchant":{"id":"m_1"},"openingBalances":[]}"#,
            "merchant.name: missing, expected string",
        ),
        (
            r#"{"merchant":"m_1","openingBalances":[]}"#,
            "merchant: expected an object, found a string",
        ),
        (
            r#"{"merchant":{"id":"m_1","name":"A"}}"#,
            "openingBalances: missing, expected array",
        ),
        (
            r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":{}}"#,
            "openingBalances: expected array, found an object",
        ),
        (
            r#"{"merchant":{"id":"m_2","name":"A"},"openingBalances":[]}"#,
            r#"merchant.id: expected "m_1", found "m_2""#,
        ),
        (
            r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":[],"entries":[]}"#,
            "entries: not allowed in the header line (one entry per following line)",
        ),
        (
            r#"{"merchant":{"id":"m_1","name":"A","name":"B"},"openingBalances":[]}"#,
            "merchant.name: repeated field",
        ),
    ] {
        assert_eq!(
            parse_header(raw.as_bytes(), &mid("m_1")),
            Err(SourceError::Invalid(message.into())),
            "{raw}"
        );
    }
}

#[test]
fn contract_cases_are_refused_by_both_paths() {
    // The same table the adapters run, checked on the bare functions via the page form.
    for (name, data, message) in validation_cases() {
        let got = parse_page(
            data.json().as_bytes(),
            &mid(&data.merchant_id),
            &mut EntryValidator::new(),
        );
        assert_eq!(
            got.err(),
            Some(SourceError::Invalid(message.into())),
            "{name}"
        );
    }
}
