//! The Vault source itself: the KV v2 walk and what it finds (built with the `vault` feature).
use std::collections::BTreeMap;
use std::path::PathBuf;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use serde_json::Value;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::{DEFAULT_ADDRESS, SOURCE, VaultConfig, VaultEnv};
use crate::discovery::metadata::{self, Discovered, MetadataKeys};
use crate::discovery::validate::shown;
use crate::discovery::{
    ClusterSource, Found, Progress, ProgressSink, Rejected, Rejection, ScopeError, SourceReport,
};
use crate::inventory::Cloud;
use crate::secret::Secret;

/// Requests in flight at once.
const CONCURRENCY: usize = 8;

/// Longest Vault error text kept in a scope error.
const MAX_MESSAGE: usize = 300;

/// Why the source could not start talking to Vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No token in `VAULT_TOKEN` nor `~/.vault-token`.
    #[error("no Vault token: set VAULT_TOKEN or run `vault login` (which writes {0})")]
    NoToken(String),
    /// `~/.vault-token` exists but cannot be read.
    #[error("cannot read the Vault token file {}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The address is not an http(s) URL.
    #[error("Vault address {0} is not an http(s) URL")]
    Address(String),
    /// The HTTP client could not be built (e.g. an unreadable `VAULT_CACERT`).
    #[error("cannot set up the Vault client")]
    Client(#[source] ClientError),
}

/// Discovers on-prem clusters from Vault KV v2.
pub struct VaultSource {
    config: VaultConfig,
    env: VaultEnv,
}

impl VaultSource {
    /// A source reading address, token and namespace from the process environment.
    pub fn new(config: VaultConfig) -> Self {
        Self::with_env(config, VaultEnv::from_process())
    }

    /// A source with the given environment (tests; callers that resolved it themselves).
    pub fn with_env(config: VaultConfig, env: VaultEnv) -> Self {
        Self { config, env }
    }

    fn mount(&self) -> &str {
        self.config.mount.trim_matches('/')
    }

    fn prefix(&self) -> &str {
        self.config.prefix.trim_matches('/')
    }

    /// The one scope of this source: `vault:<mount>:<prefix>`.
    pub fn scope(&self) -> String {
        format!("{SOURCE}:{}:{}", self.mount(), self.prefix())
    }

    fn token(&self) -> Result<Secret, VaultError> {
        if let Some(token) = &self.env.token {
            return Ok(token.clone());
        }
        let Some(home) = &self.env.home else {
            return Err(VaultError::NoToken("~/.vault-token".into()));
        };
        let path = home.join(".vault-token");
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(Secret::new(text.trim())),
            Ok(_) => Err(VaultError::NoToken(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(VaultError::NoToken(path.display().to_string()))
            }
            Err(source) => Err(VaultError::TokenFile { path, source }),
        }
    }

