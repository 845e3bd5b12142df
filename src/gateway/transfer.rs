//! The transfer service's store: sealed token deposits waiting for their client's long-poll,
//! and the long-polls waiting for their deposit.
//!
//! Anyone can poll (the client key is public), so what polls cost is bounded: at most
//! `max_transfer_polls` wait at once, one per client key (a new poll for the same key takes
//! over from the one before, which answers "still waiting": a client whose previous poll is
//! still open on the server side is not locked out), and a deposit wakes only the poll for its
//! own key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A deposit nobody collects is forgotten after this long.
const DEPOSIT_TTL: Duration = Duration::from_secs(600);
/// At most this many deposits wait at once; past it new logins get a 503 rather than the
/// gateway growing without bound.
const MAX_DEPOSITS: usize = 4096;

/// A client's public key, the store's key.
pub(crate) type ClientKey = [u8; 32];

/// One sealed transfer.
pub(crate) struct Deposit {
    /// Standard base64 of `nonce || box` (sealed: nothing here is readable without the client's key).
    pub(crate) body: String,
    /// Base64url (padded) of the sender's public key.
    pub(crate) service_key: String,
    at: Instant,
}

/// Deposits and the polls waiting for them.
pub(crate) struct Deposits {
    max_polls: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ready: HashMap<ClientKey, Deposit>,
    /// The one poll waiting per key: its id, and what wakes it.
    waiting: HashMap<ClientKey, (u64, Arc<Notify>)>,
    next_id: u64,
    /// Polls woken, for the test that a deposit wakes only its own.
    #[cfg(test)]
    wakeups: usize,
}

/// Why a poll is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyPolls;

impl Deposits {
    /// A store for at most `max_polls` waiting polls.
    pub(crate) fn new(max_polls: usize) -> Self {
        Self {
            max_polls,
            inner: Mutex::default(),
        }
    }

    /// Stores a deposit for `key` (replacing an uncollected one) and wakes its poll.
    /// `false` when the store is full.
    pub(crate) fn put(&self, key: ClientKey, body: String, service_key: String) -> bool {
        let mut inner = crate::sync::lock(&self.inner);
        inner.ready.retain(|_, d| d.at.elapsed() < DEPOSIT_TTL);
        if inner.ready.len() >= MAX_DEPOSITS && !inner.ready.contains_key(&key) {
            return false;
        }
        inner.ready.insert(
            key,
            Deposit {
                body,
                service_key,
                at: Instant::now(),
            },
        );
        if let Some((_, wake)) = inner.waiting.get(&key) {
            // A permit is kept when the poll is between two looks: no wake-up is lost.
            wake.notify_one();
        }
        true
    }

    /// Waits up to `wait` for the deposit for `key` and takes it (it is served once); `None`
    /// when none came in time or a newer poll for the same key took over.
    pub(crate) async fn take(
        &self,
        key: &ClientKey,
        wait: Duration,
    ) -> Result<Option<Deposit>, TooManyPolls> {
        let deadline = tokio::time::Instant::now() + wait;
        let wake = Arc::new(Notify::new());
        let id = {
            let mut inner = crate::sync::lock(&self.inner);
            if let Some(deposit) = take_fresh(&mut inner, key) {
                return Ok(Some(deposit));
            }
            if !inner.waiting.contains_key(key) && inner.waiting.len() >= self.max_polls {
                return Err(TooManyPolls);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            if let Some((_, before)) = inner.waiting.insert(*key, (id, wake.clone())) {
                before.notify_one();
            }
            id
        };
        let _waiting = Waiting {
            deposits: self,
            key: *key,
            id,
        };
        loop {
            if tokio::time::timeout_at(deadline, wake.notified())
                .await
                .is_err()
            {
                return Ok(None);
            }
            let mut inner = crate::sync::lock(&self.inner);
            #[cfg(test)]
            {
                inner.wakeups += 1;
            }
            if let Some(deposit) = take_fresh(&mut inner, key) {
                return Ok(Some(deposit));
            }
            if inner.waiting.get(key).is_none_or(|(i, _)| *i != id) {
                // A newer poll for this key took over.
                return Ok(None);
            }
        }
    }

    /// Polls waiting now.
    #[cfg(test)]
    fn polls(&self) -> usize {
        crate::sync::lock(&self.inner).waiting.len()
    }
}

fn take_fresh(inner: &mut Inner, key: &ClientKey) -> Option<Deposit> {
    inner
        .ready
        .remove(key)
        .filter(|d| d.at.elapsed() < DEPOSIT_TTL)
}

/// A waiting poll's place, given back however the poll ends (answered, timed out, or its
/// connection gone).
struct Waiting<'a> {
    deposits: &'a Deposits,
    key: ClientKey,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut inner = crate::sync::lock(&self.deposits.inner);
        if inner
            .waiting
            .get(&self.key)
            .is_some_and(|(i, _)| *i == self.id)
        {
            inner.waiting.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(n: u8) -> ClientKey {
        [n; 32]
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// A hundred polls wait; a deposit for one wakes that one only, and the others keep
    /// waiting.
    #[tokio::test(start_paused = true)]
    async fn a_deposit_wakes_only_its_own_poll() {
        let deposits = Arc::new(Deposits::new(1000));
        let mut polls = Vec::new();
        for n in 0..100u8 {
            let deposits = deposits.clone();
            polls.push(tokio::spawn(async move {
                deposits.take(&key(n), Duration::from_secs(60)).await
            }));
        }
        settle().await;
        assert_eq!(deposits.polls(), 100);
        assert!(deposits.put(key(42), "sealed".into(), "service".into()));
        settle().await;
        let answered: Vec<usize> = polls
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_finished())
            .map(|(n, _)| n)
            .collect();
        assert_eq!(answered, [42]);
        let deposit = polls.remove(42).await.unwrap().unwrap().unwrap();
        assert_eq!(deposit.body, "sealed");
        assert_eq!(crate::sync::lock(&deposits.inner).wakeups, 1);
        assert_eq!(deposits.polls(), 99);
        for poll in polls {
            poll.abort();
        }
        settle().await;
        assert_eq!(deposits.polls(), 0, "aborted polls gave their places back");
    }

    #[tokio::test(start_paused = true)]
    async fn polls_are_bounded_and_a_new_poll_for_a_key_takes_over() {
        let deposits = Arc::new(Deposits::new(2));
        let spawn = |n: u8| {
            let deposits = deposits.clone();
            tokio::spawn(async move { deposits.take(&key(n), Duration::from_secs(60)).await })
        };
        let first = spawn(1);
        let _second = spawn(2);
        settle().await;
        assert_eq!(
            deposits.take(&key(3), Duration::from_secs(60)).await.err(),
            Some(TooManyPolls)
        );
        // The same key again: the earlier poll answers "still waiting" at once.
        let again = spawn(1);
        settle().await;
        assert!(first.is_finished());
        assert!(first.await.unwrap().unwrap().is_none());
        assert!(deposits.put(key(1), "b".into(), "s".into()));
        assert_eq!(again.await.unwrap().unwrap().unwrap().body, "b");
        // A deposit made before its poll is served at once, once.
        assert!(deposits.put(key(9), "c".into(), "s".into()));
        assert!(
            deposits
                .take(&key(9), Duration::ZERO)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            deposits
                .take(&key(9), Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
    }
}
