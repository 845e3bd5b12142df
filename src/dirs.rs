//! Where the app keeps its files (config, state, cache), per platform, and the one way it
//! writes a private file (atomically, mode 0600).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable that puts every app folder under one root (tests, portable installs).
pub const HOME_ENV: &str = "K8S_TUNNELS_HOME";

/// The app's folders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppDirs {
    /// User-edited configuration (the inventory file).
    pub config: PathBuf,
    /// Data the app writes and keeps (state.json, the fallback SOCKS secret).
    pub state: PathBuf,
    /// Data the app may lose at any time (discovery caches).
    pub cache: PathBuf,
    /// Files that live as long as the session (the desktop app's control socket): the user's
    /// runtime dir where the platform has one (`$XDG_RUNTIME_DIR/k8s-tunnels`), else the state
    /// dir.
    pub runtime: PathBuf,
}

/// Errors finding or creating the app's folders, or writing a private file.
#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    /// The platform gave no home directory to derive the folders from.
    #[error("cannot find the home directory to place the app's folders; set {HOME_ENV}")]
    NoHome,
    /// `K8S_TUNNELS_HOME` is set but not usable.
    #[error("{HOME_ENV}={value:?} must be an absolute path")]
    BadHome {
        /// The value as given.
        value: String,
    },
    /// A folder could not be created or restricted.
    #[error("cannot create folder {}", path.display())]
    Create {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A private file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl AppDirs {
    /// `K8S_TUNNELS_HOME` set → `<home>/config`, `<home>/state`, `<home>/cache` (tests and
    /// portable installs); else the platform folders (XDG on Linux, `~/Library/...` on macOS,
    /// `%APPDATA%` on Windows). State goes to the XDG state dir where the platform has one, else
    /// the local data dir.
    pub fn from_env() -> Result<Self, DirsError> {
        if let Some(value) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            let root = PathBuf::from(&value);
            if !root.is_absolute() {
                return Err(DirsError::BadHome {
                    value: value.to_string_lossy().into_owned(),
                });
            }
            return Ok(Self::at(&root));
        }
        let project = directories::ProjectDirs::from("dev", "k8s-tunnels", "k8s-tunnels")
            .ok_or(DirsError::NoHome)?;
        let state = project
            .state_dir()
            .unwrap_or_else(|| project.data_local_dir())
            .to_path_buf();
        let runtime = project
            .runtime_dir()
            .map_or_else(|| state.clone(), Path::to_path_buf);
        Ok(Self {
            config: project.config_dir().to_path_buf(),
            state,
            cache: project.cache_dir().to_path_buf(),
            runtime,
        })
    }

    /// All folders under one root: `<root>/config`, `<root>/state`, `<root>/cache`, `<root>/run`.
    pub fn at(root: &Path) -> Self {
        Self {
            config: root.join("config"),
            state: root.join("state"),
            cache: root.join("cache"),
            runtime: root.join("run"),
        }
    }

    /// The inventory file read when `--inventory` is not given: `<config>/inventory.yaml`.
    pub fn default_inventory(&self) -> PathBuf {
        self.config.join("inventory.yaml")
    }

    /// Creates the folders (and missing parents), each restricted to the user (0700) since
    /// state may hold the SOCKS secret and the runtime dir the desktop app's control socket.
    pub fn ensure(&self) -> Result<(), DirsError> {
        for dir in [&self.config, &self.state, &self.cache, &self.runtime] {
            create_private_dir(dir)?;
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), DirsError> {
    let err = |source| DirsError::Create {
        path: dir.to_path_buf(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        // A folder that already existed keeps its mode under `create`; ours must be private.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(err)?;
    Ok(())
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part:
/// a temp file in the same folder (created 0600), fsync, rename over `path`, fsync the folder.
/// The result is readable by the user only. The parent folder must exist.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DirsError> {
    let err = |source| DirsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // tempfile creates the file with mode 0600 on Unix, so the secret is never briefly readable.
    let mut temp = tempfile::Builder::new()
        .prefix(".k8s-tunnels-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    temp.write_all(bytes).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    temp.as_file().sync_all().map_err(err)?;
    temp.persist(path).map_err(|e| err(e.error))?;
    // The rename is durable only once the folder entry is on disk.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn at_places_every_folder_under_the_root() {
        let dirs = AppDirs::at(Path::new("/tmp/kt"));
        assert_eq!(dirs.config, Path::new("/tmp/kt/config"));
        assert_eq!(dirs.state, Path::new("/tmp/kt/state"));
        assert_eq!(dirs.cache, Path::new("/tmp/kt/cache"));
        assert_eq!(
            dirs.default_inventory(),
            Path::new("/tmp/kt/config/inventory.yaml")
        );
    }

    #[cfg(unix)]
    #[test]
    fn ensure_creates_private_folders_even_if_they_existed() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(root.path());
        std::fs::create_dir_all(&dirs.state).unwrap();
        std::fs::set_permissions(&dirs.state, std::fs::Permissions::from_mode(0o755)).unwrap();
        dirs.ensure().unwrap();
        for dir in [&dirs.config, &dirs.state, &dirs.cache] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }

    #[cfg(unix)]
    #[test]
    fn write_private_replaces_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("secret");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    }

    #[test]
    fn write_private_into_a_missing_folder_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("nope").join("state.json");
        let err = write_private(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("nope/state.json"), "{err}");
    }
}
