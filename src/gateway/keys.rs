//! Key sets that verify application tokens, and how they follow key rotation.
//!
//! A [`KeySet`] is one parsed JWKS document. A [`KeyStore`] is an application's key set as it
//! is now: a set from a file is read again every `jwks_refresh`, and at once when a token
//! names a key id the set does not hold (at most once a [`UNKNOWN_KID_READ_EVERY`], so tokens
//! with made-up key ids cannot turn into a file read each), so a key added to the file opens
//! the door with its first token and a key removed from it stops opening it, without a
//! restart. A file that no longer parses keeps the last good set, with a warning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use tokio_util::sync::CancellationToken;

/// A key set that cannot be used. The configuration reports it as its own error
/// (`KeysError::Jwks`, `KeysError::File`); a reload logs it and keeps the last good set.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The document is not a usable JWKS.
    #[error("{field}: invalid JWKS: {reason}")]
    Jwks {
        /// The configuration field that names the set.
        field: String,
        /// What is wrong with the document.
        reason: String,
    },
    /// The file could not be read.
    #[error("{field}: cannot read {path}")]
    File {
        /// The configuration field that names the file.
        field: String,
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
}

/// A token naming an unknown key id makes the file be read at most this often.
pub(crate) const UNKNOWN_KID_READ_EVERY: Duration = Duration::from_secs(1);

/// A parsed key set: the JWKS document (served at `/cdn-cgi/access/certs`) and its keys.
pub(crate) struct KeySet {
    pub(crate) json: String,
    pub(crate) keys: Vec<(Option<String>, DecodingKey)>,
    set: JwkSet,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document, keeping the RSA keys (Access signs with RS256).
    pub(crate) fn parse(json: &str, field: &str) -> Result<Self, KeysError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| KeysError::Jwks {
            field: field.to_owned(),
            reason: e.to_string(),
        })?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            if !matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
            ) {
                continue;
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| KeysError::Jwks {
                field: field.to_owned(),
                reason: format!("keys[{i}]: {e}"),
            })?;
            keys.push((jwk.common.key_id.clone(), key));
        }
        if keys.is_empty() {
            return Err(KeysError::Jwks {
                field: field.to_owned(),
                reason: "holds no RSA key".to_owned(),
            });
        }
        // Serve only public parameters, re-serialised from the parsed set, so a JWKS file that
        // (wrongly) carries private members never publishes them.
        let json = serde_json::to_string(&set).map_err(|e| KeysError::Jwks {
            field: field.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self { json, keys, set })
    }

    /// Whether a key of this set has key id `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _)| k.as_deref() == Some(kid))
    }

    /// This set plus the keys of `other` whose key id it does not already hold.
    pub(crate) fn merged(&self, other: &KeySet) -> KeySet {
        let mut set = self.set.clone();
        let mut keys: Vec<(Option<String>, DecodingKey)> = self.keys.clone();
        let known = |kid: &Option<String>, keys: &[(Option<String>, DecodingKey)]| {
            kid.is_some() && keys.iter().any(|(k, _)| k == kid)
        };
        for jwk in &other.set.keys {
            if !known(&jwk.common.key_id, &keys) {
                set.keys.push(jwk.clone());
            }
        }
        for (kid, key) in &other.keys {
            if !known(kid, &keys) {
                keys.push((kid.clone(), key.clone()));
            }
        }
        let json = serde_json::to_string(&set).unwrap_or_else(|_| self.json.clone());
        KeySet { json, keys, set }
    }
}

/// An application's key set, following its file.
pub(crate) struct KeyStore {
    /// The file and the configuration field that names it; `None` for a set that cannot
    /// change (inline, or the access section's key alone).
    file: Option<(PathBuf, String)>,
    /// Keys added to every version of the set: the access section's signing key.
    extra: Option<Arc<KeySet>>,
    current: RwLock<Arc<KeySet>>,
    /// When the file was last read; also what makes reads one at a time.
    read_at: tokio::sync::Mutex<Instant>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("file", &self.file.as_ref().map(|(path, _)| path))
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// The set in `json` (configuration field `field`), plus `extra` in every version of it;
    /// read again from `file` when the set came from one.
    pub(crate) fn load(
        json: &str,
        file: Option<&Path>,
        field: &str,
        extra: Option<&Arc<KeySet>>,
    ) -> Result<Self, KeysError> {
        let set = KeySet::parse(json, field)?;
        let file = file.map(|path| (path.to_path_buf(), field.to_owned()));
        Ok(Self {
            current: RwLock::new(Arc::new(with_extra(set, extra))),
            file,
            extra: extra.cloned(),
            read_at: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    /// A set that never changes.
    pub(crate) fn fixed(set: Arc<KeySet>) -> Self {
        Self {
            file: None,
            extra: None,
            current: RwLock::new(set),
            read_at: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// The set now.
    pub(crate) fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the set comes from a file, and so can change.
    pub(crate) fn follows_a_file(&self) -> bool {
        self.file.is_some()
    }

    /// A token names key id `kid`, which the set lacks: reads the file again, unless it was
    /// read less than [`UNKNOWN_KID_READ_EVERY`] ago. Waits for a read under way.
    pub(crate) async fn unknown_kid(&self, kid: &str) {
        if self.file.is_none() {
            return;
        }
        let mut read_at = self.read_at.lock().await;
        // Another token may have brought the key in while this one waited.
        if self.current().has_kid(kid) || read_at.elapsed() < UNKNOWN_KID_READ_EVERY {
            return;
        }
        self.read(&mut read_at).await;
    }

    /// Reads the file again now.
    pub(crate) async fn refresh(&self) {
        let mut read_at = self.read_at.lock().await;
        self.read(&mut read_at).await;
    }

    async fn read(&self, read_at: &mut Instant) {
        let Some((path, field)) = &self.file else {
            return;
        };
        *read_at = Instant::now();
        let parsed = match tokio::fs::read_to_string(path).await {
            Ok(text) => KeySet::parse(&text, field),
            Err(source) => Err(KeysError::File {
                field: field.clone(),
                path: path.clone(),
                source,
            }),
        };
        let set = match parsed {
            Ok(set) => with_extra(set, self.extra.as_ref()),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "key set not reloaded: keeping the keys it had");
                return;
            }
        };
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.json != set.json {
            tracing::info!(field = %field, file = %path.display(), keys = set.keys.len(), "key set reloaded");
            *current = Arc::new(set);
        }
    }

    /// Reads the file again every `every` until `cancel`.
    pub(crate) async fn refresh_every(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => self.refresh().await,
            }
        }
    }
}

fn with_extra(set: KeySet, extra: Option<&Arc<KeySet>>) -> KeySet {
    match extra {
        Some(extra) => set.merged(extra),
        None => set,
    }
}
