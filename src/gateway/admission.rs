//! Which connections the gateway takes, so that nobody can exhaust it without logging in.
//!
//! Every accepted TCP connection is counted from accept to close, overall and per client
//! address (IPv4, or the /64 of an IPv6 address: one subscriber's share), and refused at once
//! past either limit. Until it carries a stream (an authorised WebSocket upgrade) a connection
//! is *unauthenticated*: a TLS handshake, a request being read, a login page, a transfer
//! long-poll. Those have a pool of their own. When it is full, a new connection from a client
//! holding fewer of them than the busiest client still gets in, and the busiest client's
//! oldest is closed instead; one from the busiest client itself is refused (closing its own
//! older ones for it would only turn a flood into churn). So a flood of idle or slow
//! connections, from one address or many, costs the gateway a bounded amount, cannot hold
//! every place, and a real client's handshake, a few milliseconds long, gets through it;
//! streams already open are never touched.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// How many connections the gateway holds (the `limits:` section's counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// All open connections, streams included.
    pub(crate) max_connections: usize,
    /// Open connections per client address.
    pub(crate) per_client: usize,
    /// Connections without a stream yet.
    pub(crate) unauthenticated: usize,
}

/// A client address as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ClientKey {
    /// An IPv4 address (also when it arrives IPv4-mapped).
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address: one host or subscriber.
    V6Prefix(u64),
}

impl ClientKey {
    /// The key of a peer address.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` are open.
    Full,
    /// This client address holds `max_connections_per_client`.
    Client,
    /// The unauthenticated pool is full and this client holds the most of it.
    Unauthenticated,
}

/// The admission counters of one server.
pub(crate) struct Admission {
    limits: ConnectionLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: usize,
    unauthenticated: usize,
    next_id: u64,
    clients: HashMap<ClientKey, Client>,
    /// Clients holding unauthenticated connections: most first when read from the back, and
    /// among equals the one whose oldest is oldest.
    by_waiting: BTreeSet<(usize, Reverse<u64>, ClientKey)>,
    /// Since the last warning.
    refused: u64,
    evicted: u64,
    warned: Option<Instant>,
}

#[derive(Default)]
struct Client {
    open: usize,
    /// Its unauthenticated connections, oldest first, with what closes each.
    waiting: VecDeque<(u64, CancellationToken)>,
}

/// Refusals and evictions are said at most this often, as one line with the counts: a flood
/// must not become a flood of log lines.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

impl State {
    /// Takes `key` out of `by_waiting` before its waiting list changes.
    fn detach(&mut self, key: ClientKey) {
        if let Some(client) = self.clients.get(&key)
            && let Some((oldest, _)) = client.waiting.front()
        {
            self.by_waiting
                .remove(&(client.waiting.len(), Reverse(*oldest), key));
        }
    }

    /// Puts `key` back into `by_waiting` after its waiting list changed.
    fn attach(&mut self, key: ClientKey) {
        if let Some(client) = self.clients.get(&key)
            && let Some((oldest, _)) = client.waiting.front()
        {
            self.by_waiting
                .insert((client.waiting.len(), Reverse(*oldest), key));
        }
    }

    /// Closes the oldest unauthenticated connection of the client that holds the most.
    fn evict_one(&mut self) {
        let Some(&(_, _, key)) = self.by_waiting.last() else {
            return;
        };
        self.detach(key);
        if let Some((_, close)) = self
            .clients
            .get_mut(&key)
            .and_then(|c| c.waiting.pop_front())
        {
            close.cancel();
            self.unauthenticated -= 1;
            self.evicted += 1;
        }
        self.attach(key);
    }

    /// Removes connection `id` of `key` from the unauthenticated ones, if it is still there.
    fn stop_waiting(&mut self, key: ClientKey, id: u64) {
        self.detach(key);
        if let Some(client) = self.clients.get_mut(&key)
            && let Some(at) = client.waiting.iter().position(|(i, _)| *i == id)
        {
            client.waiting.remove(at);
            self.unauthenticated -= 1;
        }
        self.attach(key);
    }

