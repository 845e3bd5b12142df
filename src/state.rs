//! Persisted app state: per-cluster ports, favourites, settings; the stable port choice; and
//! the per-install SOCKS credentials.
//!
//! `state.json` is written atomically with mode 0600 ([`crate::dirs::write_private`]). A state
//! file that does not parse is never overwritten silently: [`StateStore::load`] reports it and
//! leaves it alone; [`StateStore::load_or_recover`] moves it aside to
//! `state.json.<unix-seconds>.bak`, starts fresh and returns a [`Recovered`] note saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dirs::{AppDirs, DirsError, write_private};
use crate::inventory::ClusterId;
use crate::keychain::{Keychain, KeychainError, KeychainStatus};
use crate::secret::Secret;

/// The schema version this build writes.
pub const STATE_VERSION: u32 = 1;

/// The ports a cluster's port is derived in: above the well-known and registered-service
/// crowd, below Linux's ephemeral range (32768+), so outgoing connections never hold it.
pub const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// The SOCKS username every install uses; the password is what is secret.
pub const SOCKS_USERNAME: &str = "k8s-tunnels";

/// The keychain account holding the SOCKS secret.
pub const SOCKS_ACCOUNT: &str = "socks-secret";

/// The fallback file holding the SOCKS secret when no keychain is usable.
pub const SOCKS_SECRET_FILE: &str = "socks-secret";

/// Length of a generated SOCKS secret.
const SOCKS_SECRET_LEN: usize = 32;

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file could not be read.
    #[error("cannot read state file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state file does not parse; it was left as it is.
    #[error("state file {} is corrupt; it was left untouched (move it away, or let the app back it up and start fresh)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The state file was written by a newer version of the app.
    #[error("state file {} has version {found}, newer than this app understands ({STATE_VERSION}); update the app", path.display())]
    TooNew {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The corrupt state file could not be moved aside.
    #[error("cannot back up corrupt state file {} to {}", path.display(), backup.display())]
    Backup {
        /// The file.
        path: PathBuf,
        /// Where it was to go.
        backup: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state could not be encoded.
    #[error("cannot encode state")]
    Encode(#[source] serde_json::Error),
    /// Writing failed.
    #[error("cannot save state")]
    Write(#[source] DirsError),
    /// The SOCKS secret file could not be read.
    #[error("cannot read the SOCKS secret file {}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The keychain failed while reading or storing the SOCKS secret.
    #[error("cannot use the keychain for the SOCKS secret")]
    Keychain(#[source] KeychainError),
}

/// Everything the app remembers between runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppState {
    /// Schema version ([`STATE_VERSION`]).
    pub version: u32,
    /// The port each cluster's listener last used, so kubeconfig stays valid across restarts.
    pub ports: BTreeMap<ClusterId, u16>,
    /// Clusters pinned at the top of the menu.
    pub favourites: BTreeSet<ClusterId>,
    /// User settings.
    pub settings: Settings,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            ports: BTreeMap::new(),
            favourites: BTreeSet::new(),
            settings: Settings::default(),
        }
    }
}

/// User settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Prefix of the kubeconfig entries the app owns (`k8s-tunnels/` → `k8s-tunnels/prod-eu`).
    pub kubeconfig_prefix: String,
    /// The kubeconfig to write; `None` means `KUBECONFIG` or `~/.kube/config`, as kubectl.
    pub kubeconfig_path: Option<PathBuf>,
    /// Switch kubectl's current context to a cluster when its tunnel connects.
    pub switch_context_on_connect: bool,
    /// Desktop notifications on tunnel drops and expiring logins.
    pub notifications: bool,
    /// Start the desktop app when the user logs in.
    pub start_at_login: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kubeconfig_prefix: "k8s-tunnels/".into(),
            kubeconfig_path: None,
            switch_context_on_connect: false,
            notifications: true,
            start_at_login: false,
        }
    }
}

/// A corrupt state file that [`StateStore::load_or_recover`] moved aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The state file.
    pub path: PathBuf,
    /// Where the corrupt content now is.
    pub backup: PathBuf,
    /// Why it did not load.
    pub reason: String,
}

