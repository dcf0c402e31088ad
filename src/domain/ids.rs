//! Ledger ids: 63-bit Snowflakes (41 bits of ms since 2024-01-01T00:00:00Z, 10 bits node,
//! 12 bits sequence), monotonic per generator even when the wall clock steps back.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::InvalidInput;

/// Milliseconds of 2024-01-01T00:00:00Z since the Unix epoch: the Snowflake epoch.
pub const EPOCH_MS: i64 = 1_704_067_200_000;

/// Highest node id that fits the 10 node bits.
pub const MAX_NODE_ID: u16 = 1023;

const SEQUENCE_BITS: u32 = 12;
const NODE_BITS: u32 = 10;
const SEQUENCE_MASK: i64 = (1 << SEQUENCE_BITS) - 1;
const NODE_MASK: i64 = (1 << NODE_BITS) - 1;
const TIMESTAMP_SHIFT: u32 = SEQUENCE_BITS + NODE_BITS;
/// Last millisecond the 41 timestamp bits hold (year 2093); a later clock is pinned to it so
/// a bad host clock cannot push the timestamp into the sign bit.
const MAX_TIMESTAMP: i64 = (1 << 41) - 1;

/// A ledger id. Always a decimal string in JSON (JavaScript cannot hold 63-bit integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LedgerId(i64);

impl LedgerId {
    /// Wraps a stored id.
    pub fn from_i64(raw: i64) -> Self {
        Self(raw)
    }
    /// The id as stored.
    pub fn as_i64(self) -> i64 {
        self.0
    }
    /// The node that generated the id (0–1023).
    pub fn node_id(self) -> u16 {
        // Masked to 10 bits, so the cast cannot truncate.
        ((self.0 >> SEQUENCE_BITS) & NODE_MASK) as u16
    }
    /// The id's millisecond as Unix ms. For ids issued after a clock step back this is the
    /// generator's logical clock, which may be ahead of the wall clock of that moment.
    pub fn timestamp_ms(self) -> i64 {
        (self.0 >> TIMESTAMP_SHIFT) + EPOCH_MS
    }
    /// The per-millisecond sequence number (0–4095).
    pub fn sequence(self) -> u16 {
        (self.0 & SEQUENCE_MASK) as u16
    }
}

impl fmt::Display for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for LedgerId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<i64>() {
            Ok(v) if v > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Self(v)),
            _ => Err(InvalidInput::new(
                "id",
                "must be a ledger id (a positive decimal integer)",
            )),
        }
    }
}

impl TryFrom<String> for LedgerId {
    type Error = InvalidInput;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<LedgerId> for String {
    fn from(value: LedgerId) -> Self {
        value.to_string()
    }
}

/// Returns the current time as Unix milliseconds.
pub type Clock = Box<dyn Fn() -> i64 + Send + Sync>;

/// Generates Snowflake ids for one node.
pub struct Snowflake {
    node_id: u16,
    clock: Clock,
    state: Mutex<State>,
}

/// The last (ms since [`EPOCH_MS`], sequence) handed out; a logical clock that never goes back.
struct State {
    last_ms: i64,
    sequence: i64,
}

impl Snowflake {
    /// A generator for `node_id` (0–1023) reading the system clock.
    pub fn new(node_id: u16) -> Result<Self, InvalidInput> {
        Self::with_clock(node_id, Box::new(system_clock_ms))
    }

    /// A generator for `node_id` (0–1023) reading `clock` (Unix ms); tests use it to move time.
    pub fn with_clock(node_id: u16, clock: Clock) -> Result<Self, InvalidInput> {
        if node_id > MAX_NODE_ID {
            return Err(InvalidInput::new(
                "APP_ENV_NODE_ID",
                format!("must be a node id between 0 and {MAX_NODE_ID}, got {node_id}"),
            ));
        }
        Ok(Self {
            node_id,
            clock,
            // -1 so that even a first call at exactly EPOCH_MS counts as a new millisecond.
            state: Mutex::new(State {
                last_ms: -1,
                sequence: 0,
            }),
        })
    }

    /// The node id this generator stamps into its ids.
    pub fn node_id(&self) -> u16 {
        self.node_id
    }

    /// The next id: strictly greater than every id this generator returned before.
    pub fn next_id(&self) -> LedgerId {
        // Read the clock outside the lock: a slow clock must not serialise callers longer
        // than needed, and the logical clock below makes the order of reads irrelevant.
        let now = (self.clock)()
            .saturating_sub(EPOCH_MS)
            .clamp(0, MAX_TIMESTAMP);
        // The state is two integers updated together, so a panic elsewhere cannot leave it
        // half-written; carrying on after poisoning keeps ids flowing.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now > state.last_ms {
            state.last_ms = now;
            state.sequence = 0;
        } else {
            // Same millisecond, or the wall clock went back: stay on the logical clock.
            state.sequence += 1;
            if state.sequence > SEQUENCE_MASK {
                // Borrow the next millisecond rather than wait for it; the wall clock catches
                // up, and until then `now > last_ms` stays false.
                state.last_ms += 1;
                state.sequence = 0;
            }
        }
        LedgerId(
            (state.last_ms << TIMESTAMP_SHIFT)
                | (i64::from(self.node_id) << SEQUENCE_BITS)
                | state.sequence,
        )
    }
}

