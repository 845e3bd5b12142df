//! The app facade both front ends (the CLI and the desktop shell) stand on: where the files
//! are, the configuration, the catalog of clusters (inventory + discovery cache), the engine
//! built the one way every front end builds it, discovery runs, and the persisted favourites and
//! settings.
//!
//! Nothing here touches the network except [`App::discover`] and the [`Refresher`] of
//! [`App::background_refresh`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{self, AppConfig, ConfigError};
use crate::dirs::{AppDirs, DirsError};
use crate::discovery::cache::{self, CacheError, DiscoveryCache};
use crate::discovery::catalog::{self, Entry};
use crate::discovery::runner::{self, Refresher};
use crate::discovery::{ClusterSource, ProgressSink, SourceReport, eks, file, gke, vault};
use crate::engine::{Engine, EngineConfig, KUBECONFIG_KEEPER_PERIOD};
use crate::inventory::Cluster;
use crate::keychain::Keychain;
use crate::kubeconfig::{Kubeconfig, KubeconfigError};
use crate::state::{Settings, StateError, StateStore, remove_legacy_socks_secret};
use crate::tunnel::health::ProbeSchedule;

/// The keychain service the app keeps its secrets under.
pub const KEYCHAIN_SERVICE: &str = "k8s-tunnels";

