//! One page of the source schema (`{"merchant":…,"openingBalances":…,"entries":[…],
//! "nextCursor":…}`), read as its bytes arrive: a `.json` file or an HTTP source's answer is
//! never held whole, whatever its size.
//!
//! [`PageParser`] walks the document's top level itself and hands each element of `entries`
//! over as its own bytes, which [`EntryValidator::next_from_json`] parses exactly as it parses
//! an NDJSON line, so a page and an NDJSON file give the same messages
//! (`entries[17].amount: …`). The other members are small: each is kept until it ends, then
//! parsed and checked on its own (`merchant.timezone: …`; a member the schema does not know
//! is checked to be JSON, then dropped). Members may come in any order. Memory is bounded by
//! the largest single member or entry ([`MAX_ENTRY_BYTES`], [`MAX_MEMBER_BYTES`]), not by
//! the page.
//!
//! [`PageReads`] is what the adapters drive: it validates the entries and hands them to a
//! [`Sink`] once the header is known. A page whose `entries` come before `merchant` or
//! `openingBalances` cannot hand anything over on the first read (the opening balances come
//! first for the consumer), so it is read twice: once for the header (the entries only
//! crossed, not parsed), then for the entries. That costs a second read of the bytes (a file
//! read again, an HTTP page fetched again), never memory. A read that broke off (an HTTP
//! answer cut short) is taken up again the same way, skipping what was already handed over.
//!
//! [`EntryValidator::next_from_json`]: crate::source::validate::EntryValidator::next_from_json

mod reads;
mod scan;
#[cfg(test)]
mod tests;

use std::io::{self, Read};

use self::scan::ValueEnd;
use super::SourceError;
use super::validate::{
    EntryValidator, Header, Streamed, entries_not_an_array, id_hash, parse_merchant,
    parse_next_cursor, parse_opening_balances,
};
use crate::domain::{Balance, Merchant, MerchantId};

pub(super) use self::reads::{PageReads, Progress, Sink};

/// Longest element of `entries` accepted, in bytes (as an NDJSON line).
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Longest `merchant`, `openingBalances` or `nextCursor` value accepted, in bytes.
pub const MAX_MEMBER_BYTES: usize = 1 << 20;
/// Longest member name read, in bytes (an unknown member's value is skipped, never kept).
const MAX_NAME_BYTES: usize = 1024;
/// Bytes read from a file at a time.
const READ_CHUNK: usize = 256 << 10;