    fn client(&self) -> Result<VaultClient, VaultError> {
        let address = self
            .config
            .address
            .clone()
            .or_else(|| self.env.address.clone())
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
        let parsed = url::Url::parse(&address).map_err(|_| VaultError::Address(shown(&address)))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(VaultError::Address(shown(&address)));
        }
        let token = self.token()?;
        let namespace = self
            .config
            .namespace
            .clone()
            .or_else(|| self.env.namespace.clone());
        let mut settings = VaultClientSettingsBuilder::default();
        settings
            .address(parsed.as_str())
            .token(token.expose())
            // TLS is verified whatever VAULT_SKIP_VERIFY says; VAULT_CACERT is honoured.
            .verify(true);
        if let Some(namespace) = namespace {
            settings.set_namespace(namespace);
        }
        let settings = settings
            .build()
            .map_err(|e| VaultError::Address(shown(&e.to_string())))?;
        VaultClient::new(settings).map_err(VaultError::Client)
    }

    async fn scan(&self, progress: ProgressSink) -> SourceReport {
        let scope = self.scope();
        let mut report = SourceReport {
            source: SOURCE.into(),
            ..SourceReport::default()
        };
        let tell = |done: usize, total: usize| {
            progress(Progress {
                source: SOURCE.into(),
                done,
                total,
            })
        };
        tell(0, 1);
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => {
                report.failed.push(ScopeError {
                    scope,
                    message: crate::error_chain(&e),
                });
                tell(1, 1);
                return report;
            }
        };
        let mount = self.mount();
        let mut problems: Vec<String> = Vec::new();
        let mut secrets: Vec<String> = Vec::new();
        let mut level: Vec<String> = vec![self.prefix().to_string()];
        let (mut done, mut total) = (0, 1);
        for depth in 0..=self.config.max_depth {
            if level.is_empty() {
                break;
            }
            let mut lists = futures_util::stream::iter(std::mem::take(&mut level))
                .map(|folder| {
                    let client = &client;
                    async move {
                        let keys = vaultrs::kv2::list(client, mount, &folder).await;
                        (folder, keys)
                    }
                })
                .buffer_unordered(CONCURRENCY);
            while let Some((folder, answer)) = lists.next().await {
                done += 1;
                match answer {
                    Ok(keys) => {
                        for key in keys {
                            let Some(path) = child(&folder, &key) else {
                                report.rejected.push(Rejected {
                                    scope: scope.clone(),
                                    name: shown(&key),
                                    reason: Rejection::Invalid(format!(
                                        "key {} in {mount}/{folder}/ is not a usable path segment",
                                        shown(&key)
                                    )),
                                });
                                continue;
                            };
                            if key.ends_with('/') {
                                if depth == self.config.max_depth {
                                    problems.push(format!(
                                        "{mount}/{path}/: deeper than max_depth ({}), not walked",
                                        self.config.max_depth
                                    ));
                                } else {
                                    level.push(path);
                                    total += 1;
                                }
                            } else if secrets.len() == self.config.max_secrets {
                                problems.push(format!(
                                    "{mount}/{folder}/: more than max_secrets ({}) secrets, {} not read",
                                    self.config.max_secrets,
                                    shown(&key)
                                ));
                            } else {
                                secrets.push(path);
                                total += 1;
                            }
                        }
                    }
                    // No folder (or an empty one): no clusters there.
                    Err(ClientError::APIError { code: 404, .. }) => {}
                    Err(e) => problems.push(format!("{mount}/{folder}/: {}", describe(&e))),
                }
                tell(done, total);
            }
        }
        let mut reads = futures_util::stream::iter(secrets)
            .map(|path| {
                let client = &client;
                async move {
                    let data =
                        vaultrs::kv2::read::<serde_json::Map<String, Value>>(client, mount, &path)
                            .await;
                    (path, data)
                }
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((path, answer)) = reads.next().await {
            done += 1;
            match answer {
                Ok(fields) => {
                    let name = shown(path.rsplit('/').next().unwrap_or(&path));
                    let outcome = discovered(mount, &path, &fields)
                        .and_then(|d| metadata::build(d, &vault_keys()));
                    match outcome {
                        Ok(cluster) => report.found.push(Found {
                            cluster,
                            scope: scope.clone(),
                        }),
                        Err(reason) => report.rejected.push(Rejected {
                            scope: scope.clone(),
                            name,
                            reason,
                        }),
                    }
                }
                // Deleted since it was listed (or its latest version is deleted): no cluster.
                Err(ClientError::APIError { code: 404, .. }) => {}
                Err(e) => problems.push(format!("{mount}/{path}: {}", describe(&e))),
            }
            tell(done, total);
        }
        if problems.is_empty() {
            report.scanned.push(scope);
        } else {
            // One scope for the whole prefix: clusters found are fresh; clusters cached from
            // it and not seen now may sit behind the failed paths, so they are kept, stale.
            report
                .failed
                .extend(problems.into_iter().map(|message| ScopeError {
                    scope: scope.clone(),
                    message,
                }));
        }
        report
    }
}

impl ClusterSource for VaultSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn discover(&self, progress: ProgressSink) -> BoxFuture<'_, SourceReport> {
        Box::pin(self.scan(progress))
    }
}

