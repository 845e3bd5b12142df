//! The one way this project takes a `std::sync::Mutex` (clippy.toml bans calling
//! `Mutex::lock` anywhere else).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not. What the project keeps under a `std` mutex is small state
/// changed by plain assignments and inserts, which a panic cannot leave half-written; so a
/// panic in one task must not become a panic in every task that touches the same state.
#[allow(clippy::disallowed_methods)]
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
