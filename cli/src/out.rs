//! Standard output and standard error that a closed reader cannot break. `gauntlet run PLAN |
//! head -2` must still write its report files, store its history and exit with the verdict's
//! code, where `println!` would panic ("failed printing to stdout: Broken pipe", exit 101);
//! and `gauntlet testbed 2>&1 | head -1` must still stop on SIGTERM, where an `eprintln!` (or
//! a log line) panicking in the task that cancels the root token would leave the process
//! running. Every write to stdout in this binary goes through [`out!`] or [`outln!`], every
//! write to stderr through [`errln!`] or [`stderr`] (the log writer too); while the live
//! progress bar is shown ([`show_bar`]), stderr writes suspend it, so a line never lands in
//! the bar's line.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::ProgressBar;

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

/// `eprintln!` that never panics nor fails (see [`stderr`]).
macro_rules! errln {
    () => {
        $crate::out::stderr(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::out::stderr(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// Set once a write failed for another reason than a closed reader, so that it is told once.
static WARNED: AtomicBool = AtomicBool::new(false);

/// The live progress bar while it is on the terminal.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

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

/// Writes `bytes` to stderr, whole, above the live bar if one is shown. Every failure is
/// ignored: stderr is where failures would be told, and a closed one must not stop a command
/// (nor the task that cancels the root token on a signal).
pub fn stderr(bytes: &[u8]) {
    above_bar(|| {
        let _ = std::io::stderr().lock().write_all(bytes);
    });
}

/// Runs `write` with the live bar, if one is shown, cleared from the terminal (and drawn again
/// after), so what `write` writes starts on a line of its own.
fn above_bar(write: impl FnOnce()) {
    // A clone, so the lock is not held while writing (the bar may be drawing).
    let bar = BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) if !bar.is_finished() => bar.suspend(write),
        _ => write(),
    }
}

/// Shows `bar` on stderr from now on: [`stderr`] writes suspend it; `None` when it is gone.
pub fn show_bar(bar: Option<ProgressBar>) {
    if let Ok(mut shown) = BAR.lock() {
        *shown = bar;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use indicatif::{ProgressBar, ProgressDrawTarget, TermLike};

    /// A terminal that records what is drawn on it, and what is written around the bar.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn put(&self, what: impl Into<String>) {
            self.0.lock().unwrap().push(what.into());
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.put(format!("<up {n}>"));
            Ok(())
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.put(format!("<down {n}>"));
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.put(format!("{s}\n"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.put(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.put("<clear>");
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A log line written while the bar is shown lands on a cleared line, never after the
    /// bar's text, and the bar is drawn again below it.
    #[test]
    fn a_line_written_while_the_bar_is_shown_goes_above_it() {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(
            Some(10),
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_style(indicatif::ProgressStyle::with_template("[{bar:10}] {msg}").unwrap());
        bar.set_message("sessions 3 of 10");
        bar.set_position(3);
        super::show_bar(Some(bar.clone()));
        super::above_bar(|| screen.put("LOG LINE\n"));
        super::show_bar(None);
        let seen = screen.0.lock().unwrap().clone();
        let log = seen.iter().position(|s| s == "LOG LINE\n").unwrap();
        let last_bar = seen[..log]
            .iter()
            .rposition(|s| s.contains("sessions 3 of 10"))
            .unwrap();
        assert!(
            seen[last_bar..log].iter().any(|s| s == "<clear>"),
            "the log line follows the bar's text on its line: {seen:?}"
        );
        assert!(
            seen[log..].iter().any(|s| s.contains("sessions 3 of 10")),
            "the bar is not drawn again: {seen:?}"
        );
    }
}
