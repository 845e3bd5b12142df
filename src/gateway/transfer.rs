//! The transfer service's store: sealed token deposits waiting for their client's long-poll,
//! and the long-polls waiting for their deposit.
//!
//! Anyone can poll (the client key is public), so what polls cost is bounded: at most
//! `max_transfer_polls` wait at once, at most `max_transfer_polls_per_client` of them from one
//! client address (IPv6: its /64), so one address cannot hold them all; one per client key (a
//! new poll for the same key takes over from the one before, which answers "still waiting": a
//! client whose previous poll is still open on the server side is not locked out), and a
//! deposit wakes only the poll for its own key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::admission::ClientKey as Peer;

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
    per_peer: usize,
    inner: Mutex<Inner>,
}

/// A poll waiting for its key's deposit.
struct Poll {
    id: u64,
    /// Where it came from, when known.
    peer: Option<Peer>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    ready: HashMap<ClientKey, Deposit>,
    /// The one poll waiting per key.
    waiting: HashMap<ClientKey, Poll>,
    /// How many of `waiting` each client address holds (none held: no entry).
    per_peer: HashMap<Peer, usize>,
    next_id: u64,
    /// Polls woken, for the test that a deposit wakes only its own.
    #[cfg(test)]
    wakeups: usize,
}

/// Why a poll is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyPolls;

impl Inner {
    /// Counts a poll from `peer` in.
    fn hold(&mut self, peer: Option<Peer>) {
        if let Some(peer) = peer {
            *self.per_peer.entry(peer).or_default() += 1;
        }
    }

    /// Counts a poll from `peer` out.
    fn release(&mut self, peer: Option<Peer>) {
        if let Some(peer) = peer
            && let Some(held) = self.per_peer.get_mut(&peer)
        {
            *held -= 1;
            if *held == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }
}

impl Deposits {
    /// A store for at most `max_polls` waiting polls, at most `per_peer` of them from one
    /// client address.
    pub(crate) fn new(max_polls: usize, per_peer: usize) -> Self {
        Self {
            max_polls,
            per_peer,
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
        if let Some(poll) = inner.waiting.get(&key) {
            // A permit is kept when the poll is between two looks: no wake-up is lost.
            poll.wake.notify_one();
        }
        true
    }

    /// Waits up to `wait` for the deposit for `key` and takes it (it is served once); `None`
    /// when none came in time or a newer poll for the same key took over. `peer` is the
    /// poller's address: it may hold `per_peer` waiting polls (a poll taking over one of its
    /// own takes that one's place).
    pub(crate) async fn take(
        &self,
        key: &ClientKey,
        peer: Option<std::net::IpAddr>,
        wait: Duration,
    ) -> Result<Option<Deposit>, TooManyPolls> {
        let deadline = tokio::time::Instant::now() + wait;
        let wake = Arc::new(Notify::new());
        let peer = peer.map(Peer::of);
        let id = {
            let mut inner = crate::sync::lock(&self.inner);
            if let Some(deposit) = take_fresh(&mut inner, key) {
                return Ok(Some(deposit));
            }
            let replaced = inner.waiting.get(key).map(|poll| poll.peer);
            if replaced.is_none() && inner.waiting.len() >= self.max_polls {
                return Err(TooManyPolls);
            }
            if let Some(peer) = peer
                && replaced != Some(Some(peer))
                && inner.per_peer.get(&peer).copied().unwrap_or(0) >= self.per_peer
            {
                return Err(TooManyPolls);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let poll = Poll {
                id,
                peer,
                wake: wake.clone(),
            };
            if let Some(before) = inner.waiting.insert(*key, poll) {
                before.wake.notify_one();
                inner.release(before.peer);
            }
            inner.hold(peer);
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
            if inner.waiting.get(key).is_none_or(|poll| poll.id != id) {
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
            .is_some_and(|poll| poll.id == self.id)
            && let Some(poll) = inner.waiting.remove(&self.key)
        {
            inner.release(poll.peer);
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
        let deposits = Arc::new(Deposits::new(1000, 1000));
        let mut polls = Vec::new();
        for n in 0..100u8 {
            let deposits = deposits.clone();
            polls.push(tokio::spawn(async move {
                deposits.take(&key(n), None, Duration::from_secs(60)).await
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
        let deposits = Arc::new(Deposits::new(2, 2));
        let spawn = |n: u8| {
            let deposits = deposits.clone();
            tokio::spawn(async move { deposits.take(&key(n), None, Duration::from_secs(60)).await })
        };
        let first = spawn(1);
        let _second = spawn(2);
        settle().await;
        assert_eq!(
            deposits
                .take(&key(3), None, Duration::from_secs(60))
                .await
                .err(),
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
                .take(&key(9), None, Duration::ZERO)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            deposits
                .take(&key(9), None, Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Issue 16 review, item 5: one client address holds at most `per_peer` of the polls
    /// (an IPv6 one by its /64); a poll taking over its own earlier one takes its place;
    /// other addresses still get theirs, and places come back when polls end.
    #[tokio::test(start_paused = true)]
    async fn one_address_holds_at_most_its_share_of_the_polls() {
        let deposits = Arc::new(Deposits::new(100, 2));
        let spawn = |n: u8, peer: &str| {
            let deposits = deposits.clone();
            let peer: std::net::IpAddr = peer.parse().unwrap();
            tokio::spawn(async move {
                deposits
                    .take(&key(n), Some(peer), Duration::from_secs(60))
                    .await
            })
        };
        let first = spawn(1, "2001:db8:1:1::1");
        let _second = spawn(2, "2001:db8:1:1::2");
        settle().await;
        let refused = spawn(3, "2001:db8:1:1::3").await.unwrap();
        assert_eq!(refused.err(), Some(TooManyPolls));
        // Its own key again: takes the earlier poll's place.
        let again = spawn(1, "2001:db8:1:1::1");
        settle().await;
        assert!(first.await.unwrap().unwrap().is_none());
        assert!(!again.is_finished());
        // Another address polls; when one of the first address's polls ends, its place is free.
        let _elsewhere = spawn(4, "2001:db8:1:2::1");
        settle().await;
        assert_eq!(deposits.polls(), 3);
        assert!(deposits.put(key(1), "a".into(), "s".into()));
        assert_eq!(again.await.unwrap().unwrap().unwrap().body, "a");
        let third = spawn(3, "2001:db8:1:1::3");
        settle().await;
        assert!(!third.is_finished());
        assert_eq!(deposits.polls(), 3);
        // A key taken over by another address moves the place with it.
        let taken = spawn(3, "10.0.0.1");
        settle().await;
        assert!(third.await.unwrap().unwrap().is_none());
        assert!(!taken.is_finished());
        let back = spawn(5, "2001:db8:1:1::5");
        settle().await;
        assert!(!back.is_finished(), "the address got its place back");
        assert_eq!(crate::sync::lock(&deposits.inner).per_peer.len(), 3);
    }
}
