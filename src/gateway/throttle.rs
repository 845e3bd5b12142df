//! Throttling wrong passwords on the sign-in page.
//!
//! Each client address (IPv6: its /64) and each account name may fail `failures` times in
//! `window`; one failure is forgiven every `window / failures` after that (a leaky bucket,
//! kept as the one instant at which the bucket is empty again). While either is over, the
//! page refuses every attempt, right or wrong, without checking it, so guessing is held to the
//! rate whatever the attacker's number of addresses (the account's bucket) or accounts (the
//! address's). The price: someone who knows an e-mail address can keep its password sign-in
//! throttled while they keep guessing; the organisation cookie still signs that user in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::admission::ClientKey;

/// At most this many addresses and accounts are remembered; when full, those fully forgiven
/// are forgotten, and if none is, new ones are refused until some are: memory stays bounded
/// under a spray from many addresses, and the limit holds.
const MAX_TRACKED: usize = 100_000;
/// Account names are compared on at most this many characters (e-mail addresses are shorter).
const MAX_NAME: usize = 320;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(ClientKey),
    Account(String),
}

/// The sign-in page's failure counts.
pub(crate) struct SignInThrottle {
    failures: u32,
    window: Duration,
    /// When each bucket is empty again.
    empty_at: Mutex<HashMap<Key, Instant>>,
}

impl SignInThrottle {
    /// `failures` wrong passwords per `window`, per client address and per account.
    pub(crate) fn new(failures: u32, window: Duration) -> Self {
        Self {
            failures: failures.max(1),
            window,
            empty_at: Mutex::default(),
        }
    }

    fn keys(peer: Option<IpAddr>, account: &str) -> impl Iterator<Item = Key> {
        let account: String = account
            .trim()
            .to_ascii_lowercase()
            .chars()
            .take(MAX_NAME)
            .collect();
        peer.map(|ip| Key::Client(ClientKey::of(ip)))
            .into_iter()
            .chain(std::iter::once(Key::Account(account)))
    }

    /// One failure's share of the window.
    fn cost(&self) -> Duration {
        self.window / self.failures
    }

    /// How far a bucket may be filled: `failures` failures' worth.
    fn capacity(&self) -> Duration {
        self.cost() * self.failures
    }

    /// `Err(wait)` when `peer` or `account` may not try now, and for how long.
    pub(crate) fn check(&self, peer: Option<IpAddr>, account: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let empty_at = crate::sync::lock(&self.empty_at);
        let mut wait = Duration::ZERO;
        for key in Self::keys(peer, account) {
            match empty_at.get(&key) {
                // Room for one more failure: the bucket holds at most `capacity - cost`.
                Some(at) => {
                    let level = at.saturating_duration_since(now);
                    if level + self.cost() > self.capacity() {
                        wait = wait.max(level + self.cost() - self.capacity());
                    }
                }
                None if empty_at.len() >= MAX_TRACKED => wait = wait.max(self.cost()),
                None => {}
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Counts a wrong password from `peer` for `account`.
    pub(crate) fn failed(&self, peer: Option<IpAddr>, account: &str) {
        let now = Instant::now();
        let mut empty_at = crate::sync::lock(&self.empty_at);
        if empty_at.len() >= MAX_TRACKED {
            empty_at.retain(|_, at| *at > now);
        }
        for key in Self::keys(peer, account) {
            if !empty_at.contains_key(&key) && empty_at.len() >= MAX_TRACKED {
                continue;
            }
            let at = empty_at.entry(key).or_insert(now);
            *at = (*at).max(now) + self.cost();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn failures_are_limited_per_address_and_per_account() {
        let throttle = SignInThrottle::new(3, Duration::from_secs(300));
        for _ in 0..3 {
            throttle.check(ip("10.0.0.1"), "ada@example.com").unwrap();
            throttle.failed(ip("10.0.0.1"), "ada@example.com");
        }
        let wait = throttle
            .check(ip("10.0.0.1"), "ada@example.com")
            .unwrap_err();
        assert!(
            wait > Duration::from_secs(99) && wait <= Duration::from_secs(100),
            "{wait:?}"
        );
        // The same account from another address: throttled; another account from the same
        // address: throttled; neither: free.
        assert!(throttle.check(ip("10.0.0.2"), "ADA@example.com ").is_err());
        assert!(throttle.check(ip("10.0.0.1"), "bob@example.com").is_err());
        throttle.check(ip("10.0.0.2"), "bob@example.com").unwrap();
    }

    #[test]
    fn one_failure_is_forgiven_every_window_over_failures() {
        let throttle = SignInThrottle::new(2, Duration::from_millis(400));
        throttle.failed(None, "ada@example.com");
        throttle.failed(None, "ada@example.com");
        assert!(throttle.check(None, "ada@example.com").is_err());
        crate::sync::pause_blocking(Duration::from_millis(220));
        throttle.check(None, "ada@example.com").unwrap();
        throttle.failed(None, "ada@example.com");
        assert!(throttle.check(None, "ada@example.com").is_err());
    }
}