    /// The counts to warn about, when it is time to.
    fn report(&mut self) -> Option<(u64, u64)> {
        let due = self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if !due || self.refused + self.evicted == 0 {
            return None;
        }
        self.warned = Some(Instant::now());
        Some((
            std::mem::take(&mut self.refused),
            std::mem::take(&mut self.evicted),
        ))
    }
}

impl Admission {
    /// Counters enforcing `limits`.
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::default(),
        })
    }

    /// Takes a new connection from `peer`, as unauthenticated, closing the busiest client's
    /// oldest unauthenticated one when their pool is full; or refuses it.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refused> {
        let key = ClientKey::of(peer);
        let mut state = crate::sync::lock(&self.state);
        let (open, waiting) = state
            .clients
            .get(&key)
            .map_or((0, 0), |c| (c.open, c.waiting.len()));
        let pool_full = state.unauthenticated >= self.limits.unauthenticated;
        let busiest = state.by_waiting.last().map_or(0, |(n, _, _)| *n);
        let refused = if state.open >= self.limits.max_connections {
            Some(Refused::Full)
        } else if open >= self.limits.per_client {
            Some(Refused::Client)
        } else if pool_full && waiting >= busiest {
            Some(Refused::Unauthenticated)
        } else {
            None
        };
        if let Some(refused) = refused {
            state.refused += 1;
            let report = state.report();
            drop(state);
            self.warn(report);
            return Err(refused);
        }
        if pool_full {
            state.evict_one();
        }
        let id = state.next_id;
        state.next_id += 1;
        let close = CancellationToken::new();
        state.detach(key);
        let client = state.clients.entry(key).or_default();
        client.open += 1;
        client.waiting.push_back((id, close.clone()));
        state.attach(key);
        state.open += 1;
        state.unauthenticated += 1;
        let report = state.report();
        drop(state);
        self.warn(report);
        Ok(Ticket {
            admission: self.clone(),
            id,
            key,
            close,
        })
    }

    fn warn(&self, report: Option<(u64, u64)>) {
        if let Some((refused, evicted)) = report {
            tracing::warn!(
                refused,
                evicted_unauthenticated = evicted,
                max_connections = self.limits.max_connections,
                max_connections_per_client = self.limits.per_client,
                max_unauthenticated = self.limits.unauthenticated,
                "connection limits reached: connections refused at accept, or closed before they authenticated"
            );
        }
    }

    /// Open connections and unauthenticated ones, now.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = crate::sync::lock(&self.state);
        (state.open, state.unauthenticated)
    }
}

/// One admitted connection. It holds its place until dropped; shared (`Arc`) between the
/// connection's task and, once it carries one, its stream's.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    key: ClientKey,
    close: CancellationToken,
}