impl fmt::Display for Recovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "state file {} was corrupt ({}); it was moved to {} and the app started with fresh state",
            self.path.display(),
            self.reason,
            self.backup.display()
        )
    }
}

/// Reads and writes `<dirs.state>/state.json`.
#[derive(Clone, Debug)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// The store for these app folders.
    pub fn new(dirs: &AppDirs) -> Self {
        Self {
            path: dirs.state.join("state.json"),
        }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a missing file is fresh state. A corrupt file is an error and is left
    /// untouched.
    pub fn load(&self) -> Result<AppState, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AppState::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let state: AppState =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        if state.version > STATE_VERSION {
            return Err(StateError::TooNew {
                path: self.path.clone(),
                found: state.version,
            });
        }
        Ok(state)
    }

    /// Loads the state; if the file is corrupt, moves it to `state.json.<unix-seconds>.bak`
    /// (never overwriting an earlier backup) and returns fresh state with a note to show the user.
    /// A file from a newer version is still an error: starting fresh would lose its data.
    pub fn load_or_recover(&self) -> Result<(AppState, Option<Recovered>), StateError> {
        match self.load() {
            Ok(state) => Ok((state, None)),
            Err(StateError::Corrupt { path, source }) => {
                let backup = self.free_backup_path();
                std::fs::rename(&path, &backup).map_err(|source| StateError::Backup {
                    path: path.clone(),
                    backup: backup.clone(),
                    source,
                })?;
                let note = Recovered {
                    path,
                    backup,
                    reason: source.to_string(),
                };
                tracing::warn!("{note}");
                Ok((AppState::default(), Some(note)))
            }
            Err(other) => Err(other),
        }
    }

    fn free_backup_path(&self) -> PathBuf {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state.json".into());
        let mut n = 0u32;
        loop {
            let suffix = if n == 0 {
                format!("{secs}.bak")
            } else {
                format!("{secs}-{n}.bak")
            };
            let candidate = self.path.with_file_name(format!("{name}.{suffix}"));
            if !candidate.exists() {
                return candidate;
            }
            n += 1;
        }
    }

    /// Saves the state atomically (mode 0600), creating the state folder if needed.
    pub fn save(&self, state: &AppState) -> Result<(), StateError> {
        let mut json = serde_json::to_vec_pretty(state).map_err(StateError::Encode)?;
        json.push(b'\n');
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| {
                StateError::Write(DirsError::Create {
                    path: dir.to_path_buf(),
                    source,
                })
            })?;
        }
        write_private(&self.path, &json).map_err(StateError::Write)
    }
}

/// Port candidates for a cluster: the persisted port first, then a port derived from a stable
/// hash of the id (SHA-256, stable across builds and platforms, unlike std's `DefaultHasher`)
/// in [`PORT_RANGE`], then the following ports in that range, wrapping, so a conflict re-picks
/// deterministically. Every port appears once.
pub fn port_candidates(
    id: &ClusterId,
    persisted: Option<u16>,
) -> impl Iterator<Item = u16> + use<> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.0.as_bytes());
    let mut first8 = [0u8; 8];
    first8.copy_from_slice(&digest.as_ref()[..8]);
    let size = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    let offset = u64::from_be_bytes(first8) % size;
    let persisted = persisted.filter(|p| *p != 0);
    persisted.into_iter().chain(
        (0..size)
            .map(move |i| {
                // (offset + i) % size < size ≤ u16::MAX - PORT_RANGE.start, so this fits.
                PORT_RANGE.start + ((offset + i) % size) as u16
            })
            .filter(move |p| Some(*p) != persisted),
    )
}

/// Where the SOCKS secret is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretLocation {
    /// In the OS keychain, under this service and account.
    Keychain {
        /// The keychain service name.
        service: String,
        /// The account.
        account: String,
    },
    /// In a file readable by the user only.
    File(PathBuf),
}

