//! The inventory file: the zero-configuration cluster source.
//!
//! A YAML file listing clusters (format in the README and in `tests/fixtures/`). Every value is
//! validated while it is deserialized, through types whose `Deserialize` checks it, so that a
//! bad value is reported with the file, the line and column where it starts and its field path,
//! e.g. `inventory.yaml:12:15: clusters[1].access.origin: unknown variant ...`. Checks that need
//! more than one value (duplicate names, `ca` with `ca_file`, reading `ca_file`) run when the
//! enclosing mapping ends and point at that mapping.
//!
//! Loading is all or nothing: the first problem fails the whole load, because a user-edited file
//! that is half applied (a cluster silently missing) is harder to act on than a precise error.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_norway::{Mapping, Value};
use url::Url;

use super::validate::{self, check_name, dials_loopback, shown};
use crate::inventory::{
    AccessApp, AccessAuth, ApiServer, Cloud, Cluster, ClusterId, OriginMode, Provenance, SecretRef,
};

pub use super::validate::MAX_NAME_LEN;

/// The prefix of every cluster id from this source: `file:<name>`.
pub const ID_PREFIX: &str = "file:";

/// The kubeconfig user-stanza keys that carry a credential; a stanza needs one of them.
const USER_AUTH_KEYS: &[&str] = &[
    "exec",
    "token",
    "tokenFile",
    "client-certificate",
    "client-certificate-data",
    "auth-provider",
    "username",
];

/// Errors loading an inventory file.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file does not exist.
    #[error(
        "inventory file {} does not exist; create it{} or pass --inventory <file>",
        path.display(),
        default.as_ref().map(|d| format!(" (the default location is {})", d.display())).unwrap_or_default()
    )]
    NotFound {
        /// The file looked for.
        path: PathBuf,
        /// Where the default inventory lives, when it could be determined.
        default: Option<PathBuf>,
    },
    /// The file exists but could not be read.
    #[error("cannot read inventory file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid inventory.
    #[error("{}{}: {message}", file.display(), location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Line and column (1-based) where the offending value starts, when known.
        location: Option<(usize, usize)>,
        /// The field path and what is wrong, e.g. `clusters[1].server: must use https`.
        message: String,
    },
}

/// Reads and validates the inventory file at `path`.
pub fn load(path: &Path) -> Result<Vec<Cluster>, InventoryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
            let default = crate::dirs::AppDirs::from_env()
                .ok()
                .map(|d| d.default_inventory());
            return Err(InventoryError::NotFound {
                path: path.to_path_buf(),
                default,
            });
        }
        Err(source) => {
            return Err(InventoryError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse(&text, path)
}

/// Parses and validates inventory `text`; `source` names the file in messages, and relative
/// paths (`ca_file`, token files) are resolved against its folder.
pub fn parse(text: &str, source: &Path) -> Result<Vec<Cluster>, InventoryError> {
    let base_dir = match source.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    }) {
        return Err(InventoryError::Invalid {
            file: source.to_path_buf(),
            location: None,
            message: "the file is empty; expected a mapping with a `clusters:` list".into(),
        });
    }
    let deserializer = serde_norway::Deserializer::from_str(text);
    InventorySeed {
        base_dir: &base_dir,
    }
    .deserialize(deserializer)
    .map_err(|err| invalid(source, &err))
}

