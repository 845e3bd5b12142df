//! One login at a time per application: a single-flight keyed by application. The first
//! caller starts the work on its own task; every caller that arrives while it runs waits for
//! the same result. Nothing is held while waiting, so the same process (even the same task)
//! asking again joins the flight instead of deadlocking on it (cloudflared#1692), and a
//! caller that gives up does not cancel the login for the others.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

type Flight<V> = Shared<BoxFuture<'static, Option<V>>>;
/// The running flights by key, each with its id.
type Flights<K, V> = Arc<Mutex<HashMap<K, (u64, Flight<V>)>>>;

/// Runs at most one job per key at a time; concurrent callers share its result.
pub struct SingleFlight<K, V: Clone> {
    flights: Flights<K, V>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::default(),
            next_id: Arc::default(),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The result of the job running for `key`, or of `job` started now when none runs.
    /// `None` when the job's task panicked or the runtime shut down under it.
    pub async fn run<F>(&self, key: K, job: impl FnOnce() -> F) -> Option<V>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let flight = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some((_, flight)) => flight.clone(),
                None => {
                    let id = self
                        .next_id
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let map = self.flights.clone();
                    let done_key = key.clone();
                    let job = job();
                    // The job and its clean-up run on their own task, so they finish even when
                    // every caller has given up.
                    let task = tokio::spawn(async move {
                        // Dropped when the job ends, or while unwinding when it panics: a
                        // panicked login must not leave its failure cached for the key.
                        let _landing = Landing {
                            flights: map,
                            key: done_key,
                            id,
                        };
                        job.await
                    });
                    let flight: Flight<V> = async move { task.await.ok() }.boxed().shared();
                    flights.insert(key, (id, flight.clone()));
                    flight
                }
            }
        };
        flight.await
    }

    /// Whether a job runs for `key` now.
    pub fn in_flight(&self, key: &K) -> bool {
        lock(&self.flights).contains_key(key)
    }
}

/// Removes a finished flight's entry (only its own: a newer flight for the key may exist).
struct Landing<K: Eq + Hash, V: Clone> {
    flights: Flights<K, V>,
    key: K,
    id: u64,
}

impl<K: Eq + Hash, V: Clone> Drop for Landing<K, V> {
    fn drop(&mut self) {
        let mut flights = lock(&self.flights);
        if flights.get(&self.key).is_some_and(|(i, _)| *i == self.id) {
            flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_hundred_callers_share_one_job_per_key() {
        let flights: Arc<SingleFlight<String, u64>> = Arc::default();
        let runs = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for i in 0..100 {
            let (flights, runs, gate) = (flights.clone(), runs.clone(), gate.clone());
            let key = if i % 10 == 0 { "b" } else { "a" }.to_string();
            tasks.push(tokio::spawn(async move {
                flights
                    .run(key, || async move {
                        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                        gate.notified().await;
                        n
                    })
                    .await
            }));
        }
        // Everyone is waiting on one of the two jobs.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        gate.notify_waiters();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap().unwrap());
        }
        results.sort();
        results.dedup();
        assert_eq!(
            results.len(),
            2,
            "every caller of a key got its job's result"
        );
        assert!(!flights.in_flight(&"a".to_string()));
        // Done flights are forgotten: a later call runs again.
        let again = flights.run("a".to_string(), || async { 99 }).await;
        assert_eq!(again, Some(99));
    }

    #[tokio::test]
    async fn asking_again_from_inside_the_same_process_does_not_deadlock() {
        let flights: Arc<SingleFlight<&'static str, u64>> = Arc::default();
        let inner = flights.clone();
        let outer = flights
            .run("app", move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                7
            })
            .then(|v| async move {
                // The same key again, after (and while another caller still holds) the result.
                let again = inner.run("app", || async { 8 }).await;
                (v, again)
            });
        let joined = flights.run("app", || async { 0 });
        let ((v, again), joined) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(outer, joined)
        })
        .await
        .expect("no deadlock");
        assert_eq!((v, joined), (Some(7), Some(7)));
        assert_eq!(again, Some(8));
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_cancel_the_job() {
        let flights: Arc<SingleFlight<&'static str, u64>> = Arc::default();
        let first = flights.run("app", || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            5
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(10), first)
                .await
                .is_err()
        );
        assert!(flights.in_flight(&"app"));
        assert_eq!(flights.run("app", || async { 6 }).await, Some(5));
    }

    #[tokio::test]
    async fn a_panicked_job_is_not_remembered_for_its_key() {
        let flights: SingleFlight<&'static str, u32> = SingleFlight::default();
        let panicked = flights
            .run("app", || async { panic!("the login job failed hard") })
            .await;
        assert_eq!(panicked, None);
        assert!(!flights.in_flight(&"app"));
        assert_eq!(flights.run("app", || async { 7 }).await, Some(7));
    }
}
