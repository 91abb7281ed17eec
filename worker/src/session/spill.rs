//! [`Spill`]: a session's byte stream read through one scratch buffer per runtime thread, so
//! an open WebSocket keeps a small read buffer of its own ([`READ_CHUNK`]) however much the
//! socket hands over in one read.
//!
//! tungstenite reads into its connection's buffer at most `read_buffer_size` bytes a call and
//! keeps that buffer for the connection's life, so the buffer is a fixed cost of every idle
//! session. Here every read from the socket goes into the thread's scratch buffer ([`SCRATCH`]
//! bytes: one system call takes up to 16 KiB, where a 4 KiB connection buffer took 4 KiB),
//! tungstenite gets what it asked for, and the rest waits in a spill buffer that exists only
//! while it holds bytes. A frame larger than the chunk costs copies, not system calls. (The
//! buffer is this small only because the worker does the upgrade itself: see `upgrade.rs`.)

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What tungstenite reads at a time into a connection's own buffer (its `read_buffer_size`):
/// one typical agent event fits.
pub(crate) const READ_CHUNK: usize = 1024;

/// The scratch buffer of each runtime thread: the most one read from the socket takes.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// A byte stream whose reads go through the thread's scratch buffer; writes pass through.
pub(crate) struct Spill<S> {
    inner: S,
    /// Bytes read from the socket that the reader has not asked for yet (from `at`); empty,
    /// with no allocation, once they are handed over.
    spill: Vec<u8>,
    at: usize,
}

impl<S> Spill<S> {
    pub(crate) fn new(inner: S) -> Self {
        Spill {
            inner,
            spill: Vec::new(),
            at: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Spill<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.at < this.spill.len() {
            let n = (this.spill.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.spill[this.at..this.at + n]);
            this.at += n;
            if this.at == this.spill.len() {
                this.spill = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        SCRATCH_BUF.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let got = read.filled();
            let n = got.len().min(buf.remaining());
            buf.put_slice(&got[..n]);
            if n < got.len() {
                this.spill = got[n..].to_vec();
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Spill<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bursts larger than the reader's buffer and than the scratch buffer arrive whole and in
    /// order through small reads, and the spill buffer is gone once it is read out.
    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_and_the_spill_empties() {
        let (mut peer, stream) = tokio::io::duplex(4 * SCRATCH);
        let mut s = Spill::new(stream);
        let sent: Vec<u8> = (0..3 * SCRATCH + 777).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        for burst in [
            &sent[..10],
            &sent[10..SCRATCH + 500],
            &sent[SCRATCH + 500..],
        ] {
            peer.write_all(burst).await.unwrap();
            let want = got.len() + burst.len();
            while got.len() < want {
                let mut chunk = [0u8; 300];
                // A byte lost would leave this read waiting: fail instead.
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                    .await
                    .expect("every byte written arrives")
                    .unwrap();
                assert!(n > 0);
                got.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(s.spill.capacity(), 0, "the spill is freed once read out");
        }
        assert_eq!(got, sent);
        // A large read goes straight to the stream; the end of the stream reads as 0 bytes.
        peer.write_all(&sent[..SCRATCH + 1]).await.unwrap();
        drop(peer);
        let mut big = vec![0u8; 2 * SCRATCH];
        let mut n = 0;
        loop {
            let k = s.read(&mut big[n..]).await.unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        assert_eq!(&big[..n], &sent[..SCRATCH + 1]);
    }

    /// What is written reaches the peer unchanged.
    #[tokio::test]
    async fn writes_pass_through() {
        let (mut peer, stream) = tokio::io::duplex(1024);
        let mut s = Spill::new(stream);
        s.write_all(b"hello").await.unwrap();
        s.flush().await.unwrap();
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }

    /// A stream that has nothing on its first poll, then `data`.
    struct Late(bool, &'static [u8]);

    impl AsyncRead for Late {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.0 {
                self.0 = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let data = self.1;
            buf.put_slice(data);
            self.1 = &[];
            Poll::Ready(Ok(()))
        }
    }

    /// Nothing there yet is a wait, not the end of the stream; an empty read takes nothing.
    #[tokio::test]
    async fn a_pending_stream_is_waited_for_and_an_empty_read_takes_nothing() {
        let mut s = Spill::new(Late(false, b"0123456789"));
        let mut four = [0u8; 4];
        assert_eq!(s.read(&mut four).await.unwrap(), 4);
        assert_eq!(&four, b"0123");
        assert_eq!(s.read(&mut []).await.unwrap(), 0);
        let mut rest = [0u8; 16];
        assert_eq!(s.read(&mut rest).await.unwrap(), 6);
        assert_eq!(&rest[..6], b"456789");
        assert_eq!(s.spill.capacity(), 0);
    }
}
