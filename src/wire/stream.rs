//! A WebSocket seen as a byte stream, the way `cloudflared` carries TCP over Access, framed
//! here rather than by a WebSocket library so that an idle stream holds no payload buffer.
//!
//! Every write becomes one binary frame; reads stream the payloads of binary and continuation
//! frames straight into the caller's buffer (unmasking in place on the server side), so message
//! boundaries do not matter and no message is ever held whole. Text frames are a protocol error
//! (the edge sends binary only). A ping is answered with a pong, queued between data frames and
//! sent with the next read or write; with a [`Keepalive`] the stream pings an idle peer itself
//! and fails when it stops answering. A close frame is answered and reads as end of stream.
//!
//! Memory: the frame header being read lives in a 14-byte inline buffer, a control frame's
//! payload in a 125-byte one. Writes go to the socket at once; only what the socket does not
//! take (and, for a client, which must mask, the frame being sent) is copied into a write
//! buffer, which is released as soon as it is sent.
//!
//! A read flushes what was written before it, so a request/response protocol spoken over the
//! stream (the SOCKS5 handshake of the `socks` origin mode) never waits for an answer to bytes
//! it has not sent.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::frame::{FrameError, Header, MAX_CONTROL_PAYLOAD, MAX_HEADER, Opcode, Role, apply_mask};
use super::keepalive::{Keepalive, Liveness};

/// The largest frame a write produces: the copy loops write at most this much at a time, and
/// a client copies (to mask) at most this much per write.
pub const MAX_WRITE_FRAME: usize = 64 * 1024;

/// Status code of a normal closure (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;

/// A WebSocket on `S` (already upgraded) as [`AsyncRead`] + [`AsyncWrite`].
///
/// Reading also writes (pongs, keepalive pings, the rest of a frame), so both directions must
/// be driven by one task, as [`super::copy::copy_bidirectional`] does: a socket keeps one
/// write waker, and a read in another task would take the writer's.
pub struct WsStream<S> {
    io: S,
    role: Role,
    /// Bytes read from `io` and not yet used: a header being assembled, or payload bytes that
    /// came with it.
    inbuf: [u8; MAX_HEADER],
    in_start: usize,
    in_end: usize,
    /// The frame whose payload is being read, once its header is parsed.
    frame: Option<ReadFrame>,
    /// A fragmented binary message is in progress: continuation frames are expected.
    in_message: bool,
    /// The payload of the control frame being read.
    control: [u8; MAX_CONTROL_PAYLOAD],
    /// A close frame was received (or the stream failed): reads return end of stream.
    read_closed: bool,
    /// Frames to send, from `out_pos` on: the unsent rest of a data frame, control frames.
    out: Vec<u8>,
    out_pos: usize,
    /// A close frame was queued: no more data may be sent.
    close_sent: bool,
    keepalive: Option<Box<KeepaliveState>>,
}

#[derive(Clone, Copy, Debug)]
struct ReadFrame {
    header: Header,
    /// Payload bytes of the frame read so far.
    done: u64,
}

/// The keepalive of one stream (see [`super::keepalive`]): when the peer was last heard from,
/// whether a ping is waiting for an answer, and the one timer that wakes the stream to check.
struct KeepaliveState {
    settings: Keepalive,
    liveness: Option<Liveness>,
    heard: Instant,
    ping_sent: Option<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
    check: Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>,
}

impl<S> WsStream<S> {
    /// Speaks WebSocket frames on `io`, an upgraded connection, as `role`.
    pub fn new(io: S, role: Role) -> Self {
        Self {
            io,
            role,
            inbuf: [0; MAX_HEADER],
            in_start: 0,
            in_end: 0,
            frame: None,
            in_message: false,
            control: [0; MAX_CONTROL_PAYLOAD],
            read_closed: false,
            out: Vec::new(),
            out_pos: 0,
            close_sent: false,
            keepalive: None,
        }
    }

