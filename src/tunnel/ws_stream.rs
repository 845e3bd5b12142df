//! A WebSocket seen as a byte stream, the way `cloudflared` carries TCP over Access.
//!
//! Every write becomes one binary message; reads reassemble messages into a stream of bytes.
//! Text frames are a protocol error (the edge sends binary only). Pings are answered by
//! tungstenite, which flushes the queued pong whenever the stream is read or written; with a
//! [`Keepalive`] the stream pings an idle peer itself and fails when it stops answering.
//! A close frame, or the peer going away after one, reads as end of stream.
//!
//! Writes are batched in tungstenite's write buffer until a flush; a read flushes first, so a
//! request/response protocol spoken over the stream (the SOCKS5 handshake of the `socks`
//! origin mode) never waits for an answer to bytes it has not sent.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::tunnel::keepalive::{Keepalive, Liveness};

/// Largest message this side accepts. A client never needs more than the copy buffer, so a
/// peer sending more is broken or hostile.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The WebSocket settings both ends use: small eager read buffer (one per connection, so a
/// thousand idle kubectl connections do not cost 128 MiB), a write buffer that batches small
/// frames, and a bound on it so a stalled peer pushes back instead of growing memory.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// A [`WebSocketStream`] adapted to [`AsyncRead`] + [`AsyncWrite`].
pub struct WsByteStream<S> {
    inner: WebSocketStream<S>,
    pending: Bytes,
    eof: bool,
    unflushed: bool,
    keepalive: Option<Box<KeepaliveState>>,
}

/// The keepalive of one stream (see [`crate::tunnel::keepalive`]): when the peer was last
/// heard from, whether a ping is waiting for an answer, and the one timer that wakes the
/// stream to check.
struct KeepaliveState {
    settings: Keepalive,
    liveness: Option<Liveness>,
    heard: Instant,
    ping_sent: Option<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
    check: Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>,
}

impl<S> WsByteStream<S> {
    /// Wraps an established WebSocket.
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            eof: false,
            unflushed: false,
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

    /// The peer gave a sign of life: a frame arrived, or a write was taken.
    fn heard(&mut self) {
        if let Some(k) = self.keepalive.as_mut() {
            k.heard = Instant::now();
            k.ping_sent = None;
        }
    }
}

impl<S> WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends pings when due and decides whether the peer is gone: `Ready(err)` when it is.
    /// Registers the timer (and the liveness check) with `cx`, so a stream that is only being
    /// read is woken to do so.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(k) = self.keepalive.as_mut() else {
            return Poll::Pending;
        };
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
                send_ping(&mut self.inner, cx);
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
                    send_ping(&mut self.inner, cx);
                    k.timer.as_mut().reset(now + k.settings.timeout);
                }
                None => k.timer.as_mut().reset(k.heard + k.settings.idle),
            }
        }
        Poll::Pending
    }
}

/// Queues a ping and starts sending it. A full write buffer (a peer not reading) means no ping
/// this time; the timeout still runs, since such a peer is as good as gone. Errors surface on
/// the next read or write.
fn send_ping<S>(ws: &mut WebSocketStream<S>, cx: &mut Context<'_>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut sink = Pin::new(ws);
    if let Poll::Ready(Ok(())) = sink.as_mut().poll_ready(cx)
        && sink
            .as_mut()
            .start_send(Message::Ping(Bytes::new()))
            .is_ok()
    {
        let _ = sink.poll_flush(cx);
    }
}

fn to_io(err: WsError) -> io::Error {
    match err {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
        }
        other => io::Error::other(other),
    }
}

