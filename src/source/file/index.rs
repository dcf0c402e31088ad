//! Checkpoints into a merchant's NDJSON file, so that a window late in a long file is read
//! from a little before it rather than from the first entry.
//!
//! A day's statement cut from a year of entries used to parse the whole year up to the day,
//! only to add most entries to the opening balances: 49 of every 50 lines read were before
//! the window (BENCHMARKS.md, issue 16). Once a file has been read through and found valid
//! from end to end, this index keeps, every [`stride`] entries, where the next line starts,
//! the balances so far and the last entry's order key. A window then starts at the last
//! checkpoint before it, with a validator resumed from that checkpoint, and reads on as
//! before: the entries it reads are still validated field by field and in order, and a
//! repeated id anywhere in the file was already ruled out by the full read.
//!
//! An index is only used for the very file it was made from: the open file's device,
//! inode, length, and modification and change times must all match, so a file rewritten,
//! replaced or appended to is read from its start again (and indexed anew). Files under
//! [`MIN_BYTES`] are not indexed (reading them is as fast as seeking), and at most
//! [`MAX_FILES`] indexes are kept, the least recently used going first: memory stays
//! bounded (about [`MAX_CHECKPOINTS`] small records a file) however many merchants there are.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::domain::{Balance, Currency, MerchantId};
use crate::source::SourceError;
use crate::source::validate::EntryValidator;

/// Files smaller than this are read from their start: about 300 entries.
pub(super) const MIN_BYTES: u64 = 64 * 1024;
/// A window read that folded at least this many entries before it builds the index: below
/// that, seeking would save less than the second pass over the file costs.
pub(super) const WORTH_INDEXING: u64 = 2 * MIN_STRIDE;
/// Indexes kept at most.
const MAX_FILES: usize = 1024;
/// Checkpoints a file gets at most (its stride grows with the file instead).
const MAX_CHECKPOINTS: u64 = 256;
/// Entries between two checkpoints, at least.
const MIN_STRIDE: u64 = 512;

/// Entries between checkpoints for a file of about `entries` entries.
fn stride(entries: u64) -> u64 {
    entries.div_ceil(MAX_CHECKPOINTS).max(MIN_STRIDE)
}

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileKey {
    /// The key of the open `file`.
    pub(super) fn of(file: &File) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// Where a read may start: entry `index`, whose line starts at byte `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checkpoint {
    /// Byte offset of entry `index`'s line.
    pub(super) offset: u64,
    /// The entry's index in the file.
    pub(super) index: u64,
    /// When the entry before it was booked, and its id.
    pub(super) last_at: DateTime<Utc>,
    pub(super) last_id: String,
    /// The opening balances plus every entry before it.
    pub(super) balances: Vec<Balance>,
}

#[derive(Debug)]
enum Slot {
    /// Being built for this version (by one reader: the others read from the start).
    Building(FileKey),
    /// Read through and found invalid (or unreadable): this version is not tried again.
    Failed(FileKey),
    /// Built: the checkpoints of this version, in file order.
    Ready {
        key: FileKey,
        checkpoints: Vec<Checkpoint>,
        used: u64,
    },
}

/// The indexes of one source directory's NDJSON files.
#[derive(Debug, Default)]
pub(super) struct Indexes {
    slots: Mutex<(HashMap<PathBuf, Slot>, u64)>,
}

impl Indexes {
    /// The last checkpoint of `path`'s version `key` whose entries before it were all booked
    /// before `from`; `None` when the file is not indexed (then read from the start).
    pub(super) fn start_before(
        &self,
        path: &Path,
        key: &FileKey,
        from: DateTime<Utc>,
    ) -> Option<Checkpoint> {
        let mut guard = self.slots.lock().ok()?;
        let (slots, clock) = &mut *guard;
        *clock += 1;
        match slots.get_mut(path)? {
            Slot::Ready {
                key: k,
                checkpoints,
                used,
            } if k == key => {
                *used = *clock;
                let after = checkpoints.partition_point(|c| c.last_at < from);
                after.checked_sub(1).map(|i| checkpoints[i].clone())
            }
            _ => None,
        }
    }

