//! The app's configuration file (`config.yaml` in the config dir): where the inventory is,
//! which discovery sources run and how, and how long the discovery cache stays fresh.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The configuration file's name in the config dir.
pub const CONFIG_FILE: &str = "config.yaml";

/// The whole configuration. Every part is optional; an absent file is all defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// The inventory file [default: `inventory.yaml` in the config dir].
    pub inventory: Option<PathBuf>,
    /// Refresh discovery in the background when the cache is older than this (e.g. `1h`);
    /// unset: only `k8s-tunnels discover` (or the app's Refresh) refreshes.
    #[serde(deserialize_with = "crate::duration::optional")]
    pub cache_ttl: Option<Duration>,
    /// Discovery sources.
    pub sources: SourcesConfig,
    /// The Access login: auth domains, transfer service, browser, token files.
    pub access: crate::access::settings::AccessSettings,
    /// Warm connections to the edge per tunnel in use (`warm: {connections: 0}` turns them off).
    pub warm: crate::tunnel::warm::WarmSettings,
}

/// The discovery sources; a source runs when its section is present (`eks: {}` runs EKS with
/// every default).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// AWS EKS.
    pub eks: Option<crate::discovery::eks::EksConfig>,
    /// Google GKE.
    pub gke: Option<crate::discovery::gke::GkeConfig>,
    /// On-prem clusters described in HashiCorp Vault.
    pub vault: Option<crate::discovery::vault::VaultConfig>,
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read the configuration {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{}{}: {message}", path.display(), location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line and column, when known.
        location: Option<(usize, usize)>,
        /// What is wrong, with the field path.
        message: String,
    },
    /// The file names a discovery source this build of the program was made without.
    #[error(
        "{}: sources.{section}: this build of k8s-tunnels has no {section} discovery (built without the Cargo feature `{section}`)",
        path.display()
    )]
    NotBuiltIn {
        /// The file.
        path: PathBuf,
        /// The source's section (`eks`, `gke`, `vault`), which is also its feature's name.
        section: &'static str,
    },
}

/// Reads the configuration; a missing file is the default configuration.
pub fn load(path: &Path) -> Result<AppConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AppConfig::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(AppConfig::default());
    }
    let de = serde_norway::Deserializer::from_str(&text);
    let config: AppConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        let message = inner.to_string();
        // serde_norway appends " at line L column C"; the location is in front already.
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_string(),
            None => message,
        };
        ConfigError::Invalid {
            path: path.to_path_buf(),
            location,
            message: if field == "." || field.is_empty() {
                message
            } else {
                format!("{field}: {message}")
            },
        }
    })?;
    match config.sources.not_built_in() {
        Some(section) => Err(ConfigError::NotBuiltIn {
            path: path.to_path_buf(),
            section,
        }),
        None => Ok(config),
    }
}

impl SourcesConfig {
    /// The first configured source this build lacks (see the `eks`, `gke` and `vault` features):
    /// refused when the file is read, so that no run silently skips it.
    pub fn not_built_in(&self) -> Option<&'static str> {
        [
            ("eks", self.eks.is_some(), cfg!(feature = "eks")),
            ("gke", self.gke.is_some(), cfg!(feature = "gke")),
            ("vault", self.vault.is_some(), cfg!(feature = "vault")),
        ]
        .into_iter()
        .find(|&(_, configured, built)| configured && !built)
        .map(|(name, ..)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_is_default_and_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        assert!(load(&path).unwrap().cache_ttl.is_none());
        std::fs::write(&path, "cache_ttl: 90m\ninventory: /x/inv.yaml\n").unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.cache_ttl, Some(Duration::from_secs(5400)));
        assert_eq!(config.inventory.as_deref(), Some(Path::new("/x/inv.yaml")));
        std::fs::write(&path, "sources: {}\ncache_ttl: soon\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("config.yaml:2:"), "{err}");
        assert!(err.contains("cache_ttl"), "{err}");
        std::fs::write(
            &path,
            "sources:\n  eks:\n    regions: [eu-west-1]\n  vault: {}\n",
        )
        .unwrap();
        let sources = load(&path).unwrap().sources;
        assert_eq!(sources.eks.unwrap().regions, ["eu-west-1"]);
        assert!(sources.vault.is_some() && sources.gke.is_none());
        std::fs::write(&path, "sources:\n  gke:\n    projekts: [p]\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("config.yaml:3:"), "{err}");
        assert!(err.contains("projekts"), "{err}");
        std::fs::write(&path, "surces: {}\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `surces`"), "{err}");
    }
}
