//! Running discovery: every source at once, then the results folded into the cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::cache::{self, CacheError, DiscoveryCache};
use super::{ClusterSource, ProgressSink, SourceReport};

/// How long one source may take (every region and project of it, in parallel). The sources run
/// at once, so this bounds the whole run too: a cloud or a Vault that accepts connections and
/// never answers cannot leave discovery "running" until a restart.
pub const SOURCE_DEADLINE: Duration = Duration::from_secs(120);

/// Runs every source concurrently, each within `deadline`; one slow or failing source never
/// holds up the others' results (each reports its own failures). A source past its deadline is
/// reported as failed as a whole, so its clusters stay cached, marked stale.
pub async fn run_all(
    sources: &[Box<dyn ClusterSource>],
    progress: ProgressSink,
    deadline: Duration,
) -> Vec<SourceReport> {
    futures_util::future::join_all(sources.iter().map(|s| {
        let name = s.name();
        let progress = progress.clone();
        async move {
            let mut report = match tokio::time::timeout(deadline, s.discover(progress)).await {
                Ok(report) => report,
                Err(_) => {
                    tracing::warn!(
                        source = name,
                        ?deadline,
                        "discovery source did not finish in time"
                    );
                    SourceReport {
                        failed: vec![super::ScopeError {
                            // The source's name covers every scope of it (see cache::merge).
                            scope: name.to_string(),
                            message: format!(
                                "{name} did not answer within {} s",
                                deadline.as_secs_f32()
                            ),
                        }],
                        ..SourceReport::default()
                    }
                }
            };
            if report.source.is_empty() {
                report.source = name.to_string();
            }
            report
        }
    }))
    .await
}

/// Runs the sources (each within [`SOURCE_DEADLINE`]) and folds their reports into the cache at
/// `path`, which is rewritten.
pub async fn refresh(
    path: &Path,
    sources: &[Box<dyn ClusterSource>],
    progress: ProgressSink,
) -> Result<(DiscoveryCache, Vec<SourceReport>), CacheError> {
    refresh_within(path, sources, progress, SOURCE_DEADLINE).await
}

/// [`refresh`] with another deadline per source.
pub async fn refresh_within(
    path: &Path,
    sources: &[Box<dyn ClusterSource>],
    progress: ProgressSink,
    deadline: Duration,
) -> Result<(DiscoveryCache, Vec<SourceReport>), CacheError> {
    let previous = cache::load(path)?;
    let reports = run_all(sources, progress, deadline).await;
    let next = cache::merge(&previous, &reports, SystemTime::now());
    cache::save(path, &next)?;
    Ok((next, reports))
}

/// How old the cache at `path` is; `None` when there is no cache yet.
pub fn cache_age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default(),
    )
}

/// Refreshes the cache in the background whenever it is older than a time to live. Dropping
/// it stops the task (a refresh under way is abandoned; the cache is only ever replaced whole).
pub struct Refresher {
    cancel: CancellationToken,
}

