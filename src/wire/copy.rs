//! Piping two byte streams into each other, both ways, holding a large buffer only while data
//! flows.
//!
//! `tokio::io::copy_bidirectional_with_sizes` owns two buffers for the whole life of a
//! connection: 128 KiB per idle kubectl connection. Here each direction first reads into a
//! small inline buffer; only when a read fills it (a burst) does the direction take a
//! [`BURST_BUFFER`]-byte buffer, and it gives that back as soon as its reader has nothing to
//! read and nothing is left to write. Interactive traffic never allocates; an idle connection
//! holds [`INLINE_BUFFER`] bytes per direction inside its task.
//!
//! Half-close as in tokio: the end of one direction shuts down that direction's writer and the
//! other direction goes on. Errors are the streams' own, unchanged.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The buffer of a direction in a burst: large enough that bulk transfers are not
/// syscall-bound, and the largest frame [`super::stream::WsStream`] writes.
pub const BURST_BUFFER: usize = 64 * 1024;

/// The buffer a direction reads into while no burst is on: a read that fills it starts one.
pub const INLINE_BUFFER: usize = 1024;

/// One direction's state.
struct Direction {
    inline: [u8; INLINE_BUFFER],
    /// The burst buffer; empty (no allocation) while idle.
    burst: Vec<u8>,
    /// Whether the data to write is in `burst` (else in `inline`).
    in_burst: bool,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    amount: u64,
}

impl Direction {
    fn new() -> Self {
        Self {
            inline: [0; INLINE_BUFFER],
            burst: Vec::new(),
            in_burst: false,
            pos: 0,
            cap: 0,
            read_done: false,
            need_flush: false,
            done: false,
            amount: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(self.amount));
            }
            if self.pos < self.cap {
                let data = if self.in_burst {
                    &self.burst[self.pos..self.cap]
                } else {
                    &self.inline[self.pos..self.cap]
                };
                let n = ready!(writer.as_mut().poll_write(cx, data))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the writer accepted no bytes",
                    )));
                }
                self.pos += n;
                self.amount += n as u64;
                self.need_flush = true;
                continue;
            }
            self.pos = 0;
            self.cap = 0;
            if self.read_done {
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                continue;
            }
            let polled = if self.burst.is_empty() {
                let mut rb = ReadBuf::new(&mut self.inline);
                let polled = reader.as_mut().poll_read(cx, &mut rb);
                let n = rb.filled().len();
                if n == INLINE_BUFFER {
                    // The reader had more than the inline buffer holds: a burst.
                    self.burst = vec![0; BURST_BUFFER];
                    self.burst[..n].copy_from_slice(&self.inline);
                    self.in_burst = true;
                } else {
                    self.in_burst = false;
                }
                polled.map_ok(|()| n)
            } else {
                let mut rb = ReadBuf::new(&mut self.burst);
                let polled = reader.as_mut().poll_read(cx, &mut rb);
                let n = rb.filled().len();
                self.in_burst = true;
                polled.map_ok(|()| n)
            };
            match polled {
                Poll::Ready(Ok(0)) => self.read_done = true,
                Poll::Ready(Ok(n)) => self.cap = n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing to read, nothing to write: the burst is over.
                    self.burst = Vec::new();
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Heap bytes this direction holds.
    fn capacity(&self) -> usize {
        self.burst.capacity()
    }
}

/// Copies `a` → `b` and `b` → `a` until both directions end; returns the bytes copied each
/// way. See the module documentation for the buffers.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // Boxed: the task of a connection holds this for its whole life, and the inline buffers
    // would make every future awaiting it 2 KiB larger on the stack.
    let mut pipe = Box::new(Pipe::new());
    poll_fn(|cx| pipe.poll(cx, &mut *a, &mut *b)).await
}

/// Both directions of a pipe, for callers that poll it themselves (and tests that look at
/// its buffers).
pub struct Pipe {
    a_to_b: Direction,
    b_to_a: Direction,
}

impl Default for Pipe {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipe {
    /// A pipe that has copied nothing yet.
    pub fn new() -> Self {
        Self {
            a_to_b: Direction::new(),
            b_to_a: Direction::new(),
        }
    }