/// What the parser found next.
#[derive(Debug)]
pub(super) enum Event<'a> {
    /// The merchant and its opening balances, validated, once both have been read.
    Header(Header),
    /// One element of `entries`: read it or skip it ([`Element`]).
    Entry(Element<'a>),
    /// The document ended, with every member checked: the `nextCursor`.
    End { next_cursor: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Merchant,
    OpeningBalances,
    Entries,
    NextCursor,
    Unknown,
}

impl Member {
    fn named(name: &str) -> Self {
        match name {
            "merchant" => Self::Merchant,
            "openingBalances" => Self::OpeningBalances,
            "entries" => Self::Entries,
            "nextCursor" => Self::NextCursor,
            _ => Self::Unknown,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Merchant => "merchant",
            Self::OpeningBalances => "openingBalances",
            Self::Entries => "entries",
            Self::NextCursor => "nextCursor",
            Self::Unknown => "a member the schema does not know",
        }
    }

    /// Which bit of [`PageParser::met`] records it.
    fn bit(self) -> u8 {
        match self {
            Self::Merchant => 1,
            Self::OpeningBalances => 2,
            Self::Entries => 4,
            Self::NextCursor => 8,
            Self::Unknown => 0,
        }
    }
}

/// Where the parser is in the document.
#[derive(Debug)]
enum State {
    /// Before the document's `{`.
    Start,
    /// Before a member name (`first`: or the `}` of an empty document).
    Name {
        first: bool,
    },
    Colon(Member),
    Value(Member),
    /// Inside a member's value, which starts at `mark`.
    InValue(Member, ValueEnd),
    /// After `entries`' `[`: an element or `]`.
    EntriesOpen,
    /// After a `,` in `entries`: an element.
    Element,
    /// Inside an element, which starts at `mark`.
    InElement(ValueEnd),
    AfterElement,
    AfterMember,
    /// After the document's `}`: whitespace only.
    Trailing,
    Ended,
}

/// What one step of the parser came to.
enum Step {
    Continue,
    NeedMore,
    Header(Header),
    Element,
    End(Option<String>),
}

/// Reads one page, pushed to it in pieces ([`PageParser::feed`], [`PageParser::fill`]) and
/// pulled from as [`Event`]s ([`PageParser::next`]).
pub(super) struct PageParser {
    expected: MerchantId,
    buf: Vec<u8>,
    /// The next byte to read in `buf`.
    pos: usize,
    /// Bytes let go from the front of `buf`: `dropped + pos` is the offset in the document.
    dropped: u64,
    /// Start of the value or element being read, kept in `buf` until it ends.
    mark: usize,
    eof: bool,
    state: State,
    /// Known members met, as [`Member::bit`]s: a second one is refused.
    met: u8,
    merchant: Option<Merchant>,
    opening_balances: Option<Vec<Balance>>,
    next_cursor: Option<String>,
    /// Elements of `entries` so far.
    entries: u64,
}

impl PageParser {
    /// A parser of a page that must be `expected`'s.
    pub(super) fn new(expected: MerchantId) -> Self {
        Self {
            expected,
            buf: Vec::new(),
            pos: 0,
            dropped: 0,
            mark: 0,
            eof: false,
            state: State::Start,
            met: 0,
            merchant: None,
            opening_balances: None,
            next_cursor: None,
            entries: 0,
        }
    }

    /// The next bytes of the document.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Reads the next bytes of the document from `reader`; at its end, [`Self::finish`].
    pub(super) fn fill(&mut self, reader: &mut impl Read) -> io::Result<()> {
        self.compact();
        self.buf.reserve(READ_CHUNK);
        // Into the spare capacity, not zeroed first; `take` stops after one chunk.
        let read = reader
            .by_ref()
            .take(READ_CHUNK as u64)
            .read_to_end(&mut self.buf)?;
        if read == 0 {
            self.finish();
        }
        Ok(())
    }

    /// The document has no more bytes.
    pub(super) fn finish(&mut self) {
        self.eof = true;
    }

    /// Lets go of the bytes already read (a value being read is kept from its start).
    fn compact(&mut self) {
        let keep = match self.state {
            State::InValue(..) | State::InElement(_) => self.mark,
            _ => self.pos,
        };
        if keep == 0 {
            return;
        }
        self.buf.drain(..keep);
        self.pos -= keep;
        self.mark = self.mark.saturating_sub(keep);
        self.dropped += keep as u64;
    }

    /// The next event, or `None` when more bytes are needed. After an error or
    /// [`Event::End`] the parser has nothing more to say.
    pub(super) fn next(&mut self) -> Result<Option<Event<'_>>, SourceError> {
        loop {
            match self.step()? {
                Step::Continue => {}
                Step::NeedMore => return Ok(None),
                Step::Header(header) => return Ok(Some(Event::Header(header))),
                Step::Element => return Ok(Some(Event::Entry(Element { parser: self }))),
                Step::End(next_cursor) => return Ok(Some(Event::End { next_cursor })),
            }
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.buf.get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn step(&mut self) -> Result<Step, SourceError> {
        let state = std::mem::replace(&mut self.state, State::Ended);
        let (next, step) = match state {
            State::Start => match self.peek() {
                None => (State::Start, self.more()?),
                Some(b'{') => {
                    self.pos += 1;
                    (State::Name { first: true }, Step::Continue)
                }
                Some(b) => return Err(self.not_an_object(b)),
            },
            State::Name { first } => match self.peek() {
                None => (State::Name { first }, self.more()?),
                Some(b'}') if first => {
                    self.pos += 1;
                    (State::Trailing, Step::Continue)
                }
                Some(b'"') => match self.name()? {
                    None => (State::Name { first }, self.more()?),
                    Some(member) => (State::Colon(member), Step::Continue),
                },
                Some(_) => return Err(self.syntax("expected a member name")),
            },
            State::Colon(member) => match self.peek() {
                None => (State::Colon(member), self.more()?),
                Some(b':') => {
                    self.pos += 1;
                    (State::Value(member), Step::Continue)
                }
                Some(_) => return Err(self.syntax("expected `:`")),
            },
            State::Value(member) => match self.peek() {
                None => (State::Value(member), self.more()?),
                Some(b'[') if member == Member::Entries => {
                    self.pos += 1;
                    (State::EntriesOpen, Step::Continue)
                }
                Some(_) => {
                    self.mark = self.pos;
                    (State::InValue(member, ValueEnd::default()), Step::Continue)
                }
            },
            State::InValue(member, mut scan) => match scan.find(&self.buf[self.mark..]) {
                Some(len) if len > MAX_MEMBER_BYTES => {
                    return Err(member_too_long(member));
                }
                Some(len) => {
                    self.pos = self.mark + len;
                    let step = self.member(member, self.mark, self.pos)?;
                    (State::AfterMember, step)
                }
                None => {
                    if self.buf.len() - self.mark > MAX_MEMBER_BYTES {
                        return Err(member_too_long(member));
                    }
                    (State::InValue(member, scan), self.more()?)
                }
            },
            State::EntriesOpen => match self.peek() {
                None => (State::EntriesOpen, self.more()?),
                Some(b']') => {
                    self.pos += 1;
                    (State::AfterMember, Step::Continue)
                }
                Some(_) => {
                    self.mark = self.pos;
                    (State::InElement(ValueEnd::default()), Step::Continue)
                }
            },
            State::Element => match self.peek() {
                None => (State::Element, self.more()?),
                Some(b']' | b',') => return Err(self.syntax("expected an entry after `,`")),
                Some(_) => {
                    self.mark = self.pos;
                    (State::InElement(ValueEnd::default()), Step::Continue)
                }
            },
            // Handed out until it is read or skipped ([`Element`]).
            State::InElement(scan) => (State::InElement(scan), Step::Element),
            State::AfterElement => match self.peek() {
                None => (State::AfterElement, self.more()?),
                Some(b',') => {
                    self.pos += 1;
                    (State::Element, Step::Continue)
                }
                Some(b']') => {
                    self.pos += 1;
                    (State::AfterMember, Step::Continue)
                }
                Some(_) => return Err(self.syntax("expected `,` or `]` after an entry")),
            },
            State::AfterMember => match self.peek() {
                None => (State::AfterMember, self.more()?),
                Some(b',') => {
                    self.pos += 1;
                    (State::Name { first: false }, Step::Continue)
                }
                Some(b'}') => {
                    self.pos += 1;
                    (State::Trailing, Step::Continue)
                }
                Some(_) => return Err(self.syntax("expected `,` or `}` after a member")),
            },
            State::Trailing => match self.peek() {
                Some(_) => return Err(self.syntax("trailing characters")),
                None if self.eof => (State::Ended, self.end()?),
                None => (State::Trailing, Step::NeedMore),
            },
            State::Ended => (State::Ended, Step::NeedMore),
        };
        self.state = next;
        Ok(step)
    }

    /// `NeedMore`, or the error of a document that ends here.
    fn more(&self) -> Result<Step, SourceError> {
        if self.eof {
            return Err(self.syntax("EOF while parsing the document"));
        }
        Ok(Step::NeedMore)
    }

    /// A member name at `pos` (its `"`): `None` when it has not fully arrived.
    fn name(&mut self) -> Result<Option<Member>, SourceError> {
        let mut scan = ValueEnd::default();
        let rest = &self.buf[self.pos..];
        let Some(len) = scan.find(rest) else {
            if rest.len() > MAX_NAME_BYTES {
                return Err(self.syntax("a member name longer than 1024 bytes"));
            }
            return Ok(None);
        };
        if len > MAX_NAME_BYTES {
            return Err(self.syntax("a member name longer than 1024 bytes"));
        }
        let member = match serde_json::from_slice::<std::borrow::Cow<'_, str>>(&rest[..len]) {
            Ok(name) => Member::named(&name),
            Err(_) => return Err(self.syntax("an unreadable member name")),
        };
        if member != Member::Unknown {
            if self.met & member.bit() != 0 {
                return Err(SourceError::Invalid(format!(
                    "{}: repeated field",
                    member.name()
                )));
            }
            self.met |= member.bit();
        }
        self.pos += len;
        Ok(Some(member))
    }

    /// A member's whole value, `buf[from..to]`, parsed and checked.
    fn member(&mut self, member: Member, from: usize, to: usize) -> Result<Step, SourceError> {
        let json = &self.buf[from..to];
        match member {
            Member::Merchant => self.merchant = Some(parse_merchant(json, &self.expected)?),
            Member::OpeningBalances => {
                self.opening_balances = Some(parse_opening_balances(json)?);
            }
            Member::NextCursor => self.next_cursor = parse_next_cursor(json)?,
            Member::Entries => return Err(entries_not_an_array(json)),
            // Not used, but it must be JSON: parsed to nothing (serde refuses what the
            // scan that found its end lets through: bad literals, mismatched brackets, …).
            Member::Unknown => {
                return match serde_json::from_slice::<serde::de::IgnoredAny>(json) {
                    Ok(_) => Ok(Step::Continue),
                    Err(e) => Err(self.syntax(&format!("an unknown member's value: {e}"))),
                };
            }
        }
        if !matches!(member, Member::Merchant | Member::OpeningBalances) {
            return Ok(Step::Continue);
        }
        Ok(match (&self.merchant, &self.opening_balances) {
            (Some(merchant), Some(opening_balances)) => Step::Header(Header {
                merchant: merchant.clone(),
                opening_balances: opening_balances.clone(),
            }),
            _ => Step::Continue,
        })
    }

    /// The document ended well: every required member must have been there.
    fn end(&mut self) -> Result<Step, SourceError> {
        for member in [Member::Merchant, Member::OpeningBalances, Member::Entries] {
            if self.met & member.bit() == 0 {
                let expected = if member == Member::Merchant {
                    "object"
                } else {
                    "array"
                };
                return Err(SourceError::Invalid(format!(
                    "{}: missing, expected {expected}",
                    member.name()
                )));
            }
        }
        Ok(Step::End(self.next_cursor.take()))
    }

    /// A syntax error at the current position of the document.
    fn syntax(&self, what: &str) -> SourceError {
        SourceError::Invalid(format!(
            "invalid JSON ({what} at byte {})",
            self.dropped + self.pos as u64
        ))
    }
}

/// The element of `entries` the parser stands at. Until it is read or skipped,
/// [`PageParser::next`] hands it out again (after more bytes, when it had not fully arrived).
pub(super) struct Element<'p> {
    parser: &'p mut PageParser,
}

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element")
            .field("index", &self.index())
            .finish()
    }
}