/// Turns a serde_norway error into `file:line:col: path: message`.
fn invalid(file: &Path, err: &serde_norway::Error) -> InventoryError {
    let mut message = err.to_string();
    let location = err.location().map(|l| (l.line(), l.column()));
    if let Some((line, column)) = location {
        // serde_norway appends the position in prose; it is moved to the front instead.
        let suffix = format!(" at line {line} column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    InventoryError::Invalid {
        file: file.to_path_buf(),
        location,
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars that validate themselves, so a bad one is reported at its own line and column.

/// A check applied to a string scalar while it is deserialized.
trait StrCheck {
    type Out;
    /// What the value must look like, for serde's "invalid type" messages.
    const EXPECTING: &'static str;
    fn check(value: &str) -> Result<Self::Out, String>;
}

/// A string scalar checked by `C`.
struct Checked<C: StrCheck>(C::Out);

impl<'de, C: StrCheck> Deserialize<'de> for Checked<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<C>(PhantomData<C>);
        impl<C: StrCheck> Visitor<'_> for V<C> {
            type Value = Checked<C>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(C::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                C::check(value).map(Checked).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V::<C>(PhantomData))
    }
}

struct NameCheck;
impl StrCheck for NameCheck {
    type Out = String;
    const EXPECTING: &'static str = "a cluster name";
    fn check(value: &str) -> Result<String, String> {
        check_name("cluster name", value)
    }
}

struct LabelCheck;
impl StrCheck for LabelCheck {
    type Out = String;
    const EXPECTING: &'static str = "a label such as prod or eu-west-1";
    fn check(value: &str) -> Result<String, String> {
        check_name("value", value)
    }
}

/// The API server URL: https only, a host, no credentials, query or fragment.
struct ServerCheck;
impl StrCheck for ServerCheck {
    type Out = (Url, String, u16);
    const EXPECTING: &'static str = "an https:// URL";
    fn check(value: &str) -> Result<Self::Out, String> {
        validate::server_url(value)
    }
}

/// The Access hostname as `cloudflared --hostname` takes it, turned into the WebSocket URL.
struct AccessHostCheck;
impl StrCheck for AccessHostCheck {
    /// See [`validate::access_hostname`].
    type Out = (String, Url, bool);
    const EXPECTING: &'static str = "an Access hostname such as k8s.example.com";
    fn check(value: &str) -> Result<Self::Out, String> {
        validate::access_hostname(value)
    }
}

/// `host:port` (IPv6 in brackets) to dial instead of resolving the Access hostname.
struct ConnectToCheck;
impl StrCheck for ConnectToCheck {
    type Out = String;
    const EXPECTING: &'static str = "host:port";
    fn check(value: &str) -> Result<String, String> {
        let bad = || format!("{} must be host:port", shown(value));
        let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 || host.is_empty() {
            return Err(bad());
        }
        // Url's host parser accepts exactly what a dialer can use: a domain, IPv4, or [IPv6].
        Url::parse(&format!("tcp://{host}:{port}"))
            .ok()
            .filter(|u| u.host().is_some() && u.path().is_empty() && u.username().is_empty())
            .ok_or_else(bad)?;
        Ok(value.to_string())
    }
}

/// Inline PEM that must hold at least one parsable certificate.
struct PemCheck;
impl StrCheck for PemCheck {
    type Out = String;
    const EXPECTING: &'static str = "PEM certificates";
    fn check(value: &str) -> Result<String, String> {
        check_pem(value.as_bytes()).map(|()| value.to_string())
    }
}

fn check_pem(pem: &[u8]) -> Result<(), String> {
    crate::tls::certs_from_pem(pem)
        .map(drop)
        .map_err(|e| format!("not usable as a CA: {e}"))
}

/// A name the API server's certificate must match: a DNS name or an IP address.
struct TlsNameCheck;
impl StrCheck for TlsNameCheck {
    type Out = String;
    const EXPECTING: &'static str = "a DNS name";
    fn check(value: &str) -> Result<String, String> {
        rustls_pki_types::ServerName::try_from(value)
            .map(|_| value.to_string())
            .map_err(|_| format!("{} is not a valid DNS name or IP address", shown(value)))
    }
}

/// An environment variable name.
struct EnvNameCheck;
impl StrCheck for EnvNameCheck {
    type Out = String;
    const EXPECTING: &'static str = "an environment variable name";
    fn check(value: &str) -> Result<String, String> {
        let mut chars = value.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(value.to_string())
        } else {
            Err(format!(
                "{} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                shown(value)
            ))
        }
    }
}

/// A non-empty path (relative ones are resolved against the inventory's folder later).
struct PathCheck;
impl StrCheck for PathCheck {
    type Out = PathBuf;
    const EXPECTING: &'static str = "a file path";
    fn check(value: &str) -> Result<PathBuf, String> {
        if value.trim().is_empty() || value.contains('\0') {
            return Err(format!("{} is not a file path", shown(value)));
        }
        Ok(PathBuf::from(value))
    }
}