    /// Whether `path`'s version `key` should be indexed now; `true` makes the caller the one
    /// that builds it (and that must call [`Self::finish_build`]).
    pub(super) fn claim_build(&self, path: &Path, key: &FileKey) -> bool {
        if key.len < MIN_BYTES {
            return false;
        }
        let Ok(mut guard) = self.slots.lock() else {
            return false;
        };
        let (slots, _) = &mut *guard;
        match slots.get(path) {
            Some(Slot::Building(k) | Slot::Failed(k) | Slot::Ready { key: k, .. }) if k == key => {
                false
            }
            _ => {
                slots.insert(path.to_owned(), Slot::Building(*key));
                true
            }
        }
    }

    /// Stores what the build of `path`'s version `key` found: its checkpoints, or nothing
    /// (the file is invalid or could not be read: it is read from its start, where the
    /// error is reported as before, and not read through again while it is unchanged).
    pub(super) fn finish_build(&self, path: &Path, key: FileKey, built: Option<Vec<Checkpoint>>) {
        let Ok(mut guard) = self.slots.lock() else {
            return;
        };
        let (slots, clock) = &mut *guard;
        match built {
            Some(checkpoints) => {
                *clock += 1;
                slots.insert(
                    path.to_owned(),
                    Slot::Ready {
                        key,
                        checkpoints,
                        used: *clock,
                    },
                );
                while slots.len() > MAX_FILES {
                    let oldest = slots
                        .iter()
                        .filter_map(|(p, s)| match s {
                            Slot::Ready { used, .. } => Some((*used, p)),
                            // A failed version weighs nothing to keep, but goes first.
                            Slot::Failed(_) => Some((0, p)),
                            Slot::Building(_) => None,
                        })
                        .min()
                        .map(|(_, p)| p.clone());
                    match oldest {
                        Some(p) => slots.remove(&p),
                        None => break,
                    };
                }
            }
            None => {
                // Remembered, so that each window of a file that is bad past it does not read
                // the whole file again; a new version of the file is tried afresh.
                if matches!(slots.get(path), Some(Slot::Building(k)) if *k == key) {
                    slots.insert(path.to_owned(), Slot::Failed(key));
                }
            }
        }
    }

    /// How many files are indexed (tests).
    #[cfg(test)]
    pub(super) fn ready(&self) -> usize {
        self.slots.lock().map_or(0, |g| {
            g.0.values()
                .filter(|s| matches!(s, Slot::Ready { .. }))
                .count()
        })
    }
}

/// Adds `amount` to `currency`'s balance in `balances` (a new currency is appended, as a
/// new balance starting at zero); entry `index` names the overflow.
pub(super) fn fold_into(
    balances: &mut Vec<Balance>,
    currency: Currency,
    amount: i64,
    index: u64,
) -> Result<(), SourceError> {
    let balance = match balances.iter().position(|b| b.currency == currency) {
        Some(i) => &mut balances[i],
        None => {
            balances.push(Balance {
                currency,
                amount: 0,
            });
            let last = balances.len() - 1;
            &mut balances[last]
        }
    };
    balance.amount = balance.amount.checked_add(amount).ok_or_else(|| {
        SourceError::Invalid(format!(
            "entries[{index}].amount: the {currency} balance overflows"
        ))
    })?;
    Ok(())
}

/// Reads all of `path` (version `key`) and returns its checkpoints if every line is valid,
/// as a read to its end would find it; `None` otherwise.
pub(super) fn build(path: &Path, id: &MerchantId, key: &FileKey) -> Option<Vec<Checkpoint>> {
    let (header, mut lines) = super::read_ndjson_header(path, id).ok()?;
    if FileKey::of(lines.reader.get_ref()).ok()? != *key {
        return None;
    }
    // About 200 bytes a line: the stride is fixed up front from the length.
    let stride = stride(key.len / 200);
    let mut validator = EntryValidator::new();
    let mut balances = header.opening_balances;
    let mut checkpoints = Vec::new();
    loop {
        let index = validator.count();
        let line = lines.next(path, String::new).ok()?;
        let Some(line) = line else { break };
        validator
            .next_from_json_with(line, |checked| {
                fold_into(&mut balances, checked.currency, checked.amount(), index)
            })
            .ok()?
            .ok()?;
        let count = validator.count();
        if count.is_multiple_of(stride) {
            let (last_at, last_id) = validator.last()?;
            checkpoints.push(Checkpoint {
                offset: lines.position(),
                index: count,
                last_at,
                last_id: last_id.to_owned(),
                balances: balances.clone(),
            });
        }
    }
    validator.finish().ok()?;
    // The file must not have changed while it was read.
    (FileKey::of(lines.reader.get_ref()).ok()? == *key).then_some(checkpoints)
}