impl Element<'_> {
    /// Its index in the page.
    pub(super) fn index(&self) -> u64 {
        self.parser.entries
    }

    /// Reads it as the next entry of `validator`'s stream: `None` when it has not fully
    /// arrived.
    pub(super) fn read(
        self,
        validator: &mut EntryValidator,
    ) -> Result<Option<crate::domain::Entry>, SourceError> {
        let p = self.parser;
        // Its length when known: it did not fully arrive before, and its end was looked for
        // since (each byte scanned once); then it is parsed once, whole.
        let known = if p.element_scan_begun() {
            match p.element_end()? {
                Some(len) => Some(len),
                None => return Ok(None),
            }
        } else {
            None
        };
        // Usually it is all there: parsed where it lies, its end found by the parse.
        let text = match known {
            Some(len) => &p.buf[p.mark..p.mark + len],
            None => &p.buf[p.mark..],
        };
        match validator.next_from_stream(text)? {
            Streamed::Entry(entry, len) => {
                p.element_read(len)?;
                Ok(Some(entry))
            }
            // Not parsed again until its end has arrived: a long entry arriving in small
            // pieces is not re-parsed once a piece.
            Streamed::Incomplete | Streamed::Unreadable => {
                let len = match known {
                    Some(len) => len,
                    None => match p.element_end()? {
                        Some(len) => len,
                        None => return Ok(None),
                    },
                };
                Err(p.explain(validator, len))
            }
        }
    }

    /// Crosses it without reading it: `false` when it has not fully arrived.
    pub(super) fn skip(self) -> Result<bool, SourceError> {
        self.skip_with_id().map(|crossed| crossed.is_some())
    }

    /// Crosses it without validating it, telling the hash of its `id` (0 when it has none):
    /// `None` when it has not fully arrived.
    pub(super) fn skip_with_id(self) -> Result<Option<u64>, SourceError> {
        #[derive(serde::Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow)]
            id: std::borrow::Cow<'a, str>,
        }
        let p = self.parser;
        let Some(len) = p.element_end()? else {
            return Ok(None);
        };
        let json = &p.buf[p.mark..p.mark + len];
        let id = serde_json::from_slice::<IdOnly<'_>>(json)
            .map(|e| id_hash(&e.id))
            .unwrap_or(0);
        p.element_read(len)?;
        Ok(Some(id))
    }
}

