//! Tests of the streaming page reader: any member order, any piece size, the messages of a
//! broken document, bounded buffers, and reads taken up again.

use super::*;
use crate::domain::Entry;
use crate::source::contract::{entry_json, mid};

fn entries(n: usize) -> Vec<String> {
    let start: chrono::DateTime<chrono::Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
    (0..n)
        .map(|i| {
            let at = start + chrono::TimeDelta::seconds(37 * i as i64);
            entry_json(
                &format!("tx_{i:06}"),
                &at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "PAYMENT",
                &(1000 + i).to_string(),
                "EUR",
            )
        })
        .collect()
}

const MERCHANT: &str =
    r#""merchant" : {"id":"m_1","name":"Acme \"GmbH\"","timezone":"Europe/Berlin"}"#;
const BALANCES: &str = r#""openingBalances":[{"currency":"EUR","amount":125000}]"#;
const CURSOR: &str = r#""nextCursor": "c2""#;
/// An unknown member whose value holds every kind of thing a scan must step over.
const UNKNOWN: &str = r#""x\"y" :{"deep":[1,"]}\"",{"a":null},[[]],-2.5e3,true]}"#;

fn entries_member(list: &[String]) -> String {
    format!("\"entries\":[\n  {}\n]", list.join(",\n  "))
}

fn document(members: &[&str]) -> String {
    format!("\n{{ {} }}\n", members.join(" ,\n"))
}

fn read(json: &str, piece: usize) -> Result<WholePage, SourceError> {
    read_whole(
        json.as_bytes(),
        &mid("m_1"),
        &mut EntryValidator::new(),
        piece,
    )
}

fn message(json: &str) -> String {
    match read(json, 5) {
        Err(SourceError::Invalid(message)) => message,
        Err(other) => panic!("{other:?}"),
        Ok(page) => panic!("read {} entries", page.entries.len()),
    }
}

/// Every permutation of `items`.
fn permutations<'a>(items: &[&'a str]) -> Vec<Vec<&'a str>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

