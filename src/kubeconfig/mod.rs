//! The safe kubeconfig writer.
//!
//! On connect the engine calls [`Kubeconfig::upsert`] with a [`ClusterEntry`]; it adds or updates
//! the cluster, user and context named `k8s-tunnels/<cluster>` (the prefix is configurable), and
//! [`Kubeconfig::use_context`] switches `current-context`. The rules, and who enforces them:
//!
//! - Edits go through a typed model that keeps every field it does not know (`model.rs`); the
//!   app only touches entries named with its prefix, and in them only the fields it owns.
//! - Files are locked the way client-go locks them, with waiting and stale-lock recovery
//!   (`lock.rs`), and replaced atomically, keeping their mode and symlinks (`files.rs`).
//! - Several files in `KUBECONFIG` are handled as client-go's `ModifyConfig` does: a stanza is
//!   written back to the first file that defines it; a new stanza, and `current-context`, go to
//!   the default file (the first that exists, else the last listed).
//! - A file that does not parse is reported with its line and column and left untouched, and
//!   nothing is written when nothing changes.
//!
//! Known limits, shared with kubectl: comments and formatting are not kept in a file the writer
//! rewrites, and YAML anchors/aliases are expanded (their meaning is kept). A file the writer
//! does not need to change is never rewritten.

mod emit;
mod error;
mod files;
mod lock;
mod model;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_norway::Mapping;

pub use error::{KubeconfigError, YamlError};

use lock::{FileLock, LockPolicy};
use model::{Document, OwnedCluster};

/// The default prefix of every stanza name the app owns.
pub const DEFAULT_PREFIX: &str = "k8s-tunnels/";

/// The name of the cluster, user and context stanzas the app writes for a cluster, which is
/// the kubectl context that reaches it: the prefix, then the cluster's display name
/// (`k8s-tunnels/` + `prod-eu`). Every front end and the engine name contexts through this.
pub fn context_name(prefix: &str, cluster_name: &str) -> String {
    format!("{prefix}{cluster_name}")
}

/// What the app writes for one cluster.
#[derive(Clone)]
pub struct ClusterEntry {
    /// Full stanza name for cluster, user and context, e.g. "k8s-tunnels/prod-eu".
    pub name: String,
    /// The API server URL (`https://...`).
    pub server: String,
    /// The API server's CA, PEM; written as `certificate-authority-data` (base64). `None` uses
    /// the system roots.
    pub certificate_authority_pem: Option<String>,
    /// The name to verify the server certificate against, when it differs from the URL's host.
    pub tls_server_name: Option<String>,
    /// `socks5://user:secret@127.0.0.1:port`: holds the SOCKS password.
    pub proxy_url: crate::secret::Secret,
    /// The user stanza (exec / token / tokenFile ...).
    pub user: Mapping,
}

impl fmt::Debug for ClusterEntry {
    // The user stanza can hold a token, and the proxy URL holds the SOCKS password: show
    // neither, only which credential keys are present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user_keys: Vec<&str> = self.user.keys().filter_map(|k| k.as_str()).collect();
        f.debug_struct("ClusterEntry")
            .field("name", &self.name)
            .field("server", &self.server)
            .field(
                "certificate_authority_pem",
                &self.certificate_authority_pem.as_ref().map(|_| "<pem>"),
            )
            .field("tls_server_name", &self.tls_server_name)
            .field("proxy_url", &self.proxy_url)
            .field("user_keys", &user_keys)
            .finish()
    }
}

/// The set of kubeconfig files in force, and how the app writes to them.
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    paths: Vec<PathBuf>,
    prefix: String,
    lock: LockPolicy,
}