impl fmt::Display for SecretLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretLocation::Keychain { service, account } => {
                write!(f, "OS keychain (service {service}, account {account})")
            }
            SecretLocation::File(path) => write!(f, "file {} (mode 0600)", path.display()),
        }
    }
}

/// The credentials local clients present to the SOCKS listeners (RFC 1929).
#[derive(Clone, Debug)]
pub struct SocksCredentials {
    /// Always [`SOCKS_USERNAME`].
    pub username: String,
    /// The per-install secret.
    pub password: Secret,
    /// Where the secret is kept.
    pub stored_in: SecretLocation,
}

/// The per-install SOCKS credentials: a random 32-character secret created on first use, kept
/// in the keychain (account [`SOCKS_ACCOUNT`]) when it is durable, else in the 0600 file
/// `<dirs.state>/socks-secret`. A keychain that is durable but fails is an error, never a
/// silent switch to the file.
pub fn socks_credentials(
    keychain: &Keychain,
    dirs: &AppDirs,
) -> Result<SocksCredentials, StateError> {
    let (password, stored_in) = match keychain.status() {
        KeychainStatus::Durable => {
            let secret = match keychain.get(SOCKS_ACCOUNT).map_err(StateError::Keychain)? {
                Some(secret) => secret,
                None => {
                    let secret = Secret::random(SOCKS_SECRET_LEN);
                    keychain
                        .set(SOCKS_ACCOUNT, &secret)
                        .map_err(StateError::Keychain)?;
                    secret
                }
            };
            let location = SecretLocation::Keychain {
                service: keychain.service().to_string(),
                account: SOCKS_ACCOUNT.to_string(),
            };
            (secret, location)
        }
        KeychainStatus::Unavailable { .. } => {
            let path = dirs.state.join(SOCKS_SECRET_FILE);
            (file_secret(&path)?, SecretLocation::File(path))
        }
    };
    Ok(SocksCredentials {
        username: SOCKS_USERNAME.to_string(),
        password,
        stored_in,
    })
}

