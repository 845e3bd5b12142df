//! Giving memory back to the system when connections close.
//!
//! A burst of connections (a `kubectl` loop, a watch reconnecting, port-forwards) allocates
//! their buffers and TLS state all over the allocator's heaps. glibc returns the free top of a
//! heap by itself but keeps every free page below a chunk still in use, so a process that
//! served 1000 connections once keeps their pages for its life. `malloc_trim` hands those free
//! pages back (`MADV_DONTNEED`); [`Reclaim`] calls it [`AFTER`] a connection closed, so a
//! burst of closes costs one call, and at most once per [`AFTER`] while connections keep
//! closing (a gateway's streams close all the time: waiting for a pause could wait forever).
//! Measured in BENCHMARKS.md ("Scale: idle connections"): no glibc setting does it by itself,
//! and what `malloc_trim` cannot reach, the per-thread caches' chunks, a server avoids with
//! [`restart_without_thread_caches`].
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

/// Runs this program again in place (`exec`: the same process id, arguments, environment and
/// open descriptors) with glibc's per-thread caches off, unless `GLIBC_TUNABLES` already says
/// how large they are. Meant for a server's `main`, before it starts any thread: glibc reads
/// its tunables from the environment, at start only.
///
/// Why: each thread's cache keeps up to seven freed chunks of every small size for itself,
/// counted as in use. Tokio moves tasks between worker threads, so after a burst of
/// connections those caches hold chunks scattered over the burst's pages, and `malloc_trim`
/// can give none of those pages back: the gateway kept +14–20 % of its idle RSS after three bursts of
/// 1000 with the caches, +1 % without, at the same CPU per GiB (BENCHMARKS.md, "Scale").
///
/// Returns `Ok` without doing anything where there is nothing to do (the setting is there, or
/// this is not Linux with glibc), and the error when the exec failed: the program then goes on
/// as it is.
pub fn restart_without_thread_caches() -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        let current = std::env::var_os("GLIBC_TUNABLES");
        if let Some(tunables) = without_thread_caches(current.as_deref()) {
            let mut args = std::env::args_os();
            // `exec` returns only when it failed.
            return Err(std::process::Command::new("/proc/self/exe")
                .arg0(args.next().unwrap_or_default())
                .args(args)
                .env("GLIBC_TUNABLES", tunables)
                .exec());
        }
    }
    Ok(())
}

/// The glibc tunable that sizes the per-thread caches.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THREAD_CACHE_COUNT: &str = "glibc.malloc.tcache_count";

/// `GLIBC_TUNABLES` with the per-thread caches off, the user's own settings kept; `None` when
/// it sizes them already (the user's choice, or this program's after its restart).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn without_thread_caches(current: Option<&std::ffi::OsStr>) -> Option<std::ffi::OsString> {
    let off = format!("{THREAD_CACHE_COUNT}=0");
    let Some(current) = current.filter(|c| !c.is_empty()) else {
        return Some(off.into());
    };
    let sized = current.to_string_lossy().split(':').any(|t| {
        t.split_once('=')
            .is_some_and(|(name, _)| name == THREAD_CACHE_COUNT)
    });
    if sized {
        return None;
    }
    let mut tunables = current.to_owned();
    tunables.push(":");
    tunables.push(off);
    Some(tunables)
}

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

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_thread_caches_are_turned_off_once_and_the_users_tunables_are_kept() {
        use std::ffi::{OsStr, OsString};
        let off = |current: Option<&str>| without_thread_caches(current.map(OsStr::new));
        let expect = |s: &str| Some(OsString::from(s));
        assert_eq!(off(None), expect("glibc.malloc.tcache_count=0"));
        assert_eq!(off(Some("")), expect("glibc.malloc.tcache_count=0"));
        assert_eq!(
            off(Some("glibc.malloc.arena_max=2")),
            expect("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0")
        );
        // Sized already: by this program after its restart, or by the user (left as it is).
        assert_eq!(off(Some("glibc.malloc.tcache_count=0")), None);
        assert_eq!(
            off(Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=3")),
            None
        );
        // A tunable whose name only starts the same is another one.
        assert_eq!(
            off(Some("glibc.malloc.tcache_count_x=1")),
            expect("glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=0")
        );
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