/// A service-token client id: sent as a header, so visible ASCII only.
struct ClientIdCheck;
impl StrCheck for ClientIdCheck {
    type Out = String;
    const EXPECTING: &'static str = "a service token client id";
    fn check(value: &str) -> Result<String, String> {
        if value.is_empty() || value.len() > 256 || !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "client_id {} must be 1 to 256 visible ASCII characters",
                shown(value)
            ));
        }
        Ok(value.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Mappings checked as a whole once read, so the error points at the mapping.

/// A mapping read as `Raw`, then checked; a failed check is reported at the mapping's start.
trait MapCheck {
    type Raw: DeserializeOwned;
    type Out;
    const EXPECTING: &'static str;
    fn check(raw: Self::Raw) -> Result<Self::Out, String>;
}

struct CheckedMap<C: MapCheck>(C::Out);

impl<'de, C: MapCheck> Deserialize<'de> for CheckedMap<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<C>(PhantomData<C>);
        impl<'de, C: MapCheck> Visitor<'de> for V<C> {
            type Value = CheckedMap<C>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(C::EXPECTING)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let raw = C::Raw::deserialize(MapAccessDeserializer::new(map))?;
                // Returned from inside visit_map, so serde_norway stamps it with this mapping's position.
                C::check(raw).map(CheckedMap).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_map(V::<C>(PhantomData))
    }
}

/// `{ env: NAME }` or `{ file: path }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretRef {
    env: Option<Checked<EnvNameCheck>>,
    file: Option<Checked<PathCheck>>,
}

