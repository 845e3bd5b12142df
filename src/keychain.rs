//! OS keychain access with a start-up probe.
//!
//! Backed by `keyring` 4 with its default (`v1`) features: the Secret Service over D-Bus on
//! Linux, the Keychain on macOS, the Credential Manager on Windows — never the in-memory mock.
//! `keyring`'s `v1` API keeps the platform store in a process-wide default that it sets up
//! once, on first use; this module is the only place that touches it. Because a Secret Service
//! that never answers would block forever, every call runs on one worker thread per keychain
//! and is waited for with a deadline. While a call is stuck past its deadline, the keychain
//! counts as hung: further calls fail at once instead of queueing behind it (and no thread is
//! started per call), until the stuck call returns.
//!
//! `K8S_TUNNELS_KEYCHAIN=off` disables the keychain (status [`KeychainStatus::Unavailable`]).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::secret::Secret;
use crate::sync::lock;

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
        /// The platform store's own words, which never hold the secret.
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

/// The OS keychain under one service name, probed when opened. Clones share the probe's result
/// and the worker thread.
#[derive(Clone, Debug)]
pub struct Keychain {
    service: String,
    status: KeychainStatus,
    worker: Arc<Worker>,
    timeout: Duration,
}

type Job = Box<dyn FnOnce() + Send>;

/// The one thread that talks to the platform store, started on the first call.
#[derive(Default)]
struct Worker {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// When the call now running (or waiting for the worker) was asked for; `None` when idle.
    /// The time asked, not the time started: on a loaded machine a call can wait for the worker
    /// thread to run it, and its caller's deadline runs from the asking.
    running_since: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Worker {
    /// Runs `f` on the worker and waits at most `timeout` for it. `None` when it did not
    /// finish in time, or when an earlier call is already stuck past `timeout` (then `f` is not
    /// run at all).
    fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        if self.stuck(timeout) {
            return None;
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let running = self.running_since.clone();
        let asked = Instant::now();
        lock(&running).get_or_insert(asked);
        let job: Job = Box::new(move || {
            *lock(&running) = Some(asked);
            let out = f();
            *lock(&running) = None;
            // The caller may have given up; nothing to do then.
            let _ = tx.send(out);
        });
        {
            let mut jobs = lock(&self.jobs);
            let sender = match jobs.as_ref() {
                Some(sender) => sender.clone(),
                None => {
                    let (sender, receiver) = mpsc::channel::<Job>();
                    std::thread::Builder::new()
                        .name("keychain".into())
                        .spawn(move || {
                            for job in receiver {
                                job();
                            }
                        })
                        .ok()?;
                    *jobs = Some(sender.clone());
                    sender
                }
            };
            sender.send(job).ok()?;
        }
        rx.recv_timeout(timeout).ok()
    }

    /// Whether the call now running has been running longer than `timeout`.
    fn stuck(&self, timeout: Duration) -> bool {
        lock(&self.running_since).is_some_and(|since| since.elapsed() > timeout)
    }
}

impl Keychain {
    /// Opens the keychain for `service` and probes it: write, read back and delete a probe
    /// entry, within a few seconds. `K8S_TUNNELS_KEYCHAIN=off` skips the probe.
    pub fn open(service: &str) -> Self {
        if std::env::var(KEYCHAIN_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            return Self::disabled(service, &format!("disabled by {KEYCHAIN_ENV}=off"));
        }
        let worker = Arc::new(Worker::default());
        let status = match probe(&worker, service) {
            Ok(()) => KeychainStatus::Durable,
            Err(reason) => KeychainStatus::Unavailable { reason },
        };
        // Debug only: what the unavailability means for the user (logins kept in memory for
        // the session) is said once, by the token store's warning, where it is shown.
        if let KeychainStatus::Unavailable { reason } = &status {
            tracing::debug!(%reason, "OS keychain unavailable");
        }
        Self {
            service: service.to_string(),
            status,
            worker,
            timeout: CALL_TIMEOUT,
        }
    }

    /// The same keychain with another deadline per call (tests).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A keychain that is known to be unavailable, without probing (for `off` and for tests
    /// that must not touch the user's keychain).
    pub fn disabled(service: &str, reason: &str) -> Self {
        Self {
            service: service.to_string(),
            status: KeychainStatus::Unavailable {
                reason: reason.to_string(),
            },
            worker: Arc::default(),
            timeout: CALL_TIMEOUT,
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
        let outcome = self.worker.run(self.timeout, move || {
            keyring::Entry::new(&service, &acct).and_then(|entry| op(&entry))
        });
        match outcome {
            None => Err(KeychainError::TimedOut {
                account: account.to_string(),
                operation,
                after: self.timeout,
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

/// Write, read back and delete a random entry; the reason on failure.
fn probe(worker: &Worker, service: &str) -> Result<(), String> {
    let service = service.to_string();
    let outcome = worker.run(PROBE_TIMEOUT, move || -> Result<(), String> {
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

    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
    }

    #[test]
    fn a_hung_call_is_given_up_on_and_later_calls_fail_at_once_on_one_thread() {
        let worker = Worker::default();
        assert_eq!(worker.run(Duration::from_secs(5), || 7), Some(7));
        let before = threads();
        let (release, hung) = mpsc::channel::<()>();
        let start = Instant::now();
        let out = worker.run(Duration::from_millis(200), move || {
            let _ = hung.recv();
        });
        assert!(out.is_none());
        assert!(start.elapsed() < Duration::from_secs(2));
        // Stuck past its deadline: the next hundred calls neither wait nor start threads.
        let start = Instant::now();
        for _ in 0..100 {
            assert_eq!(worker.run(Duration::from_millis(200), || 1), None);
        }
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        if before > 0 {
            assert_eq!(threads(), before, "no thread per call");
        }
        // The store answers again: so does the keychain.
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while worker.run(Duration::from_secs(1), || 2) != Some(2) {
            assert!(Instant::now() < deadline, "the worker never recovered");
        }
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
