//! A WebSocket seen as a byte stream, the way `cloudflared` carries TCP over Access.
//!
//! Every write becomes one binary message; reads reassemble messages into a stream of bytes.
//! Text frames are a protocol error (the edge sends binary only). Pings are answered by
//! tungstenite, which flushes the queued pong whenever the stream is read or written.
//! A close frame, or the peer going away after one, reads as end of stream.
//!
//! Writes are batched in tungstenite's write buffer until a flush; a read flushes first, so a
//! request/response protocol spoken over the stream (the SOCKS5 handshake of the `socks`
//! origin mode) never waits for an answer to bytes it has not sent.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

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
    keepalive: Option<tokio::time::Interval>,
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

    /// Sends a ping every `interval` while the stream is being read, as the Access edge does
    /// (every 54 s) so that idle streams outlive proxies that close idle connections.
    pub fn with_ping_interval(mut self, interval: std::time::Duration) -> Self {
        let start = tokio::time::Instant::now() + interval;
        let mut timer = tokio::time::interval_at(start, interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.keepalive = Some(timer);
        self
    }

    /// Queues a ping when the keepalive timer is due. Errors surface on the next read or
    /// write, so they are ignored here.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Poll<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(timer) = self.keepalive.as_mut() else {
            return Poll::Pending;
        };
        while timer.poll_tick(cx).is_ready() {
            let mut sink = Pin::new(&mut self.inner);
            if let Poll::Ready(Ok(())) = sink.as_mut().poll_ready(cx)
                && sink
                    .as_mut()
                    .start_send(Message::Ping(Bytes::new()))
                    .is_ok()
            {
                let _ = sink.poll_flush(cx);
            }
        }
        Poll::Pending
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
        let _ = this.poll_keepalive(cx);
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
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
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

    #[tokio::test(start_paused = true)]
    async fn idle_reader_sends_pings() {
        use futures_util::StreamExt;
        let (client, mut server) = pair().await;
        let mut client = client.with_ping_interval(std::time::Duration::from_secs(54));
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            client.read(&mut byte).await
        });
        let msg = server.next().await.unwrap().unwrap();
        assert!(matches!(msg, Message::Ping(_)), "got {msg:?}");
        reader.abort();
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