impl Ticket {
    /// Completes when the connection was chosen to make room for a newer one: its task ends
    /// then. Never after [`Ticket::authenticated`].
    pub(crate) fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.close.cancelled()
    }

    /// The connection carries a stream now: it leaves the unauthenticated pool, and is never
    /// closed to make room.
    pub(crate) fn authenticated(&self) {
        crate::sync::lock(&self.admission.state).stop_waiting(self.key, self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = crate::sync::lock(&self.admission.state);
        state.stop_waiting(self.key, self.id);
        state.open -= 1;
        if let Some(client) = state.clients.get_mut(&self.key) {
            client.open -= 1;
            if client.open == 0 {
                state.clients.remove(&self.key);
            }
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("client", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(max: usize, per_client: usize, unauthenticated: usize) -> Arc<Admission> {
        Admission::new(ConnectionLimits {
            max_connections: max,
            per_client,
            unauthenticated,
        })
    }

    #[test]
    fn the_overall_and_per_client_limits_refuse_and_free_their_places() {
        let admission = limits(4, 2, 4);
        let a1 = admission.admit(ip("10.0.0.1")).unwrap();
        let _a2 = admission.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.1")).unwrap_err(),
            Refused::Client
        );
        // The same client over IPv4-mapped IPv6 is the same client.
        assert_eq!(
            admission.admit(ip("::ffff:10.0.0.1")).unwrap_err(),
            Refused::Client
        );
        let _b1 = admission.admit(ip("10.0.0.2")).unwrap();
        let _b2 = admission.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(admission.admit(ip("10.0.0.4")).unwrap_err(), Refused::Full);
        drop(a1);
        assert_eq!(admission.counts(), (3, 3));
        let _a3 = admission.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(admission.counts(), (4, 4));
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let admission = limits(10, 2, 10);
        let _a = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = admission.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            admission.admit(ip("2001:db8:1:2::3")).unwrap_err(),
            Refused::Client
        );
        admission.admit(ip("2001:db8:1:3::1")).unwrap();
    }

    /// A full unauthenticated pool makes room for a client holding fewer than the busiest by
    /// closing the busiest client's oldest; the busiest client's own new connections are
    /// refused; a connection that carries a stream is never closed for room.
    #[test]
    fn a_full_unauthenticated_pool_closes_the_busiest_clients_oldest() {
        let admission = limits(100, 100, 4);
        let flood: Vec<Ticket> = (0..3)
            .map(|_| admission.admit(ip("10.9.9.9")).unwrap())
            .collect();
        let user = admission.admit(ip("10.0.0.1")).unwrap();
        // The pool is full; the flood holds the most: its next one is refused.
        assert_eq!(
            admission.admit(ip("10.9.9.9")).unwrap_err(),
            Refused::Unauthenticated
        );
        // The user holds fewer: the flood's oldest makes room.
        let stream = admission.admit(ip("10.0.0.1")).unwrap();
        assert!(flood[0].close.is_cancelled());
        assert!(!user.close.is_cancelled() && !stream.close.is_cancelled());
        stream.authenticated();
        assert_eq!(admission.counts(), (5, 3));
        // Another flood, from three more addresses: each gets in while it holds fewer than
        // the busiest, the busiest's oldest going; then they are the busiest and refused. The
        // user's connection is never the one closed.
        let mut more = Vec::new();
        for n in 0..10 {
            more.push(admission.admit(ip(&format!("10.8.0.{}", n % 3 + 1))));
        }
        assert_eq!(more.iter().filter(|t| t.is_ok()).count(), 3);
        assert!(
            !user.close.is_cancelled(),
            "the user's handshake was closed"
        );
        assert!(!stream.close.is_cancelled());
        assert!(flood.iter().all(|t| t.close.is_cancelled()));
        let (open, unauthenticated) = admission.counts();
        assert_eq!(unauthenticated, 4);
        assert!(open <= 15, "{open}");
        // Closed connections end their tasks and drop their tickets: the counts go back down.
        drop(flood);
        drop(more);
        assert_eq!(admission.counts(), (2, 1));
        drop(stream);
        drop(user);
        assert_eq!(admission.counts(), (0, 0));
        assert!(crate::sync::lock(&admission.state).clients.is_empty());
        assert!(crate::sync::lock(&admission.state).by_waiting.is_empty());
    }

    /// An unauthenticated pool as large as the whole (the lab's API servers, whose
    /// connections never authenticate): a full server refuses at accept and closes nothing.
    #[test]
    fn a_pool_as_large_as_the_whole_closes_nothing() {
        let admission = limits(3, 3, 3);
        let held: Vec<Ticket> = ["10.0.0.1", "10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|a| admission.admit(ip(a)).unwrap())
            .collect();
        assert_eq!(admission.admit(ip("10.0.0.3")).unwrap_err(), Refused::Full);
        assert!(held.iter().all(|t| !t.close.is_cancelled()));
    }

    /// Among clients holding as many, the one whose oldest connection is oldest loses it.
    #[test]
    fn among_equals_the_oldest_goes() {
        let admission = limits(100, 100, 2);
        let first = admission.admit(ip("10.0.0.1")).unwrap();
        let second = admission.admit(ip("10.0.0.2")).unwrap();
        let third = admission.admit(ip("10.0.0.3")).unwrap();
        assert!(first.close.is_cancelled());
        assert!(!second.close.is_cancelled() && !third.close.is_cancelled());
    }
}
