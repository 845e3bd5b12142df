//! OS keychain access with a start-up probe.
//!
//! Backed by `keyring` 4 with its default (`v1`) features: the Secret Service over D-Bus on
//! Linux, the Keychain on macOS, the Credential Manager on Windows — never the in-memory mock.
//! `keyring`'s `v1` API keeps the platform store in a process-wide default that it sets up
//! once, on first use; this module is the only place that touches it. Because a Secret Service
//! that never answers would block forever, every call runs on a helper thread with a deadline
//! (a timed-out call's thread is left to finish on its own; it holds no lock of ours).
//!
//! `K8S_TUNNELS_KEYCHAIN=off` disables the keychain (status [`KeychainStatus::Unavailable`]).

use std::sync::mpsc;
use std::time::Duration;

use crate::secret::Secret;

/// The environment variable that disables the keychain when set to `off`.
pub const KEYCHAIN_ENV: &str = "K8S_TUNNELS_KEYCHAIN";

/// The service name the app's entries are stored under.
pub const DEFAULT_SERVICE: &str = "k8s-tunnels";

/// How long the start-up probe may take before the keychain counts as unavailable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one get / set / delete may take (a desktop keychain may show an unlock prompt).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the keychain can keep secrets across restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeychainStatus {
    /// The probe wrote, read back and deleted an entry: secrets survive restarts.
    Durable,
    /// No usable keychain; secrets must go elsewhere, and the user is told so.
    Unavailable {
        /// Why, for `k8s-tunnels status` and the UI.
        reason: String,
    },
}

/// Errors from keychain calls. None of them carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum KeychainError {
    /// The keychain is not usable (see [`KeychainStatus::Unavailable`]).
    #[error("the OS keychain is unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The keychain did not answer in time.
    #[error("the OS keychain did not answer within {} s ({operation} {account})", after.as_secs())]
    TimedOut {
        /// The entry.
        account: String,
        /// get, set or delete.
        operation: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The stored value is not valid text; its bytes are deliberately not kept here.
    #[error("the keychain entry {account} holds data that is not a valid secret")]
    Corrupt {
        /// The entry.
        account: String,
    },
    /// The platform store reported an error.
    #[error("the OS keychain failed to {operation} {account}")]
    Store {
        /// The entry.
        account: String,
        /// get, set or delete.
        operation: &'static str,
        /// The store's error.
        #[source]
        source: keyring::Error,
    },
}

/// The OS keychain under one service name, probed when opened. Clones share the probe's result.
#[derive(Clone, Debug)]
pub struct Keychain {
    service: String,
    status: KeychainStatus,
}

impl Keychain {
    /// Opens the keychain for `service` and probes it: write, read back and delete a probe
    /// entry, within a few seconds. `K8S_TUNNELS_KEYCHAIN=off` skips the probe.
    pub fn open(service: &str) -> Self {
        if std::env::var(KEYCHAIN_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            return Self::disabled(service, &format!("disabled by {KEYCHAIN_ENV}=off"));
        }
        let status = match probe(service) {
            Ok(()) => KeychainStatus::Durable,
            Err(reason) => KeychainStatus::Unavailable { reason },
        };
        if let KeychainStatus::Unavailable { reason } = &status {
            tracing::warn!(%reason, "OS keychain unavailable");
        }
        Self {
            service: service.to_string(),
            status,
        }
    }

    /// A keychain that is known to be unavailable, without probing (for `off` and for tests
    /// that must not touch the user's keychain).
    pub fn disabled(service: &str, reason: &str) -> Self {
        Self {
            service: service.to_string(),
            status: KeychainStatus::Unavailable {
                reason: reason.to_string(),
            },
        }
    }

    /// The probe's result.
    pub fn status(&self) -> &KeychainStatus {
        &self.status
    }

    /// The service name entries are stored under.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Reads an entry; `None` when there is none.
    pub fn get(&self, account: &str) -> Result<Option<Secret>, KeychainError> {
        self.usable()?;
        self.call(account, "get", |entry| match entry.get_password() {
            Ok(value) => Ok(Some(Secret::new(value))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(e),
        })?
    }

    /// Stores an entry, replacing any previous value.
    pub fn set(&self, account: &str, value: &Secret) -> Result<(), KeychainError> {
        self.usable()?;
        let value = value.clone();
        self.call(account, "set", move |entry| {
            entry.set_password(value.expose())
        })?
    }

    /// Deletes an entry; deleting a missing entry succeeds.
    pub fn delete(&self, account: &str) -> Result<(), KeychainError> {
        self.usable()?;
        self.call(account, "delete", |entry| match entry.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(e),
        })?
    }

