//! `kubectl port-forward` for the fake API server. kubectl ≥ 1.31 asks for a WebSocket with the
//! subprotocol `SPDY/3.1+portforward.k8s.io` (KEP-4006) and speaks SPDY/3 inside it, as it
//! speaks to a kubelet; the fake is that SPDY server. Each forwarded connection is a pair of
//! streams, an error stream and a data stream (headers `streamtype`, `port`, `requestid`); the
//! data stream is carried to the pod's port. Every pod has one port, 80, a line service that
//! answers each line with `<pod>:80 <line>`; any other port is refused on the error stream, as a
//! kubelet refuses a port nothing listens on.
//!
//! Only what a port-forward needs is spoken: SYN_STREAM / SYN_REPLY with zlib header blocks
//! (the SPDY/3 dictionary), DATA with FIN, RST_STREAM, PING (answered), SETTINGS, WINDOW_UPDATE
//! and GOAWAY (read and let be: kubectl's spdystream does no flow control).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Request, State};
use axum::response::Response;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{AppState, FakeState, status_response};

/// The one subprotocol spoken: SPDY tunnelled in a WebSocket.
const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The pod's one open port.
const POD_PORT: u16 = 80;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// Longest frame accepted: a port-forward's frames are small; anything larger is hostile.
const MAX_FRAME: usize = 1 << 20;

pub(super) async fn portforward(
    State(state): AppState,
    Path((namespace, pod)): Path<(String, String)>,
    mut req: Request,
) -> Response {
    if let Some(missing) = super::pods::missing_namespace(&state, &namespace) {
        return missing;
    }
    let Some((key, protocol)) = super::upgrade::offer(req.headers(), &[PROTOCOL]) else {
        // kubectl falls back to a plain SPDY upgrade when this is refused; the fake speaks
        // the tunnelled form only, and says so.
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("this fake API server supports port-forward over WebSocket ({PROTOCOL}) only"),
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let state: Arc<FakeState> = state.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let stream = crate::wire::handshake::server_stream(upgraded);
        if let Err(e) = serve(stream, &pod).await {
            tracing::debug!(cluster = %state.cluster_name, %pod, error = %e, "port-forward ended");
        }
    });
    super::upgrade::switching_protocols(&key, protocol)
}

/// The SPDY/3 header-compression dictionary (draft 3, 2.6.10.1): these words, each after its
/// 4-byte length, then the tail as it is.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
            "charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut out = Vec::new();
        for word in WORDS {
            out.extend_from_slice(&(word.len() as u32).to_be_bytes());
            out.extend_from_slice(word.as_bytes());
        }
        out.extend_from_slice(TAIL.as_bytes());
        out
    })
}

/// One direction's header-block compression: a zlib stream for the whole connection.
struct Headers {
    inflate: Decompress,
    deflate: Compress,
}

impl Headers {
    fn new() -> std::io::Result<Self> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(std::io::Error::other)?;
        Ok(Self {
            inflate: Decompress::new(true),
            deflate,
        })
    }

    /// Reads one header block: name → value (several values NUL-separated, as sent).
    fn read(&mut self, block: &[u8]) -> std::io::Result<HashMap<String, String>> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        while !input.is_empty() {
            if plain.capacity() - plain.len() < 256 {
                plain.reserve(plain.capacity());
            }
            let (before, produced) = (self.inflate.total_in(), plain.len());
            // The stream's header names the dictionary: it is set, and reading goes on after
            // the header bytes it consumed.
            let mut asked_dictionary = false;
            match self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| std::io::Error::other(format!("SPDY dictionary: {e}")))?;
                    asked_dictionary = true;
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
            let used = usize::try_from(self.inflate.total_in() - before).unwrap_or(input.len());
            if used == 0 && plain.len() == produced && !asked_dictionary {
                return Err(std::io::Error::other("SPDY header block does not inflate"));
            }
            input = &input[used.min(input.len())..];
        }
        parse_block(&plain)
    }

    /// Writes an empty header block (a SYN_REPLY says nothing more than "accepted").
    fn empty(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        self.deflate
            .compress_vec(&0u32.to_be_bytes(), &mut out, FlushCompress::Sync)
            .map_err(std::io::Error::other)?;
        Ok(out)
    }
}