/// The kubeconfig files' size, times and identity, from one `stat` each: two equal stamps taken
/// apart mean that, almost surely, nobody wrote the files in between, so a keeper can skip
/// reading and parsing them. ("Almost": on a filesystem with coarse timestamps a same-size
/// rewrite within one tick looks the same, so a keeper still reads the files now and then.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesStamp(Vec<Option<FileStamp>>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// Inode change time and inode number: a rename over the file (our writes, editors) or a
    /// permission change shows even where the modification time does not move.
    #[cfg(unix)]
    changed: (i64, i64, u64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            changed: {
                use std::os::unix::fs::MetadataExt as _;
                (meta.ctime(), meta.ctime_nsec(), meta.ino())
            },
        })
    }
}

/// One file of the set, as read under the lock.
struct Loaded {
    path: PathBuf,
    existed: bool,
    document: Document,
}

impl Kubeconfig {
    /// The files client-go would use: `KUBECONFIG` (split with the platform separator, empty
    /// entries skipped, duplicates dropped) or else `$HOME/.kube/config`.
    pub fn from_env() -> Result<Self, KubeconfigError> {
        Self::from_env_values(std::env::var_os("KUBECONFIG"), std::env::var_os("HOME"))
    }

    /// [`Kubeconfig::from_env`] with the two variables given, for callers that hold them (and
    /// for tests, which must not change the process environment).
    pub fn from_env_values(
        kubeconfig: Option<OsString>,
        home: Option<OsString>,
    ) -> Result<Self, KubeconfigError> {
        let mut paths: Vec<PathBuf> = Vec::new();
        if let Some(list) = kubeconfig {
            for path in std::env::split_paths(&list) {
                if !path.as_os_str().is_empty() && !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
        if paths.is_empty() {
            let home = home
                .filter(|h| !h.is_empty())
                .ok_or(KubeconfigError::NoHome)?;
            paths.push(PathBuf::from(home).join(".kube").join("config"));
        }
        Ok(Self::with_paths(paths))
    }

    /// Uses exactly these files, in this order of precedence (duplicates dropped).
    pub fn with_paths(paths: Vec<PathBuf>) -> Self {
        let mut unique: Vec<PathBuf> = Vec::with_capacity(paths.len());
        for path in paths {
            if !path.as_os_str().is_empty() && !unique.contains(&path) {
                unique.push(path);
            }
        }
        Self {
            paths: unique,
            prefix: DEFAULT_PREFIX.to_owned(),
            lock: LockPolicy::default(),
        }
    }

    /// Sets the prefix of the stanza names the app owns (default [`DEFAULT_PREFIX`]).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets how long to wait for another writer's lock (default 10 s).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock.timeout = timeout;
        self
    }

    /// Sets the age after which any lock counts as abandoned (default 60 s).
    pub fn with_stale_lock_after(mut self, age: Duration) -> Self {
        self.lock.stale_after = age;
        self
    }

    /// The files, in order of precedence.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The prefix of the stanza names the app owns.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Adds or updates cluster + user + context named `entry.name`. Returns whether a file
    /// changed.
    pub fn upsert(&self, entry: &ClusterEntry) -> Result<bool, KubeconfigError> {
        self.upsert_all(std::slice::from_ref(entry))
            .map(|(changed, _)| changed)
    }

    /// [`Kubeconfig::upsert`] for several entries in one locked read and at most one write per
    /// file. Returns whether a file changed, and the files' [`FilesStamp`] taken under the lock
    /// (so no writer that honours the lock can slip in between the check and the stamp).
    pub fn upsert_all(
        &self,
        entries: &[ClusterEntry],
    ) -> Result<(bool, FilesStamp), KubeconfigError> {
        let owned = entries
            .iter()
            .map(|entry| self.validate(entry))
            .collect::<Result<Vec<_>, _>>()?;
        let _locks = self.lock_all()?;
        let loaded = self.load_all()?;
        let default = self.default_index(&loaded);
        let mut updated: Vec<Option<Document>> = vec![None; loaded.len()];
        for (entry, owned) in entries.iter().zip(&owned) {
            let name = entry.name.as_str();
            let cluster_file =
                first_defining(&loaded, |d| d.defines_cluster(name)).unwrap_or(default);
            let user_file = first_defining(&loaded, |d| d.defines_user(name)).unwrap_or(default);
            let context_file =
                first_defining(&loaded, |d| d.defines_context(name)).unwrap_or(default);
            document_mut(&mut updated, &loaded, cluster_file).upsert_cluster(name, owned);
            document_mut(&mut updated, &loaded, user_file).upsert_user(name, &entry.user);
            document_mut(&mut updated, &loaded, context_file).upsert_context(name);
        }
        let changed = write_changed(&loaded, updated)?;
        Ok((changed, self.stamp()))
    }

    /// What the files look like on disk, without reading them: see [`FilesStamp`].
    pub fn stamp(&self) -> FilesStamp {
        FilesStamp(self.paths.iter().map(|p| FileStamp::of(p)).collect())
    }

    /// Sets current-context (the context must exist in the merged view, else an error). Written
    /// where client-go writes it: the default file (the first that exists, else the last listed).
    pub fn use_context(&self, context: &str) -> Result<(), KubeconfigError> {
        self.use_context_if(context, |_| true).map(|_| ())
    }

    /// Sets current-context to `context` only if the current one, read under the same lock,
    /// satisfies `still` (say, "is still the one the app set"): a context the user chose in the
    /// meantime is kept. Returns whether it was set.
    pub fn use_context_if(
        &self,
        context: &str,
        still: impl FnOnce(Option<&str>) -> bool,
    ) -> Result<bool, KubeconfigError> {
        let _locks = self.lock_all()?;
        let loaded = self.load_all()?;
        if !still(merged_current_context(&loaded)) {
            return Ok(false);
        }
        if !loaded.iter().any(|l| l.document.defines_context(context)) {
            return Err(KubeconfigError::ContextNotFound {
                context: context.to_owned(),
                files: self.files_list(),
            });
        }
        if merged_current_context(&loaded) == Some(context) {
            return Ok(true);
        }
        let default = self.default_index(&loaded);
        let mut updated: Vec<Option<Document>> = vec![None; loaded.len()];
        document_mut(&mut updated, &loaded, default).current_context = Some(context.to_owned());
        write_changed(&loaded, updated).map(|_| true)
    }

    /// The merged current-context, if any: the first file that sets a non-empty one wins.
    pub fn current_context(&self) -> Result<Option<String>, KubeconfigError> {
        let _locks = self.lock_all()?;
        let loaded = self.load_all()?;
        Ok(merged_current_context(&loaded).map(str::to_owned))
    }

    /// Checks the entry and encodes the cluster fields the app owns.
    fn validate<'a>(&self, entry: &'a ClusterEntry) -> Result<OwnedCluster<'a>, KubeconfigError> {
        let name = &entry.name;
        let invalid = |field: &'static str, reason: &str| KubeconfigError::InvalidEntry {
            name: name.clone(),
            field,
            reason: reason.to_owned(),
        };
        // An empty prefix would make every entry "owned", the user's own included.
        if self.prefix.is_empty()
            || !name.starts_with(&self.prefix)
            || name.len() == self.prefix.len()
        {
            return Err(KubeconfigError::NotOwned {
                name: name.clone(),
                prefix: self.prefix.clone(),
            });
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("name", "contains control characters"));
        }
        let server = url::Url::parse(&entry.server)
            .map_err(|e| invalid("server", &format!("not a URL ({e})")))?;
        if !matches!(server.scheme(), "https" | "http") || server.host_str().is_none() {
            return Err(invalid("server", "must be an http(s) URL with a host"));
        }
        // The URL holds the SOCKS password: no message below may quote it, nor the url crate's
        // parse error (which does not echo its input, but say nothing anyway).
        let proxy = url::Url::parse(entry.proxy_url.expose())
            .map_err(|_| invalid("proxy-url", "not a URL"))?;
        if proxy.scheme() != "socks5" {
            return Err(invalid(
                "proxy-url",
                "must start with socks5:// (client-go rejects socks5h and other schemes)",
            ));
        }
        if proxy.host_str().is_none() || proxy.port().is_none() {
            return Err(invalid("proxy-url", "must name a host and a port"));
        }
        let certificate_authority_data = match &entry.certificate_authority_pem {
            Some(pem) if !pem.trim_start().starts_with("-----BEGIN ") => {
                return Err(invalid("certificate authority", "not PEM"));
            }
            Some(pem) => Some(base64::engine::general_purpose::STANDARD.encode(pem)),
            None => None,
        };
        if let Some(tls) = &entry.tls_server_name
            && (tls.is_empty() || tls.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(invalid("tls-server-name", "not a host name"));
        }
        Ok(OwnedCluster {
            server: &entry.server,
            certificate_authority_data,
            tls_server_name: entry.tls_server_name.as_deref(),
            proxy_url: entry.proxy_url.expose(),
        })
    }

    /// Locks every file in sorted order, as client-go does, so two writers cannot deadlock.
    /// A file whose directory does not exist is not locked (it cannot be written by anyone
    /// without first creating the directory), except the default file, whose directory is
    /// created since a new stanza may go there.
    fn lock_all(&self) -> Result<Vec<FileLock>, KubeconfigError> {
        if self.paths.is_empty() {
            return Err(KubeconfigError::NoFiles);
        }
        let default = self.default_path();
        if let Some(dir) = default.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| KubeconfigError::Io {
                action: "create the directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut sorted: Vec<&PathBuf> = self.paths.iter().collect();
        sorted.sort();
        let mut locks = Vec::with_capacity(sorted.len());
        for path in sorted {
            let dir_exists = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.is_dir(),
                _ => true,
            };
            if dir_exists {
                locks.push(FileLock::acquire(path, self.lock)?);
            }
        }
        Ok(locks)
    }

    fn load_all(&self) -> Result<Vec<Loaded>, KubeconfigError> {
        self.paths
            .iter()
            .map(|path| {
                let document = files::read_document(path)?;
                Ok(Loaded {
                    path: path.clone(),
                    existed: document.is_some(),
                    document: document.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// client-go's `GetDefaultFilename`: with one file, that file; with several, the first that
    /// exists, else the last listed.
    fn default_path(&self) -> &Path {
        self.paths
            .iter()
            .find(|p| p.exists())
            .or(self.paths.last())
            .map_or(Path::new(""), PathBuf::as_path)
    }

    fn default_index(&self, loaded: &[Loaded]) -> usize {
        loaded
            .iter()
            .position(|l| l.existed)
            .unwrap_or(loaded.len().saturating_sub(1))
    }

    fn files_list(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Serializes, checks and writes every file whose document changed. All files are
/// serialized and checked before the first is written, so a bad one stops them all.
fn write_changed(
    loaded: &[Loaded],
    updated: Vec<Option<Document>>,
) -> Result<bool, KubeconfigError> {
    let mut to_write = Vec::new();
    for (file, new) in loaded.iter().zip(updated) {
        let Some(new) = new else { continue };
        if file.existed && new == file.document {
            continue;
        }
        let text = files::serialize_checked(&file.path, &new)?;
        to_write.push((file.path.clone(), text));
    }
    for (path, text) in &to_write {
        files::write_atomic(path, text)?;
        tracing::debug!(file = %path.display(), "kubeconfig updated");
    }
    Ok(!to_write.is_empty())
}

/// The document a change to `file` starts from: its content, or a fresh one for a new file.
fn starting_document(file: &Loaded) -> Document {
    if file.existed {
        file.document.clone()
    } else {
        Document::new_file()
    }
}

/// The document being changed for file `index`, started from the file's content on first use.
fn document_mut<'a>(
    updated: &'a mut [Option<Document>],
    loaded: &[Loaded],
    index: usize,
) -> &'a mut Document {
    updated[index].get_or_insert_with(|| starting_document(&loaded[index]))
}

fn first_defining(loaded: &[Loaded], defines: impl Fn(&Document) -> bool) -> Option<usize> {
    loaded.iter().position(|l| defines(&l.document))
}

fn merged_current_context(loaded: &[Loaded]) -> Option<&str> {
    loaded.iter().find_map(|l| l.document.current_context())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secret::Secret;

    fn entry(name: &str, proxy: &str) -> ClusterEntry {
        ClusterEntry {
            name: name.into(),
            server: "https://10.0.0.1:6443".into(),
            certificate_authority_pem: None,
            tls_server_name: None,
            proxy_url: Secret::new(proxy),
            user: serde_norway::from_str("token: abc").unwrap(),
        }
    }

    #[test]
    fn kubeconfig_env_is_split_deduplicated_and_empty_entries_skipped() {
        let list = std::env::join_paths(["/a/one", "", "/b/two", "/a/one"]).unwrap();
        let k = Kubeconfig::from_env_values(Some(list), None).unwrap();
        assert_eq!(
            k.paths(),
            [PathBuf::from("/a/one"), PathBuf::from("/b/two")]
        );
    }

    #[test]
    fn without_kubeconfig_the_home_file_is_used() {
        let k = Kubeconfig::from_env_values(Some("".into()), Some("/home/u".into())).unwrap();
        assert_eq!(k.paths(), [PathBuf::from("/home/u/.kube/config")]);
        let err = Kubeconfig::from_env_values(None, None).err().unwrap();
        assert!(matches!(err, KubeconfigError::NoHome));
    }

    #[test]
    fn an_empty_file_list_is_an_error_not_a_panic() {
        let k = Kubeconfig::with_paths(vec![PathBuf::new()]);
        let err = k.upsert(&entry("k8s-tunnels/a", "socks5://u:p@127.0.0.1:1"));
        assert!(matches!(err, Err(KubeconfigError::NoFiles)));
        assert!(matches!(k.current_context(), Err(KubeconfigError::NoFiles)));
    }

    #[test]
    fn entries_outside_the_prefix_are_refused() {
        let k = Kubeconfig::with_paths(vec!["/nonexistent/config".into()]);
        let err = k
            .validate(&entry("prod", "socks5://u:p@127.0.0.1:1"))
            .err()
            .unwrap();
        assert!(matches!(err, KubeconfigError::NotOwned { .. }), "{err}");
        // An empty prefix owns nothing (it would otherwise own the user's entries too).
        let unprefixed = Kubeconfig::with_paths(vec!["/nonexistent/config".into()]).with_prefix("");
        let err = unprefixed
            .validate(&entry("prod", "socks5://u:p@127.0.0.1:1"))
            .err()
            .unwrap();
        assert!(matches!(err, KubeconfigError::NotOwned { .. }), "{err}");
        let k = k.with_prefix("corp/");
        assert!(
            k.validate(&entry("corp/prod", "socks5://u:p@127.0.0.1:1"))
                .is_ok()
        );
    }

    #[test]
    fn socks5h_and_malformed_proxy_urls_are_refused_without_quoting_them() {
        let k = Kubeconfig::with_paths(vec!["/nonexistent/config".into()]);
        for bad in [
            "socks5h://u:topsecret@127.0.0.1:1",
            "http://u:topsecret@127.0.0.1:1",
            "socks5://u:topsecret@127.0.0.1",
            "not a url topsecret",
        ] {
            let err = k.validate(&entry("k8s-tunnels/a", bad)).err().unwrap();
            assert!(matches!(
                err,
                KubeconfigError::InvalidEntry {
                    field: "proxy-url",
                    ..
                }
            ));
            assert!(!err.to_string().contains("topsecret"), "{err}");
            assert!(!format!("{err:?}").contains("topsecret"), "{err:?}");
        }
    }
}
