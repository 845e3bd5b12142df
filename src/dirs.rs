//! Where the app keeps its files (config, state, cache), per platform, and the one way it
//! writes a private file (atomically, user-only: see [`crate::private_file`]).

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
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// A private file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
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
        Self::platform()
    }

    /// The platform's folders for the app, whatever `K8S_TUNNELS_HOME` says.
    fn platform() -> Result<Self, DirsError> {
        let project = directories::ProjectDirs::from("dev", "k8s-tunnels", "k8s-tunnels")
            .ok_or(DirsError::NoHome)?;
        let state = project
            .state_dir()
            .unwrap_or_else(|| project.data_local_dir())
            .to_path_buf();
        // Windows and macOS have no per-session runtime dir; the desktop's control channel
        // (a named pipe on Windows) then keeps its name in the state dir.
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

    /// Creates the folders (and missing parents), each restricted to the user (0700, or a
    /// user-only ACL on Windows) since state may hold the SOCKS secret and the runtime dir the
    /// desktop app's control socket.
    pub fn ensure(&self) -> Result<(), DirsError> {
        for dir in [&self.config, &self.state, &self.cache, &self.runtime] {
            create_private_dir(dir)?;
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), DirsError> {
    crate::private_file::create_private_dir(dir).map_err(|source| DirsError::Create {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part, and
/// only the user can read it ([`crate::private_file::write_private`]). The parent folder must
/// exist.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DirsError> {
    crate::private_file::write_private(path, bytes).map_err(|source| DirsError::Write {
        path: path.to_path_buf(),
        source,
    })
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

    /// The folders the README's table names for Windows.
    #[cfg(windows)]
    #[test]
    fn windows_folders_are_under_appdata_and_localappdata() {
        let dirs = AppDirs::platform().unwrap();
        let roaming = PathBuf::from(std::env::var_os("APPDATA").unwrap());
        let local = PathBuf::from(std::env::var_os("LOCALAPPDATA").unwrap());
        let app = Path::new("k8s-tunnels").join("k8s-tunnels");
        assert_eq!(dirs.config, roaming.join(&app).join("config"));
        assert_eq!(dirs.state, local.join(&app).join("data"));
        assert_eq!(dirs.cache, local.join(&app).join("cache"));
        assert_eq!(dirs.runtime, dirs.state);
    }

    #[test]
    fn ensure_creates_private_folders_even_if_they_existed() {
        let root = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(root.path());
        std::fs::create_dir_all(&dirs.state).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dirs.state, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dirs.ensure().unwrap();
        for dir in [&dirs.config, &dirs.state, &dirs.cache, &dirs.runtime] {
            let private = crate::private_file::is_private(dir).unwrap();
            assert!(private, "{}", dir.display());
        }
    }

    #[test]
    fn write_private_into_a_missing_folder_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("nope").join("state.json");
        let err = write_private(&path, b"x").unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
