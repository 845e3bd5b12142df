//! Cluster discovery: sources that find clusters (the inventory file, EKS, GKE, Vault), a
//! runner that asks them all in parallel, and the cache every front end starts from.
//!
//! A source reports, per scope (an account × region, a project, a Vault path), either the
//! clusters it found there or why the scope failed. A failed scope never removes clusters found
//! there before: the runner keeps them, marked stale with the error. Everything a source reads
//! from a cloud is untrusted and goes through [`metadata::build`] before it becomes a
//! [`Cluster`].

pub mod cache;
pub mod catalog;
pub mod eks;
pub mod file;
pub mod gke;
pub mod metadata;
pub mod runner;
pub mod validate;
pub mod vault;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::inventory::Cluster;

/// How far a source has got, for progress bars: `done` of `total` scopes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Source name (`eks`, `gke`, `vault`, `file`).
    pub source: String,
    /// Scopes finished (successfully or not).
    pub done: usize,
    /// Scopes to scan (may grow while a source learns its scopes, e.g. enabled regions).
    pub total: usize,
}

/// Where a source reports progress.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// A scope that could not be scanned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeError {
    /// The scope, e.g. `eks:prod-profile:eu-west-1`, `gke:my-project`, `vault:kv/clusters`.
    pub scope: String,
    /// What went wrong, fit to show the user (no secrets).
    pub message: String,
}

/// A cluster a source saw but could not offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The scope it was found in.
    pub scope: String,
    /// Its name as the source has it, escaped for display.
    pub name: String,
    /// Why it is not offered.
    pub reason: Rejection,
}

/// Why a discovered cluster is not offered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Rejection {
    /// It carries no Access hostname: it is not published through Access.
    #[error("not published through Access (no Access hostname tag or label)")]
    NotPublished,
    /// Its data is unusable (a bad URL, a CA that is not PEM, ...).
    #[error("{0}")]
    Invalid(String),
}

/// A cluster with the scope it was found in.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// The cluster, validated.
    pub cluster: Cluster,
    /// The scope it was found in.
    pub scope: String,
}

/// What one source found in one run.
#[derive(Clone, Debug, Default)]
pub struct SourceReport {
    /// Source name.
    pub source: String,
    /// Clusters found, in scopes that were scanned completely.
    pub found: Vec<Found>,
    /// Scopes scanned completely: clusters cached from them earlier and not found now are gone.
    pub scanned: Vec<String>,
    /// Scopes that failed: clusters cached from them earlier are kept, marked stale.
    pub failed: Vec<ScopeError>,
    /// Clusters seen but not offered.
    pub rejected: Vec<Rejected>,
}

/// A place clusters are discovered from.
pub trait ClusterSource: Send + Sync {
    /// Short name: `eks`, `gke`, `vault`, `file`.
    fn name(&self) -> &'static str;

    /// Scans every scope of the source, in parallel where the source allows, reporting
    /// progress as scopes finish. Never fails as a whole: failures are per scope.
    fn discover(&self, progress: ProgressSink) -> BoxFuture<'_, SourceReport>;
}
