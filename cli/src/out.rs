//! Standard output that a closed reader cannot break: `gauntlet run PLAN | head -2` must still
//! write its report files, store its history and exit with the verdict's code, where
//! `println!` would panic ("failed printing to stdout: Broken pipe", exit 101). Every write to
//! stdout in this binary goes through [`out!`] or [`outln!`].

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// `print!` to stdout that never panics (see [`write`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

/// `println!` to stdout that never panics (see [`write`]).
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Set once a write failed for another reason than a closed reader, so that it is told once.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to stdout. A reader that went away (`BrokenPipe`) is ignored silently: the
/// command goes on and exits with its own code. Any other failure (a full disk behind a
/// redirection) is logged once on stderr, never fatal either.
pub fn write(args: fmt::Arguments<'_>) {
    let result = std::io::stdout().lock().write_fmt(args);
    if let Err(e) = result
        && e.kind() != ErrorKind::BrokenPipe
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!("cannot write to stdout: {e}");
    }
}