impl fmt::Debug for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snowflake")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn system_clock_ms() -> i64 {
    // A clock before 1970 is a broken host; 0 clamps to the epoch and the logical clock
    // keeps ids increasing regardless.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock tests can move by hand.
    fn manual_clock(start_ms: i64) -> (Arc<AtomicI64>, Clock) {
        let time = Arc::new(AtomicI64::new(start_ms));
        let reader = Arc::clone(&time);
        (time, Box::new(move || reader.load(Ordering::SeqCst)))
    }

    const T0: i64 = 1_790_000_000_000; // 2026-09-21

    #[test]
    fn ids_strictly_increase_over_100k_calls() {
        let generator = Snowflake::new(7).unwrap();
        let mut last = generator.next_id();
        for _ in 0..100_000 {
            let id = generator.next_id();
            assert!(id > last, "{id} not after {last}");
            assert_eq!(id.node_id(), 7);
            last = id;
        }
    }

    #[test]
    fn ids_are_positive_and_parse_back() {
        let generator = Snowflake::new(1023).unwrap();
        let id = generator.next_id();
        assert!(id.as_i64() > 0);
        assert_eq!(id.to_string().parse::<LedgerId>().unwrap(), id);
    }

    #[test]
    fn node_and_timestamp_round_trip() {
        for node in [0u16, 1, 42, 512, 1023] {
            let (_, clock) = manual_clock(T0);
            let generator = Snowflake::with_clock(node, clock).unwrap();
            assert_eq!(generator.node_id(), node);
            let id = generator.next_id();
            assert_eq!(id.node_id(), node);
            assert_eq!(id.timestamp_ms(), T0);
            assert_eq!(id.sequence(), 0);
            let again = LedgerId::from_i64(id.as_i64());
            assert_eq!(again.node_id(), node);
            assert_eq!(again.timestamp_ms(), T0);
        }
    }

    #[test]
    fn system_clock_timestamp_is_now() {
        let before = system_clock_ms();
        let id = Snowflake::new(3).unwrap().next_id();
        let after = system_clock_ms();
        assert!((before..=after).contains(&id.timestamp_ms()));
    }

    #[test]
    fn a_new_millisecond_resets_the_sequence() {
        let (time, clock) = manual_clock(T0);
        let generator = Snowflake::with_clock(5, clock).unwrap();
        let a = generator.next_id();
        let b = generator.next_id();
        assert_eq!((a.sequence(), b.sequence()), (0, 1));
        time.store(T0 + 1, Ordering::SeqCst);
        let c = generator.next_id();
        assert_eq!((c.timestamp_ms(), c.sequence()), (T0 + 1, 0));
        assert!(c > b);
    }

    #[test]
    fn clock_step_back_of_10s_keeps_ids_increasing() {
        let (time, clock) = manual_clock(T0);
        let generator = Snowflake::with_clock(9, clock).unwrap();
        let before = generator.next_id();
        time.store(T0 - 10_000, Ordering::SeqCst);
        let mut last = before;
        for _ in 0..10_000 {
            let id = generator.next_id();
            assert!(id > last);
            assert!(id.timestamp_ms() >= T0, "logical clock went back");
            last = id;
        }
        // Once the wall clock passes the logical one, ids follow the wall clock again.
        time.store(T0 + 60_000, Ordering::SeqCst);
        let later = generator.next_id();
        assert!(later > last);
        assert_eq!((later.timestamp_ms(), later.sequence()), (T0 + 60_000, 0));
    }

    #[test]
    fn sequence_overflow_moves_to_the_next_millisecond() {
        let (_, clock) = manual_clock(T0);
        let generator = Snowflake::with_clock(1, clock).unwrap();
        let ids: Vec<LedgerId> = (0..3 * 4096 + 10).map(|_| generator.next_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ids[4095].timestamp_ms(), T0);
        assert_eq!(ids[4095].sequence(), 4095);
        assert_eq!(
            (ids[4096].timestamp_ms(), ids[4096].sequence()),
            (T0 + 1, 0)
        );
        assert_eq!(
            (ids[2 * 4096].timestamp_ms(), ids[2 * 4096].sequence()),
            (T0 + 2, 0)
        );
        assert!(ids.iter().all(|id| id.node_id() == 1));
    }

    #[test]
    fn node_1024_is_refused() {
        let err = Snowflake::new(1024).unwrap_err();
        assert_eq!(err.field, "APP_ENV_NODE_ID");
        assert!(Snowflake::new(u16::MAX).is_err());
        assert!(Snowflake::new(1023).is_ok());
        assert!(Snowflake::new(0).is_ok());
    }

    #[test]
    fn two_nodes_never_collide_in_the_same_millisecond() {
        let (_, clock_a) = manual_clock(T0);
        let (_, clock_b) = manual_clock(T0);
        let a = Snowflake::with_clock(1, clock_a).unwrap();
        let b = Snowflake::with_clock(2, clock_b).unwrap();
        let mut seen = HashSet::new();
        for _ in 0..5000 {
            assert!(seen.insert(a.next_id()));
            assert!(seen.insert(b.next_id()));
        }
        assert_eq!(seen.len(), 10_000);
    }

    #[test]
    fn concurrent_callers_get_unique_ids() {
        let generator = Arc::new(Snowflake::new(11).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let generator = Arc::clone(&generator);
                std::thread::spawn(move || {
                    let ids: Vec<LedgerId> = (0..10_000).map(|_| generator.next_id()).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    ids
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for handle in handles {
            for id in handle.join().unwrap() {
                assert!(seen.insert(id));
            }
        }
        assert_eq!(seen.len(), 40_000);
    }

    #[test]
    fn clock_before_epoch_is_clamped() {
        let (_, clock) = manual_clock(0);
        let generator = Snowflake::with_clock(4, clock).unwrap();
        let a = generator.next_id();
        let b = generator.next_id();
        assert_eq!(a.timestamp_ms(), EPOCH_MS);
        assert!(b > a);
    }

    #[test]
    fn ledger_id_parsing_is_strict() {
        assert_eq!("123".parse::<LedgerId>().unwrap().as_i64(), 123);
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<LedgerId>().is_err(), "{bad:?} accepted");
        }
    }
}
