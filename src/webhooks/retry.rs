//! When a failed delivery is tried again: the default schedule of SPEC §12 — about 5 s, 5
//! min, 30 min, 2 h, 5 h, 10 h, 10 h after each failure — each delay drawn at random within
//! ±20% of its value (jitter), so that the deliveries of many events that failed together
//! (a receiver down) do not come back all at once.

use std::time::Duration;

use rand::Rng as _;

/// The delays after the 1st, 2nd, … failed attempt; after the last the delivery fails.
pub const DEFAULT_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// How far a delay may move either way, in percent.
const JITTER_PERCENT: u64 = 20;

/// The delay before the attempt after `failed` failed attempts (1 = the first failed), or
/// `None` when the schedule is exhausted and the delivery has failed for good.
pub fn next_delay(schedule: &[Duration], failed: u32) -> Option<Duration> {
    let index = usize::try_from(failed.checked_sub(1)?).ok()?;
    let base = *schedule.get(index)?;
    let millis = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    let spread = millis / 100 * JITTER_PERCENT;
    let low = millis.saturating_sub(spread);
    let high = millis.saturating_add(spread);
    Some(Duration::from_millis(
        rand::thread_rng().gen_range(low..=high),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_waits_its_step_within_the_jitter_and_the_schedule_ends() {
        for (i, base) in DEFAULT_SCHEDULE.iter().enumerate() {
            let failed = u32::try_from(i).unwrap() + 1;
            let seen: Vec<Duration> = (0..200)
                .map(|_| next_delay(&DEFAULT_SCHEDULE, failed).unwrap())
                .collect();
            let (low, high) = (base.mul_f64(0.8), base.mul_f64(1.2));
            assert!(
                seen.iter().all(|d| *d >= low && *d <= high),
                "step {failed}"
            );
            assert!(
                seen.iter().any(|d| d != &seen[0]),
                "step {failed}: the delay is jittered"
            );
        }
        assert_eq!(next_delay(&DEFAULT_SCHEDULE, 8), None);
        assert_eq!(next_delay(&DEFAULT_SCHEDULE, 0), None);
        assert_eq!(next_delay(&[], 1), None);
    }
}
