//! A TCP relay in its own process between the client and the edge, so that faults are real:
//! `stall` stops it with SIGSTOP (the kernel still completes new TCP handshakes, but nothing
//! moves: what a laptop waking on another network, or a frozen middlebox, looks like),
//! `resume` continues it, `kill` ends it with SIGKILL (every connection reset, new ones
//! refused), `restart` starts it again on the same port.
//!
//! The relay is this test binary run again, filtered to the test that calls [`child_main`]
//! (named by [`CHILD_TEST`]).
#![allow(dead_code)]

#[path = "signals.rs"]
mod signals;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// The `#[test]` (ignored) of the test binary that runs [`child_main`].
pub const CHILD_TEST: &str = "fault_proxy_child";
const LISTEN_ENV: &str = "K8S_TUNNELS_FAULT_PROXY_LISTEN";
const TARGET_ENV: &str = "K8S_TUNNELS_FAULT_PROXY_TARGET";

/// The relay process and where it listens.
pub struct FaultProxy {
    child: Option<Child>,
    addr: SocketAddr,
    target: SocketAddr,
}

impl FaultProxy {
    /// Starts a relay to `target` on a free loopback port.
    pub fn start(target: SocketAddr) -> Self {
        let (child, addr) = spawn("127.0.0.1:0".parse().expect("an address"), target);
        Self {
            child: Some(child),
            addr,
            target,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SIGSTOP: the relay freezes with every connection open; returns once it has (see
    /// [`signals::stop`]).
    pub fn stall(&self) {
        signals::stop(self.pid());
    }

    /// SIGCONT: it carries on where it stopped.
    pub fn resume(&self) {
        signals::resume(self.pid());
    }

    /// SIGKILL: every connection is reset and the port refuses new ones.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the relay again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr) = spawn(self.addr, self.target);
        assert_eq!(addr, self.addr);
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the relay runs").id()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process must be continued to die of SIGKILL promptly everywhere.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

fn spawn(listen: SocketAddr, target: SocketAddr) -> (Child, SocketAddr) {
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--include-ignored", "--nocapture"])
        .env(LISTEN_ENV, listen.to_string())
        .env(TARGET_ENV, target.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the fault proxy");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the fault proxy says where it listens")
            .expect("read the fault proxy's output");
        if let Some(addr) = line.strip_prefix("LISTENING ") {
            break addr.parse().expect("an address");
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// The relay itself; returns only when the process is killed. Does nothing when not run by
/// [`FaultProxy`].
pub fn child_main() {
    let (Ok(listen), Ok(target)) = (std::env::var(LISTEN_ENV), std::env::var(TARGET_ENV)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .expect("bind the fault proxy");
        println!("LISTENING {}", listener.local_addr().expect("address"));
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}