    fn usable(&self) -> Result<(), KeychainError> {
        match &self.status {
            KeychainStatus::Durable => Ok(()),
            KeychainStatus::Unavailable { reason } => Err(KeychainError::Unavailable {
                reason: reason.clone(),
            }),
        }
    }

    /// Runs `op` on the entry with a deadline; the outer error is the deadline, the inner the store's.
    fn call<T: Send + 'static>(
        &self,
        account: &str,
        operation: &'static str,
        op: impl FnOnce(&keyring::Entry) -> Result<T, keyring::Error> + Send + 'static,
    ) -> Result<Result<T, KeychainError>, KeychainError> {
        let service = self.service.clone();
        let acct = account.to_string();
        let outcome = bounded(CALL_TIMEOUT, move || {
            keyring::Entry::new(&service, &acct).and_then(|entry| op(&entry))
        });
        match outcome {
            None => Err(KeychainError::TimedOut {
                account: account.to_string(),
                operation,
                after: CALL_TIMEOUT,
            }),
            Some(result) => Ok(result.map_err(|e| store_error(account, operation, e))),
        }
    }
}

/// Maps a store error, dropping any variant that carries the stored bytes (their `Debug`
/// would print them).
fn store_error(account: &str, operation: &'static str, err: keyring::Error) -> KeychainError {
    match err {
        keyring::Error::BadEncoding(_) | keyring::Error::BadDataFormat(..) => {
            KeychainError::Corrupt {
                account: account.to_string(),
            }
        }
        source => KeychainError::Store {
            account: account.to_string(),
            operation,
            source,
        },
    }
}

/// Runs `f` on its own thread and waits at most `timeout` for it.
fn bounded<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("keychain".into())
        .spawn(move || {
            // The receiver may have given up; nothing to do then.
            let _ = tx.send(f());
        });
    spawned.ok()?;
    rx.recv_timeout(timeout).ok()
}

/// Write, read back and delete a random entry; the reason on failure.
fn probe(service: &str) -> Result<(), String> {
    let service = service.to_string();
    let outcome = bounded(PROBE_TIMEOUT, move || -> Result<(), String> {
        let account = format!("probe-{}", Secret::random(12).expose());
        let value = Secret::random(24);
        let entry = keyring::Entry::new(&service, &account).map_err(|e| {
            // "No default store" alone says nothing; the store's own start-up error says why
            // (no D-Bus session, no Secret Service running, ...).
            match keyring::Entry::store_status() {
                Err(init) => format!("no platform credential store: {init}"),
                Ok(()) => format!("no platform credential store: {e}"),
            }
        })?;
        entry
            .set_password(value.expose())
            .map_err(|e| format!("cannot write a test entry: {e}"))?;
        let read = entry.get_password();
        // Delete before judging the read, so a failed probe leaves nothing behind.
        let deleted = entry.delete_credential();
        match read {
            Ok(back) if back == value.expose() => {}
            Ok(_) => return Err("a test entry read back differently".into()),
            Err(e) => return Err(format!("cannot read a test entry back: {e}")),
        }
        deleted.map_err(|e| format!("cannot delete a test entry: {e}"))
    });
    outcome.unwrap_or_else(|| {
        Err(format!(
            "the credential store did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn disabled_keychain_refuses_every_call_with_the_reason() {
        let keychain =
            Keychain::disabled("k8s-tunnels-test", "disabled by K8S_TUNNELS_KEYCHAIN=off");
        assert!(matches!(
            keychain.status(),
            KeychainStatus::Unavailable { .. }
        ));
        let err = keychain.get("x").unwrap_err();
        assert!(
            err.to_string().contains("K8S_TUNNELS_KEYCHAIN=off"),
            "{err}"
        );
        assert!(keychain.set("x", &Secret::new("v")).is_err());
        assert!(keychain.delete("x").is_err());
    }

    #[test]
    fn bounded_gives_up_on_a_call_that_hangs() {
        let start = std::time::Instant::now();
        let out = bounded(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(5));
        });
        assert!(out.is_none());
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(bounded(Duration::from_secs(5), || 7), Some(7));
    }

    #[test]
    fn corrupt_entry_error_drops_the_bytes() {
        let err = store_error(
            "acct",
            "get",
            keyring::Error::BadEncoding(b"hunter2".to_vec()),
        );
        let shown = format!("{err:?} {err}");
        assert!(!shown.contains("104, 117"), "{shown}"); // "hu" as bytes
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