#[test]
fn members_in_any_order_and_pieces_of_any_size_read_the_same() {
    let list = entries(40);
    let entries_text = entries_member(&list);
    let expected = read(
        &document(&[MERCHANT, BALANCES, &entries_text, CURSOR]),
        usize::MAX,
    )
    .expect("the plain page reads");
    assert_eq!(expected.entries.len(), 40);
    assert_eq!(expected.header.merchant.name, "Acme \"GmbH\"");
    assert_eq!(expected.header.opening_balances[0].amount, 125_000);
    assert_eq!(expected.next_cursor.as_deref(), Some("c2"));
    let members = [MERCHANT, BALANCES, entries_text.as_str(), CURSOR, UNKNOWN];
    for order in permutations(&members) {
        let json = document(&order);
        for piece in [1, 3, 64, 4096, usize::MAX] {
            assert_eq!(
                read(&json, piece).as_ref(),
                Ok(&expected),
                "order {order:?}, pieces of {piece}"
            );
        }
    }
    // nextCursor is optional; null and absent both mean the last page.
    for json in [
        document(&[MERCHANT, BALANCES, &entries_text]),
        document(&[MERCHANT, r#""nextCursor":null"#, BALANCES, &entries_text]),
    ] {
        assert_eq!(read(&json, 9).unwrap().next_cursor, None);
    }
    let empty = read(&document(&[MERCHANT, BALANCES, r#""entries" : [ ]"#]), 2).unwrap();
    assert!(empty.entries.is_empty());
}

#[test]
fn entry_messages_are_the_ndjson_messages() {
    let mut list = entries(3);
    list[1] = list[1].replace("1001", "10.01");
    assert_eq!(
        message(&document(&[MERCHANT, BALANCES, &entries_member(&list)])),
        "entries[1].amount: expected integer, found a decimal number"
    );
    // The same when the entries come first: the header is read, then the entries.
    assert_eq!(
        message(&document(&[&entries_member(&list), MERCHANT, BALANCES])),
        "entries[1].amount: expected integer, found a decimal number"
    );
    // An error in the header wins over one in entries that came before it.
    let bad_zone = MERCHANT.replace("Europe/Berlin", "Mars/Base");
    assert_eq!(
        message(&document(&[&entries_member(&list), &bad_zone, BALANCES])),
        "merchant.timezone: unknown time zone"
    );
    list[1] = r#"{"id":"tx_x" "bookedAt":1}"#.to_owned();
    assert_eq!(
        message(&document(&[MERCHANT, BALANCES, &entries_member(&list)])),
        "entries[1]: invalid JSON (expected `,` or `}` at line 1 column 14)"
    );
    list[1] = "7".to_owned();
    assert_eq!(
        message(&document(&[MERCHANT, BALANCES, &entries_member(&list)])),
        "entries[1]: expected an object, found an integer"
    );
}

#[test]
fn a_broken_document_is_refused_with_where() {
    let list = entries(2);
    let good = entries_member(&list);
    let cases: Vec<(String, &str)> = vec![
        (
            String::new(),
            "invalid JSON (EOF while parsing the document at byte 0)",
        ),
        (
            "  ".to_owned(),
            "invalid JSON (EOF while parsing the document at byte 2)",
        ),
        (
            "[]".to_owned(),
            "document: expected an object, found an array",
        ),
        (
            "\"page\"".to_owned(),
            "document: expected an object, found a string",
        ),
        ("?".to_owned(), "invalid JSON (expected a value at byte 0)"),
        ("{}".to_owned(), "merchant: missing, expected object"),
        (
            format!("{{{MERCHANT},{good}}}"),
            "openingBalances: missing, expected array",
        ),
        (
            format!("{{{MERCHANT},{BALANCES}}}"),
            "entries: missing, expected array",
        ),
        (
            format!("{{{MERCHANT},{BALANCES},{good},{MERCHANT}}}"),
            "merchant: repeated field",
        ),
        (
            format!(r#"{{{MERCHANT},"merch\u0061nt":1}}"#),
            "merchant: repeated field",
        ),
        (
            format!(r#"{{{MERCHANT},{BALANCES},"entries":null}}"#),
            "entries: expected array, found null",
        ),
        (
            format!(r#"{{{MERCHANT},{BALANCES},"entries":{{"a":1}}}}"#),
            "entries: expected array, found an object",
        ),
        (
            r#"{"merchant" 1}"#.to_owned(),
            "invalid JSON (expected `:` at byte 12)",
        ),
        (
            r#"{"a":1,}"#.to_owned(),
            "invalid JSON (expected a member name at byte 7)",
        ),
        (
            r#"{"a":1 "b":2}"#.to_owned(),
            "invalid JSON (expected `,` or `}` after a member at byte 7)",
        ),
        (
            format!(r#"{{{MERCHANT},{BALANCES},"entries":[{},]}}"#, list[0]),
            "invalid JSON (expected an entry after `,` at byte {}]}",
        ),
        (
            format!(
                r#"{{{MERCHANT},{BALANCES},"entries":[{} {}]}}"#,
                list[0], list[1]
            ),
            "invalid JSON (expected `,` or `]` after an entry at byte {}{\"id\"",
        ),
        (
            format!("{{{MERCHANT},{BALANCES},{good}}} x"),
            "invalid JSON (trailing characters at byte {}x",
        ),
        (
            format!(r#"{{{MERCHANT},{BALANCES},"entries":[{},{{"id":"#, list[0]),
            "entries[1]: invalid JSON (EOF while parsing the entry)",
        ),
        (
            format!("{{{MERCHANT},{BALANCES},{good}"),
            "invalid JSON (EOF while parsing the document at byte {}",
        ),
        (
            r#"{"merchant":{"id":"m_1" "name":"A"}}"#.to_owned(),
            "merchant: invalid JSON (expected `,` or `}` at line 1 column 13)",
        ),
        (
            format!(r#"{{{MERCHANT},{BALANCES},{good},"nextCursor":7}}"#),
            "nextCursor: expected string, found an integer",
        ),
    ];
    for (json, expected) in cases {
        // `at byte {}TEXT`: the offset of TEXT's last occurrence (its first character), or
        // of the end of the document when TEXT is empty.
        let expected = match expected.split_once("{}") {
            None => expected.to_owned(),
            Some((head, text)) => {
                let at = if text.is_empty() {
                    json.len()
                } else {
                    json.rfind(text).unwrap()
                };
                format!("{head}{at})")
            }
        };
        assert_eq!(message(&json), expected, "{json}");
    }
}

#[test]
fn buffers_stay_small_whatever_the_page() {
    // 20,000 entries in 64 KiB pieces: the buffer holds a piece and a part of an entry.
    let list = entries(20_000);
    let json = document(&[MERCHANT, BALANCES, &entries_member(&list)]);
    let mut parser = PageParser::new(mid("m_1"));
    let mut reads = PageReads::default();
    let mut validator = EntryValidator::new();
    let mut sink = Count(0);
    let mut largest = 0;
    for piece in json.as_bytes().chunks(64 << 10) {
        assert_eq!(
            reads.drain(&mut parser, &mut validator, &mut sink),
            Ok(Progress::More)
        );
        parser.feed(piece);
        largest = largest.max(parser.buf.len());
    }
    parser.finish();
    assert!(matches!(
        reads.drain(&mut parser, &mut validator, &mut sink),
        Ok(Progress::End { again: false, .. })
    ));
    assert_eq!(sink.0, 20_000);
    assert!(largest < (64 << 10) + 1024, "{largest}");

    // A member the schema does not know is checked and dropped; over the bound, refused.
    let junk = format!(r#""junk":["{}"]"#, "x".repeat(512 << 10));
    let json = document(&[MERCHANT, &junk, BALANCES, &entries_member(&list[..2])]);
    assert_eq!(read(&json, 64 << 10).map(|p| p.entries.len()), Ok(2));
    let junk = format!(r#""junk":["{}"]"#, "x".repeat(MAX_MEMBER_BYTES));
    let json = document(&[MERCHANT, &junk, BALANCES, &entries_member(&list[..2])]);
    assert_eq!(
        read(&json, 64 << 10),
        Err(SourceError::Invalid(format!(
            "a member the schema does not know: longer than {MAX_MEMBER_BYTES} bytes"
        )))
    );
}

#[test]
fn a_member_the_schema_does_not_know_must_still_be_json() {
    let list = entries(1);
    for junk in [
        r#""x":}"#,
        r#""x":,"y":1"#,
        r#""x":[}"#,
        r#""x":{]"#,
        r#""x":tru"#,
        r#""x":1"y""#,
        r#""x":"\q""#,
        "\"x\":\"a\u{1}b\"",
        "\"x\u{1}\":1",
    ] {
        let json = format!("{{{MERCHANT},{junk},{BALANCES},{}}}", entries_member(&list));
        let got = read(&json, 3);
        assert!(
            matches!(&got, Err(SourceError::Invalid(m)) if m.starts_with("invalid JSON (")),
            "{junk}: {got:?}"
        );
    }
    // A long unknown name is refused however the bytes arrive.
    let name = format!(r#""{}":1"#, "n".repeat(1100));
    let json = format!("{{{MERCHANT},{name},{BALANCES},{}}}", entries_member(&list));
    for piece in [7, 1 << 20] {
        assert!(
            matches!(read(&json, piece), Err(SourceError::Invalid(m)) if m.contains("longer than 1024 bytes")),
            "pieces of {piece}"
        );
    }
}

#[test]
fn an_entry_or_a_member_over_the_bound_is_refused() {
    let mut list = entries(2);
    list[1] = list[1].replace("Order", &"x".repeat(MAX_ENTRY_BYTES));
    assert_eq!(
        message(&document(&[MERCHANT, BALANCES, &entries_member(&list)])),
        format!("entries[1]: longer than {MAX_ENTRY_BYTES} bytes")
    );
    let long_name = MERCHANT.replace("Acme", &"A".repeat(MAX_MEMBER_BYTES));
    let json = document(&[&long_name, BALANCES, &entries_member(&list[..1])]);
    assert_eq!(
        read(&json, 4096),
        Err(SourceError::Invalid(format!(
            "merchant: longer than {MAX_MEMBER_BYTES} bytes"
        )))
    );
}

/// Counts entries.
struct Count(u64);

impl Sink for Count {
    fn header(&mut self, _: Header) -> Result<bool, SourceError> {
        Ok(true)
    }
    fn entry(&mut self, _: Entry, _: u64) -> Result<bool, SourceError> {
        self.0 += 1;
        Ok(true)
    }
}

/// Keeps the ids.
#[derive(Default)]
struct Ids(Vec<String>);

impl Sink for Ids {
    fn header(&mut self, _: Header) -> Result<bool, SourceError> {
        Ok(true)
    }
    fn entry(&mut self, entry: Entry, _: u64) -> Result<bool, SourceError> {
        self.0.push(entry.id);
        Ok(true)
    }
}

#[test]
fn a_read_taken_up_again_hands_nothing_over_twice() {
    let list = entries(100);
    let json = document(&[MERCHANT, BALANCES, &entries_member(&list)]);
    let (mut reads, mut validator, mut sink) =
        (PageReads::default(), EntryValidator::new(), Ids::default());
    // The first read breaks off halfway.
    let mut parser = PageParser::new(mid("m_1"));
    parser.feed(&json.as_bytes()[..json.len() / 2]);
    assert_eq!(
        reads.drain(&mut parser, &mut validator, &mut sink),
        Ok(Progress::More)
    );
    let halfway = sink.0.len();
    assert!(halfway > 10 && halfway < 90, "{halfway}");
    // The second starts from the beginning and goes on after what was handed over.
    let mut parser = PageParser::new(mid("m_1"));
    parser.feed(json.as_bytes());
    parser.finish();
    assert_eq!(
        reads.drain(&mut parser, &mut validator, &mut sink),
        Ok(Progress::End {
            next_cursor: None,
            again: false
        })
    );
    let expected: Vec<String> = (0..100).map(|i| format!("tx_{i:06}")).collect();
    assert_eq!(sink.0, expected);

    // A page whose header changed between the two reads is refused.
    let mut parser = PageParser::new(mid("m_1"));
    parser.feed(json.replace("125000", "125001").as_bytes());
    parser.finish();
    assert_eq!(
        reads.drain(&mut parser, &mut validator, &mut sink),
        Err(SourceError::Invalid(
            "merchant: the page changed between two reads of it".into()
        ))
    );
}

#[test]
fn entries_before_the_header_ask_for_a_second_read() {
    let list = entries(5);
    let json = document(&[&entries_member(&list), MERCHANT, BALANCES]);
    let (mut reads, mut validator, mut sink) =
        (PageReads::default(), EntryValidator::new(), Ids::default());
    for (read, again, handed) in [(1, true, 0), (2, false, 5)] {
        let mut parser = PageParser::new(mid("m_1"));
        parser.feed(json.as_bytes());
        parser.finish();
        assert_eq!(
            reads.drain(&mut parser, &mut validator, &mut sink),
            Ok(Progress::End {
                next_cursor: None,
                again
            }),
            "read {read}"
        );
        assert_eq!(sink.0.len(), handed, "read {read}");
    }
}

#[test]
fn a_page_that_lost_an_entry_between_two_reads_is_refused() {
    let list = entries(100);
    let json = document(&[MERCHANT, BALANCES, &entries_member(&list)]);
    let (mut reads, mut validator, mut sink) =
        (PageReads::default(), EntryValidator::new(), Ids::default());
    let mut parser = PageParser::new(mid("m_1"));
    parser.feed(&json.as_bytes()[..json.len() / 2]);
    reads.drain(&mut parser, &mut validator, &mut sink).unwrap();
    let halfway = sink.0.len();
    // The upstream dropped an entry before the break: the same indices now hold later
    // entries, and one would be skipped unseen.
    let mut fewer = list.clone();
    fewer.remove(3);
    let changed = document(&[MERCHANT, BALANCES, &entries_member(&fewer)]);
    let mut parser = PageParser::new(mid("m_1"));
    reads.begin();
    parser.feed(changed.as_bytes());
    parser.finish();
    assert_eq!(
        reads.drain(&mut parser, &mut validator, &mut sink),
        Err(SourceError::Invalid(format!(
            "entries[{}]: the page changed between two reads of it",
            halfway - 1
        )))
    );
}