struct SecretRefCheck;
impl MapCheck for SecretRefCheck {
    type Raw = RawSecretRef;
    type Out = SecretRef;
    const EXPECTING: &'static str = "{ env: VARIABLE } or { file: path }";
    fn check(raw: RawSecretRef) -> Result<SecretRef, String> {
        match (raw.env, raw.file) {
            (Some(env), None) => Ok(SecretRef::Env(env.0)),
            (None, Some(file)) => Ok(SecretRef::File(file.0)),
            _ => Err("give exactly one of `env: VARIABLE` or `file: path`".into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceToken {
    client_id: Checked<ClientIdCheck>,
    client_secret: CheckedMap<SecretRefCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    hostname: Checked<AccessHostCheck>,
    origin: OriginMode,
    connect_to: Option<Checked<ConnectToCheck>>,
    ca_file: Option<Checked<PathCheck>>,
    token: Option<CheckedMap<SecretRefCheck>>,
    service_token: Option<RawServiceToken>,
}

/// The access section with its credential resolved; `ca_file` is read later (it needs the
/// inventory's folder).
struct Access {
    hostname: String,
    url: Url,
    origin: OriginMode,
    connect_to: Option<String>,
    ca_file: Option<PathBuf>,
    auth: AccessAuth,
}

struct AccessCheck;
impl MapCheck for AccessCheck {
    type Raw = RawAccess;
    type Out = Access;
    const EXPECTING: &'static str = "the access section (hostname, origin, ...)";
    fn check(raw: RawAccess) -> Result<Access, String> {
        let auth = match (raw.token, raw.service_token) {
            (None, None) => AccessAuth::Default,
            (Some(token), None) => AccessAuth::Token(token.0),
            (None, Some(st)) => AccessAuth::ServiceToken {
                client_id: st.client_id.0,
                client_secret: st.client_secret.0,
            },
            (Some(_), Some(_)) => return Err("set either token or service_token, not both".into()),
        };
        let (hostname, url, plain_remote) = raw.hostname.0;
        let connect_to = raw.connect_to.map(|c| c.0);
        if plain_remote && !connect_to.as_deref().is_some_and(dials_loopback) {
            // Tokens would cross the network in clear.
            return Err(format!(
                "hostname {}: plain http/ws is allowed only to a loopback address (the hostname itself, or connect_to)",
                shown(&hostname)
            ));
        }
        Ok(Access {
            hostname,
            url,
            origin: raw.origin,
            connect_to,
            ca_file: raw.ca_file.map(|c| c.0),
            auth,
        })
    }
}

/// The kubeconfig `user` stanza: a mapping with a credential; kept as given.
struct UserCheck;
impl MapCheck for UserCheck {
    type Raw = Mapping;
    type Out = Mapping;
    const EXPECTING: &'static str = "a kubeconfig user mapping (exec, token, tokenFile, ...)";
    fn check(user: Mapping) -> Result<Mapping, String> {
        let mut known = false;
        for key in user.keys() {
            let Some(key) = key.as_str() else {
                return Err("keys must be strings".into());
            };
            known |= USER_AUTH_KEYS.contains(&key);
        }
        if !known {
            return Err(format!(
                "needs one of {} (it is copied to kubeconfig as the user entry)",
                USER_AUTH_KEYS.join(", ")
            ));
        }
        if let Some(exec) = user.get("exec") {
            let Some(exec) = exec.as_mapping() else {
                return Err("exec must be a mapping with apiVersion and command".into());
            };
            match exec.get("command") {
                Some(Value::String(c)) if !c.trim().is_empty() => {}
                Some(_) => {
                    return Err(
                        "exec.command must be a plain string (the program; arguments go in exec.args)"
                            .into(),
                    );
                }
                None => return Err("exec needs a command".into()),
            }
            if let Some(args) = exec.get("args") {
                let ok = args
                    .as_sequence()
                    .is_some_and(|a| a.iter().all(|v| v.is_string()));
                if !ok {
                    return Err("exec.args must be a list of strings".into());
                }
            }
        }
        Ok(user)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Checked<NameCheck>,
    cloud: Cloud,
    environment: Checked<LabelCheck>,
    region: Option<Checked<LabelCheck>>,
    server: Checked<ServerCheck>,
    ca: Option<Checked<PemCheck>>,
    ca_file: Option<Checked<PathCheck>>,
    tls_server_name: Option<Checked<TlsNameCheck>>,
    access: CheckedMap<AccessCheck>,
    user: CheckedMap<UserCheck>,
}

// ---------------------------------------------------------------------------------------------
// The document, with the context the checks across clusters need.

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum TopField {
    Clusters,
}

struct InventorySeed<'a> {
    base_dir: &'a Path,
}

impl<'de> DeserializeSeed<'de> for InventorySeed<'_> {
    type Value = Vec<Cluster>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InventorySeed<'_> {
    type Value = Vec<Cluster>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping with a `clusters:` list")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut clusters = None;
        while let Some(TopField::Clusters) = map.next_key()? {
            if clusters.is_some() {
                return Err(de::Error::duplicate_field("clusters"));
            }
            clusters = Some(map.next_value_seed(ClustersSeed {
                base_dir: self.base_dir,
            })?);
        }
        clusters.ok_or_else(|| de::Error::missing_field("clusters"))
    }
}

struct ClustersSeed<'a> {
    base_dir: &'a Path,
}

impl<'de> DeserializeSeed<'de> for ClustersSeed<'_> {
    type Value = Vec<Cluster>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ClustersSeed<'_> {
    type Value = Vec<Cluster>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of clusters")
    }
    /// `clusters:` with every entry commented out is an empty inventory, not an error.
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut seen = BTreeMap::new();
        let mut clusters = Vec::new();
        while let Some(cluster) = seq.next_element_seed(ClusterSeed {
            base_dir: self.base_dir,
            seen: &mut seen,
            index: clusters.len(),
        })? {
            clusters.push(cluster);
        }
        Ok(clusters)
    }
}

struct ClusterSeed<'a> {
    base_dir: &'a Path,
    /// Names already used, with their index, to report duplicates.
    seen: &'a mut BTreeMap<String, usize>,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for ClusterSeed<'_> {
    type Value = Cluster;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClusterSeed<'_> {
    type Value = Cluster;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cluster mapping (name, cloud, environment, server, access, user)")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let raw = RawCluster::deserialize(MapAccessDeserializer::new(map))?;
        self.build(raw).map_err(de::Error::custom)
    }
}

