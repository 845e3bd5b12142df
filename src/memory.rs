//! Giving memory back to the system when connections close.
//!
//! A burst of connections (a `kubectl` loop, a watch reconnecting, port-forwards) allocates
//! their buffers and TLS state all over the allocator's heaps. glibc returns the free top of a
//! heap by itself but keeps every free page below a chunk still in use, so a process that
//! served 1000 connections once keeps their pages for its life. `malloc_trim` hands those free
//! pages back (`MADV_DONTNEED`); [`Reclaim`] calls it [`AFTER`] a connection closed, so a
//! burst of closes costs one call, and at most once per [`AFTER`] while connections keep
//! closing (a gateway's streams close all the time: waiting for a pause could wait forever).
//! Measured in BENCHMARKS.md ("Scale: idle connections"): no glibc setting does it by itself.
//!
//! Other systems' allocators (macOS's, Windows's) return pages on their own; there this does
//! nothing.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

/// Memory is trimmed this long after a connection closed, with every close in between.
pub const AFTER: Duration = Duration::from_secs(1);

/// Trims the allocator after connections close. Cheap to clone: clones share one task, which
/// ends with the last clone.
#[derive(Clone)]
pub struct Reclaim {
    shared: Arc<Shared>,
}

impl Default for Reclaim {
    fn default() -> Self {
        Self::with(trim)
    }
}

struct Shared {
    /// What gives the memory back ([`trim`] but in tests).
    trim: fn(),
    closed: Arc<Notify>,
    /// Started at the first close, so a `Reclaim` can be made outside a runtime.
    task: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl Reclaim {
    fn with(trim: fn()) -> Self {
        Self {
            shared: Arc::new(Shared {
                trim,
                closed: Arc::default(),
                task: OnceLock::new(),
            }),
        }
    }

    /// Says a connection closed: memory is trimmed [`AFTER`] it (with any other closing then).
    pub fn connection_closed(&self) {
        self.shared.task.get_or_init(|| {
            let closed = self.shared.closed.clone();
            let trim = self.shared.trim;
            tokio::spawn(async move {
                loop {
                    closed.notified().await;
                    // Closes in the meantime leave one permit: one more trim, AFTER this one.
                    tokio::time::sleep(AFTER).await;
                    (trim)();
                }
            })
            .abort_handle()
        });
        self.shared.closed.notify_one();
    }
}

/// Returns the allocator's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: `malloc_trim` only releases pages of free chunks; it takes the allocator's own
    // locks and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        TRIMS.fetch_add(1, Ordering::SeqCst);
    }

    async fn run_for(d: Duration) {
        tokio::time::sleep(d).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_closes_trims_once_and_steady_closing_at_most_once_a_second() {
        let reclaim = Reclaim::with(count);
        run_for(Duration::from_secs(5)).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0, "nothing without a close");
        for _ in 0..1000 {
            reclaim.clone().connection_closed();
        }
        run_for(AFTER / 2).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0, "not before AFTER");
        run_for(Duration::from_secs(5)).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1, "one trim for the burst");
        // A close every 100 ms for 10 s: about one trim a second, never one per close.
        for _ in 0..100 {
            reclaim.connection_closed();
            run_for(Duration::from_millis(100)).await;
        }
        run_for(Duration::from_secs(3)).await;
        let steady = TRIMS.load(Ordering::SeqCst) - 1;
        assert!((5..=11).contains(&steady), "{steady} trims");
        drop(reclaim);
        run_for(Duration::from_secs(5)).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1 + steady);
    }
}
