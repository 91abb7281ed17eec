//! The services stop on SIGTERM even when nobody reads their output any more:
//! `gauntlet testbed 2>&1 | head -1` closes the pipe after one line, and the next log line
//! (the signal's own "shutting down") must not panic the task that cancels the root token.
//! The testbed, the coordinator and a worker run as child processes whose stdout and stderr
//! are pipes closed right after their first line.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a service gets to exit after SIGTERM: far more than a drain of nothing takes.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// A child process killed (by its PID, SIGKILL) when dropped, if it is still there.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Proc {
    /// Starts `gauntlet ARGS` with stdout and stderr piped; returns it and the first line
    /// of its stderr, then closes both pipes (the reader went away, as `head -1` does).
    fn start(args: &[&str]) -> (Proc, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
            .args(args)
            .env("JWT_SECRET_KEY", "signals-test-secret")
            .env("GAUNTLET_LOG", "info")
            .env_remove("GAUNTLET_LOG_JSON")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        drop(stderr);
        drop(stdout);
        (Proc(Some(child)), first)
    }

    /// Sends SIGTERM and waits for the exit, at most `EXIT_WITHIN`; `None` if it is still
    /// running then (it is killed when dropped).
    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.0.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(());
            (child, status)
        });
        match rx.recv_timeout(EXIT_WITHIN) {
            Ok(()) => Some(waiter.join().unwrap().1.unwrap()),
            Err(_) => {
                // Still running: kill it by its PID so the waiter returns.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waiter.join();
                None
            }
        }
    }
}

#[test]
fn the_services_exit_on_sigterm_with_their_output_closed() {
    let (mut testbed, line) = Proc::start(&["testbed", "--listen", "127.0.0.1:0"]);
    assert!(line.contains("testbed listening"), "{line}");
    let (mut coordinator, line) = Proc::start(&[
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]);
    let addr = line
        .trim()
        .strip_prefix("coordinator listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let (mut worker, line) = Proc::start(&[
        "worker",
        "--coordinator",
        &format!("http://{addr}"),
        "--drain",
        "1s",
    ]);
    assert!(!line.is_empty(), "the worker said nothing");
    for (name, proc) in [
        ("worker", &mut worker),
        ("testbed", &mut testbed),
        ("coordinator", &mut coordinator),
    ] {
        let status = proc.terminate();
        let status = status
            .unwrap_or_else(|| panic!("gauntlet {name} still runs {EXIT_WITHIN:?} after SIGTERM"));
        // It drained and exited on its own (no panic: that is exit code 101).
        assert_eq!(status.code(), Some(0), "gauntlet {name}: {status}");
    }
}
