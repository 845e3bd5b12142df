//! The one way this project takes a `std::sync::Mutex` and the one way it blocks a thread to
//! wait (clippy.toml bans `Mutex::lock` and `std::thread::sleep` everywhere else).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `m`, poisoned or not. What the project keeps under a `std` mutex is small state
/// changed by plain assignments and inserts, which a panic cannot leave half-written; so a
/// panic in one task must not become a panic in every task that touches the same state.
#[expect(
    clippy::disallowed_methods,
    reason = "the one place a std mutex is locked"
)]
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Blocks the calling thread for `duration`. For blocking code only: a lock file's retry loop
/// (run on a blocking thread), a synchronous test. A sleeping thread in async code stalls every
/// task of its Tokio worker, so async code waits with `tokio::time::sleep`; naming the blocking
/// pause makes that choice visible where it is made.
#[expect(clippy::disallowed_methods, reason = "the one blocking pause")]
pub fn pause_blocking(duration: Duration) {
    std::thread::sleep(duration);
}
