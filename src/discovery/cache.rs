//! The discovery cache: what the cloud sources found, with when and from where, stored in the
//! platform cache dir so that the CLI and the app start at once, without the network.
//!
//! The inventory file's clusters are not cached: the file is local and is read fresh each time
//! (and a static token a user wrote in it must not be copied elsewhere).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Rejected, ScopeError, SourceReport};
use crate::dirs::write_private;
use crate::inventory::Cluster;

/// Schema version of the cache file; a file of another version is ignored (and rebuilt by the
/// next discovery), never misread.
pub const CACHE_VERSION: u32 = 1;

/// The cache file name in the cache dir.
pub const CACHE_FILE: &str = "discovery.json";

/// One cluster in the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// Source that found it.
    pub source: String,
    /// Scope it was found in.
    pub scope: String,
    /// When it was last seen (RFC 3339).
    pub seen_at: String,
    /// Set when its scope failed in the latest run: kept, but possibly out of date.
    pub stale: Option<String>,
}

/// What a source's latest run left besides clusters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// When it last ran (RFC 3339).
    pub refreshed_at: String,
    /// Scopes that failed.
    pub failed: Vec<ScopeError>,
    /// Clusters seen but not offered.
    pub rejected: Vec<Rejected>,
}

/// The cache file's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryCache {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// Clusters, sorted by id.
    pub clusters: Vec<CachedCluster>,
    /// Per source.
    pub sources: BTreeMap<String, SourceState>,
}

impl Default for DiscoveryCache {
    fn default() -> Self {
        Self {
            version: CACHE_VERSION,
            clusters: Vec::new(),
            sources: BTreeMap::new(),
        }
    }
}

/// Errors reading or writing the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file could not be read.
    #[error("cannot read the discovery cache {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write the discovery cache")]
    Write(#[source] crate::dirs::DirsError),
    /// The content could not be encoded.
    #[error("cannot encode the discovery cache")]
    Encode(#[source] serde_json::Error),
}

/// The cache file in `cache_dir`.
pub fn cache_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(CACHE_FILE)
}

/// Reads the cache. A missing file is an empty cache; a file that does not parse or has
/// another schema version is treated as empty too (it is only a cache), with a warning.
pub fn load(path: &Path) -> Result<DiscoveryCache, CacheError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DiscoveryCache::default()),
        Err(source) => {
            return Err(CacheError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match serde_json::from_slice::<DiscoveryCache>(&bytes) {
        Ok(cache) if cache.version == CACHE_VERSION => Ok(cache),
        Ok(cache) => {
            tracing::warn!(path = %path.display(), version = cache.version, "discovery cache has another schema version; ignoring it");
            Ok(DiscoveryCache::default())
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "discovery cache unreadable; ignoring it");
            Ok(DiscoveryCache::default())
        }
    }
}

/// Writes the cache atomically, readable by the user only.
pub fn save(path: &Path, cache: &DiscoveryCache) -> Result<(), CacheError> {
    let bytes = serde_json::to_vec(cache).map_err(CacheError::Encode)?;
    write_private(path, &bytes).map_err(CacheError::Write)
}

/// Whether a failed scope covers a cluster's scope: the same scope, or a wider one (a whole
/// profile `eks:prod` failing covers its regions `eks:prod:eu-west-1`, …).
fn covers(failed: &str, scope: &str) -> bool {
    scope == failed
        || scope
            .strip_prefix(failed)
            .is_some_and(|rest| rest.starts_with(':'))
}

/// Folds one run's reports into the previous cache:
/// - a source's clusters in a scanned scope are replaced by what was found now;
/// - clusters in a failed scope (or under a failed wider scope) are kept, marked stale with
///   the error;
/// - clusters in a scope neither scanned nor failed (no longer configured) are dropped;
/// - sources that did not run keep what they had.
pub fn merge(
    previous: &DiscoveryCache,
    reports: &[SourceReport],
    now: SystemTime,
) -> DiscoveryCache {
    let now_text = crate::timestamp::rfc3339(now);
    let mut next = DiscoveryCache::default();
    let ran: Vec<&str> = reports.iter().map(|r| r.source.as_str()).collect();
    // Sources that did not run this time keep everything.
    next.clusters.extend(
        previous
            .clusters
            .iter()
            .filter(|c| !ran.contains(&c.source.as_str()))
            .cloned(),
    );
    for (name, state) in &previous.sources {
        if !ran.contains(&name.as_str()) {
            next.sources.insert(name.clone(), state.clone());
        }
    }
    for report in reports {
        for found in &report.found {
            next.clusters.push(CachedCluster {
                cluster: found.cluster.clone(),
                source: report.source.clone(),
                scope: found.scope.clone(),
                seen_at: now_text.clone(),
                stale: None,
            });
        }
        for failed in &report.failed {
            next.clusters.extend(
                previous
                    .clusters
                    .iter()
                    .filter(|c| c.source == report.source && covers(&failed.scope, &c.scope))
                    .map(|c| CachedCluster {
                        stale: Some(failed.message.clone()),
                        ..c.clone()
                    }),
            );
        }
        next.sources.insert(
            report.source.clone(),
            SourceState {
                refreshed_at: now_text.clone(),
                failed: report.failed.clone(),
                rejected: report.rejected.clone(),
            },
        );
    }
    next.clusters
        .sort_by(|a, b| a.cluster.id.cmp(&b.cluster.id));
    // A source listing the same cluster twice (overlapping scopes) keeps one.
    next.clusters.dedup_by(|a, b| a.cluster.id == b.cluster.id);
    next
}
