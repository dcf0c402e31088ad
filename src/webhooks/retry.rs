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

/// Most delays a schedule may have.
pub const MAX_STEPS: usize = 20;
/// The shortest delay of a schedule.
const MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest delay of a schedule.
const MAX_DELAY: Duration = Duration::from_secs(86_400);

/// Reads a schedule written as `APP_ENV_WEBHOOK_RETRY_SCHEDULE` takes it: delays separated
/// by commas, each a whole number with a unit (`ms`, `s`, `m`, `h`, `d`), 1 to
/// [`MAX_STEPS`] of them, each from 100 ms to 1 d. The error says what is wrong, in words.
pub fn parse_schedule(raw: &str) -> Result<Vec<Duration>, String> {
    let steps: Vec<&str> = raw.split(',').map(str::trim).collect();
    if steps.len() > MAX_STEPS {
        return Err(format!("at most {MAX_STEPS} delays"));
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let n = i + 1;
            let split = step
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(|| format!("delay {n} ({step:?}) needs a unit: ms, s, m, h or d"))?;
            let (digits, unit) = step.split_at(split);
            let value: u64 = digits
                .parse()
                .map_err(|_| format!("delay {n} ({step:?}) must start with a whole number"))?;
            let unit_ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => {
                    return Err(format!(
                        "delay {n} ({step:?}): the unit is ms, s, m, h or d"
                    ));
                }
            };
            let delay = Duration::from_millis(value.saturating_mul(unit_ms));
            if !(MIN_DELAY..=MAX_DELAY).contains(&delay) {
                return Err(format!("delay {n} ({step:?}) must be from 100ms to 1d"));
            }
            Ok(delay)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_with_units_and_bad_ones_say_why() {
        assert_eq!(
            parse_schedule("5s,5m,30m,2h,5h,10h,10h").unwrap(),
            DEFAULT_SCHEDULE.to_vec()
        );
        assert_eq!(
            parse_schedule(" 200ms , 1d ").unwrap(),
            vec![Duration::from_millis(200), Duration::from_secs(86_400)]
        );
        for (bad, says) in [
            ("", "needs a unit"),
            ("5", "needs a unit"),
            ("s", "whole number"),
            ("5 s", "unit is"),
            ("5w", "unit is"),
            ("10ms", "100ms to 1d"),
            ("2d", "100ms to 1d"),
            ("-5s", "whole number"),
            ("5s,,5s", "delay 2"),
            ("99999999999999999999s", "whole number"),
        ] {
            let e = parse_schedule(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(
            parse_schedule(&vec!["1s"; 21].join(","))
                .unwrap_err()
                .contains("at most 20")
        );
    }

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
