//! The reads of one page: entries validated and handed over once the header is known, a
//! second read when the entries came first, and a read taken up again after a break without
//! handing anything over twice.

use super::{Event, PageParser};
use crate::domain::Entry;
use crate::source::SourceError;
use crate::source::validate::{EntryValidator, Header, id_hash};

/// What an adapter does with what a page holds.
pub(in crate::source) trait Sink {
    /// The page's header, validated; once per page, before any of its entries. `false` stops
    /// the reading (only the header was wanted).
    fn header(&mut self, header: Header) -> Result<bool, SourceError>;
    /// The next entry, validated; `index` counts across pages. `false` stops the reading (the
    /// window ended, or nobody waits any more).
    fn entry(&mut self, entry: Entry, index: u64) -> Result<bool, SourceError>;
}

/// How far a read came.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::source) enum Progress {
    /// Everything that arrived is handled: feed the parser more.
    More,
    /// The sink wants no more.
    Stop,
    /// The document ended. `again`: its entries came before its header and were not handed
    /// over; read the page once more.
    End {
        next_cursor: Option<String>,
        again: bool,
    },
}

/// One page, over however many reads it takes. Start every read with a new [`PageParser`].
#[derive(Debug, Default)]
pub(in crate::source) struct PageReads {
    /// The page's header, from its first read.
    header: Option<Header>,
    /// Entries of this page handed over so far.
    delivered: u64,
    /// Entries met before the header in this read.
    skipped: bool,
    /// The id hash of the last entry handed over: a later read of the page must find the
    /// same entry there, or the page changed in between and an entry could be lost unseen.
    last_id: u64,
}

impl PageReads {
    /// A new read of the page begins (with a new parser).
    pub(in crate::source) fn begin(&mut self) {
        self.skipped = false;
    }

    /// Handles what `parser` has ready. An error is the stream's earliest one (an id still
    /// pending in `validator` may turn out repeated first).
    pub(in crate::source) fn drain(
        &mut self,
        parser: &mut PageParser,
        validator: &mut EntryValidator,
        sink: &mut impl Sink,
    ) -> Result<Progress, SourceError> {
        self.handle(parser, validator, sink)
            .map_err(|e| validator.first_error(e))
    }

    fn handle(
        &mut self,
        parser: &mut PageParser,
        validator: &mut EntryValidator,
        sink: &mut impl Sink,
    ) -> Result<Progress, SourceError> {
        loop {
            match parser.next()? {
                None => return Ok(Progress::More),
                Some(Event::Header(header)) => match &self.header {
                    Some(known) if *known != header => {
                        return Err(SourceError::Invalid(
                            "merchant: the page changed between two reads of it".to_owned(),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.header = Some(header.clone());
                        if !sink.header(header)? {
                            return Ok(Progress::Stop);
                        }
                    }
                },
                Some(Event::Entry(element)) => {
                    let index = element.index();
                    if self.delivered > 0 && index + 1 == self.delivered {
                        // The last entry an earlier read handed over.
                        let Some(id) = element.skip_with_id()? else {
                            return Ok(Progress::More);
                        };
                        if id != self.last_id {
                            return Err(SourceError::Invalid(format!(
                                "entries[{}]: the page changed between two reads of it",
                                validator.count().saturating_sub(1)
                            )));
                        }
                        continue;
                    }
                    // Handed over by an earlier read, or met before the header: crossed.
                    let cross = index < self.delivered || self.header.is_none();
                    if cross {
                        if self.header.is_none() {
                            self.skipped = true;
                        }
                        if !element.skip()? {
                            return Ok(Progress::More);
                        }
                        continue;
                    }
                    let at = validator.count();
                    let Some(entry) = element.read(validator)? else {
                        return Ok(Progress::More);
                    };
                    self.delivered += 1;
                    self.last_id = id_hash(&entry.id);
                    if !sink.entry(entry, at)? {
                        return Ok(Progress::Stop);
                    }
                }
                Some(Event::End { next_cursor }) => {
                    return Ok(Progress::End {
                        next_cursor,
                        again: std::mem::take(&mut self.skipped),
                    });
                }
            }
        }
    }
}
