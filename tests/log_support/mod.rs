//! Captures what the code under test logs, so tests can check that no secret is in it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

/// Everything logged on this thread while the guard lives (all levels, no colours).
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    /// Starts capturing on this thread. On a current-thread runtime every spawned task runs on
    /// this thread, so the thread-local subscriber sees the lines of servers the test starts.
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let (captured, subscriber) = Self::subscriber();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// Starts capturing in every thread of this process, for tests whose servers run on a
    /// multi-threaded runtime (nextest runs each test in a process of its own).
    pub fn start_global() -> Self {
        let (captured, subscriber) = Self::subscriber();
        tracing::subscriber::set_global_default(subscriber).expect("the first global subscriber");
        captured
    }

    /// A subscriber that writes every level, without colours, into a new capture.
    fn subscriber() -> (Self, impl tracing::Subscriber + Send + Sync) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, subscriber)
    }

    /// The text logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&k8s_tunnels::sync::lock(&self.0)).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        k8s_tunnels::sync::lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
