//! The origin every path ends at, and the direct loopback relay that is the baseline.
//!
//! The origin speaks a 9-byte request header (a mode byte and a big-endian `u64`), then:
//! `D n` sends `n` bytes and closes; `U n` reads `n` bytes and answers one byte; `E` echoes
//! until the client closes.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Size of the origin's and the clients' I/O buffers, and of the relay's copy buffers (the
/// same as the tunnel's, so the baseline is not handicapped by smaller copies).
pub const CHUNK: usize = 64 * 1024;

/// What a client asks the origin for.
#[derive(Clone, Copy, Debug)]
pub enum Request {
    /// Send this many bytes, then close.
    Download(u64),
    /// Read this many bytes, then answer one byte.
    Upload(u64),
    /// Echo everything.
    Echo,
}

impl Request {
    /// The request header as sent on the wire.
    pub fn encode(self) -> [u8; 9] {
        let (mode, n) = match self {
            Request::Download(n) => (b'D', n),
            Request::Upload(n) => (b'U', n),
            Request::Echo => (b'E', 0),
        };
        let mut head = [0u8; 9];
        head[0] = mode;
        head[1..].copy_from_slice(&n.to_be_bytes());
        head
    }
}

/// A background accept loop; dropping it stops accepting.
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Starts the origin on an ephemeral loopback port.
pub async fn start_origin() -> io::Result<Server> {
    let (listener, addr) = listen().await?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Err(e) = serve(stream).await {
                    // A client that goes away early is its own failure to report; the origin
                    // only says so for diagnosis.
                    eprintln!("origin: {e}");
                }
            });
        }
    });
    Ok(Server { addr, task })
}

async fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut head = [0u8; 9];
    match stream.read_exact(&mut head).await {
        Ok(_) => {}
        // The tunnels' health probes open a stream and close it without a request (the
        // gateway dials the origin before it answers the upgrade): nothing to report.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&head[1..]);
    let n = u64::from_be_bytes(n);
    match head[0] {
        b'D' => {
            let buf = vec![0xA5u8; CHUNK];
            let mut left = n;
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                stream.write_all(&buf[..k]).await?;
                left -= k as u64;
            }
            stream.shutdown().await
        }
        b'U' => {
            let mut buf = vec![0u8; CHUNK];
            let mut left = n;
            while left > 0 {
                let want = left.min(CHUNK as u64) as usize;
                let k = stream.read(&mut buf[..want]).await?;
                if k == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("upload ended {left} bytes short"),
                    ));
                }
                left -= k as u64;
            }
            stream.write_all(&[1]).await
        }
        b'E' => {
            let (mut r, mut w) = stream.split();
            tokio::io::copy(&mut r, &mut w).await.map(|_| ())
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown request mode {other:#04x}"),
        )),
    }
}

/// Starts the baseline: a direct loopback TCP relay to `origin` (accept, dial, TCP_NODELAY on
/// both, `copy_bidirectional` with the tunnel's buffer size).
pub async fn start_relay(origin: SocketAddr) -> io::Result<Server> {
    let (listener, addr) = listen().await?;
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(mut upstream) = TcpStream::connect(origin).await else {
                    return;
                };
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut upstream,
                    CHUNK,
                    CHUNK,
                )
                .await;
            });
        }
    });
    Ok(Server { addr, task })
}