impl Refresher {
    /// Starts checking the cache at `path` against `ttl`; `on_refresh` hears each new cache.
    pub fn start(
        path: PathBuf,
        sources: Arc<Vec<Box<dyn ClusterSource>>>,
        ttl: Duration,
        on_refresh: impl Fn(&DiscoveryCache) + Send + Sync + 'static,
    ) -> Self {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        // Check often enough that a short TTL is honoured, rarely enough to cost nothing.
        let check_every = (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                let due = cache_age(&path).is_none_or(|age| age >= ttl);
                if due {
                    let quiet: ProgressSink = Arc::new(|_| {});
                    let refreshed = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = refresh(&path, &sources, quiet) => r,
                    };
                    match refreshed {
                        Ok((cache, _)) => on_refresh(&cache),
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain(&e), "background discovery failed")
                        }
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(check_every) => {}
                }
            }
        });
        Self { cancel }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::discovery::catalog::{self, FILE_SOURCE};
    use crate::discovery::metadata::{Discovered, MetadataKeys, build};
    use crate::discovery::{Found, Progress, ScopeError};
    use crate::inventory::{Cloud, Cluster};

    fn cluster(id: &str, name: &str, region: &str) -> Cluster {
        build(
            Discovered {
                id: id.into(),
                name: name.into(),
                cloud: Some(Cloud::Aws),
                region: Some(region.into()),
                endpoint: format!("https://{name}.example.com"),
                labels: [(
                    "k8s-tunnels/hostname".to_string(),
                    format!("{name}.access.example.com"),
                )]
                .into_iter()
                .collect(),
                ..Default::default()
            },
            &MetadataKeys::default(),
        )
        .unwrap()
    }

    /// A source scripted by the test: what it reports, and a barrier it waits on first.
    struct Scripted {
        name: &'static str,
        report: SourceReport,
        barrier: Option<Arc<tokio::sync::Barrier>>,
    }

    impl ClusterSource for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }
        fn discover(&self, progress: ProgressSink) -> BoxFuture<'_, SourceReport> {
            Box::pin(async move {
                if let Some(barrier) = &self.barrier {
                    barrier.wait().await;
                }
                progress(Progress {
                    source: self.name.into(),
                    done: 1,
                    total: 1,
                });
                self.report.clone()
            })
        }
    }

    fn report(
        source: &str,
        found: Vec<(&str, Cluster)>,
        scanned: &[&str],
        failed: &[&str],
    ) -> SourceReport {
        SourceReport {
            source: source.into(),
            found: found
                .into_iter()
                .map(|(scope, cluster)| Found {
                    cluster,
                    scope: scope.into(),
                })
                .collect(),
            scanned: scanned.iter().map(|s| s.to_string()).collect(),
            failed: failed
                .iter()
                .map(|s| ScopeError {
                    scope: s.to_string(),
                    message: format!("{s} said no"),
                })
                .collect(),
            rejected: Vec::new(),
        }
    }

    #[tokio::test]
    async fn sources_run_concurrently() {
        // Each source waits for the other to have started: a one-at-a-time runner never ends.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let sources: Vec<Box<dyn ClusterSource>> = vec![
            Box::new(Scripted {
                name: "a",
                report: report("a", vec![], &["a:1"], &[]),
                barrier: Some(barrier.clone()),
            }),
            Box::new(Scripted {
                name: "b",
                report: report("b", vec![], &["b:1"], &[]),
                barrier: Some(barrier),
            }),
        ];
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let reports = tokio::time::timeout(
            Duration::from_secs(10),
            run_all(
                &sources,
                Arc::new(move |p| crate::sync::lock(&sink).push(p.source)),
                SOURCE_DEADLINE,
            ),
        )
        .await
        .expect("sources ran one at a time");
        assert_eq!(reports.len(), 2);
        let mut seen = crate::sync::lock(&seen).clone();
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_failed_scope_keeps_its_clusters_stale_and_a_scanned_one_forgets_the_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discovery.json");
        let noop: ProgressSink = Arc::new(|_| {});
        let first: Vec<Box<dyn ClusterSource>> = vec![
            Box::new(Scripted {
                name: "eks",
                report: report(
                    "eks",
                    vec![
                        ("eks:eu", cluster("eks:1:eu:a", "a", "eu")),
                        ("eks:us", cluster("eks:1:us:b", "b", "us")),
                        ("eks:us", cluster("eks:1:us:gone", "gone", "us")),
                    ],
                    &["eks:eu", "eks:us"],
                    &[],
                ),
                barrier: None,
            }),
            Box::new(Scripted {
                name: "gke",
                report: report(
                    "gke",
                    vec![("gke:p", cluster("gke:p:x:c", "c", "x"))],
                    &["gke:p"],
                    &[],
                ),
                barrier: None,
            }),
        ];
        refresh(&path, &first, noop.clone()).await.unwrap();

        // A whole-profile failure covers the profile's region scopes.
        let third: Vec<Box<dyn ClusterSource>> = vec![Box::new(Scripted {
            name: "eks",
            report: report("eks", vec![], &[], &["eks"]),
            barrier: None,
        })];

        // Second run: eu fails, us is scanned without "gone", gke does not run at all.
        let second: Vec<Box<dyn ClusterSource>> = vec![Box::new(Scripted {
            name: "eks",
            report: report(
                "eks",
                vec![("eks:us", cluster("eks:1:us:b", "b", "us"))],
                &["eks:us"],
                &["eks:eu"],
            ),
            barrier: None,
        })];
        let (cache, _) = refresh(&path, &second, noop).await.unwrap();
        let by_id = |id: &str| cache.clusters.iter().find(|c| c.cluster.id.0 == id);
        assert_eq!(
            by_id("eks:1:eu:a").unwrap().stale.as_deref(),
            Some("eks:eu said no")
        );
        assert_eq!(by_id("eks:1:us:b").unwrap().stale, None);
        assert!(
            by_id("eks:1:us:gone").is_none(),
            "a scanned scope forgets what is gone"
        );
        assert!(
            by_id("gke:p:x:c").is_some(),
            "a source that did not run keeps its clusters"
        );
        assert_eq!(cache.sources["eks"].failed.len(), 1);

        // And the cache is what the next start reads, without any source.
        assert_eq!(cache::load(&path).unwrap(), cache);

        let (cache, _) = refresh(&path, &third, Arc::new(|_| {})).await.unwrap();
        let stale: Vec<&str> = cache
            .clusters
            .iter()
            .filter(|c| c.stale.is_some())
            .map(|c| c.cluster.id.0.as_str())
            .collect();
        assert_eq!(stale, ["eks:1:eu:a", "eks:1:us:b"]);
    }

    /// Counts its runs.
    struct Counting(Arc<std::sync::atomic::AtomicUsize>);

    impl ClusterSource for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn discover(&self, _progress: ProgressSink) -> BoxFuture<'_, SourceReport> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { report("counting", vec![], &[], &[]) })
        }
    }

    #[tokio::test]
    async fn the_refresher_refreshes_a_stale_cache_and_leaves_a_fresh_one() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discovery.json");
        cache::save(&path, &DiscoveryCache::default()).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let sources: Arc<Vec<Box<dyn ClusterSource>>> =
            Arc::new(vec![Box::new(Counting(runs.clone()))]);

        // Fresh (just written) with a one-hour TTL: nothing to do.
        let fresh = Refresher::start(
            path.clone(),
            sources.clone(),
            Duration::from_secs(3600),
            |_| {},
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(fresh);
        assert_eq!(runs.load(Ordering::SeqCst), 0);

        // Two hours old: refreshed at once, and the new cache is announced.
        let old = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _stale = Refresher::start(path.clone(), sources, Duration::from_secs(3600), move |c| {
            let _ = tx.send(c.sources.len());
        });
        let announced = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap();
        assert_eq!(announced, Some(1));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(cache_age(&path).unwrap() < Duration::from_secs(60));
    }

    #[test]
    fn display_names_are_unique_across_sources_and_inventory_names_win() {
        let mut cache = DiscoveryCache::default();
        for (id, region) in [
            ("eks:1:eu:prod", "eu"),
            ("eks:1:us:prod", "us"),
            ("eks:2:us:prod", "us"),
        ] {
            cache.clusters.push(cache::CachedCluster {
                cluster: cluster(id, "prod", region),
                source: "eks".into(),
                scope: "s".into(),
                seen_at: String::new(),
                stale: None,
            });
        }
        let entries = catalog::assemble(vec![cluster("file:prod", "prod", "dc")], &cache);
        let names: Vec<&str> = entries.iter().map(|e| e.cluster.name.as_str()).collect();
        assert_eq!(
            names,
            ["prod", "prod-aws-eu", "prod-aws-us", "prod-aws-us-2"]
        );
        assert_eq!(entries[0].source, FILE_SOURCE);
        assert_eq!(
            catalog::find(&entries, "eks:1:us:prod")
                .unwrap()
                .cluster
                .name,
            "prod-aws-us"
        );
    }
}