    /// Copies as far as the streams allow; `Ready` when both directions have ended (or one
    /// failed).
    pub fn poll<A, B>(
        &mut self,
        cx: &mut Context<'_>,
        a: &mut A,
        b: &mut B,
    ) -> Poll<io::Result<(u64, u64)>>
    where
        A: AsyncRead + AsyncWrite + Unpin + ?Sized,
        B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let a_to_b = self
            .a_to_b
            .poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let b_to_a = self
            .b_to_a
            .poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (a_to_b, b_to_a) {
            (Poll::Ready(up), Poll::Ready(down)) => Poll::Ready(Ok((up, down))),
            _ => Poll::Pending,
        }
    }

    /// Heap bytes the pipe holds (its burst buffers): zero while the connection is idle.
    pub fn buffer_capacity(&self) -> usize {
        self.a_to_b.capacity() + self.b_to_a.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_half_closes_like_tokio() {
        let (mut a, mut a_peer) = tokio::io::duplex(8 * 1024);
        let (mut b, mut b_peer) = tokio::io::duplex(8 * 1024);
        let pipe = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        let up: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let down = b"small answer".to_vec();
        let (up2, down2) = (up.clone(), down.clone());
        let client = tokio::spawn(async move {
            a_peer.write_all(&up2).await.unwrap();
            // End of one direction: the other still carries the answer.
            a_peer.shutdown().await.unwrap();
            let mut got = Vec::new();
            a_peer.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, up);
        b_peer.write_all(&down2).await.unwrap();
        b_peer.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap(), down);
        let (n_up, n_down) = pipe.await.unwrap().unwrap();
        assert_eq!((n_up, n_down), (up.len() as u64, down.len() as u64));
    }

    fn poll_once(
        pipe: &mut Pipe,
        a: &mut tokio::io::DuplexStream,
        b: &mut tokio::io::DuplexStream,
    ) {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(
            pipe.poll(&mut cx, a, b).is_pending(),
            "the pipe ended early"
        );
    }

    /// The fix for 128 KiB per idle connection: a pipe holds no buffer before its first byte,
    /// none while carrying small interactive writes, a burst buffer while a burst waits for
    /// its writer, and none again once the burst is over. `copy_bidirectional_with_sizes`
    /// held both buffers from start to end.
    #[tokio::test]
    async fn a_pipe_holds_a_burst_buffer_only_while_a_burst_flows() {
        let (mut a, mut a_peer) = tokio::io::duplex(256 * 1024);
        let (mut b, mut b_peer) = tokio::io::duplex(256 * 1024);
        let mut pipe = Pipe::new();
        poll_once(&mut pipe, &mut a, &mut b);
        assert_eq!(pipe.buffer_capacity(), 0, "idle from the start");

        a_peer
            .write_all(b"GET /api HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        poll_once(&mut pipe, &mut a, &mut b);
        let mut got = [0u8; 21];
        b_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(
            pipe.buffer_capacity(),
            0,
            "small writes need no burst buffer"
        );

        // A burst whose writer is full: the buffer is held while its data waits.
        let (mut c, mut c_peer) = tokio::io::duplex(256 * 1024);
        let (mut d, _d_peer) = tokio::io::duplex(1024);
        let mut stuck = Pipe::new();
        c_peer.write_all(&vec![1u8; 100_000]).await.unwrap();
        poll_once(&mut stuck, &mut c, &mut d);
        assert_eq!(
            stuck.buffer_capacity(),
            BURST_BUFFER,
            "held while data waits"
        );

        // A burst that flows through ends with the buffer given back.
        let drain = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = vec![0u8; 64 * 1024];
            while total < 200_000 {
                total += b_peer.read(&mut buf).await.unwrap();
            }
            total
        });
        a_peer.write_all(&vec![2u8; 200_000]).await.unwrap();
        while !drain.is_finished() {
            poll_once(&mut pipe, &mut a, &mut b);
            tokio::task::yield_now().await;
        }
        assert_eq!(drain.await.unwrap(), 200_000);
        poll_once(&mut pipe, &mut a, &mut b);
        assert_eq!(pipe.buffer_capacity(), 0, "given back after the burst");
    }
}