/// Errors of the app facade.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The app's folders could not be found or created.
    #[error("cannot find or create the app's folders")]
    Dirs(#[source] DirsError),
    /// The configuration file is unreadable or invalid.
    #[error("invalid configuration")]
    Config(#[source] ConfigError),
    /// The inventory file is unreadable or invalid.
    #[error("cannot load the inventory {}", path.display())]
    Inventory {
        /// The inventory file.
        path: PathBuf,
        /// Where in the inventory, and what.
        #[source]
        source: crate::discovery::file::InventoryError,
    },
    /// The discovery cache could not be read or written.
    #[error("cannot read or write the discovery cache")]
    Cache(#[source] CacheError),
    /// The kubeconfig in force could not be determined.
    #[error("cannot find the kubeconfig to update")]
    Kubeconfig(#[source] KubeconfigError),
    /// App state could not be read or written.
    #[error("cannot read or write the app state")]
    State(#[source] StateError),
    /// No cluster has this name or id.
    #[error("no cluster named {wanted:?} (known: {known})")]
    UnknownCluster {
        /// What was asked for.
        wanted: String,
        /// The known names, comma-separated, or a hint when there are none.
        known: String,
    },
}

/// Where the app's inputs are; `None` means the default.
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// The configuration file [default: `config.yaml` in the config dir].
    pub config: Option<PathBuf>,
    /// The inventory file [default: the configuration's `inventory`, else `inventory.yaml` in
    /// the config dir].
    pub inventory: Option<PathBuf>,
    /// The kubeconfig to update [default: the `kubeconfig_path` setting, else `KUBECONFIG`,
    /// else `~/.kube/config`].
    pub kubeconfig: Option<PathBuf>,
}

/// A configured discovery source, described for a settings page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SourceInfo {
    /// `file`, `eks`, `gke`, `vault`.
    pub name: String,
    /// Whether it runs.
    pub enabled: bool,
    /// One line: profiles and regions, projects, Vault address and prefix, inventory path.
    pub detail: String,
}

/// The app: its folders, configuration and catalog. Cheap to clone.
#[derive(Clone, Debug)]
pub struct App {
    dirs: AppDirs,
    config_path: PathBuf,
    config: AppConfig,
    kubeconfig_override: Option<PathBuf>,
    inventory_path: PathBuf,
    /// The inventory was named (option or configuration): it must exist.
    inventory_explicit: bool,
    state: StateStore,
}

impl App {
    /// Reads the configuration from `dirs` (or the files `options` names). Creates nothing.
    pub fn load(dirs: AppDirs, options: AppOptions) -> Result<Self, AppError> {
        let config_path = options
            .config
            .unwrap_or_else(|| dirs.config.join(config::CONFIG_FILE));
        let config = config::load(&config_path).map_err(AppError::Config)?;
        let (inventory_path, inventory_explicit) = match (options.inventory, &config.inventory) {
            (Some(path), _) => (path, true),
            (None, Some(path)) => (path.clone(), true),
            (None, None) => (dirs.default_inventory(), false),
        };
        Ok(Self {
            state: StateStore::new(&dirs),
            dirs,
            config_path,
            config,
            kubeconfig_override: options.kubeconfig,
            inventory_path,
            inventory_explicit,
        })
    }

    /// The same app reading another inventory (the demo lab's).
    pub fn with_inventory(self, inventory_path: PathBuf) -> Self {
        Self {
            inventory_path,
            inventory_explicit: true,
            ..self
        }
    }

    /// The app's folders.
    pub fn dirs(&self) -> &AppDirs {
        &self.dirs
    }

    /// The configuration file's path (it may not exist).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The configuration.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// The inventory file's path (it may not exist).
    pub fn inventory_path(&self) -> &Path {
        &self.inventory_path
    }

    /// The persisted state (ports, favourites, settings).
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// True when neither a cloud source is configured nor an inventory exists: nothing to
    /// show, so the desktop app starts the demo lab.
    pub fn is_unconfigured(&self) -> bool {
        let sources = &self.config.sources;
        sources.eks.is_none()
            && sources.gke.is_none()
            && sources.vault.is_none()
            && !self.inventory_path.exists()
    }

    /// The inventory's clusters; none when the default inventory does not exist.
    pub fn inventory(&self) -> Result<Vec<Cluster>, AppError> {
        if !self.inventory_explicit && !self.inventory_path.exists() {
            return Ok(Vec::new());
        }
        file::load(&self.inventory_path).map_err(|source| AppError::Inventory {
            path: self.inventory_path.clone(),
            source,
        })
    }

    /// Every cluster: the inventory's and the discovery cache's. No network.
    pub fn catalog(&self) -> Result<Vec<Entry>, AppError> {
        let inventory = self.inventory()?;
        let cached = cache::load(&self.cache_path()).map_err(AppError::Cache)?;
        Ok(catalog::assemble(inventory, &cached))
    }

    /// Finds a cluster of `entries` by name or id, with an error naming the known ones.
    pub fn find<'a>(entries: &'a [Entry], wanted: &str) -> Result<&'a Entry, AppError> {
        catalog::find(entries, wanted).ok_or_else(|| {
            let known: Vec<&str> = entries.iter().map(|e| e.cluster.name.as_str()).collect();
            AppError::UnknownCluster {
                wanted: wanted.to_string(),
                known: if known.is_empty() {
                    "none; see `k8s-tunnels list`".to_string()
                } else {
                    known.join(", ")
                },
            }
        })
    }

    /// The discovery cache's path.
    pub fn cache_path(&self) -> PathBuf {
        cache::cache_path(&self.dirs.cache)
    }

    /// The kubeconfig files to update: the override, else the `kubeconfig_path` setting, else
    /// `KUBECONFIG` / `~/.kube/config`; with the settings' entry prefix.
    pub fn kubeconfig(&self, settings: &Settings) -> Result<Kubeconfig, AppError> {
        let kubeconfig = match (&self.kubeconfig_override, &settings.kubeconfig_path) {
            (Some(path), _) | (None, Some(path)) => Kubeconfig::with_paths(vec![path.clone()]),
            (None, None) => Kubeconfig::from_env().map_err(AppError::Kubeconfig)?,
        };
        Ok(kubeconfig.with_prefix(settings.kubeconfig_prefix.clone()))
    }

    /// Builds the engine the way every front end does: persisted ports, the kubeconfig in
    /// force, the Access login with its tokens in `keychain`. Returns the settings it was built
    /// with. Creates the app's folders.
    pub fn engine(
        &self,
        keychain: &Keychain,
        schedule: ProbeSchedule,
    ) -> Result<(Engine, Settings), AppError> {
        self.dirs.ensure().map_err(AppError::Dirs)?;
        remove_legacy_socks_secret(&self.dirs);
        let settings = self.state.load().map_err(AppError::State)?.settings;
        let kubeconfig = self.kubeconfig(&settings)?;
        let engine = Engine::with_access(
            EngineConfig {
                kubeconfig: Some(kubeconfig),
                prefix: settings.kubeconfig_prefix.clone(),
                state: self.state.clone(),
                schedule,
                keepalive: crate::tunnel::keepalive::Keepalive::default(),
                warm: self.config.warm,
                wake: Some(crate::wake::WakeSettings::default()),
                kubeconfig_refresh: KUBECONFIG_KEEPER_PERIOD,
            },
            self.access_client(keychain),
        );
        Ok((engine, settings))
    }

    /// The Access login as configured (`access:`): tokens in `keychain` when it is durable,
    /// else in memory (see [`crate::access::TokenStore::warning`]), the configured browser.
    pub fn access_client(&self, keychain: &Keychain) -> crate::access::AccessClient {
        let settings = self.config.access.clone();
        let store = crate::access::TokenStore::new(keychain.clone());
        let opener = crate::access::transfer::opener_from_setting(settings.browser.as_deref());
        let timings = settings.timings();
        crate::access::AccessClient::with_timings(settings, store, opener, timings)
    }

    /// The configured discovery sources, or only those named in `only`.
    pub fn sources(&self, only: &[String]) -> Vec<Box<dyn ClusterSource>> {
        let configured = &self.config.sources;
        let all = [
            configured.eks.as_ref().and_then(eks::source_for),
            configured.gke.as_ref().and_then(gke::source_for),
            configured.vault.as_ref().and_then(vault::source_for),
        ];
        all.into_iter()
            .flatten()
            .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name()))
            .collect()
    }

    /// Names of the configured discovery sources.
    pub fn configured_sources(&self) -> Vec<&'static str> {
        self.sources(&[]).iter().map(|s| s.name()).collect()
    }

    /// Every source, configured or not, described for a settings page: the inventory file
    /// first, then EKS, GKE and Vault.
    pub fn source_infos(&self) -> Vec<SourceInfo> {
        let sources = &self.config.sources;
        let list = |items: &[String], none: &str| {
            if items.is_empty() {
                none.to_string()
            } else {
                items.join(", ")
            }
        };
        let mut infos = vec![SourceInfo {
            name: catalog::FILE_SOURCE.into(),
            enabled: self.inventory_path.exists(),
            detail: self.inventory_path.display().to_string(),
        }];
        infos.push(SourceInfo {
            name: "eks".into(),
            enabled: sources.eks.is_some(),
            detail: sources.eks.as_ref().map_or_else(
                || "not configured".into(),
                |c| {
                    format!(
                        "profiles: {}; regions: {}",
                        list(&c.profiles, "default"),
                        list(&c.regions, "all enabled")
                    )
                },
            ),
        });
        infos.push(SourceInfo {
            name: "gke".into(),
            enabled: sources.gke.is_some(),
            detail: sources.gke.as_ref().map_or_else(
                || "not configured".into(),
                |c| format!("projects: {}", list(&c.projects, "none")),
            ),
        });
        infos.push(SourceInfo {
            name: "vault".into(),
            enabled: sources.vault.is_some(),
            detail: sources.vault.as_ref().map_or_else(
                || "not configured".into(),
                |c| {
                    format!(
                        "{} {}/{}",
                        c.address.as_deref().unwrap_or("$VAULT_ADDR"),
                        c.mount,
                        c.prefix
                    )
                },
            ),
        });
        infos
    }

    /// Runs the sources (all configured ones, or those named in `only`) and rewrites the cache.
    pub async fn discover(
        &self,
        only: &[String],
        progress: ProgressSink,
    ) -> Result<(DiscoveryCache, Vec<SourceReport>), AppError> {
        self.dirs.ensure().map_err(AppError::Dirs)?;
        let sources = self.sources(only);
        runner::refresh(&self.cache_path(), &sources, progress)
            .await
            .map_err(AppError::Cache)
    }

    /// Keeps the discovery cache fresh in the background when the configuration sets a TTL and
    /// names sources; `None` otherwise. Dropping it stops it.
    pub fn background_refresh(
        &self,
        on_refresh: impl Fn(&DiscoveryCache) + Send + Sync + 'static,
    ) -> Option<Refresher> {
        let ttl = self.config.cache_ttl?;
        let sources = self.sources(&[]);
        if sources.is_empty() {
            return None;
        }
        Some(Refresher::start(
            self.cache_path(),
            Arc::new(sources),
            ttl,
            on_refresh,
        ))
    }

    /// The settings.
    pub fn settings(&self) -> Result<Settings, AppError> {
        Ok(self.state.load().map_err(AppError::State)?.settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfigured_until_a_source_or_an_inventory_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(tmp.path());
        let app = App::load(dirs.clone(), AppOptions::default()).unwrap();
        assert!(app.is_unconfigured());
        assert!(app.catalog().unwrap().is_empty());
        assert!(app.configured_sources().is_empty());

        std::fs::create_dir_all(&dirs.config).unwrap();
        std::fs::write(
            dirs.config.join(config::CONFIG_FILE),
            "sources:\n  gke: {}\n",
        )
        .unwrap();
        let app = App::load(dirs.clone(), AppOptions::default()).unwrap();
        assert!(!app.is_unconfigured());
        assert_eq!(app.configured_sources(), ["gke"]);
        let infos = app.source_infos();
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["file", "eks", "gke", "vault"]);
        assert!(infos[2].enabled && !infos[1].enabled);

        std::fs::write(dirs.config.join(config::CONFIG_FILE), "").unwrap();
        std::fs::write(dirs.default_inventory(), "clusters: []\n").unwrap();
        let app = App::load(dirs, AppOptions::default()).unwrap();
        assert!(!app.is_unconfigured());
    }

    #[test]
    fn a_named_inventory_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let app = App::load(
            AppDirs::at(tmp.path()),
            AppOptions {
                inventory: Some(tmp.path().join("missing.yaml")),
                ..AppOptions::default()
            },
        )
        .unwrap();
        assert!(matches!(app.inventory(), Err(AppError::Inventory { .. })));
        let err = App::find(&[], "prod").unwrap_err().to_string();
        assert!(err.contains("\"prod\""), "{err}");
    }
}
