//! What one-shot commands (`openapi`, `token`, `keygen`, `policy`, `migrate`, and
//! `ledger-bench`) print for their user. A reader that went away (`ledger openapi | head`, a
//! closed pipe) is not a failure of the command: writing stops with [`OutputError::Closed`]
//! and `main` ends quietly, where `println!` would panic. Never carries logs (see
//! `telemetry::log_queue`).

use std::fmt;
use std::io::{self, Write};

/// Why a line could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader of stdout is gone (EPIPE): nobody is left to read the rest.
    #[error("stdout was closed by its reader")]
    Closed,
    /// Any other write failure (a full disk behind `> file`): the output is incomplete.
    #[error("writing to stdout: {0}")]
    Write(io::Error),
}

/// Prints `args` and a newline on stdout; [`outln!`](crate::outln) is the short form.
pub fn line(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                OutputError::Closed
            } else {
                OutputError::Write(e)
            }
        })
}

/// Prints `args` and a newline on stderr, for warnings and errors. Never fails: when stderr
/// is gone too, the exit code is all that is left to say it.
pub fn warn(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `println!` that returns [`OutputError`] instead of panicking on a closed stdout.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(::std::format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics (a closed stderr loses the line).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::warn(::std::format_args!($($arg)*))
    };
}
