//! The kubeconfig lock, compatible with client-go: `<file>.lock`, created only if absent (client-go
//! uses `O_CREAT|O_EXCL`; this writer hard-links a complete file into place, which fails the same
//! way and never leaves a half-written lock), next to the file as it is named in `KUBECONFIG`
//! (not its symlink target — that is the name kubectl locks).
//!
//! Unlike client-go, which fails at once when the lock exists and never recovers one left by a
//! crash, this lock waits and retries up to a timeout, and breaks a stale lock. A lock is stale
//! when its content names a process that no longer exists (this writer puts its pid in it; the
//! check needs `/proc`, so it is Linux-only), or when it is older than `stale_after` (kubectl's
//! locks are empty, and no writer holds the lock for more than milliseconds). The pid check
//! assumes both processes share a pid namespace; the age check covers everything else.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::error::KubeconfigError;

/// How long to wait for a lock and when a lock counts as abandoned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockPolicy {
    /// Give up after waiting this long.
    pub timeout: Duration,
    /// A lock older than this is abandoned, whoever holds it.
    pub stale_after: Duration,
}

impl Default for LockPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
        }
    }
}

/// How long to sleep between attempts: short, because holders keep the lock for milliseconds.
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// A held lock; dropping it removes the lock file.
#[derive(Debug)]
pub(crate) struct FileLock {
    path: PathBuf,
    /// What this holder wrote into the lock: its pid and a random nonce.
    content: String,
}

/// The lock file's name for a kubeconfig path, as client-go builds it.
pub(crate) fn lock_path(kubeconfig: &Path) -> PathBuf {
    let mut name = kubeconfig.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl FileLock {
    /// Takes the lock of `kubeconfig`, waiting and breaking a stale lock as described above.
    pub fn acquire(kubeconfig: &Path, policy: LockPolicy) -> Result<Self, KubeconfigError> {
        let path = lock_path(kubeconfig);
        // The pid lets a waiter see that the holder died; the nonce lets this holder tell its
        // own lock from a successor's (inode numbers are reused at once on some file systems).
        let content = format!("{} {:016x}\n", std::process::id(), rand::random::<u64>());
        let started = Instant::now();
        loop {
            match create_exclusive(&path, &content) {
                Ok(()) => return Ok(Self { path, content }),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(KubeconfigError::Io {
                        action: "create the lock file",
                        path,
                        source,
                    });
                }
            }
            if let Some(stamp) = stale_lock(&path, policy.stale_after) {
                tracing::warn!(lock = %path.display(), "breaking a stale kubeconfig lock");
                break_lock(&path, &stamp);
                continue;
            }
            if started.elapsed() >= policy.timeout {
                return Err(KubeconfigError::LockTimeout {
                    lock: path,
                    waited: policy.timeout,
                });
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Only remove the lock if it is still ours: had it been broken as stale, the file now
        // belongs to someone else.
        if read_stamp(&self.path).is_some_and(|stamp| stamp.content == self.content) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn create_exclusive(path: &Path, content: &str) -> io::Result<()> {
    // The content goes into a private temporary file that is then hard-linked to the lock's
    // name: the link fails if the lock exists (like O_EXCL), and the lock appears complete in
    // one step, so a writer killed at any moment never leaves an empty lock that only the age
    // rule could recover. (kubectl's own locks are empty; the age rule still covers those.)
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = path.file_name().unwrap_or_default().to_owned();
    prefix.push(".k8s-tunnels-tmp-");
    let mut staged = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
    staged.write_all(content.as_bytes())?;
    fs::hard_link(staged.path(), path)
    // `staged` is removed on drop; the lock keeps the content through its own name.
}

/// What identifies one lock file: its content, inode and age.
struct LockStamp {
    content: String,
    identity: Option<(u64, u64)>,
    modified: Option<SystemTime>,
}

fn read_stamp(path: &Path) -> Option<LockStamp> {
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    let mut content = String::new();
    // A lock file is a few bytes; cap the read so a hostile huge file cannot stall us.
    let _ = file.take(128).read_to_string(&mut content);
    Some(LockStamp {
        content,
        identity: identity(&meta),
        modified: meta.modified().ok(),
    })
}

/// Returns the stamp of the lock file at `path` if it is stale.
fn stale_lock(path: &Path, stale_after: Duration) -> Option<LockStamp> {
    let stamp = read_stamp(path)?;
    let holder_dead = stamp
        .content
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| process_is_gone(pid) == Some(true));
    let too_old = stamp
        .modified
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > stale_after);
    (holder_dead || too_old).then_some(stamp)
}

/// Whether process `pid` is gone: `Some(true)` only when we can tell for sure.
fn process_is_gone(pid: u32) -> Option<bool> {
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        Some(!Path::new("/proc").join(pid.to_string()).exists())
    } else {
        None
    }
}

/// Removes a stale lock without removing a fresh one another waiter created in the meantime:
/// the lock is first renamed to a private name, and put back if it turns out not to be the one
/// judged stale.
fn break_lock(path: &Path, judged: &LockStamp) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(
        ".stale-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let aside = PathBuf::from(aside);
    if fs::rename(path, &aside).is_err() {
        // Someone else broke or released it first; just retry the create.
        return;
    }
    let same = read_stamp(&aside).is_some_and(|moved| {
        moved.content == judged.content
            && moved.identity == judged.identity
            && moved.modified == judged.modified
    });
    if !same {
        // Not the stale lock: restore it without clobbering (hard_link fails if a new lock
        // exists already).
        let _ = fs::hard_link(&aside, path);
    }
    let _ = fs::remove_file(&aside);
}

#[cfg(unix)]
fn identity(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(_meta: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(timeout_ms: u64) -> LockPolicy {
        LockPolicy {
            timeout: Duration::from_millis(timeout_ms),
            stale_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn lock_file_is_created_exclusively_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let lock = FileLock::acquire(&config, policy(100)).unwrap();
        let lock_file = dir.path().join("config.lock");
        assert!(lock_file.exists());
        let content = fs::read_to_string(&lock_file).unwrap();
        assert_eq!(
            content.split_whitespace().next(),
            Some(std::process::id().to_string().as_str())
        );
        // A second taker in the same process (alive pid, fresh file) times out.
        let err = FileLock::acquire(&config, policy(50)).unwrap_err();
        assert!(matches!(err, KubeconfigError::LockTimeout { .. }), "{err}");
        assert!(err.to_string().contains("config.lock"), "{err}");
        drop(lock);
        assert!(!lock_file.exists());
    }

    #[test]
    fn an_old_empty_lock_like_kubectls_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let file = File::create(lock_path(&config)).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(120))
            .unwrap();
        drop(file);
        let _lock = FileLock::acquire(&config, policy(100)).unwrap();
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the new lock remains");
    }

    #[test]
    fn a_recent_empty_lock_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        File::create(lock_path(&config)).unwrap();
        let err = FileLock::acquire(&config, policy(50)).unwrap_err();
        assert!(matches!(err, KubeconfigError::LockTimeout { .. }));
    }

    #[test]
    fn a_broken_lock_does_not_remove_its_successor_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let first = FileLock::acquire(&config, policy(100)).unwrap();
        // Simulate another process breaking our lock and taking a fresh one.
        fs::remove_file(lock_path(&config)).unwrap();
        let second = FileLock::acquire(&config, policy(100)).unwrap();
        drop(first);
        assert!(
            lock_path(&config).exists(),
            "the successor's lock must stay"
        );
        drop(second);
        assert!(!lock_path(&config).exists());
    }
}
