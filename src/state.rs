//! Persisted app state: per-cluster ports, favourites, settings; and the stable port choice.
//! (The SOCKS secret is not state: each open tunnel makes its own, see
//! [`crate::engine::SocksLogin`].)
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

/// The schema version this build writes.
pub const STATE_VERSION: u32 = 1;

/// The ports a cluster's port is derived in: above the well-known and registered-service
/// crowd, below Linux's ephemeral range (32768+), so outgoing connections never hold it.
pub const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// The file earlier versions kept a per-install SOCKS secret in when no keychain was usable;
/// removed at start (see [`remove_legacy_socks_secret`]).
pub const LEGACY_SOCKS_SECRET_FILE: &str = "socks-secret";

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file could not be read.
    #[error("cannot read state file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
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
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The state could not be encoded.
    #[error("cannot encode state")]
    Encode(#[source] serde_json::Error),
    /// Writing failed.
    #[error("cannot save state")]
    Write(#[source] DirsError),
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
    /// The tunnels the desktop app's user has switched on and not off: still listed after
    /// Quit (which closes them), so that the next start reopens them when
    /// [`Settings::reconnect_at_start`] is on.
    pub reconnect: BTreeSet<ClusterId>,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            ports: BTreeMap::new(),
            favourites: BTreeSet::new(),
            settings: Settings::default(),
            reconnect: BTreeSet::new(),
        }
    }
}

/// User settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
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
    /// Reopen, when the desktop app starts, the tunnels that were on when it quit.
    pub reconnect_at_start: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kubeconfig_prefix: "k8s-tunnels/".into(),
            kubeconfig_path: None,
            switch_context_on_connect: false,
            notifications: true,
            start_at_login: false,
            reconnect_at_start: true,
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

impl AppState {
    /// The port `id`'s tunnel will listen on if it is free: see [`planned_port`].
    pub fn planned_port(&self, id: &ClusterId) -> u16 {
        planned_port(id, self.ports.get(id).copied())
    }
}

/// The port a cluster's tunnel is planned on, what every list shows before it connects: the
/// persisted one, else the one derived from its id. It is the first of [`port_candidates`],
/// the port the engine binds when it is free.
pub fn planned_port(id: &ClusterId, persisted: Option<u16>) -> u16 {
    // 0 is "any port" to the OS, never a port kubeconfig could keep pointing at.
    persisted
        .filter(|p| *p != 0)
        .unwrap_or_else(|| derived_port(id))
}

/// Port candidates for a cluster: its [`planned_port`] first (the persisted port, else a port
/// derived from a stable hash of the id in [`PORT_RANGE`]), then the ports of that range from
/// the derived one on, wrapping, so a conflict re-picks deterministically. Every port appears
/// once.
pub fn port_candidates(
    id: &ClusterId,
    persisted: Option<u16>,
) -> impl Iterator<Item = u16> + use<> {
    let planned = planned_port(id, persisted);
    let size = PORT_RANGE.end - PORT_RANGE.start;
    let offset = derived_port(id) - PORT_RANGE.start;
    std::iter::once(planned).chain(
        (0..size)
            .map(move |i| {
                // Both terms are below `size`, so neither the sum nor the result overflows.
                PORT_RANGE.start + ((u32::from(offset) + u32::from(i)) % u32::from(size)) as u16
            })
            .filter(move |p| *p != planned),
    )
}

/// The port derived from the id: a stable hash (SHA-256, stable across builds and platforms,
/// unlike std's `DefaultHasher`) into [`PORT_RANGE`].
fn derived_port(id: &ClusterId) -> u16 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.0.as_bytes());
    let mut first8 = [0u8; 8];
    first8.copy_from_slice(&digest.as_ref()[..8]);
    let size = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    // The remainder is below `size`, which fits in a u16.
    PORT_RANGE.start + (u64::from_be_bytes(first8) % size) as u16
}

/// Removes the per-install SOCKS secret file an earlier version may have left in the state
/// folder: nothing accepts it any more, and a secret outside the keychain is one too many.
pub fn remove_legacy_socks_secret(dirs: &AppDirs) {
    let path = dirs.state.join(LEGACY_SOCKS_SECRET_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "removed the SOCKS secret file of an earlier version")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the SOCKS secret file of an earlier version")
        }
    }
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
    fn the_planned_port_is_the_first_candidate() {
        let a = id("file:prod-eu");
        for persisted in [None, Some(0), Some(21000), Some(40000)] {
            assert_eq!(
                Some(planned_port(&a, persisted)),
                port_candidates(&a, persisted).next(),
                "{persisted:?}"
            );
        }
        let mut state = AppState::default();
        assert_eq!(state.planned_port(&a), planned_port(&a, None));
        state.ports.insert(a.clone(), 21000);
        assert_eq!(state.planned_port(&a), 21000);
    }

    #[test]
    fn the_legacy_secret_file_is_removed_and_its_absence_is_fine() {
        let root = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(root.path());
        std::fs::create_dir_all(&dirs.state).unwrap();
        let path = dirs.state.join(LEGACY_SOCKS_SECRET_FILE);
        std::fs::write(&path, "old-per-install-secret\n").unwrap();
        remove_legacy_socks_secret(&dirs);
        assert!(!path.exists());
        remove_legacy_socks_secret(&dirs);
        assert!(!path.exists());
    }
}
