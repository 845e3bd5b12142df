//! Files that hold a secret: readable and writable by the current user only.
//!
//! One capability, one module: every file that holds a secret (the SOCKS secret, state,
//! kubeconfig once it holds the tunnel's credentials, cloudflared's token files) and every
//! folder they live in is created and replaced through here, and the platform code sits in
//! one place.
//!
//! - **Unix**: files are `0600` and folders `0700`; a file that holds a secret never keeps a
//!   group or other bit (on macOS every user shares the group `staff`).
//! - **Windows**: a protected DACL (nothing inherited from the parent folder) with one entry,
//!   full access for the current user; a folder's entry is inherited by what is created in it.
//!   Files are created with that descriptor, so they are never readable by anyone else, not
//!   even for a moment. (Under Wine, which keeps only Unix modes, that shows as mode 0600.)
//!
//! Replacing a file is atomic: a private temporary file in the same folder, flushed, renamed
//! over the target. On Windows the rename is `MoveFileExW(MOVEFILE_REPLACE_EXISTING)`, which
//! fails while another process has the target open without delete sharing (Go programs such
//! as kubectl open files that way), so it is retried for a short while.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use tempfile::NamedTempFile;

#[cfg(windows)]
mod windows;

#[cfg(windows)]
pub use windows::{create_private_pipe, owned_by_current_user};

/// How long a replace keeps retrying while the target is held open by a reader (Windows).
#[cfg_attr(not(windows), allow(dead_code))]
const REPLACE_PATIENCE: Duration = Duration::from_secs(3);

/// Creates `dir` and its missing parents, and makes `dir` the user's own: `0700` on Unix (an
/// existing folder with group or other bits loses them; the owner's own bits are kept), a
/// protected user-only ACL on Windows.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // `create` leaves a folder that already existed as it was.
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o700) | 0o700))?;
        }
        Ok(())
    }
    #[cfg(windows)]
    {
        windows::create_private_dir(dir)
    }
    #[cfg(not(any(unix, windows)))]
    {
        fs::create_dir_all(dir)
    }
}

/// Creates a new file at `path` that only the user can access, failing with
/// [`io::ErrorKind::AlreadyExists`] if something is there (`O_CREAT|O_EXCL`).
pub fn create_new(path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    }
    #[cfg(windows)]
    {
        windows::create_new(path)
    }
    #[cfg(not(any(unix, windows)))]
    {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }
}

/// A new private temporary file in `dir`, named `<prefix><random><suffix>`, removed on drop
/// unless [`replace`]d over its target.
pub fn temp_file_in(dir: &Path, prefix: &str, suffix: &str) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .make_in(dir, create_new)
}

/// Renames `temp` over `target`, atomically replacing an existing file. On Windows a target
/// held open by a reader without delete sharing makes the rename fail for as long as the
/// reader has it open; it is retried for a few seconds.
pub fn replace(temp: NamedTempFile, target: &Path) -> io::Result<()> {
    #[cfg(windows)]
    {
        let deadline = std::time::Instant::now() + REPLACE_PATIENCE;
        let mut temp = temp;
        let mut pause = Duration::from_millis(5);
        loop {
            match temp.persist(target) {
                Ok(_) => return Ok(()),
                Err(e) if windows::is_sharing_conflict(&e.error) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(e.error);
                    }
                    temp = e.file;
                    crate::sync::pause_blocking(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e.error),
            }
        }
    }
    #[cfg(not(windows))]
    {
        temp.persist(target).map(|_| ()).map_err(|e| e.error)
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part,
/// and only the user can read it: a private temporary file in the same folder, flushed,
/// [`replace`]d over `path`, and the folder flushed. The parent folder must exist.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut temp = temp_file_in(dir, ".k8s-tunnels-", ".tmp")?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    replace(temp, path)?;
    sync_dir(dir)
}

/// Gives an open file (normally a new private temporary file about to replace `original`'s
/// file) the original's permissions less everything for other users: on Unix the owner's bits
/// of `original` with no group or other bit; on Windows nothing changes, the file being
/// user-only already. Returns whether `original` granted access to others, which is then lost.
pub fn restrict_like(file: &File, original: &fs::Permissions) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = original.mode();
        file.set_permissions(fs::Permissions::from_mode(mode & !0o077))?;
        Ok(mode & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = (file, original);
        Ok(false)
    }
}

