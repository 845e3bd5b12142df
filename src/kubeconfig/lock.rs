//! The kubeconfig lock, compatible with client-go: `<file>.lock`, created only if absent (client-go
//! uses `O_CREAT|O_EXCL`), next to the file as it is named in `KUBECONFIG` (not its symlink
//! target — that is the name kubectl locks).
//!
//! Unlike client-go, which fails at once when the lock exists and never recovers one left by a
//! crash, this lock waits and retries up to a timeout, and breaks a stale lock. A lock is stale
//! when its holder is known to be gone, or when it is older than `stale_after` (kubectl's locks
//! are empty, and no writer holds the lock for more than milliseconds). How a holder is known
//! to be gone differs per system:
//!
//! - **Unix**: the lock holds this writer's pid, a nonce and where that pid means something
//!   (on Linux: the boot and the pid namespace), hard-linked into place complete so a writer
//!   killed at any moment never leaves an empty lock (on a file system without hard links, such
//!   as exFAT, it is created with `O_EXCL` and then written). On Linux a pid missing from
//!   `/proc` is a dead holder only when the lock was taken in this boot and pid namespace: a
//!   holder in another container sharing the folder, or on another NFS client, names a pid this
//!   `/proc` cannot see. Elsewhere only the age counts. Breaking a stale lock and releasing
//!   one are serialised by an advisory lock (`flock`) on the folder, so three writers racing to
//!   break one dead holder's lock never move each other's fresh lock.
//! - **Windows**: there is no `kill(0)`, and pids are reused at once. Instead the holder keeps
//!   the lock open for as long as it holds it, sharing read access only and marked delete on
//!   close: while it lives nobody can rename or delete the lock, and when its process ends,
//!   however it ends, the system closes the handle and the lock disappears. A lock in this
//!   writer's format that nobody holds open is a dead holder's (a file system that does not
//!   honour delete on close); kubectl's empty locks age out as on Unix.

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
    // Read on release, except on Windows, where closing `_held` releases it (kept for Debug).
    #[cfg_attr(windows, allow(dead_code))]
    path: PathBuf,
    /// What this holder wrote into the lock: its pid and a random nonce.
    #[cfg_attr(windows, allow(dead_code))]
    content: String,
    /// Windows: the open lock, which keeps others from removing it and removes it on close.
    #[cfg(windows)]
    _held: File,
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
        let content = lock_content(std::process::id(), rand::random::<u64>());
        let started = Instant::now();
        loop {
            match create_exclusive(&path, &content) {
                #[cfg(not(windows))]
                Ok(()) => return Ok(Self { path, content }),
                #[cfg(windows)]
                Ok(held) => {
                    return Ok(Self {
                        path,
                        content,
                        _held: held,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                // A lock its holder just closed is gone once nobody has it open; a waiter
                // reading it at that moment keeps it "delete pending", and creating it then
                // fails with access denied. A denial that persists is reported at the timeout.
                #[cfg(windows)]
                Err(error)
                    if error.kind() == io::ErrorKind::PermissionDenied
                        && started.elapsed() < policy.timeout =>
                {
                    crate::sync::pause_blocking(RETRY_INTERVAL);
                    continue;
                }
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
                if break_lock(&path, &stamp) {
                    continue;
                }
                // Not broken: released meanwhile, or (Windows) still held open by a live
                // holder, however old. Wait like for any lock, within the timeout.
            }
            if started.elapsed() >= policy.timeout {
                return Err(KubeconfigError::LockTimeout {
                    lock: path,
                    waited: policy.timeout,
                });
            }
            crate::sync::pause_blocking(RETRY_INTERVAL);
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Only remove the lock if it is still ours: had it been broken as stale, the file now
        // belongs to someone else. (On Windows closing `_held` removes it: nobody else could
        // have removed or replaced it while it was open.)
        // Under the breakers' lock: a breaker that judged this lock stale must not see it
        // vanish and a successor's appear between its check and its move.
        #[cfg(not(windows))]
        {
            let _breakers = BreakersLock::take(&self.path);
            if read_stamp(&self.path).is_some_and(|stamp| stamp.content == self.content) {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// What a lock of this writer holds: `<pid> <nonce>`, and on Linux ` <scope>` (see
/// [`pid_scope`]).
fn lock_content(pid: u32, nonce: u64) -> String {
    match pid_scope() {
        Some(scope) => format!("{pid} {nonce:016x} {scope}\n"),
        None => format!("{pid} {nonce:016x}\n"),
    }
}

/// Where a pid names the same process as here: this boot of this machine and this pid
/// namespace (`<boot id>/pid:[<inode>]`). `None` when this process's `/proc` is not of its own
/// pid namespace (say, entered with `unshare --pid` without a new `/proc`), where the pids in
/// `/proc` are not the ones processes here know themselves by.
#[cfg(target_os = "linux")]
fn pid_scope() -> Option<String> {
    let own_pid: u32 = fs::read_link("/proc/self").ok()?.to_str()?.parse().ok()?;
    if own_pid != std::process::id() {
        return None;
    }
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = fs::read_link("/proc/self/ns/pid").ok()?;
    let scope = format!("{}/{}", boot.trim(), namespace.to_str()?);
    // One word in the lock's text.
    (!scope.contains(char::is_whitespace)).then_some(scope)
}

#[cfg(not(target_os = "linux"))]
fn pid_scope() -> Option<String> {
    None
}

/// Unix: an exclusive advisory lock on the lock's folder, held while a stale lock is broken or
/// a lock is released, so that those steps of different writers never interleave. Released
/// when dropped (or when the process dies: `flock` locks never go stale). Where the folder
/// cannot be locked (some network and FUSE file systems), breaking goes on unserialised: the
/// move-aside-and-check in [`break_lock`] still keeps a fresh lock, only with a short gap.
#[cfg(not(windows))]
struct BreakersLock(#[allow(dead_code)] Option<File>);

#[cfg(not(windows))]
impl BreakersLock {
    fn take(lock: &Path) -> Self {
        let dir = match lock.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let held = File::open(dir).and_then(|folder| folder.lock().map(|()| folder));
        match held {
            Ok(folder) => Self(Some(folder)),
            Err(error) => {
                tracing::debug!(folder = %dir.display(), %error, "cannot lock the kubeconfig folder; breaking stale locks unserialised");
                Self(None)
            }
        }
    }
}

/// Windows: creates the lock with `CREATE_NEW` (O_EXCL) and returns it open, shared for reading
/// only (no delete sharing: it cannot be renamed or removed while open) and deleted on close.
#[cfg(windows)]
fn create_exclusive(path: &Path, content: &str) -> io::Result<File> {
    use std::os::windows::fs::OpenOptionsExt as _;
    // DELETE access is what FILE_FLAG_DELETE_ON_CLOSE needs.
    const DELETE: u32 = 0x0001_0000;
    const GENERIC_WRITE: u32 = 0x4000_0000;
    const FILE_SHARE_READ: u32 = 0x1;
    const FILE_FLAG_DELETE_ON_CLOSE: u32 = 0x0400_0000;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .access_mode(GENERIC_WRITE | DELETE)
        .share_mode(FILE_SHARE_READ)
        .custom_flags(FILE_FLAG_DELETE_ON_CLOSE)
        .open(path)?;
    // A waiter that reads the lock before this lands sees an empty lock held open: alive.
    file.write_all(content.as_bytes())?;
    file.flush()?;
    Ok(file)
}

#[cfg(not(windows))]
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
    match fs::hard_link(staged.path(), path) {
        // `staged` is removed on drop; the lock keeps the content through its own name.
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Err(error),
        // No hard links here (exFAT and FAT give EPERM, some FUSE and SMB mounts ENOSYS or
        // EOPNOTSUPP): create the lock the way client-go does, then write it. A writer killed
        // between the two leaves an empty lock, which ages out like kubectl's.
        Err(link_error) => {
            drop(staged);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            tracing::debug!(lock = %path.display(), error = %link_error, "no hard links here; lock created in place");
            file.write_all(content.as_bytes())
        }
    }
}

/// What identifies one lock file: its content, inode and age.
struct LockStamp {
    content: String,
    identity: Option<(u64, u64)>,
    modified: Option<SystemTime>,
}

impl LockStamp {
    fn same_as(&self, other: &Self) -> bool {
        self.content == other.content
            && self.identity == other.identity
            && self.modified == other.modified
    }
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
    let holder_dead = holder_is_gone(path, &stamp.content) == Some(true);
    let too_old = stamp
        .modified
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > stale_after);
    (holder_dead || too_old).then_some(stamp)
}

/// The pid a lock of this writer names (`<pid> <nonce> [<scope>]`); `None` for kubectl's empty
/// locks and anything else.
fn holder_pid(content: &str) -> Option<u32> {
    content.split_whitespace().next()?.parse().ok()
}

/// Whether the holder of the lock at `path` with `content` is gone: `Some(true)` only when we
/// can tell for sure, that is, on Linux, for a lock taken in this boot and pid namespace whose
/// pid is not in `/proc`. Locks without a scope (older versions of this writer) or from
/// elsewhere are left to the age rule.
#[cfg(not(windows))]
fn holder_is_gone(_path: &Path, content: &str) -> Option<bool> {
    let pid = holder_pid(content)?;
    let scope = content.split_whitespace().nth(2)?;
    if pid_scope()? != scope {
        return None;
    }
    Some(!Path::new("/proc").join(pid.to_string()).exists())
}

/// Windows: a live holder keeps its lock open without delete sharing, so a lock of this
/// writer's format that can be opened for deletion has no holder.
#[cfg(windows)]
fn holder_is_gone(path: &Path, content: &str) -> Option<bool> {
    use std::os::windows::fs::OpenOptionsExt as _;
    const DELETE: u32 = 0x0001_0000;
    const SHARE_ALL: u32 = 0x1 | 0x2 | 0x4;
    const ERROR_SHARING_VIOLATION: i32 = 32;
    holder_pid(content)?;
    match fs::OpenOptions::new()
        .access_mode(DELETE)
        .share_mode(SHARE_ALL)
        .open(path)
    {
        Ok(_) => Some(true),
        Err(e) if e.raw_os_error() == Some(ERROR_SHARING_VIOLATION) => Some(false),
        Err(_) => None,
    }
}

/// Removes a stale lock without removing a fresh one another waiter created in the meantime:
/// the lock is first renamed to a private name, and put back if it turns out not to be the one
/// judged stale. Returns whether the lock was moved aside.
fn break_lock(path: &Path, judged: &LockStamp) -> bool {
    // Serialised with other breakers and with releases, and judged again under that lock:
    // another writer may have broken this lock and taken its own since we looked.
    #[cfg(not(windows))]
    let _breakers = BreakersLock::take(path);
    #[cfg(not(windows))]
    if !read_stamp(path).is_some_and(|now| now.same_as(judged)) {
        return false;
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(
        ".stale-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let aside = PathBuf::from(aside);
    if fs::rename(path, &aside).is_err() {
        // Someone else broke or released it first, or its holder has it open (Windows).
        return false;
    }
    if let Some(moved) = read_stamp(&aside).filter(|moved| !moved.same_as(judged)) {
        // Not the stale lock: restore it without clobbering (this fails if a new lock exists
        // already).
        restore(&aside, path, &moved);
    }
    let _ = fs::remove_file(&aside);
    true
}

/// Puts a lock moved aside by mistake back under its name. Unix: its holder knows it by its
/// content, so a copy will do where there are no hard links.
#[cfg(not(windows))]
fn restore(_aside: &Path, path: &Path, moved: &LockStamp) {
    let _ = create_exclusive(path, &moved.content);
}

/// Windows: a held lock cannot be moved, so this is one nobody has open.
#[cfg(windows)]
fn restore(aside: &Path, path: &Path, _moved: &LockStamp) {
    let _ = fs::hard_link(aside, path);
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

    // On Windows a held lock cannot be removed at all: see `a_held_lock_is_never_broken`.
    #[cfg(not(windows))]
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

    #[cfg(any(target_os = "linux", windows))]
    #[test]
    fn a_lock_whose_holder_is_gone_is_broken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        // Fresh, in this writer's format, naming a pid that cannot exist and held by nobody.
        fs::write(
            lock_path(&config),
            lock_content(4294967294, 0x0123_4567_89ab_cdef),
        )
        .unwrap();
        let lock = FileLock::acquire(&config, policy(200)).unwrap();
        let content = fs::read_to_string(lock_path(&config)).unwrap();
        assert!(
            content.starts_with(&format!("{} ", std::process::id())),
            "{content}"
        );
        drop(lock);
        assert!(!lock_path(&config).exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_holder_whose_pid_this_proc_cannot_see_is_waited_for_not_broken() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let here = pid_scope().expect("this test runs with its own /proc");
        let boot = here.split('/').next().unwrap();
        for (whose, content) in [
            // Another container sharing the folder: same boot, another pid namespace.
            (
                "another pid namespace",
                format!("4294967294 00 {boot}/pid:[1]\n"),
            ),
            // An NFS client elsewhere, or this machine before a reboot.
            (
                "another boot",
                "4294967294 00 00000000-0000-0000-0000-000000000000/pid:[1]\n".to_owned(),
            ),
            // An older version of this writer, which did not say.
            (
                "an unscoped lock",
                "4294967294 0123456789abcdef\n".to_owned(),
            ),
        ] {
            fs::write(lock_path(&config), &content).unwrap();
            let err = FileLock::acquire(&config, policy(100)).unwrap_err();
            assert!(
                matches!(err, KubeconfigError::LockTimeout { .. }),
                "{whose}: {err}"
            );
            assert_eq!(
                fs::read_to_string(lock_path(&config)).unwrap(),
                content,
                "{whose}"
            );
        }
        // Only its age frees it.
        let file = File::options()
            .write(true)
            .open(lock_path(&config))
            .unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(120))
            .unwrap();
        drop(file);
        drop(FileLock::acquire(&config, policy(100)).unwrap());
    }

    /// Three writers and a dead holder: the first breaks the stale lock and takes its own; the
    /// second, which judged the dead holder's lock stale a moment earlier, must not move the
    /// first one's lock aside even for an instant, or the third takes it in that gap and two
    /// writers hold the lock.
    #[cfg(not(windows))]
    #[test]
    fn a_writer_acting_on_an_outdated_judgment_never_opens_a_gap_in_a_fresh_lock() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let path = lock_path(&config);
        fs::write(&path, lock_content(4294967294, 1)).unwrap();
        let judged = stale_lock(&path, Duration::from_secs(60)).expect("a dead holder's lock");

        // The first writer breaks it and holds its own.
        let first = FileLock::acquire(&config, policy(500)).unwrap();
        // The third writer tries to create the lock as fast as it can.
        let stop = Arc::new(AtomicBool::new(false));
        let taken = Arc::new(AtomicUsize::new(0));
        let third = {
            let (path, stop, taken) = (path.clone(), stop.clone(), taken.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if create_exclusive(&path, "third\n").is_ok() {
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        // The second writer acts on what it judged before the first took the lock.
        for _ in 0..2000 {
            break_lock(&path, &judged);
        }
        stop.store(true, Ordering::Relaxed);
        third.join().unwrap();
        assert_eq!(
            taken.load(Ordering::Relaxed),
            0,
            "the third writer got in while the first held the lock"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), first.content);
    }

    #[cfg(windows)]
    #[test]
    fn a_held_lock_is_never_broken() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let first = FileLock::acquire(&config, policy(100)).unwrap();
        // Every lock counts as old here, yet the holder keeps it open: it cannot be broken.
        let eager = LockPolicy {
            timeout: Duration::from_millis(100),
            stale_after: Duration::ZERO,
        };
        let err = FileLock::acquire(&config, eager).unwrap_err();
        assert!(matches!(err, KubeconfigError::LockTimeout { .. }), "{err}");
        assert!(fs::remove_file(lock_path(&config)).is_err());
        drop(first);
        // Closed by its holder, the lock is gone (delete on close).
        assert!(!lock_path(&config).exists());
        FileLock::acquire(&config, eager).unwrap();
    }
}
