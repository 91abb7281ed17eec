//! A WebSocket server that answers every data frame after exactly `delay`, measured from when
//! the frame was read: each connection on a blocking thread of its own, the wait a
//! `std::thread::sleep` (a runtime's timer would round it up to its 1 ms tick). For the
//! accuracy benchmark: what a client reports over this target minus `delay` is the client's
//! own cost, and two clients on the same target can be compared.

// The wait is a blocking sleep on purpose: precise to tens of microseconds, where the
// runtime's timer rounds to milliseconds.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use tokio::time::Instant;

use tokio_tungstenite::tungstenite;

/// Serves on `listener` until the process ends (at most `max_conns` connections at once;
/// further ones are closed).
pub fn serve(listener: TcpListener, delay: Duration, max_conns: usize) {
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for tcp in listener.incoming() {
        let Ok(tcp) = tcp else { continue };
        if live.load(std::sync::atomic::Ordering::Relaxed) >= max_conns {
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let live = live.clone();
        live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::spawn(move || {
            if let Ok(mut ws) = tungstenite::accept(tcp) {
                while let Ok(msg) = ws.read() {
                    let read_at = Instant::now();
                    if !(msg.is_text() || msg.is_binary()) {
                        continue;
                    }
                    let due = read_at + delay;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if ws.send(msg).is_err() {
                        break;
                    }
                }
            }
            live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

/// Binds `addr` (port 0: any) and returns the listener and its address.
pub fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