/// Makes an existing file user-only if it is not (a copy restored from a backup may have lost
/// its mode or ACL). Returns whether it had to be changed.
pub fn restrict(path: &Path) -> io::Result<bool> {
    if is_private(path)? {
        return Ok(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(path)?.permissions().mode();
        fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o077))?;
    }
    #[cfg(windows)]
    windows::restrict(path)?;
    Ok(true)
}

/// Whether only the user can access `path`: no group or other bit on Unix; on Windows a DACL
/// that admits the current user and nobody else but the system (see `dacl_admits_only`).
pub fn is_private(path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Ok(fs::metadata(path)?.permissions().mode() & 0o077 == 0)
    }
    #[cfg(windows)]
    {
        windows::is_private(path)
    }
    #[cfg(not(any(unix, windows)))]
    {
        fs::metadata(path).map(|_| false)
    }
}

/// Who may access `path`, for messages: the mode on Unix, the DACL (SDDL) and the current user
/// on Windows.
pub fn describe_access(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        match fs::metadata(path) {
            Ok(meta) => format!("mode {:o}", meta.permissions().mode() & 0o7777),
            Err(e) => e.to_string(),
        }
    }
    #[cfg(windows)]
    {
        windows::describe_access(path).unwrap_or_else(|e| e.to_string())
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = path;
        String::from("unknown")
    }
}

/// Makes a rename in `dir` durable: on Unix the directory entry has its own flush. (NTFS
/// journals the rename itself; Windows cannot open a folder as a file to flush it.)
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Whether a DACL in SDDL form (`D:P(A;;FA;;;S-1-5-21-…)`) allows access to `sid` and to
/// nobody else but SYSTEM (`SY`: the system itself, which reads every file anyway). Deny
/// entries take nothing from privacy; an allow entry for any other user or group, or a missing
/// DACL (`NO_ACCESS_CONTROL`), does. The DACLs this module writes are also protected (`P`), so
/// that a change to the parent folder never reaches the file; the check does not insist on it,
/// since what counts is who has access now — and Wine, which keeps no ACLs of its own but the
/// Unix mode, shows a 0600 file as `D:(A;;FA;;;SY)(A;;FA;;;<owner>)`.
#[cfg_attr(not(windows), allow(dead_code))]
fn dacl_admits_only(sddl: &str, sid: &str) -> bool {
    let Some(dacl) = sddl.strip_prefix("D:") else {
        return false;
    };
    let (flags, aces) = dacl.split_at(dacl.find('(').unwrap_or(dacl.len()));
    if flags.contains("NO_ACCESS_CONTROL") {
        return false;
    }
    let Some(aces) = aces.strip_prefix('(').and_then(|a| a.strip_suffix(')')) else {
        return aces.is_empty();
    };
    aces.split(")(").all(|ace| {
        let fields: Vec<&str> = ace.split(';').collect();
        match fields.as_slice() {
            ["D" | "OD", ..] => true,
            ["A", _, _, _, _, who] => who.eq_ignore_ascii_case(sid) || *who == "SY",
            _ => false,
        }
    })
}