impl PageParser {
    /// Whether the current element's end is being looked for (it did not arrive whole).
    fn element_scan_begun(&self) -> bool {
        matches!(&self.state, State::InElement(scan) if scan.begun())
    }

    /// Why the current element, `len` bytes long, is not a valid entry: the slow path's
    /// message, from exactly its bytes.
    fn explain(&self, validator: &mut EntryValidator, len: usize) -> SourceError {
        let json = &self.buf[self.mark..self.mark + len];
        match validator.next_from_json(json) {
            Err(e) => e,
            // Unreachable while both paths agree; still a refusal.
            Ok(_) => self.element_error("unreadable"),
        }
    }

    /// The current element's length, once it has fully arrived.
    fn element_end(&mut self) -> Result<Option<usize>, SourceError> {
        // An Element is handed out only in State::InElement; anything else is a reader
        // that lost its place, told as such rather than a panic.
        let State::InElement(scan) = &mut self.state else {
            return Err(SourceError::Unavailable(
                "the page reader lost its place in entries".to_owned(),
            ));
        };
        match scan.find(&self.buf[self.mark..]) {
            Some(len) => Ok(Some(len)),
            None => self.element_incomplete().map(|()| None),
        }
    }

    /// The current element has not fully arrived: fine unless the page ended or it is
    /// already too long.
    fn element_incomplete(&self) -> Result<(), SourceError> {
        if self.eof {
            return Err(self.element_error("invalid JSON (EOF while parsing the entry)"));
        }
        if self.buf.len() - self.mark > MAX_ENTRY_BYTES {
            return Err(self.element_error(&format!("longer than {MAX_ENTRY_BYTES} bytes")));
        }
        Ok(())
    }

