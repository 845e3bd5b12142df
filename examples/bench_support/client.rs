//! The measuring client: a plain TCP connect for the relay, a real SOCKS5 client (RFC 1928 with
//! RFC 1929 username/password, one round trip at a time as kubectl's does) for the tunnels.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::origin::{CHUNK, Request};
use super::world::{Route, SocksLogin};

/// Opens a stream to the origin along `route`.
pub async fn open(route: &Route) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(route.entry).await?;
    stream.set_nodelay(true)?;
    if let Some(login) = &route.socks {
        socks5_connect(&mut stream, login).await?;
    }
    Ok(stream)
}

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

async fn socks5_connect(stream: &mut TcpStream, login: &SocksLogin) -> io::Result<()> {
    // Greeting: version 5, one method, username/password.
    stream.write_all(&[5, 1, 2]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice != [5, 2] {
        return Err(protocol(format!("SOCKS method choice {choice:?}")));
    }
    let user = login.username.as_bytes();
    let pass = login.password.expose().as_bytes();
    let mut auth = vec![1, user.len() as u8];
    auth.extend_from_slice(user);
    auth.push(pass.len() as u8);
    auth.extend_from_slice(pass);
    stream.write_all(&auth).await?;
    let mut status = [0u8; 2];
    stream.read_exact(&mut status).await?;
    if status != [1, 0] {
        return Err(protocol(format!("SOCKS authentication status {status:?}")));
    }
    let host = login.host.as_bytes();
    let mut connect = vec![5, 1, 0, 3, host.len() as u8];
    connect.extend_from_slice(host);
    connect.extend_from_slice(&login.port.to_be_bytes());
    stream.write_all(&connect).await?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[..2] != [5, 0] {
        return Err(protocol(format!("SOCKS CONNECT reply {:#04x}", reply[1])));
    }
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(stream.read_u8().await?) + 2,
        other => return Err(protocol(format!("SOCKS address type {other}"))),
    };
    let mut bound = vec![0u8; rest];
    stream.read_exact(&mut bound).await?;
    Ok(())
}

/// Downloads `n` bytes (origin → client) over an open connection; the time runs from the
/// request to the end of stream.
pub async fn download(route: &Route, n: u64) -> io::Result<Duration> {
    let mut stream = open(route).await?;
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    stream.write_all(&Request::Download(n).encode()).await?;
    let mut got = 0u64;
    loop {
        let k = stream.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    let elapsed = start.elapsed();
    if got != n {
        return Err(protocol(format!("download got {got} of {n} bytes")));
    }
    Ok(elapsed)
}

/// Uploads `n` bytes (client → origin) over an open connection; the time runs from the
/// request to the origin's one-byte answer that it has read them all.
pub async fn upload(route: &Route, n: u64) -> io::Result<Duration> {
    let mut stream = open(route).await?;
    let buf = vec![0x5Au8; CHUNK];
    let start = Instant::now();
    stream.write_all(&Request::Upload(n).encode()).await?;
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        stream.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    let ack = stream.read_u8().await?;
    let elapsed = start.elapsed();
    if ack != 1 {
        return Err(protocol(format!("upload answer {ack}")));
    }
    Ok(elapsed)
}

/// One new connection: connect, SOCKS handshake (which includes the WebSocket upgrade through
/// the gateway), then a one-byte echo round trip through to the origin.
pub async fn new_connection(route: &Route) -> io::Result<Duration> {
    let start = Instant::now();
    let mut stream = open(route).await?;
    let head = Request::Echo.encode();
    let mut request = [0u8; 10];
    request[..9].copy_from_slice(&head);
    request[9] = b'x';
    stream.write_all(&request).await?;
    let echoed = stream.read_u8().await?;
    let elapsed = start.elapsed();
    if echoed != b'x' {
        return Err(protocol(format!("echo returned {echoed:#04x}")));
    }
    Ok(elapsed)
}