impl ClusterSeed<'_> {
    /// The checks that need more than one field or the inventory's folder.
    fn build(self, raw: RawCluster) -> Result<Cluster, String> {
        let name = raw.name.0;
        if let Some(first) = self.seen.get(&name) {
            return Err(format!(
                "duplicate cluster name {} (already used by clusters[{first}])",
                shown(&name)
            ));
        }
        self.seen.insert(name.clone(), self.index);

        let ca_pem = match (raw.ca, raw.ca_file) {
            (Some(_), Some(_)) => return Err("set either ca or ca_file, not both".into()),
            (Some(ca), None) => Some(ca.0),
            (None, Some(file)) => Some(self.read_pem("ca_file", &file.0)?),
            (None, None) => None,
        };
        let access = raw.access.0;
        let edge_ca_pem = match &access.ca_file {
            Some(file) => Some(self.read_pem("access.ca_file", file)?),
            None => None,
        };
        let auth = match access.auth {
            AccessAuth::Token(r) => AccessAuth::Token(self.resolve_ref(r)),
            AccessAuth::ServiceToken {
                client_id,
                client_secret,
            } => AccessAuth::ServiceToken {
                client_id,
                client_secret: self.resolve_ref(client_secret),
            },
            AccessAuth::Default => AccessAuth::Default,
        };
        let (url, host, port) = raw.server.0;
        Ok(Cluster {
            id: ClusterId(format!("{ID_PREFIX}{name}")),
            name,
            cloud: raw.cloud,
            environment: raw.environment.0,
            region: raw.region.map(|r| r.0),
            api: ApiServer {
                url,
                host,
                port,
                ca_pem,
                tls_server_name: raw.tls_server_name.map(|t| t.0),
            },
            access: AccessApp {
                hostname: access.hostname,
                url: access.url,
                connect_to: access.connect_to,
                edge_ca_pem,
                origin: access.origin,
                auth,
            },
            user: raw.user.0,
            provenance: Provenance::Inventory,
        })
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// Token files are read when the token is needed (they may be rotated); only the path is
    /// made absolute here.
    fn resolve_ref(&self, reference: SecretRef) -> SecretRef {
        match reference {
            SecretRef::File(path) => SecretRef::File(self.resolve(&path)),
            env @ SecretRef::Env(_) => env,
        }
    }

    fn read_pem(&self, field: &str, path: &Path) -> Result<String, String> {
        let full = self.resolve(path);
        let text = std::fs::read_to_string(&full)
            .map_err(|e| format!("{field}: cannot read {}: {e}", full.display()))?;
        check_pem(text.as_bytes()).map_err(|e| format!("{field}: {}: {e}", full.display()))?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("/inv/inventory.yaml"))
            .unwrap_err()
            .to_string()
    }

    const MIN: &str = "clusters:
  - name: a
    cloud: aws
    environment: prod
    server: https://a.internal:6443
    access:
      hostname: a.example.com
      origin: socks
    user:
      token: abc
";

    #[test]
    fn minimal_cluster_gets_defaults() {
        let clusters = parse(MIN, Path::new("/inv/inventory.yaml")).unwrap();
        assert_eq!(clusters.len(), 1);
        let c = &clusters[0];
        assert_eq!(c.id.0, "file:a");
        assert_eq!(c.api.host, "a.internal");
        assert_eq!(c.api.port, 6443);
        assert_eq!(c.access.url.as_str(), "wss://a.example.com/");
        assert_eq!(c.access.auth, AccessAuth::Default);
        assert_eq!(c.api.ca_pem, None);
    }

    #[test]
    fn unknown_variant_names_line_column_and_path() {
        let err = parse_err(&MIN.replace("origin: socks", "origin: sox"));
        assert!(
            err.starts_with(
                "/inv/inventory.yaml:8:15: clusters[0].access.origin: unknown variant `sox`"
            ),
            "{err}"
        );
        assert!(err.contains("socks"), "{err}");
    }

    #[test]
    fn bad_scalar_is_reported_at_its_own_position() {
        let err = parse_err(&MIN.replace("https://a.internal:6443", "http://a.internal"));
        assert!(
            err.starts_with("/inv/inventory.yaml:5:13: clusters[0].server: "),
            "{err}"
        );
        assert!(err.contains("must use https"), "{err}");
    }

    #[test]
    fn server_port_defaults_and_ipv6_host_is_bare() {
        let clusters = parse(
            &MIN.replace("https://a.internal:6443", "https://[::1]"),
            Path::new("x.yaml"),
        )
        .unwrap();
        assert_eq!(clusters[0].api.host, "::1");
        assert_eq!(clusters[0].api.port, 443);
        assert_eq!(clusters[0].api.host_port(), "[::1]:443");
    }

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 100, "{s}");
        assert!(s.contains("10000 bytes"));
    }

    #[test]
    fn credentials_in_a_url_are_not_echoed() {
        let err = parse_err(&MIN.replace("a.example.com", "https://bob:hunter2@a.example.com"));
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("credentials"), "{err}");
    }
}