/// Reads the secret file, or creates it; an empty file is replaced by a new secret.
fn file_secret(path: &Path) -> Result<Secret, StateError> {
    let read_err = |source| StateError::SecretFile {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            // A copy restored from a backup may have lost its mode; the secret must stay private.
            crate::private_file::restrict(path).map_err(read_err)?;
            return Ok(Secret::new(text.trim()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(read_err(source)),
    }
    let secret = Secret::random(SOCKS_SECRET_LEN);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(read_err)?;
    }
    write_private(path, secret.expose().as_bytes()).map_err(StateError::Write)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(s: &str) -> ClusterId {
        ClusterId(s.into())
    }

    #[test]
    fn state_round_trips_and_missing_file_is_fresh() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::new(&AppDirs::at(root.path()));
        assert_eq!(store.load().unwrap(), AppState::default());
        let mut state = AppState::default();
        state.ports.insert(id("file:a"), 21000);
        state.favourites.insert(id("file:b"));
        state.settings.kubeconfig_prefix = "kt/".into();
        state.settings.kubeconfig_path = Some("/home/u/.kube/other".into());
        state.settings.switch_context_on_connect = true;
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        assert!(crate::private_file::is_private(store.path()).unwrap());
    }

    #[test]
    fn older_file_with_missing_fields_loads_with_defaults() {
        let root = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(root.path());
        std::fs::create_dir_all(&dirs.state).unwrap();
        let store = StateStore::new(&dirs);
        std::fs::write(store.path(), r#"{"version":1,"ports":{"file:a":20001}}"#).unwrap();
        let state = store.load().unwrap();
        assert_eq!(state.ports.get(&id("file:a")), Some(&20001));
        assert_eq!(state.settings, Settings::default());
    }

    #[test]
    fn corrupt_file_is_reported_untouched_then_backed_up_on_recover() {
        let root = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(root.path());
        std::fs::create_dir_all(&dirs.state).unwrap();
        let store = StateStore::new(&dirs);
        std::fs::write(store.path(), "{not json").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("state.json"), "{err}");
        assert_eq!(std::fs::read_to_string(store.path()).unwrap(), "{not json");

        let (state, note) = store.load_or_recover().unwrap();
        assert_eq!(state, AppState::default());
        let note = note.expect("a corrupt file is reported");
        assert_eq!(std::fs::read_to_string(&note.backup).unwrap(), "{not json");
        assert!(!store.path().exists());
        assert!(note.to_string().contains(&*note.backup.to_string_lossy()));

        // A second corruption does not overwrite the first backup.
        std::fs::write(store.path(), "second").unwrap();
        let (_, second) = store.load_or_recover().unwrap();
        let second = second.unwrap();
        assert_ne!(second.backup, note.backup);
        assert_eq!(std::fs::read_to_string(&note.backup).unwrap(), "{not json");
        assert_eq!(std::fs::read_to_string(&second.backup).unwrap(), "second");
    }

    #[test]
    fn newer_version_is_refused_not_recovered() {
        let root = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(root.path());
        std::fs::create_dir_all(&dirs.state).unwrap();
        let store = StateStore::new(&dirs);
        std::fs::write(store.path(), r#"{"version":99}"#).unwrap();
        assert!(matches!(
            store.load_or_recover(),
            Err(StateError::TooNew { found: 99, .. })
        ));
        assert!(store.path().exists());
    }

    #[test]
    fn port_candidates_are_deterministic_in_range_and_persisted_first() {
        let a = id("file:prod-eu");
        let first: Vec<u16> = port_candidates(&a, None).take(50).collect();
        let again: Vec<u16> = port_candidates(&a, None).take(50).collect();
        assert_eq!(first, again);
        assert!(first.iter().all(|p| PORT_RANGE.contains(p)));
        // Consecutive after the derived one, wrapping inside the range.
        for pair in first.windows(2) {
            assert!(
                pair[1] == pair[0] + 1
                    || (pair[0] == PORT_RANGE.end - 1 && pair[1] == PORT_RANGE.start)
            );
        }
        // Different ids spread out (not all on one port).
        let others: BTreeSet<u16> = (0..20)
            .map(|i| {
                port_candidates(&id(&format!("file:c{i}")), None)
                    .next()
                    .unwrap()
            })
            .collect();
        assert!(others.len() > 15, "{others:?}");

        let with: Vec<u16> = port_candidates(&a, Some(40000)).take(3).collect();
        assert_eq!(with, vec![40000, first[0], first[1]]);

        // A persisted port inside the range is not offered twice, and every port is offered once.
        let all: Vec<u16> = port_candidates(&a, Some(first[3])).collect();
        assert_eq!(all[0], first[3]);
        assert_eq!(all.len(), usize::from(PORT_RANGE.end - PORT_RANGE.start));
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len());
    }

    #[test]
    fn socks_secret_in_file_is_reused_private_and_redacted() {
        let root = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(root.path());
        let keychain = Keychain::disabled("test", "keychain disabled for this test");
        let one = socks_credentials(&keychain, &dirs).unwrap();
        let two = socks_credentials(&keychain, &dirs).unwrap();
        assert_eq!(one.username, "k8s-tunnels");
        assert_eq!(one.password.expose().len(), 32);
        assert_eq!(one.password, two.password);
        let path = dirs.state.join("socks-secret");
        assert_eq!(one.stored_in, SecretLocation::File(path.clone()));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            one.password.expose()
        );
        assert!(crate::private_file::is_private(&path).unwrap());
        let debug = format!("{one:?}");
        assert!(!debug.contains(one.password.expose()), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn a_loosened_secret_file_is_made_private_again() {
        let root = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(root.path());
        std::fs::create_dir_all(&dirs.state).unwrap();
        let path = dirs.state.join("socks-secret");
        // Written as a restore from a backup would: plain, not private.
        std::fs::write(&path, "restored-secret\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        assert!(!crate::private_file::is_private(&path).unwrap());
        let keychain = Keychain::disabled("test", "off");
        let creds = socks_credentials(&keychain, &dirs).unwrap();
        assert_eq!(creds.password.expose(), "restored-secret");
        assert!(crate::private_file::is_private(&path).unwrap());
    }
}