    /// Pings the peer when the stream is idle and fails the stream when the peer stops
    /// answering (see [`Keepalive`]); `liveness` can ask it to check at once. Checked while
    /// the stream is being read, which a pipe always does.
    pub fn with_keepalive(mut self, settings: Keepalive, liveness: Option<Liveness>) -> Self {
        let now = Instant::now();
        let check = liveness.as_ref().map(|l| Box::pin(l.checked()));
        self.keepalive = Some(Box::new(KeepaliveState {
            timer: Box::pin(tokio::time::sleep_until(now + settings.idle)),
            settings,
            liveness,
            heard: now,
            ping_sent: None,
            check,
        }));
        self
    }

    /// Heap bytes the stream holds for data in flight (its write buffer; reads hold none).
    /// Zero for an idle stream: what a thousand idle connections cost is their sockets.
    pub fn buffer_capacity(&self) -> usize {
        self.out.capacity()
    }

    /// The peer gave a sign of life: a frame arrived, or a write was taken.
    fn heard(&mut self) {
        if let Some(k) = self.keepalive.as_mut() {
            k.heard = Instant::now();
            k.ping_sent = None;
        }
    }

    /// Appends a control frame (payload ≤ 125 bytes) to the frames to send.
    fn queue_control(&mut self, opcode: Opcode, payload: &[u8]) {
        let len = payload.len().min(MAX_CONTROL_PAYLOAD);
        self.queue_frame(opcode, &payload[..len]);
    }

