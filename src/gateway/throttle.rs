//! Throttling wrong passwords on the sign-in page.
//!
//! Each client address (IPv6: its /64) and each account name may fail `failures` times in
//! `window`; one failure is forgiven every `window / failures` after that (a leaky bucket,
//! kept as the one instant at which the bucket is empty again). While either is over, the
//! page refuses every attempt, right or wrong, without checking it, so guessing is held to the
//! rate whatever the attacker's number of addresses (the account's bucket) or accounts (the
//! address's). The price: someone who knows an e-mail address can keep its password sign-in
//! throttled while they keep guessing; the organisation cookie still signs that user in.
//!
//! An attempt is charged as a failure when it is let through, and refunded when the password
//! was right, so attempts in flight at once cannot all pass the check before any is counted.
//!
//! What is remembered is bounded. The configured identities' buckets are kept for good (one
//! each): no flood can make the gateway forget the failures against a real account. Every
//! other bucket, an address's or a name's that is no identity (kept so that the throttle
//! answers the same whether a name exists or not), shares a table of at most
//! [`MAX_TRACKED`]; when it is full the bucket that empties soonest is forgotten to make room,
//! so a flood of made-up names or addresses costs the flood's own oldest entries, and locks
//! nobody out.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::admission::ClientKey;

/// At most this many buckets of addresses and of names that are no identity are kept.
const MAX_TRACKED: usize = 100_000;
/// Account names are compared on at most this many characters (e-mail addresses are shorter).
const MAX_NAME: usize = 320;

/// A bucket in the bounded table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    /// A client address.
    Client(ClientKey),
    /// A name that is no configured identity, by its hash under the throttle's own random
    /// key (names cannot be chosen to collide; a collision would only share a bucket).
    Stranger(u64),
}

/// Where one of an attempt's buckets is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// A configured identity's, kept for good.
    Identity(String),
    /// One in the bounded table.
    Tracked(Key),
}

/// The sign-in page's failure counts.
pub(crate) struct SignInThrottle {
    failures: u32,
    window: Duration,
    /// The configured identities' e-mail addresses, lower-case.
    identities: HashSet<String>,
    /// Hashes names that are no identity.
    hasher: RandomState,
    /// Most entries of [`Buckets::tracked`].
    room: usize,
    buckets: Mutex<Buckets>,
}

/// When each bucket is empty again.
#[derive(Default)]
struct Buckets {
    /// The identities' buckets: at most one per configured identity.
    identities: HashMap<String, Instant>,
    /// The other buckets, at most `room`.
    tracked: HashMap<Key, Instant>,
    /// `tracked` ordered by when each is empty, soonest first: expired ones are dropped
    /// from the front, and the front is what makes room.
    by_empty: BTreeSet<(Instant, Key)>,
}

impl Buckets {
    fn get(&self, slot: &Slot) -> Option<Instant> {
        match slot {
            Slot::Identity(name) => self.identities.get(name).copied(),
            Slot::Tracked(key) => self.tracked.get(key).copied(),
        }
    }

    /// Sets `slot` to empty at `at`, or forgets it when `at` is not after `now`.
    fn set(&mut self, slot: &Slot, at: Instant, now: Instant) {
        match slot {
            Slot::Identity(name) if at <= now => {
                self.identities.remove(name);
            }
            Slot::Identity(name) => {
                self.identities.insert(name.clone(), at);
            }
            Slot::Tracked(key) => {
                if let Some(before) = self.tracked.remove(key) {
                    self.by_empty.remove(&(before, *key));
                }
                if at > now {
                    self.tracked.insert(*key, at);
                    self.by_empty.insert((at, *key));
                }
            }
        }
    }

    /// Forgets the tracked buckets that are empty by `now`.
    fn forget_empty(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.by_empty.first() {
            if at > now {
                break;
            }
            self.by_empty.pop_first();
            self.tracked.remove(&key);
        }
    }

    /// Forgets the tracked bucket that empties soonest.
    fn make_room(&mut self) {
        if let Some((_, key)) = self.by_empty.pop_first() {
            self.tracked.remove(&key);
        }
    }
}

/// An attempt let through and charged as a failure: dropping it keeps the charge (a wrong
/// password); [`SignInThrottle::succeeded`] gives it back.
#[must_use = "dropping an attempt counts it as a failure"]
pub(crate) struct Attempt {
    slots: Vec<Slot>,
}

