//! A read-ahead buffer under TLS that exists only while data flows.
//!
//! rustls asks its socket for at most 4 KiB per read, so without read-ahead a bulk wss
//! transfer costs a `recv` per 4 KiB; with a 64 KiB `BufReader` one per 64 KiB, but that
//! buffer is held by every connection, idle or not. [`ReadAhead`] reads up to
//! [`READ_AHEAD`] bytes at a time and gives its buffer back as soon as the socket has nothing
//! more to read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at a time when the caller asks for less.
pub const READ_AHEAD: usize = 64 * 1024;

/// `S` with read-ahead; writes pass straight through.
pub struct ReadAhead<S> {
    inner: S,
    data: Vec<u8>,
    pos: usize,
    /// Off: reads go straight to `inner` (see [`ReadAhead::deferred`]).
    on: bool,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            data: Vec::new(),
            pos: 0,
            on: true,
        }
    }

    /// Wraps `inner` with read-ahead off until [`ReadAhead::start`]: a server's TLS handshake
    /// reads a few small records, from a client that may not have authenticated anything yet,
    /// and allocates nothing here for them.
    pub fn deferred(inner: S) -> Self {
        Self {
            on: false,
            ..Self::new(inner)
        }
    }

    /// Turns read-ahead on.
    pub fn start(&mut self) {
        self.on = true;
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Heap bytes held: zero when no data is waiting and no burst is on.
    pub fn buffer_capacity(&self) -> usize {
        self.data.capacity()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.on {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.pos < this.data.len() {
            let n = (this.data.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.data.len() {
                // Kept for the rest of the burst; released at the first read that waits.
                this.data.clear();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_AHEAD {
            this.data = Vec::new();
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.data.capacity() == 0 {
            this.data = Vec::with_capacity(READ_AHEAD);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.data) {
            Poll::Pending => {
                this.data = Vec::new();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(_)) => {
                let n = this.data.len().min(buf.remaining());
                buf.put_slice(&this.data[..n]);
                this.pos = n;
                if this.pos == this.data.len() {
                    this.data.clear();
                    this.pos = 0;
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Deferred, small reads hold no buffer while data arrives; started, they read ahead.
    #[tokio::test]
    async fn a_deferred_read_ahead_allocates_nothing_until_started() {
        let (a, mut peer) = tokio::io::duplex(256 * 1024);
        let mut ours = ReadAhead::deferred(a);
        peer.write_all(&[7u8; 10_000]).await.unwrap();
        let mut small = [0u8; 100];
        ours.read_exact(&mut small).await.unwrap();
        assert_eq!(ours.buffer_capacity(), 0, "a buffer before start");
        ours.start();
        ours.read_exact(&mut small).await.unwrap();
        assert_eq!(
            ours.buffer_capacity(),
            READ_AHEAD,
            "no read-ahead after start"
        );
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read_and_the_buffer_goes_when_idle() {
        let (a, mut peer) = tokio::io::duplex(256 * 1024);
        let mut ours = ReadAhead::new(a);
        assert_eq!(ours.buffer_capacity(), 0);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        peer.write_all(&data).await.unwrap();
        let mut got = vec![0u8; data.len()];
        for chunk in got.chunks_mut(4096) {
            ours.read_exact(chunk).await.unwrap();
        }
        assert_eq!(got, data);
        // Nothing more to read: the next read waits, and gives the buffer back.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut small = [0u8; 16];
        let mut rb = ReadBuf::new(&mut small);
        assert!(Pin::new(&mut ours).poll_read(&mut cx, &mut rb).is_pending());
        assert_eq!(ours.buffer_capacity(), 0);
    }
}