impl<S> AsyncRead for WsByteStream<S>
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
        if this.unflushed {
            match Pin::new(&mut this.inner).poll_flush(cx) {
                Poll::Ready(Ok(())) => this.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(to_io(e))),
                // Still sending; reading on is fine, the flush resumes on the next call.
                Poll::Pending => {}
            }
        }
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                if this.pending.is_empty() {
                    // An emptied `Bytes` still holds tungstenite's read buffer; releasing it
                    // lets tungstenite reuse that buffer for the next frame instead of
                    // allocating (and, for bulk frames, mmapping) a fresh one each time.
                    this.pending = Bytes::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let next = ready!(Pin::new(&mut this.inner).poll_next(cx));
            if let Some(Ok(_)) = next {
                this.heard();
            }
            match next {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame on a binary tunnel stream",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S> AsyncWrite for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(MAX_MESSAGE);
        Pin::new(&mut this.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(to_io)?;
        this.unflushed = true;
        // The peer takes what we send (its window has room): alive, even if it says nothing
        // itself, as during a long upload.
        this.heard();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_flush(cx)).map_err(to_io)?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (
        WsByteStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client =
            WebSocketStream::from_raw_socket(a, Role::Client, Some(websocket_config())).await;
        let server =
            WebSocketStream::from_raw_socket(b, Role::Server, Some(websocket_config())).await;
        (WsByteStream::new(client), server)
    }

    #[tokio::test]
    async fn writes_are_binary_messages_and_reads_reassemble() {
        use futures_util::{SinkExt, StreamExt};
        let (mut client, mut server) = pair().await;
        client.write_all(b"hello").await.unwrap();
        client.flush().await.unwrap();
        let msg = server.next().await.unwrap().unwrap();
        assert_eq!(msg, Message::Binary(Bytes::from_static(b"hello")));

        server
            .send(Message::Binary(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        server
            .send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        server
            .send(Message::Binary(Bytes::from_static(b"cd")))
            .await
            .unwrap();
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcd");
        // The ping was answered while reading.
        client.flush().await.unwrap();
        let pong = server.next().await.unwrap().unwrap();
        assert_eq!(pong, Message::Pong(Bytes::from_static(b"p")));

        server.close(None).await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    fn keepalive() -> Keepalive {
        Keepalive {
            idle: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        }
    }

    /// Reads one byte; what the read returned and when, on the paused clock.
    fn read_one(
        mut client: WsByteStream<tokio::io::DuplexStream>,
    ) -> tokio::task::JoinHandle<(io::Result<usize>, tokio::time::Instant)> {
        tokio::spawn(async move {
            let mut byte = [0u8; 1];
            let result = client.read(&mut byte).await;
            (result, tokio::time::Instant::now())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_pings_and_fails_when_the_peer_stays_silent() {
        use futures_util::StreamExt;
        let (client, mut server) = pair().await;
        let start = tokio::time::Instant::now();
        let reader = read_one(client.with_keepalive(keepalive(), None));
        // The server's WebSocket is read once (the ping arrives) and then no more: as a
        // stalled edge, it never answers.
        let msg = server.next().await.unwrap().unwrap();
        assert!(matches!(msg, Message::Ping(_)), "got {msg:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(15), "pinged when idle");
        let (result, at) = reader.await.unwrap();
        let err = result.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert_eq!(at - start, Duration::from_secs(25), "idle + timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_keeps_an_idle_stream_open() {
        use futures_util::StreamExt;
        let (client, mut server) = pair().await;
        let reader = read_one(client.with_keepalive(keepalive(), None));
        // A live edge: reads (and so answers pings) all the time.
        let pings = tokio::spawn(async move {
            let mut pings = 0;
            while let Some(Ok(msg)) = server.next().await {
                if matches!(msg, Message::Ping(_)) {
                    pings += 1;
                }
            }
            pings
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!reader.is_finished(), "a live idle stream stays open");
        reader.abort();
        let _ = reader.await;
        let pings = pings.await.unwrap();
        // One ping per idle period, answered each time.
        assert!((19..=20).contains(&pings), "{pings} pings in 300 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_liveness_check_pings_at_once_and_closes_a_dead_stream_within_the_timeout() {
        use futures_util::StreamExt;
        let liveness = Liveness::default();
        let (client, mut server) = pair().await;
        let reader = read_one(client.with_keepalive(keepalive(), Some(liveness.clone())));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let checked_at = tokio::time::Instant::now();
        liveness.check_now();
        let msg = server.next().await.unwrap().unwrap();
        assert!(matches!(msg, Message::Ping(_)), "got {msg:?}");
        assert_eq!(checked_at.elapsed(), Duration::ZERO, "pinged at once");
        let (result, at) = reader.await.unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(at - checked_at, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_writes_are_taken_is_alive_though_the_peer_is_silent() {
        let (a, mut raw_peer) = tokio::io::duplex(64 * 1024);
        let client =
            WebSocketStream::from_raw_socket(a, Role::Client, Some(websocket_config())).await;
        let mut client = WsByteStream::new(client).with_keepalive(keepalive(), None);
        // The peer takes every byte (so its window has room) but never sends one back, not
        // even a pong: only the writes being taken show it is there, as during an upload.
        let sink = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while raw_peer.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let upload = async {
            for _ in 0..60 {
                client.write_all(b"chunk").await?;
                client.flush().await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                // Reading is what runs the keepalive: poll it, with nothing to read.
                let mut byte = [0u8; 1];
                if let Ok(read) =
                    tokio::time::timeout(Duration::from_millis(1), client.read(&mut byte)).await
                {
                    read?;
                }
            }
            Ok::<_, io::Error>(())
        };
        upload.await.expect("a minute of upload is not a dead peer");
        sink.abort();
    }

    #[tokio::test]
    async fn a_read_sends_what_was_written_before_it() {
        use futures_util::{SinkExt, StreamExt};
        let (mut client, mut server) = pair().await;
        // A request/response exchange with no explicit flush, as a SOCKS client does it.
        let peer = tokio::spawn(async move {
            let request = server.next().await.unwrap().unwrap();
            server.send(request).await.unwrap();
            server
        });
        client.write_all(b"ping?").await.unwrap();
        let mut answer = [0u8; 5];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_exact(&mut answer),
        )
        .await
        .expect("the request was flushed by the read")
        .unwrap();
        assert_eq!(&answer, b"ping?");
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn text_frames_are_refused() {
        use futures_util::SinkExt;
        let (mut client, mut server) = pair().await;
        server.send(Message::text("GET / HTTP/1.1")).await.unwrap();
        let err = client.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