impl SignInThrottle {
    /// `failures` wrong passwords per `window`, per client address and per account;
    /// `identities` are the e-mail addresses that can sign in.
    pub(crate) fn new(
        failures: u32,
        window: Duration,
        identities: impl IntoIterator<Item = String>,
    ) -> Self {
        Self::with_room(failures, window, identities, MAX_TRACKED)
    }

    fn with_room(
        failures: u32,
        window: Duration,
        identities: impl IntoIterator<Item = String>,
        room: usize,
    ) -> Self {
        Self {
            failures: failures.max(1),
            window,
            identities: identities.into_iter().map(|e| normalise(&e)).collect(),
            hasher: RandomState::new(),
            room: room.max(1),
            buckets: Mutex::default(),
        }
    }

    fn slots(&self, peer: Option<IpAddr>, account: &str) -> Vec<Slot> {
        let account = normalise(account);
        let account = if self.identities.contains(&account) {
            Slot::Identity(account)
        } else {
            Slot::Tracked(Key::Stranger(self.hasher.hash_one(&account)))
        };
        peer.map(|ip| Slot::Tracked(Key::Client(ClientKey::of(ip))))
            .into_iter()
            .chain(std::iter::once(account))
            .collect()
    }

    /// One failure's share of the window.
    fn cost(&self) -> Duration {
        self.window / self.failures
    }

    /// How far a bucket may be filled: `failures` failures' worth.
    fn capacity(&self) -> Duration {
        self.cost() * self.failures
    }

    /// Lets `peer` try a password for `account` and charges the try as a failure to both
    /// buckets, or `Err(wait)` when either is full, and for how long (nothing charged).
    pub(crate) fn attempt(&self, peer: Option<IpAddr>, account: &str) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let slots = self.slots(peer, account);
        let mut buckets = crate::sync::lock(&self.buckets);
        buckets.forget_empty(now);
        let mut wait = Duration::ZERO;
        for slot in &slots {
            // Room for one more failure: the bucket holds at most `capacity - cost`.
            let level = buckets
                .get(slot)
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
            if level + self.cost() > self.capacity() {
                wait = wait.max(level + self.cost() - self.capacity());
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for slot in &slots {
            let at = buckets.get(slot).map_or(now, |at| at.max(now)) + self.cost();
            if matches!(slot, Slot::Tracked(key) if !buckets.tracked.contains_key(key))
                && buckets.tracked.len() >= self.room
            {
                buckets.make_room();
            }
            buckets.set(slot, at, now);
        }
        Ok(Attempt { slots })
    }

    /// The attempt's password was right: its charge is given back.
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        let now = Instant::now();
        let mut buckets = crate::sync::lock(&self.buckets);
        for slot in &attempt.slots {
            // Forgotten meanwhile (emptied, or made room for): nothing to give back.
            if let Some(at) = buckets.get(slot) {
                let at = at.checked_sub(self.cost()).unwrap_or(now);
                buckets.set(slot, at, now);
            }
        }
    }

    /// Whether a bucket for `peer`'s address is remembered.
    #[cfg(test)]
    fn tracks(&self, peer: &str) -> bool {
        let key = Key::Client(ClientKey::of(peer.parse().unwrap_or(IpAddr::from([0; 4]))));
        crate::sync::lock(&self.buckets).tracked.contains_key(&key)
    }

    /// How many buckets the bounded table holds.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        let buckets = crate::sync::lock(&self.buckets);
        assert_eq!(buckets.tracked.len(), buckets.by_empty.len());
        buckets.tracked.len()
    }
}

