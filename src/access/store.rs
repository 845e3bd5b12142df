//! Where Access tokens are kept: the OS keychain when the start-up probe found a durable one,
//! with a copy in memory so that every connection does not wait on the keychain; memory only
//! (with a warning the front ends show) when there is none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::keychain::{Keychain, KeychainStatus};
use crate::secret::Secret;
use crate::sync::lock;

/// Which token an entry holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TokenKey {
    /// The application token of an Access application, by hostname.
    App(String),
    /// The org token (the SSO session) of an auth domain.
    Org(String),
    /// A service token for an Access application, by hostname, stored by
    /// `k8s-tunnels auth service-token` as `<client id>\n<client secret>`.
    Service(String),
}

impl TokenKey {
    /// The keychain account name.
    pub fn account(&self) -> String {
        match self {
            TokenKey::App(host) => format!("access-app/{}", host.to_ascii_lowercase()),
            TokenKey::Org(domain) => format!("access-org/{}", domain.to_ascii_lowercase()),
            TokenKey::Service(host) => format!("access-service/{}", host.to_ascii_lowercase()),
        }
    }
}

/// Token storage. Cheap to clone; clones share the memory copy.
#[derive(Clone)]
pub struct TokenStore {
    keychain: Option<Arc<Keychain>>,
    memory: Arc<Mutex<HashMap<TokenKey, Secret>>>,
    /// Keys the keychain did not have, and when we asked: connections look up a stored
    /// service token first, and most users have none, so a miss must not cost a D-Bus round
    /// trip per connection, nor per health probe (20 tunnels probe 40 times a minute). Kept
    /// for a few minutes, so an entry another process adds (`k8s-tunnels auth service-token`
    /// while the desktop app runs) is still found soon; one this process adds, at once.
    misses: Arc<Mutex<HashMap<TokenKey, Instant>>>,
    warning: Option<String>,
}

/// How long a keychain miss is remembered. Longer than the health probes' 30 s, or every probe
/// of every tunnel would ask the keychain again.
const MISS_TTL: Duration = Duration::from_secs(5 * 60);

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are host names; the tokens stay out of it.
        f.debug_struct("TokenStore")
            .field("durable", &self.is_durable())
            .field("warning", &self.warning)
            .finish_non_exhaustive()
    }
}

impl TokenStore {
    /// Tokens in `keychain` when its probe found it durable; otherwise in memory only, with
    /// [`TokenStore::warning`] saying so.
    pub fn new(keychain: Keychain) -> Self {
        match keychain.status().clone() {
            KeychainStatus::Durable => Self {
                keychain: Some(Arc::new(keychain)),
                memory: Arc::default(),
                misses: Arc::default(),
                warning: None,
            },
            KeychainStatus::Unavailable { reason } => Self::memory_only(&reason),
        }
    }

    /// Tokens in memory only, for this process (`reason` is shown to the user).
    pub fn memory_only(reason: &str) -> Self {
        Self {
            keychain: None,
            memory: Arc::default(),
            misses: Arc::default(),
            warning: Some(format!(
                "no OS keychain ({reason}): Access logins are kept in memory for this session only"
            )),
        }
    }

    /// Whether tokens survive a restart.
    pub fn is_durable(&self) -> bool {
        self.keychain.is_some()
    }

    /// The warning to show when tokens are not durable.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// The stored token, if any: memory first, then the keychain.
    pub async fn get(&self, key: &TokenKey) -> Option<Secret> {
        if let Some(token) = lock(&self.memory).get(key) {
            return Some(token.clone());
        }
        let keychain = self.keychain.clone()?;
        if lock(&self.misses)
            .get(key)
            .is_some_and(|at| at.elapsed() < MISS_TTL)
        {
            return None;
        }
        let account = key.account();
        let read = tokio::task::spawn_blocking(move || keychain.get(&account)).await;
        match read {
            Ok(Ok(Some(token))) => {
                lock(&self.misses).remove(key);
                lock(&self.memory).insert(key.clone(), token.clone());
                Some(token)
            }
            Ok(Ok(None)) => {
                lock(&self.misses).insert(key.clone(), Instant::now());
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(entry = %key.account(), error = %crate::error_chain(&e), "cannot read an Access token from the keychain");
                None
            }
            Err(_) => None,
        }
    }

    /// Stores a token (memory at once, the keychain when durable). A keychain failure is
    /// logged: the token still serves this session.
    pub async fn put(&self, key: &TokenKey, token: &Secret) {
        lock(&self.misses).remove(key);
        lock(&self.memory).insert(key.clone(), token.clone());
        let Some(keychain) = self.keychain.clone() else {
            return;
        };
        let (account, token) = (key.account(), token.clone());
        let written = tokio::task::spawn_blocking(move || keychain.set(&account, &token)).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(entry = %key.account(), error = %crate::error_chain(&e), "cannot store an Access token in the keychain; it is kept for this session only");
        }
    }

    /// Forgets a token everywhere we keep it.
    pub async fn remove(&self, key: &TokenKey) {
        lock(&self.memory).remove(key);
        let Some(keychain) = self.keychain.clone() else {
            return;
        };
        let account = key.account();
        let deleted = tokio::task::spawn_blocking(move || keychain.delete(&account)).await;
        if let Ok(Err(e)) = deleted {
            tracing::warn!(entry = %key.account(), error = %crate::error_chain(&e), "cannot delete an Access token from the keychain");
        }
    }

    /// Forgets the memory copy only (a token the edge rejected may still be replaced in the
    /// keychain by another process).
    pub fn forget_cached(&self, key: &TokenKey) {
        lock(&self.memory).remove(key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn without_a_keychain_tokens_live_in_memory_with_a_warning() {
        let keychain = Keychain::disabled("k8s-tunnels-test", "disabled for this test");
        let store = TokenStore::new(keychain);
        assert!(!store.is_durable());
        let warning = store.warning().unwrap();
        assert!(warning.contains("memory") && warning.contains("disabled for this test"));
        let key = TokenKey::App("App.Example.com".into());
        assert_eq!(key.account(), "access-app/app.example.com");
        assert!(store.get(&key).await.is_none());
        store.put(&key, &Secret::new("tok")).await;
        assert_eq!(store.clone().get(&key).await.unwrap().expose(), "tok");
        assert!(!format!("{store:?}").contains("tok\""));
        store.remove(&key).await;
        assert!(store.get(&key).await.is_none());
    }
}