/// `folder/key` (without a trailing `/`), or `None` for a key that could escape the folder
/// or confuse the path (`.`, `..`, empty, an inner `/`, control characters).
fn child(folder: &str, key: &str) -> Option<String> {
    let segment = key.strip_suffix('/').unwrap_or(key);
    if segment.is_empty()
        || segment == "."
        || segment == ".."
        || segment.contains('/')
        || segment.chars().any(char::is_control)
    {
        return None;
    }
    Some(if folder.is_empty() {
        segment.to_string()
    } else {
        format!("{folder}/{segment}")
    })
}

/// The field names a secret uses for the Access settings.
fn vault_keys() -> MetadataKeys {
    MetadataKeys {
        hostname: vec!["hostname".into()],
        environment: vec!["environment".into()],
        origin: vec!["origin".into()],
    }
}

/// One secret's fields as [`Discovered`].
fn discovered(
    mount: &str,
    path: &str,
    fields: &serde_json::Map<String, Value>,
) -> Result<Discovered, Rejection> {
    let text = |field: &str| -> Result<Option<String>, Rejection> {
        match fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Rejection::Invalid(format!(
                "field {field}: must be a string"
            ))),
        }
    };
    let server = text("server")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Rejection::Invalid("field server (the API server URL) is missing".into()))?;
    if server.contains('@') {
        // Not echoed: the part before '@' is a password when there is one.
        return Err(Rejection::Invalid(
            "field server: must not hold credentials (user:password@)".into(),
        ));
    }
    let cloud = match text("cloud")?.as_deref().map(str::trim) {
        None | Some("") => Cloud::Onprem,
        Some(c) => match c.to_ascii_lowercase().as_str() {
            "onprem" | "on-prem" => Cloud::Onprem,
            "aws" => Cloud::Aws,
            "gcp" => Cloud::Gcp,
            "azure" => Cloud::Azure,
            "other" => Cloud::Other,
            _ => {
                return Err(Rejection::Invalid(format!(
                    "field cloud {}: expected onprem, aws, gcp, azure or other",
                    shown(c)
                )));
            }
        },
    };
    let mut labels = BTreeMap::new();
    for field in ["hostname", "environment", "origin"] {
        if let Some(value) = text(field)? {
            labels.insert(field.to_string(), value);
        }
    }
    let last = path.rsplit('/').next().unwrap_or(path);
    Ok(Discovered {
        id: format!("{SOURCE}:{mount}:{path}"),
        name: text("name")?
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| last.to_string()),
        cloud: Some(cloud),
        region: text("region")?,
        endpoint: server,
        ca_pem: text("ca")?.filter(|c| !c.trim().is_empty()),
        labels,
        user: serde_norway::Mapping::new(),
    })
}

/// A Vault error as users should read it: the status and Vault's own error strings (which
/// never hold the token), shortened.
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::APIError { code: 403, .. } => {
            "permission denied (HTTP 403: the token's policy does not allow this path)".into()
        }
        ClientError::APIError { code, errors } => {
            let text: String = errors.join("; ").chars().take(MAX_MESSAGE).collect();
            if text.is_empty() {
                format!("Vault answered HTTP {code}")
            } else {
                format!("Vault answered HTTP {code}: {text}")
            }
        }
        other => crate::error_chain(other)
            .chars()
            .take(MAX_MESSAGE)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_that_could_leave_the_folder_are_refused() {
        assert_eq!(child("a", "b/").as_deref(), Some("a/b"));
        assert_eq!(child("", "b").as_deref(), Some("b"));
        for bad in ["../", "..", ".", "", "/", "a/b", "x\ny"] {
            assert_eq!(child("a", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn token_comes_from_env_then_the_vault_token_file() {
        let home = tempfile::tempdir().unwrap();
        let source = |token: Option<&str>| {
            VaultSource::with_env(
                VaultConfig::default(),
                VaultEnv {
                    token: token.map(Secret::new),
                    home: Some(home.path().to_path_buf()),
                    ..VaultEnv::default()
                },
            )
        };
        let err = source(None).token().unwrap_err();
        assert!(err.to_string().contains(".vault-token"), "{err}");
        std::fs::write(home.path().join(".vault-token"), "s.file-token\n").unwrap();
        assert_eq!(source(None).token().unwrap().expose(), "s.file-token");
        assert_eq!(source(Some("s.env")).token().unwrap().expose(), "s.env");
    }
}