    /// The current element was `len` bytes long: on to what follows it.
    fn element_read(&mut self, len: usize) -> Result<(), SourceError> {
        if len > MAX_ENTRY_BYTES {
            return Err(self.element_error(&format!("longer than {MAX_ENTRY_BYTES} bytes")));
        }
        self.pos = self.mark + len;
        self.entries += 1;
        self.state = State::AfterElement;
        Ok(())
    }

    fn element_error(&self, problem: &str) -> SourceError {
        SourceError::Invalid(format!("entries[{}]: {problem}", self.entries))
    }
}

fn member_too_long(member: Member) -> SourceError {
    SourceError::Invalid(format!(
        "{}: longer than {MAX_MEMBER_BYTES} bytes",
        member.name()
    ))
}

impl PageParser {
    /// The document is not an object: what it is instead, by its first byte.
    fn not_an_object(&self, first: u8) -> SourceError {
        let found = match first {
            b'[' => "an array",
            b'"' => "a string",
            b'-' | b'0'..=b'9' => "a number",
            b't' | b'f' => "a boolean",
            b'n' => "null",
            _ => return self.syntax("expected a value"),
        };
        SourceError::Invalid(format!("document: expected an object, found {found}"))
    }
}

/// A whole page read at once, in pieces of `piece` bytes, for tests.
#[cfg(test)]
pub(crate) fn read_whole(
    json: &[u8],
    expected: &MerchantId,
    validator: &mut EntryValidator,
    piece: usize,
) -> Result<WholePage, SourceError> {
    struct Collect(Option<Header>, Vec<crate::domain::Entry>);
    impl Sink for Collect {
        fn header(&mut self, header: Header) -> Result<bool, SourceError> {
            self.0 = Some(header);
            Ok(true)
        }
        fn entry(&mut self, entry: crate::domain::Entry, _: u64) -> Result<bool, SourceError> {
            self.1.push(entry);
            Ok(true)
        }
    }
    let mut sink = Collect(None, Vec::new());
    let mut reads = PageReads::default();
    let mut reads_done = 0;
    loop {
        reads_done += 1;
        assert!(reads_done <= 2, "a page is read at most twice");
        let mut parser = PageParser::new(expected.clone());
        let mut rest = json;
        let next_cursor = loop {
            match reads.drain(&mut parser, validator, &mut sink)? {
                Progress::More if rest.is_empty() => parser.finish(),
                Progress::More => {
                    let (now, later) = rest.split_at(piece.min(rest.len()));
                    parser.feed(now);
                    rest = later;
                }
                Progress::Stop => unreachable!("the sink never stops"),
                Progress::End { next_cursor, again } => break (!again).then_some(next_cursor),
            }
        };
        if let Some(next_cursor) = next_cursor {
            validator.finish()?;
            return Ok(WholePage {
                header: sink.0.expect("a page that ends has a header"),
                entries: sink.1,
                next_cursor,
            });
        }
    }
}

/// What [`read_whole`] read.
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WholePage {
    pub header: Header,
    pub entries: Vec<crate::domain::Entry>,
    pub next_cursor: Option<String>,
}
