//! What the batch commands print: the summary table of a batch, its rejected ledgers, and
//! the one-line progress of a terminal without a bar. Pure functions of what the service
//! answered, so they are tested without one. Text from the service is printed with its
//! control characters replaced: a failure message quotes the source's data, which must not
//! reach the operator's terminal as escape sequences.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::wire::{Batch, BatchLedger};
use crate::domain::BatchStatus;

/// Longest failure message shown in the list of rejected ledgers (in characters).
const MESSAGE_WIDTH: usize = 72;

/// The rejected ledgers of a batch, as many as are shown.
#[derive(Debug, Default)]
pub struct Rejected {
    /// The ledgers listed.
    pub shown: Vec<BatchLedger>,
    /// How many more there are.
    pub more: u64,
}

/// The summary table of `batch` at `now` (for the time a running batch has run).
pub fn summary(batch: &Batch, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let what = format!(
        "{} {} · {} · {} · {}",
        clean(&batch.ledger_type),
        clean(&batch.period),
        clean(&batch.formats.join(", ")),
        match batch.merchants.as_deref() {
            Some("*") => "every merchant",
            _ => "named merchants",
        },
        match &batch.timezone {
            Some(zone) => clean(zone),
            None => "each merchant's time zone".to_owned(),
        },
    );
    let elapsed = elapsed(batch.finished_at.unwrap_or(now) - batch.created_at);
    let elapsed = match batch.finished_at {
        Some(_) => elapsed,
        None => format!("{elapsed} so far"),
    };
    let _ = writeln!(out, "batch     {}", batch.id);
    let _ = writeln!(out, "status    {}", batch.status);
    let _ = writeln!(out, "ledgers   {what}");
    let _ = writeln!(out, "elapsed   {elapsed}");
    out.push('\n');
    let c = &batch.counts;
    let rows: [(&str, u64, &str); 7] = [
        ("COMPLETED", c.completed, ""),
        ("REJECTED", c.rejected, ""),
        ("EXISTING", c.existing, "already there before the batch"),
        ("PENDING", c.pending, ""),
        ("PROCESSING", c.processing, ""),
        (
            "total",
            batch.total,
            if batch.expanding {
                "so far: merchants are still being added"
            } else {
                ""
            },
        ),
        (
            "skipped",
            batch.skipped,
            "merchants the token may not create for",
        ),
    ];
    let width = rows
        .iter()
        .map(|(_, n, _)| n.to_string().len())
        .max()
        .unwrap_or(1)
        .max("ledgers".len());
    let _ = writeln!(out, "{:<11} {:>width$}", "state", "ledgers");
    for (name, n, note) in rows {
        let line = format!("{name:<11} {n:>width$}  {note}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The list of rejected ledgers; empty when there are none.
pub fn rejected(list: &Rejected) -> String {
    if list.shown.is_empty() && list.more == 0 {
        return String::new();
    }
    let total = list.shown.len() as u64 + list.more;
    let rows: Vec<[String; 5]> = list
        .shown
        .iter()
        .map(|l| {
            let (code, message) = match &l.failure_reason {
                Some(f) => (clean(&f.error_code), shorten(&clean(&f.message))),
                None => ("-".to_owned(), String::new()),
            };
            let code = if l.existing {
                format!("{code} (existing)")
            } else {
                code
            };
            [
                clean(&l.id),
                clean(&l.merchant_id),
                clean(&l.format),
                code,
                message,
            ]
        })
        .collect();
    let header = ["ID", "MERCHANT", "FORMAT", "ERROR", "MESSAGE"];
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!("\nrejected ledgers ({total})\n");
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                let _ = write!(line, "{cell}{:pad$}  ", "");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if list.more > 0 {
        let _ = writeln!(out, "… and {} more", list.more);
    }
    out
}

/// One line of progress, for output that is not a terminal.
pub fn progress_line(batch: &Batch) -> String {
    let c = &batch.counts;
    let mut line = format!(
        "batch {}: {} {}/{} done (COMPLETED {}, REJECTED {}, EXISTING {}, PROCESSING {}, PENDING {})",
        batch.id,
        batch.status,
        batch.settled(),
        batch.total,
        c.completed,
        c.rejected,
        c.existing,
        c.processing,
        c.pending
    );
    if batch.expanding {
        line.push_str(", adding merchants");
    }
    line
}

/// The message beside the progress bar.
pub fn bar_message(batch: &Batch) -> String {
    let c = &batch.counts;
    let mut message = format!(
        "{} completed · {} rejected · {} existing · {} processing · {} pending",
        c.completed, c.rejected, c.existing, c.processing, c.pending
    );
    if batch.expanding {
        message.push_str(" · adding merchants");
    }
    message
}

/// The end state in a sentence, for the line before the summary.
pub fn verdict(status: BatchStatus) -> &'static str {
    match status {
        BatchStatus::Completed => "every ledger completed",
        BatchStatus::CompletedWithErrors => "finished, some ledgers were rejected",
        BatchStatus::Running => "still running",
    }
}

/// A duration as people read it: `4.2s`, `42s`, `3m 05s`, `2h 03m`.
pub fn elapsed(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    let s = ms / 1000;
    match s {
        0..10 => format!("{}.{}s", s, (ms % 1000) / 100),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `text` with every control character (escape sequences, line breaks) replaced by a space.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` cut to [`MESSAGE_WIDTH`] characters, with `…` where it was cut.
fn shorten(text: &str) -> String {
    if text.chars().count() <= MESSAGE_WIDTH {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MESSAGE_WIDTH - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::wire::FailureReason;
    use serde_json::json;

    fn batch(status: &str, finished: Option<&str>) -> Batch {
        Batch::from_json(&serde_json::to_vec(&json!({
            "id": "383687767063789568", "status": status, "total": 6,
            "counts": {"PENDING": 0, "PROCESSING": 0, "COMPLETED": 3, "REJECTED": 2, "EXISTING": 1},
            "expanding": false, "type": "STATEMENT", "period": "2026-10", "formats": ["CSV", "PDF"],
            "timezone": null, "merchants": null, "skipped": 0, "createdBy": "ops",
            "createdAt": "2026-11-01T10:00:00Z", "finishedAt": finished
        })).unwrap())
        .unwrap()
    }

    #[test]
    fn the_summary_counts_every_state_and_says_how_long_it_took() {
        let now = "2026-11-01T10:05:00Z".parse().unwrap();
        let done = summary(
            &batch("COMPLETED_WITH_ERRORS", Some("2026-11-01T10:00:12.400Z")),
            now,
        );
        assert_eq!(
            done,
            "batch     383687767063789568\n\
             status    COMPLETED_WITH_ERRORS\n\
             ledgers   STATEMENT 2026-10 · CSV, PDF · named merchants · each merchant's time zone\n\
             elapsed   12s\n\
             \n\
             state       ledgers\n\
             COMPLETED         3\n\
             REJECTED          2\n\
             EXISTING          1  already there before the batch\n\
             PENDING           0\n\
             PROCESSING        0\n\
             total             6\n\
             skipped           0  merchants the token may not create for\n"
        );
        let running = summary(&batch("RUNNING", None), now);
        assert!(running.contains("elapsed   5m 00s so far"), "{running}");
    }

    #[test]
    fn rejected_ledgers_are_listed_with_their_code_and_a_clean_short_message() {
        let ledger = |id: &str, existing: bool| BatchLedger {
            id: id.into(),
            merchant_id: "m_broken".into(),
            format: "CSV".into(),
            status: "REJECTED".into(),
            failure_reason: Some(FailureReason {
                error_code: "FETCH_DATA_ERROR".into(),
                message: format!("entries[2].amount: \u{1b}[31mbad{}", "x".repeat(100)),
            }),
            existing,
        };
        let list = rejected(&Rejected {
            shown: vec![ledger("11", false), ledger("12", true)],
            more: 3,
        });
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines[1], "rejected ledgers (5)");
        assert!(
            lines[2].starts_with("ID  MERCHANT  FORMAT  ERROR"),
            "{list}"
        );
        assert!(
            lines[3].starts_with("11  m_broken  CSV     FETCH_DATA_ERROR  "),
            "{list}"
        );
        assert!(lines[4].contains("FETCH_DATA_ERROR (existing)"), "{list}");
        assert!(!list.contains('\u{1b}'), "no escape reaches the terminal");
        assert!(lines[3].ends_with('…'), "{list}");
        assert_eq!(lines[5], "… and 3 more");
        assert_eq!(rejected(&Rejected::default()), "");
    }

    #[test]
    fn durations_read_naturally() {
        let ms = chrono::Duration::milliseconds;
        assert_eq!(elapsed(ms(4_250)), "4.2s");
        assert_eq!(elapsed(ms(42_000)), "42s");
        assert_eq!(elapsed(ms(185_000)), "3m 05s");
        assert_eq!(elapsed(ms(7_380_000)), "2h 03m");
        assert_eq!(elapsed(ms(-5)), "0.0s");
    }
}
