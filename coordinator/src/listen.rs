//! The coordinator's listening sockets, guarded: at most a set number of connections at once
//! (one more is closed as soon as it is accepted), and a connection over which no byte has
//! moved either way for the idle timeout is closed. Live peers are never idle: workers
//! heartbeat, run clients receive progress, and the gRPC server pings every connection (HTTP/2
//! keepalive), so only connections nobody serves (opened and left, or a peer gone silent)
//! are closed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How many connections a port holds and how long one may idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is closed when accepted.
    pub max: usize,
    /// A connection with no byte read or written for this long is closed.
    pub idle: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 4096,
            idle: Duration::from_secs(60),
        }
    }
}

/// A listener that hands out [`Guarded`] connections within [`ConnectionLimits`].
#[derive(Debug)]
pub struct GuardedListener {
    listener: TcpListener,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    /// Connections closed at once because the port was full.
    refused: Arc<AtomicU64>,
}

impl GuardedListener {
    /// Guards `listener` with `limits`; `refused` counts connections turned away.
    pub fn new(
        listener: TcpListener,
        limits: ConnectionLimits,
        refused: Arc<AtomicU64>,
    ) -> GuardedListener {
        GuardedListener {
            listener,
            permits: Arc::new(Semaphore::new(limits.max.max(1))),
            limits,
            refused,
        }
    }

    /// The next connection within the limits (those beyond are closed and counted; accept
    /// errors, such as running out of open files, are logged and retried after a pause).
    pub async fn next(&self) -> (Guarded, SocketAddr) {
        loop {
            let (io, addr) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        peer = %addr,
                        max = self.limits.max,
                        refused = n,
                        "connection closed: the port holds its maximum of connections"
                    );
                }
                drop(io);
                continue;
            };
            let _ = io.set_nodelay(true);
            let guarded = Guarded {
                io,
                idle: self.limits.idle,
                last: Instant::now(),
                timer: Box::pin(tokio::time::sleep(self.limits.idle)),
                _permit: permit,
            };
            return (guarded, addr);
        }
    }

    /// The connections as a stream (what tonic serves).
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Guarded>> + Send + 'static {
        futures_util::stream::unfold(self, |l| async move {
            let (io, _) = l.next().await;
            Some((Ok(io), l))
        })
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails once idle past its timeout, and holds its place in the port's
/// count while open.
#[derive(Debug)]
pub struct Guarded {
    io: TcpStream,
    idle: Duration,
    /// When a byte last moved.
    last: Instant,
    /// Fires at the earliest possible idle deadline; re-armed from `last` when it fires
    /// early (so activity costs no timer update).
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    /// Whether the connection has been idle past its timeout (re-arms the timer if not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection idle past the coordinator's timeout",
    )
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
