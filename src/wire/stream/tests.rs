//! The stream against tokio-tungstenite as the independent peer: our client framing against
//! its server, our server framing against its client, and the keepalive on a paused clock.

use super::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as PeerRole, WebSocketConfig};

type Peer = WebSocketStream<DuplexStream>;

fn peer_config() -> WebSocketConfig {
    // The peer must take our largest frames whole.
    WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Our stream as `role`, and a tokio-tungstenite peer in the other role.
async fn pair_as(role: Role) -> (WsStream<DuplexStream>, Peer) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let peer_role = match role {
        Role::Client => PeerRole::Server,
        Role::Server => PeerRole::Client,
    };
    let peer = WebSocketStream::from_raw_socket(b, peer_role, Some(peer_config())).await;
    (WsStream::new(a, role), peer)
}

async fn pair() -> (WsStream<DuplexStream>, Peer) {
    pair_as(Role::Client).await
}

#[tokio::test]
async fn writes_are_binary_messages_and_reads_reassemble() {
    for role in [Role::Client, Role::Server] {
        let (mut ours, mut peer) = pair_as(role).await;
        ours.write_all(b"hello").await.unwrap();
        ours.flush().await.unwrap();
        let msg = peer.next().await.unwrap().unwrap();
        assert_eq!(
            msg,
            Message::Binary(Bytes::from_static(b"hello")),
            "{role:?}"
        );

        peer.send(Message::Binary(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        peer.send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        peer.send(Message::Binary(Bytes::from_static(b"cd")))
            .await
            .unwrap();
        let mut got = [0u8; 4];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcd");
        // The ping was answered while reading.
        ours.flush().await.unwrap();
        let pong = peer.next().await.unwrap().unwrap();
        assert_eq!(pong, Message::Pong(Bytes::from_static(b"p")), "{role:?}");

        peer.close(None).await.unwrap();
        let mut rest = Vec::new();
        ours.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}

/// A megabyte each way in frames of every size, both roles: the payload arrives intact (our
/// masking and unmasking agree with tungstenite's), in the order sent.
#[tokio::test]
async fn bulk_data_round_trips_through_the_independent_peer_in_both_roles() {
    for role in [Role::Client, Role::Server] {
        let (mut ours, mut peer) = pair_as(role).await;
        let data: Vec<u8> = (0..(1 << 20) + 7).map(|i| (i * 31 % 251) as u8).collect();
        let expected = data.clone();
        let echo = tokio::spawn(async move {
            // The peer sends back every message it gets, in frames of its own sizes.
            let mut received = Vec::new();
            while received.len() < expected.len() {
                match peer.next().await.unwrap().unwrap() {
                    Message::Binary(b) => {
                        received.extend_from_slice(&b);
                        peer.send(Message::Binary(b)).await.unwrap();
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(received, expected);
            peer
        });
        // Reading and writing at once, from one task (see the type's documentation).
        let (mut rd, mut wr) = tokio::io::split(ours);
        let write = async {
            let mut sizes = [1usize, 125, 126, 127, 65_535, 65_536, 70_000, 3]
                .iter()
                .cycle();
            let mut at = 0;
            while at < data.len() {
                let n = (*sizes.next().unwrap()).min(data.len() - at);
                wr.write_all(&data[at..at + n]).await.unwrap();
                at += n;
            }
            wr.flush().await.unwrap();
        };
        let read = async {
            let mut back = vec![0u8; (1 << 20) + 7];
            rd.read_exact(&mut back).await.unwrap();
            back
        };
        let ((), back) = tokio::join!(write, read);
        assert_eq!(back, data, "{role:?}");
        let _peer = echo.await.unwrap();
        ours = rd.unsplit(wr);
        assert_eq!(ours.buffer_capacity(), 0, "an idle stream holds no buffer");
    }
}

#[tokio::test]
async fn fragmented_messages_and_pings_between_fragments_read_as_one_stream() {
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, coding::Data, coding::OpCode};
    let (mut ours, mut peer) = pair().await;
    let fragment = |op, fin, payload: &'static [u8]| {
        Message::Frame(Frame::message(Bytes::from_static(payload), op, fin))
    };
    peer.send(fragment(OpCode::Data(Data::Binary), false, b"one "))
        .await
        .unwrap();
    peer.send(Message::Ping(Bytes::from_static(b"mid")))
        .await
        .unwrap();
    peer.send(fragment(OpCode::Data(Data::Continue), false, b"two "))
        .await
        .unwrap();
    peer.send(fragment(OpCode::Data(Data::Continue), true, b"three"))
        .await
        .unwrap();
    let mut got = [0u8; 13];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"one two three");
    ours.flush().await.unwrap();
    assert_eq!(
        peer.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"mid"))
    );
}

#[tokio::test]
async fn a_close_is_answered_with_its_code_and_reads_as_end_of_stream() {
    let (mut ours, mut peer) = pair().await;
    peer.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let mut rest = Vec::new();
    ours.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    ours.flush().await.unwrap();
    match peer.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close, got {other:?}"),
    }
    let err = ours.write_all(b"late").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn shutdown_sends_a_close_the_peer_reads() {
    for role in [Role::Client, Role::Server] {
        let (mut ours, mut peer) = pair_as(role).await;
        ours.write_all(b"last words").await.unwrap();
        ours.shutdown().await.unwrap();
        assert_eq!(
            peer.next().await.unwrap().unwrap(),
            Message::Binary(Bytes::from_static(b"last words"))
        );
        match peer.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

fn keepalive() -> Keepalive {
    Keepalive {
        idle: Duration::from_secs(15),
        timeout: Duration::from_secs(10),
    }
}

/// Reads one byte; what the read returned and when, on the paused clock.
fn read_one(
    mut client: WsStream<DuplexStream>,
) -> tokio::task::JoinHandle<(io::Result<usize>, tokio::time::Instant)> {
    tokio::spawn(async move {
        let mut byte = [0u8; 1];
        let result = client.read(&mut byte).await;
        (result, tokio::time::Instant::now())
    })
}

#[tokio::test(start_paused = true)]
async fn an_idle_stream_pings_and_fails_when_the_peer_stays_silent() {
    let (client, mut server) = pair().await;
    let start = tokio::time::Instant::now();
    let reader = read_one(client.with_keepalive(keepalive(), None));
    // The server's WebSocket is read once (the ping arrives) and then no more: as a stalled
    // edge, it never answers.
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
    let mut client = WsStream::new(a, Role::Client).with_keepalive(keepalive(), None);
    // The peer takes every byte (so its window has room) but never sends one back, not even a
    // pong: only the writes being taken show it is there, as during an upload.
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
    for role in [Role::Client, Role::Server] {
        let (mut ours, mut peer) = pair_as(role).await;
        // A request/response exchange with no explicit flush, as a SOCKS client does it.
        let echo = tokio::spawn(async move {
            let request = peer.next().await.unwrap().unwrap();
            peer.send(request).await.unwrap();
            peer
        });
        ours.write_all(b"ping?").await.unwrap();
        let mut answer = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), ours.read_exact(&mut answer))
            .await
            .expect("the request was flushed by the read")
            .unwrap();
        assert_eq!(&answer, b"ping?");
        echo.await.unwrap();
    }
}

#[tokio::test]
async fn text_frames_are_refused() {
    let (mut client, mut server) = pair().await;
    server.send(Message::text("GET / HTTP/1.1")).await.unwrap();
    let err = client.read_u8().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

/// Raw frames from a misbehaving peer: each one is a protocol error, never data.
#[tokio::test]
async fn frames_that_break_the_protocol_fail_the_stream() {
    let cases: [(&[u8], Role, FrameError); 6] = [
        // A server sending masked data.
        (
            &[0x82, 0x81, 1, 2, 3, 4, 0],
            Role::Client,
            FrameError::MaskedFromServer,
        ),
        // A client sending unmasked data.
        (
            &[0x82, 0x01, 0],
            Role::Server,
            FrameError::UnmaskedFromClient,
        ),
        (&[0xA2, 0x00], Role::Client, FrameError::ReservedBits),
        (&[0x8B, 0x00], Role::Client, FrameError::UnknownOpcode(0xB)),
        (
            &[0x80, 0x01, 0],
            Role::Client,
            FrameError::StrayContinuation,
        ),
        (
            &[0x02, 0x01, b'a', 0x82, 0x01, b'b'],
            Role::Client,
            FrameError::Interleaved,
        ),
    ];
    for (bytes, role, expected) in cases {
        let (a, mut raw) = tokio::io::duplex(1024);
        let mut ours = WsStream::new(a, role);
        raw.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 16];
        let err = loop {
            match ours.read(&mut buf).await {
                Ok(0) => panic!("{expected:?}: end of stream instead of an error"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{expected:?}");
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<FrameError>())
            .cloned();
        assert_eq!(inner, Some(expected));
    }
}

#[tokio::test]
async fn a_connection_cut_inside_a_frame_is_an_error_not_an_end() {
    let (a, mut raw) = tokio::io::duplex(1024);
    let mut ours = WsStream::new(a, Role::Client);
    raw.write_all(&[0x82, 0x05, b'a', b'b']).await.unwrap();
    drop(raw);
    let mut buf = Vec::new();
    let err = ours.read_to_end(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(buf, b"ab");
}

/// The point of owning the framing: a stream that carried a burst each way holds no buffer
/// once idle, where tungstenite kept a 64 KiB read buffer (zero-filled on each read) and a
/// write buffer of the largest frame per connection.
#[tokio::test]
async fn an_idle_stream_holds_no_payload_buffer_after_a_burst() {
    for role in [Role::Client, Role::Server] {
        let (mut ours, mut peer) = pair_as(role).await;
        assert_eq!(ours.buffer_capacity(), 0);
        let big = vec![7u8; 60_000];
        let reader = tokio::spawn(async move {
            let got = peer.next().await.unwrap().unwrap();
            peer.send(got).await.unwrap();
            peer
        });
        ours.write_all(&big).await.unwrap();
        ours.flush().await.unwrap();
        let mut back = vec![0u8; big.len()];
        ours.read_exact(&mut back).await.unwrap();
        assert_eq!(back, big);
        reader.await.unwrap();
        assert_eq!(ours.buffer_capacity(), 0, "{role:?}");
        assert!(
            std::mem::size_of::<WsStream<DuplexStream>>() < 512,
            "the inline state stays small: {} bytes",
            std::mem::size_of::<WsStream<DuplexStream>>()
        );
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `bytes` to a stream in `role` and reads until end or error; `None` on a panic.
    fn read_all(bytes: Vec<u8>, role: Role) -> io::Result<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let (a, mut raw) = tokio::io::duplex(1 << 16);
            let mut ours = WsStream::new(a, role);
            let feeder = tokio::spawn(async move {
                let _ = raw.write_all(&bytes).await;
                // Keep reading what the stream answers (pongs, closes) so it never blocks.
                let mut sink = [0u8; 1024];
                let _ = raw.shutdown().await;
                while raw.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            });
            let mut out = Vec::new();
            let result = ours.read_to_end(&mut out).await.map(|_| out);
            drop(ours);
            let _ = feeder.await;
            result
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_yield_data_or_a_protocol_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            server in any::<bool>(),
        ) {
            let role = if server { Role::Server } else { Role::Client };
            match read_all(bytes, role) {
                Ok(_) => {}
                Err(e) => prop_assert!(
                    matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof),
                    "{e}"
                ),
            }
        }

        #[test]
        fn valid_frames_split_anywhere_read_back_their_payload(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
            key in any::<[u8; 4]>(),
            server in any::<bool>(),
        ) {
            let role = if server { Role::Server } else { Role::Client };
            let mut wire = Vec::new();
            for p in &payloads {
                let mask = server.then_some(key);
                let header = Header { fin: true, opcode: Opcode::Binary, mask, len: p.len() as u64 };
                let mut head = [0u8; MAX_HEADER];
                let n = header.encode(&mut head);
                wire.extend_from_slice(&head[..n]);
                let start = wire.len();
                wire.extend_from_slice(p);
                if let Some(k) = mask {
                    apply_mask(&mut wire[start..], k, 0);
                }
            }
            // A close frame ends it cleanly.
            wire.extend_from_slice(if server { &[0x88, 0x80, 0, 0, 0, 0] } else { &[0x88, 0x00] });
            let got = read_all(wire, role);
            prop_assert_eq!(got.ok(), Some(payloads.concat()));
        }
    }
}

/// Payloads are streamed, so no frame is too large: tungstenite, configured as the old stream
/// was, refused messages over 1 MiB and held each one whole.
#[tokio::test]
async fn a_frame_larger_than_any_buffer_streams_through() {
    let (mut ours, mut peer) = pair().await;
    let big: Vec<u8> = (0..(3 << 20)).map(|i| (i % 241) as u8).collect();
    let expected = big.clone();
    let sender = tokio::spawn(async move {
        peer.send(Message::Binary(Bytes::from(big))).await.unwrap();
        peer
    });
    let mut got = vec![0u8; expected.len()];
    let mut chunk_reads = 0;
    let mut at = 0;
    while at < got.len() {
        let end = (at + 64 * 1024).min(got.len());
        let n = ours.read(&mut got[at..end]).await.unwrap();
        assert!(n > 0);
        at += n;
        chunk_reads += 1;
    }
    assert_eq!(got, expected);
    assert!(
        chunk_reads >= 48,
        "read in pieces as it came: {chunk_reads}"
    );
    assert_eq!(ours.buffer_capacity(), 0);
    let _peer = sender.await.unwrap();
}