    /// Appends one complete frame to `out`, masked when we are the client.
    fn queue_frame(&mut self, opcode: Opcode, payload: &[u8]) {
        let mask = (self.role == Role::Client).then(rand::random::<[u8; 4]>);
        let header = Header {
            fin: true,
            opcode,
            mask,
            len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER];
        let n = header.encode(&mut head);
        self.out.reserve(n + payload.len());
        self.out.extend_from_slice(&head[..n]);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self.out[start..], key, 0);
        }
    }
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends what is queued in `out`, and releases the buffer once it is all sent.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out_pos = 0;
        self.out = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Sends pings when due and decides whether the peer is gone: `Ready(err)` when it is.
    /// Registers the timer (and the liveness check) with `cx`, so a stream that is only being
    /// read is woken to do so.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(k) = self.keepalive.as_mut() else {
            return Poll::Pending;
        };
        let mut ping = false;
        if let Some(check) = k.check.as_mut()
            && check.as_mut().poll(cx).is_ready()
        {
            // A wake-up or a network change: ask now, whatever the schedule says.
            if let Some(liveness) = &k.liveness {
                *check = Box::pin(liveness.checked());
                let _ = check.as_mut().poll(cx);
            }
            let now = Instant::now();
            if k.ping_sent.is_none() {
                k.ping_sent = Some(now);
                ping = true;
            }
            let deadline = k.ping_sent.unwrap_or(now) + k.settings.timeout;
            k.timer.as_mut().reset(deadline);
        }
        while k.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match k.ping_sent {
                Some(sent) if now >= sent + k.settings.timeout => {
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the peer did not answer a ping within {} s",
                            k.settings.timeout.as_secs_f32()
                        ),
                    ));
                }
                Some(sent) => k.timer.as_mut().reset(sent + k.settings.timeout),
                None if now >= k.heard + k.settings.idle => {
                    k.ping_sent = Some(now);
                    ping = true;
                    k.timer.as_mut().reset(now + k.settings.timeout);
                }
                None => k.timer.as_mut().reset(k.heard + k.settings.idle),
            }
        }
        if ping && !self.close_sent {
            // Errors surface on the next read or write; a peer that takes nothing will not
            // answer either, and the timeout runs all the same.
            self.queue_control(Opcode::Ping, &[]);
            let _ = self.poll_drain(cx);
        }
        Poll::Pending
    }

    /// Reads from `io` into the inline buffer, after the bytes it already holds.
    fn poll_fill_inbuf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.in_start > 0 {
            self.inbuf.copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
        }
        let mut rb = ReadBuf::new(&mut self.inbuf[self.in_end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.in_end += n;
        Poll::Ready(Ok(n))
    }

    /// Parses the next header from the inline buffer, reading as needed, and checks it against
    /// the message in progress.
    fn poll_header(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Header>>> {
        loop {
            if let Some((header, n)) =
                Header::parse(&self.inbuf[self.in_start..self.in_end], self.role)?
            {
                self.in_start += n;
                match header.opcode {
                    Opcode::Text => return Poll::Ready(Err(FrameError::Text.into())),
                    Opcode::Binary if self.in_message => {
                        return Poll::Ready(Err(FrameError::Interleaved.into()));
                    }
                    Opcode::Continuation if !self.in_message => {
                        return Poll::Ready(Err(FrameError::StrayContinuation.into()));
                    }
                    Opcode::Binary | Opcode::Continuation => self.in_message = !header.fin,
                    Opcode::Close | Opcode::Ping | Opcode::Pong => {}
                }
                self.heard();
                return Poll::Ready(Ok(Some(header)));
            }
            let had = self.in_end - self.in_start;
            if ready!(self.poll_fill_inbuf(cx))? == 0 {
                return Poll::Ready(if had > 0 || self.in_message {
                    Err(FrameError::Truncated.into())
                } else {
                    // The connection ended between frames without a closing handshake: the
                    // peer was killed or went away, which is how most streams end.
                    Ok(None)
                });
            }
        }
    }

    /// Reads the payload of the data frame `frame` into `buf`: first what came with the
    /// header, then straight from the socket, unmasking in place.
    fn poll_payload(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(mut frame) = self.frame else {
            return Poll::Ready(Ok(()));
        };
        let left = frame.header.len - frame.done;
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        let dst = &mut buf.initialize_unfilled_to(want)[..want];
        // First what came with the header, then on from the socket in the same call: a read
        // that returned only the few bytes after a header would cost the reader a write each.
        let buffered = (self.in_end - self.in_start).min(want);
        dst[..buffered].copy_from_slice(&self.inbuf[self.in_start..self.in_start + buffered]);
        self.in_start += buffered;
        let mut n = buffered;
        if n < want {
            let mut rb = ReadBuf::new(&mut dst[n..]);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() && n == 0 => {
                    return Poll::Ready(Err(FrameError::Truncated.into()));
                }
                Poll::Ready(Ok(())) => n += rb.filled().len(),
                // With bytes in hand, they go first; the socket says it again on the next read.
                Poll::Ready(Err(e)) if n == 0 => return Poll::Ready(Err(e)),
                Poll::Pending if n == 0 => return Poll::Pending,
                Poll::Ready(Err(_)) | Poll::Pending => {}
            }
        }
        if let Some(key) = frame.header.mask {
            apply_mask(&mut dst[..n], key, frame.done);
        }
        frame.done += n as u64;
        self.frame = (frame.done < frame.header.len).then_some(frame);
        buf.advance(n);
        self.heard();
        Poll::Ready(Ok(()))
    }

    /// Reads the payload of the control frame `header` and acts on it.
    fn poll_control(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(mut frame) = self.frame else {
            return Poll::Ready(Ok(()));
        };
        // Control payloads are at most 125 bytes (checked by the parser).
        let len = frame.header.len as usize;
        while (frame.done as usize) < len {
            let at = frame.done as usize;
            let buffered = self.in_end - self.in_start;
            let n = if buffered > 0 {
                let n = buffered.min(len - at);
                self.control[at..at + n]
                    .copy_from_slice(&self.inbuf[self.in_start..self.in_start + n]);
                self.in_start += n;
                n
            } else {
                let mut rb = ReadBuf::new(&mut self.control[at..len]);
                let polled = Pin::new(&mut self.io).poll_read(cx, &mut rb);
                let n = rb.filled().len();
                if polled.is_pending() {
                    self.frame = Some(frame);
                    return Poll::Pending;
                }
                if let Poll::Ready(Err(e)) = polled {
                    return Poll::Ready(Err(e));
                }
                if n == 0 {
                    return Poll::Ready(Err(FrameError::Truncated.into()));
                }
                n
            };
            frame.done += n as u64;
            self.frame = Some(frame);
        }
        self.frame = None;
        if let Some(key) = frame.header.mask {
            apply_mask(&mut self.control[..len], key, 0);
        }
        match frame.header.opcode {
            Opcode::Ping if !self.close_sent => {
                let payload = self.control;
                self.queue_control(Opcode::Pong, &payload[..len]);
            }
            Opcode::Close => {
                if len == 1 {
                    return Poll::Ready(Err(FrameError::CloseLength.into()));
                }
                if !self.close_sent {
                    // Echo the status code, as RFC 6455 §5.5.1 suggests.
                    let code = self.control;
                    self.queue_control(Opcode::Close, &code[..len.min(2)]);
                    self.close_sent = true;
                }
                self.read_closed = true;
            }
            // A pong (or a ping after our close): the peer is alive, which `heard` noted.
            _ => {}
        }
        // Send the answer now; a socket that takes nothing gets it with the next write.
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Poll::Ready(dead) = this.poll_keepalive(cx) {
            return Poll::Ready(Err(dead));
        }
        if this.out_pos < this.out.len() {
            // Still sending is fine: reading on, the rest goes with the next call.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.frame {
                Some(f) if !f.header.opcode.is_control() => {
                    return this.poll_payload(cx, buf);
                }
                Some(_) => ready!(this.poll_control(cx))?,
                None => match ready!(this.poll_header(cx))? {
                    // After our close, the peer may end the connection without answering.
                    None if this.close_sent => {
                        this.read_closed = true;
                        return Poll::Ready(Ok(()));
                    }
                    None => {
                        this.read_closed = true;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed the connection without a closing handshake",
                        )));
                    }
                    Some(header) => {
                        let frame = ReadFrame { header, done: 0 };
                        // An empty data frame carries nothing; an empty control frame is
                        // still acted on.
                        this.frame =
                            (header.len > 0 || header.opcode.is_control()).then_some(frame);
                    }
                },
            }
        }
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "websocket closed",
            )));
        }
        // Frames go out whole and in order: what is left of the last one first.
        ready!(this.poll_drain(cx))?;
        let n = buf.len().min(MAX_WRITE_FRAME);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let payload = &buf[..n];
        if this.role == Role::Server && this.io.is_write_vectored() {
            // No mask: header and payload go out in one call, without a copy; only what the
            // socket does not take is kept.
            let header = Header {
                fin: true,
                opcode: Opcode::Binary,
                mask: None,
                len: n as u64,
            };
            let mut head = [0u8; MAX_HEADER];
            let h = header.encode(&mut head);
            let slices = [io::IoSlice::new(&head[..h]), io::IoSlice::new(payload)];
            let written = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, &slices))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if written < h {
                this.out.extend_from_slice(&head[written..h]);
                this.out.extend_from_slice(payload);
            } else if written < h + n {
                this.out.extend_from_slice(&payload[written - h..]);
            }
        } else {
            this.queue_frame(Opcode::Binary, payload);
            // Start sending; the rest goes with the next write, flush or read.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        // The peer takes what we send (its window has room): alive, even if it says nothing
        // itself, as during a long upload.
        this.heard();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_sent {
            this.queue_control(Opcode::Close, &CLOSE_NORMAL.to_be_bytes());
            this.close_sent = true;
        }
        match ready!(this.poll_drain(cx)) {
            Ok(()) => {}
            // The peer is gone already: closed is what we wanted.
            Err(e) if is_gone(&e) => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e)),
        }
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            Err(e) if !is_gone(&e) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

fn is_gone(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests;