/// The folder `path` is in; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_dacl_for_the_user_and_the_system_alone_is_private() {
        let me = "S-1-5-21-1-2-3-1001";
        for (sddl, private) in [
            ("D:P(A;;FA;;;S-1-5-21-1-2-3-1001)", true),
            ("D:PAI(A;OICI;FA;;;S-1-5-21-1-2-3-1001)", true),
            ("D:P(D;;FA;;;WD)(A;;FA;;;s-1-5-21-1-2-3-1001)", true),
            ("D:P", true),
            // What Wine shows for a 0600 file, and an inherited DACL of the same two.
            ("D:(A;;FA;;;SY)(A;;FA;;;S-1-5-21-1-2-3-1001)", true),
            ("D:AI(A;ID;FA;;;SY)(A;ID;FA;;;S-1-5-21-1-2-3-1001)", true),
            // A profile folder's usual inherited DACL: the administrators too.
            (
                "D:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;ID;FA;;;S-1-5-21-1-2-3-1001)",
                false,
            ),
            ("D:P(A;;FA;;;S-1-5-21-1-2-3-1001)(A;;FR;;;BU)", false),
            // Wine's 0644: everyone may read.
            (
                "D:(A;;FA;;;SY)(A;;FA;;;S-1-5-21-1-2-3-1001)(A;;0x1200a9;;;WD)",
                false,
            ),
            ("D:P(A;;FA;;;S-1-5-21-1-2-3-1002)", false),
            ("D:NO_ACCESS_CONTROL", false),
            ("O:BAD:P(A;;FA;;;S-1-5-21-1-2-3-1001)", false),
            ("", false),
        ] {
            assert_eq!(dacl_admits_only(sddl, me), private, "{sddl}");
        }
    }

    #[test]
    fn a_written_file_is_private_and_replaces_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("secret");
        fs::write(&path, "old").unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert!(is_private(&path).unwrap(), "{}", describe_access(&path));
        let names: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("secret")],
            "no temp file left"
        );
    }

    #[test]
    fn a_new_file_is_private_from_the_start_and_exclusive() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("lock");
        let file = create_new(&path).unwrap();
        assert!(is_private(&path).unwrap(), "{}", describe_access(&path));
        drop(file);
        let again = create_new(&path).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_plain_file_is_not_private_until_restricted() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("restored");
        fs::write(&path, "x").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o660)).unwrap();
        }
        assert!(!is_private(&path).unwrap());
        assert!(restrict(&path).unwrap());
        assert!(is_private(&path).unwrap(), "{}", describe_access(&path));
        assert!(
            !restrict(&path).unwrap(),
            "a second restrict changes nothing"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "x");
    }

    #[test]
    fn private_folders_are_created_with_their_parents_and_restricted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b");
        create_private_dir(&dir).unwrap();
        assert!(is_private(&dir).unwrap(), "{}", describe_access(&dir));
        // Again, on the folder that now exists.
        create_private_dir(&dir).unwrap();
        assert!(is_private(&dir).unwrap(), "{}", describe_access(&dir));
    }

    #[cfg(unix)]
    #[test]
    fn an_open_folder_loses_group_and_other_bits_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[cfg(unix)]
    #[test]
    fn restrict_like_keeps_the_owner_bits_and_drops_group_and_other() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let temp = temp_file_in(root.path(), "t", "").unwrap();
        let mode = |f: &NamedTempFile| f.as_file().metadata().unwrap().permissions().mode();
        assert_eq!(mode(&temp) & 0o777, 0o600, "created private");
        for (original, kept, loosened) in [
            (0o660, 0o600, true),
            (0o640, 0o600, true),
            (0o644, 0o600, true),
            (0o600, 0o600, false),
            (0o700, 0o700, false),
            (0o400, 0o400, false),
        ] {
            let was = restrict_like(temp.as_file(), &fs::Permissions::from_mode(original)).unwrap();
            assert_eq!(mode(&temp) & 0o777, kept, "{original:o}");
            assert_eq!(was, loosened, "{original:o}");
        }
    }

    #[cfg(windows)]
    #[test]
    fn a_replace_waits_for_a_reader_that_holds_the_target_without_delete_sharing() {
        use std::os::windows::fs::OpenOptionsExt as _;
        // FILE_SHARE_READ | FILE_SHARE_WRITE: how Go (kubectl) opens a file.
        const GO_SHARE_MODE: u32 = 0x1 | 0x2;
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("config");
        fs::write(&path, "old").unwrap();
        let reader = fs::OpenOptions::new()
            .read(true)
            .share_mode(GO_SHARE_MODE)
            .open(&path)
            .unwrap();
        let held = Duration::from_millis(300);
        let releaser = std::thread::spawn(move || {
            crate::sync::pause_blocking(held);
            drop(reader);
        });
        write_private(&path, b"new").unwrap();
        releaser.join().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert!(is_private(&path).unwrap(), "{}", describe_access(&path));
    }
}