fn parse_block(plain: &[u8]) -> std::io::Result<HashMap<String, String>> {
    let bad = || std::io::Error::other("malformed SPDY header block");
    let mut at = 0usize;
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        let slice = plain.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(slice)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = word(take(4)?);
    let mut headers = HashMap::new();
    for _ in 0..count.min(64) {
        let len = word(take(4)?);
        let name = String::from_utf8_lossy(take(len)?).into_owned();
        let len = word(take(4)?);
        let value = String::from_utf8_lossy(take(len)?).into_owned();
        headers.insert(name, value);
    }
    Ok(headers)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

fn data(stream: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

/// Serves one port-forward connection until the client goes away.
async fn serve<S>(stream: S, pod: &str) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (frames, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    let write = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    let mut headers = Headers::new()?;
    // The error stream of each request id, waiting for its data stream.
    let mut errors: HashMap<String, u32> = HashMap::new();
    // What each open data stream's bytes go to: the pod port's task.
    let mut inputs: HashMap<u32, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let result = loop {
        let mut head = [0u8; 8];
        if let Err(e) = reader.read_exact(&mut head).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(e)
            };
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            break Err(std::io::Error::other(format!("a {len}-byte SPDY frame")));
        }
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload).await?;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes(head[..4].try_into().unwrap_or_default()) & 0x7fff_ffff;
            if let Some(input) = inputs.get(&id) {
                if !payload.is_empty() {
                    let _ = input.send(payload);
                }
                if flags & FLAG_FIN != 0 {
                    inputs.remove(&id);
                }
            }
            continue;
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let stream_id = || {
            payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                .ok_or_else(|| std::io::Error::other("short SPDY control frame"))
        };
        match kind {
            SYN_STREAM => {
                let id = stream_id()?;
                let block = payload
                    .get(10..)
                    .ok_or_else(|| std::io::Error::other("short SYN_STREAM"))?;
                let fields = headers.read(block)?;
                let mut reply = id.to_be_bytes().to_vec();
                reply.extend_from_slice(&headers.empty()?);
                let _ = frames.send(control(SYN_REPLY, 0, &reply));
                let request = fields.get("requestid").cloned().unwrap_or_default();
                match fields.get("streamtype").map(String::as_str) {
                    Some("error") => {
                        errors.insert(request, id);
                    }
                    Some("data") => {
                        let error = errors.remove(&request);
                        let port = fields.get("port").and_then(|p| p.parse::<u16>().ok());
                        let (input, lines) = mpsc::unbounded_channel();
                        inputs.insert(id, input);
                        tokio::spawn(pod_port(
                            pod.to_string(),
                            port,
                            id,
                            error,
                            lines,
                            frames.clone(),
                        ));
                    }
                    _ => {}
                }
            }
            RST_STREAM => {
                inputs.remove(&stream_id()?);
            }
            PING => {
                let _ = frames.send(control(PING, 0, &payload));
            }
            GOAWAY => break Ok(()),
            // SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do for a port-forward.
            _ => {}
        }
    };
    drop(frames);
    drop(inputs);
    let _ = write.await;
    result
}

/// The pod's port behind one data stream: port 80 answers each line; any other is refused on
/// the error stream. Both streams end (FIN) when the client ends its side.
async fn pod_port(
    pod: String,
    port: Option<u16>,
    data_stream: u32,
    error_stream: Option<u32>,
    mut input: mpsc::UnboundedReceiver<Vec<u8>>,
    frames: mpsc::UnboundedSender<Vec<u8>>,
) {
    let finish = |frames: &mpsc::UnboundedSender<Vec<u8>>| {
        let _ = frames.send(data(data_stream, FLAG_FIN, &[]));
        if let Some(error) = error_stream {
            let _ = frames.send(data(error, FLAG_FIN, &[]));
        }
    };
    if port != Some(POD_PORT) {
        if let Some(error) = error_stream {
            let message = format!(
                "error forwarding port {} to pod {pod}: connection refused",
                port.map_or_else(|| "?".to_string(), |p| p.to_string())
            );
            let _ = frames.send(data(error, 0, message.as_bytes()));
        }
        finish(&frames);
        return;
    }
    let mut pending = Vec::new();
    while let Some(bytes) = input.recv().await {
        pending.extend_from_slice(&bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let mut answer = format!("{pod}:{POD_PORT} ").into_bytes();
            answer.extend_from_slice(&line);
            if frames.send(data(data_stream, 0, &answer)).is_err() {
                return;
            }
        }
    }
    finish(&frames);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = (pairs.len() as u32).to_be_bytes().to_vec();
        for (name, value) in pairs {
            for text in [name, value] {
                plain.extend_from_slice(&(text.len() as u32).to_be_bytes());
                plain.extend_from_slice(text.as_bytes());
            }
        }
        plain
    }

    #[test]
    fn header_blocks_read_across_one_zlib_stream_and_garbage_is_an_error() {
        // A peer's compressor: one zlib stream with the dictionary, sync-flushed per block.
        let mut peer = Compress::new(Compression::best(), true);
        peer.set_dictionary(dictionary()).unwrap();
        let mut ours = Headers::new().unwrap();
        for (request, kind) in [("0", "error"), ("0", "data"), ("1", "error")] {
            let plain = block(&[("streamtype", kind), ("port", "80"), ("requestid", request)]);
            let mut wire = Vec::with_capacity(plain.len() + 64);
            peer.compress_vec(&plain, &mut wire, FlushCompress::Sync)
                .unwrap();
            let fields = ours.read(&wire).unwrap();
            assert_eq!(fields["streamtype"], kind);
            assert_eq!(fields["requestid"], request);
            assert_eq!(fields["port"], "80");
        }
        let mut fresh = Headers::new().unwrap();
        assert!(
            fresh
                .read(&[0x78, 0xbb, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])
                .is_err()
        );
        assert!(
            Headers::new()
                .unwrap()
                .read(&[0x78, 0x9c, 0xff, 0xfe])
                .is_err()
        );
        assert!(parse_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']).is_err());
    }
}