/// An account name as the buckets know it: trimmed, lower-case, at most [`MAX_NAME`] characters.
fn normalise(account: &str) -> String {
    account
        .trim()
        .to_ascii_lowercase()
        .chars()
        .take(MAX_NAME)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ADA: &str = "ada@example.com";

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn throttle(failures: u32, window: Duration) -> SignInThrottle {
        SignInThrottle::new(failures, window, [ADA.to_owned()])
    }

    /// A wrong password: the attempt is dropped, its charge kept.
    fn fail(throttle: &SignInThrottle, peer: Option<IpAddr>, account: &str) {
        drop(throttle.attempt(peer, account).unwrap());
    }

    #[test]
    fn failures_are_limited_per_address_and_per_account() {
        let throttle = throttle(3, Duration::from_secs(300));
        for _ in 0..3 {
            fail(&throttle, ip("10.0.0.1"), ADA);
        }
        let wait = throttle.attempt(ip("10.0.0.1"), ADA).err().unwrap();
        assert!(
            wait > Duration::from_secs(99) && wait <= Duration::from_secs(100),
            "{wait:?}"
        );
        // The same account from another address: throttled; another account from the same
        // address: throttled; neither: free.
        assert!(
            throttle
                .attempt(ip("10.0.0.2"), "ADA@example.com ")
                .is_err()
        );
        assert!(throttle.attempt(ip("10.0.0.1"), "bob@example.com").is_err());
        fail(&throttle, ip("10.0.0.2"), "bob@example.com");
        // A name that is no identity is throttled all the same: the answer does not tell
        // which names exist.
        for n in 3..5 {
            fail(&throttle, ip(&format!("10.0.0.{n}")), "bob@example.com");
        }
        assert!(throttle.attempt(ip("10.0.0.9"), "bob@example.com").is_err());
    }

    #[test]
    fn one_failure_is_forgiven_every_window_over_failures() {
        let throttle = throttle(2, Duration::from_millis(400));
        fail(&throttle, None, ADA);
        fail(&throttle, None, ADA);
        assert!(throttle.attempt(None, ADA).is_err());
        crate::sync::pause_blocking(Duration::from_millis(220));
        fail(&throttle, None, ADA);
        assert!(throttle.attempt(None, ADA).is_err());
    }

    /// Issue 16 review, item 6: the attempt is charged when it is let through, so attempts
    /// in flight at once cannot all pass; a right password gives its charge back.
    #[test]
    fn an_attempt_is_charged_when_let_through_and_refunded_on_success() {
        let throttle = throttle(2, Duration::from_secs(300));
        let first = throttle.attempt(ip("10.0.0.1"), ADA).unwrap();
        let _second = throttle.attempt(ip("10.0.0.1"), ADA).unwrap();
        assert!(throttle.attempt(ip("10.0.0.1"), ADA).is_err());
        throttle.succeeded(first);
        let _third = throttle.attempt(ip("10.0.0.1"), ADA).unwrap();
        assert!(throttle.attempt(ip("10.0.0.1"), ADA).is_err());
    }

    /// Issue 16 review, item 4: made-up names and addresses past the table's room make room
    /// for themselves instead of locking everyone out, and a configured identity's failures
    /// are never forgotten for them.
    #[test]
    fn a_flood_of_made_up_names_locks_nobody_out_and_keeps_the_identities_failures() {
        let throttle = SignInThrottle::with_room(2, Duration::from_secs(300), [ADA.to_owned()], 10);
        fail(&throttle, ip("10.1.0.1"), ADA);
        fail(&throttle, ip("10.1.0.2"), ADA);
        for n in 0..200 {
            fail(
                &throttle,
                ip(&format!("10.2.{}.{}", n / 250, n % 250 + 1)),
                &format!("nobody-{n}@example.com"),
            );
        }
        assert_eq!(throttle.tracked(), 10);
        // A newcomer gets in; Ada's account, failed twice, is still throttled.
        let _newcomer = throttle.attempt(ip("10.3.0.1"), "bob@example.com").unwrap();
        assert!(throttle.attempt(ip("10.3.0.2"), ADA).is_err());
    }

    /// When the table is full, the bucket that empties soonest goes.
    #[test]
    fn a_full_table_forgets_the_bucket_that_empties_soonest() {
        // Ada is an identity: her bucket is not in the table, so it holds only addresses.
        let throttle =
            SignInThrottle::with_room(10, Duration::from_secs(1000), [ADA.to_owned()], 3);
        for (peer, failures) in [("10.0.0.1", 3), ("10.0.0.2", 1), ("10.0.0.3", 2)] {
            for _ in 0..failures {
                fail(&throttle, ip(peer), ADA);
            }
        }
        fail(&throttle, ip("10.0.0.4"), ADA);
        assert!(!throttle.tracks("10.0.0.2"));
        for kept in ["10.0.0.1", "10.0.0.3", "10.0.0.4"] {
            assert!(throttle.tracks(kept), "{kept}");
        }
    }
}
