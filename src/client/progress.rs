//! How a batch's progress is shown on stderr while the command waits: a live bar on a
//! terminal; elsewhere (a pipe, a file, CI logs) no animation but a line when the counts
//! changed, at most every few seconds.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::summary::{bar_message, progress_line};
use super::wire::Batch;
use crate::errln;

/// The least time between two progress lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// How often the bar's spinner and clock move.
const TICK: Duration = Duration::from_millis(120);

/// The progress display of one batch.
pub struct Progress {
    /// Drawn on stderr when it is a terminal, hidden otherwise.
    bar: ProgressBar,
    /// When stderr is not a terminal: the lines printed instead.
    lines: Option<Lines>,
}

/// The progress lines of a display without a terminal.
struct Lines {
    /// When the last line was printed.
    printed_at: Option<Instant>,
    /// The last line printed.
    last: String,
}

impl Progress {
    /// A display for `batch`, as it was created.
    pub fn start(batch: &Batch) -> Self {
        // `stderr()` hides itself when stderr is not a terminal (indicatif's `is_hidden`).
        let bar = ProgressBar::with_draw_target(Some(batch.total), ProgressDrawTarget::stderr());
        let lines = if bar.is_hidden() {
            Some(Lines {
                printed_at: None,
                last: String::new(),
            })
        } else {
            let style = ProgressStyle::with_template(
                "{spinner:.cyan} {elapsed:>4} [{bar:30.cyan/blue}] {pos}/{len} {msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(TICK);
            None
        };
        let mut progress = Self { bar, lines };
        progress.show(batch);
        progress
    }

    /// Shows `batch`'s counts now.
    pub fn show(&mut self, batch: &Batch) {
        self.bar.set_length(batch.total);
        self.bar.set_position(batch.settled());
        match &mut self.lines {
            None => self.bar.set_message(bar_message(batch)),
            Some(lines) => {
                let line = progress_line(batch);
                let due = lines.printed_at.is_none_or(|at| at.elapsed() >= LINE_EVERY);
                if due && line != lines.last {
                    errln!("{line}");
                    lines.printed_at = Some(Instant::now());
                    lines.last = line;
                }
            }
        }
    }

    /// Prints `text` on stderr above the bar (or as a line of its own).
    pub fn note(&self, text: &str) {
        if self.lines.is_some() {
            errln!("{text}");
        } else {
            self.bar.suspend(|| errln!("{text}"));
        }
    }

    /// Removes the bar, leaving the terminal as it was before it.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
