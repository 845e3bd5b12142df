//! Turning what a cloud says about a cluster (its name, endpoint, CA, and the tags, labels or
//! Vault fields that carry the Access settings) into a validated [`Cluster`]. All of it is
//! untrusted: a hostile name becomes a safe one, and a bad URL, hostname or CA rejects that one
//! cluster with a clear reason.

use std::collections::BTreeMap;

use crate::inventory::{
    AccessApp, AccessAuth, ApiServer, Cloud, Cluster, ClusterId, OriginMode, Provenance,
};

use serde::{Deserialize, Serialize};

use super::Rejection;
use super::validate::{self, MAX_NAME_LEN, shown};

/// Everything a source learned about one cluster, unvalidated.
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    /// Stable id, e.g. `eks:<account>:<region>:<name>` (made from the source's own names; it
    /// is only ever used as a key, never as a path or a kubeconfig name).
    pub id: String,
    /// The cluster's name in its cloud.
    pub name: String,
    /// Where it runs.
    pub cloud: Option<Cloud>,
    /// Region, zone or project.
    pub region: Option<String>,
    /// The API server: an `https://` URL or a bare host or IP address (GKE gives an IP).
    pub endpoint: String,
    /// The API server's CA, PEM (sources decode the base64 the clouds wrap it in).
    pub ca_pem: Option<String>,
    /// Tags, labels or Vault fields.
    pub labels: BTreeMap<String, String>,
    /// The kubeconfig user stanza the source prescribes (e.g. the `aws eks get-token` plugin).
    pub user: serde_norway::Mapping,
}

/// Which tag or label keys carry the Access settings. Keys are tried in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataKeys {
    /// The Access hostname.
    pub hostname: Vec<String>,
    /// The environment (`prod`, `staging`, ...).
    pub environment: Vec<String>,
    /// The origin mode (`socks`, `tcp`, `bastion`); `socks` when absent.
    pub origin: Vec<String>,
}

impl Default for MetadataKeys {
    /// AWS tag keys may hold `/`; GCP label keys may not, so both spellings are looked for.
    fn default() -> Self {
        let both = |name: &str| vec![format!("k8s-tunnels/{name}"), format!("k8s-tunnels-{name}")];
        Self {
            hostname: both("hostname"),
            environment: vec!["env".into(), "environment".into()],
            origin: both("origin"),
        }
    }
}

/// The environment of a cluster whose labels name none.
pub const UNKNOWN_ENVIRONMENT: &str = "unknown";

fn lookup<'a>(labels: &'a BTreeMap<String, String>, keys: &[String]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels.get(k))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// Validates one discovered cluster.
pub fn build(found: Discovered, keys: &MetadataKeys) -> Result<Cluster, Rejection> {
    let invalid = |msg: String| Rejection::Invalid(msg);
    let Some(hostname) = lookup(&found.labels, &keys.hostname) else {
        return Err(Rejection::NotPublished);
    };
    let (hostname, url, plain_remote) = validate::access_hostname(hostname)
        .map_err(|e| invalid(format!("Access hostname: {e}")))?;
    if url.scheme() != "wss" || plain_remote {
        // Discovery data never gets the loopback exception: only an inventory the user wrote may.
        return Err(invalid(format!(
            "Access hostname {}: must be https",
            shown(&hostname)
        )));
    }
    let origin = match lookup(&found.labels, &keys.origin) {
        None => OriginMode::Socks,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "socks" => OriginMode::Socks,
            "tcp" => OriginMode::Tcp,
            "bastion" => OriginMode::Bastion,
            _ => {
                return Err(invalid(format!(
                    "origin {}: expected socks, tcp or bastion",
                    shown(v)
                )));
            }
        },
    };
    let environment = match lookup(&found.labels, &keys.environment) {
        None => UNKNOWN_ENVIRONMENT.to_string(),
        Some(v) => safe_name(&v.to_ascii_lowercase()),
    };
    let endpoint = found.endpoint.trim();
    let endpoint = if endpoint.contains("://") {
        endpoint.to_string()
    } else if endpoint.contains(':') && !endpoint.starts_with('[') {
        // A bare IPv6 address.
        format!("https://[{endpoint}]")
    } else {
        format!("https://{endpoint}")
    };
    let (api_url, host, port) =
        validate::server_url(&endpoint).map_err(|e| invalid(format!("API server: {e}")))?;
    if let Some(pem) = &found.ca_pem {
        crate::tls::certs_from_pem(pem.as_bytes())
            .map_err(|e| invalid(format!("API server CA: {e}")))?;
    }
    let region = found
        .region
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(safe_name);
    Ok(Cluster {
        id: ClusterId(found.id),
        name: safe_name(&found.name),
        cloud: found.cloud.unwrap_or(Cloud::Other),
        environment,
        region,
        api: ApiServer {
            url: api_url,
            host,
            port,
            ca_pem: found.ca_pem,
            tls_server_name: None,
        },
        access: AccessApp {
            hostname,
            url,
            connect_to: None,
            edge_ca_pem: None,
            origin,
            auth: AccessAuth::Default,
        },
        user: found.user,
        provenance: Provenance::Discovered,
    })
}

/// A name safe as a kubeconfig key, a file name component and a menu label: characters
/// outside `[A-Za-z0-9._-]` become `-`, it starts with a letter or digit, and it fits in 63
/// characters. A name that had to change gets a short hash of the original, so two different
/// hostile names cannot collapse into one.
pub fn safe_name(raw: &str) -> String {
    if validate::check_name("name", raw).is_ok() {
        return raw.to_string();
    }
    let mut cleaned = String::with_capacity(raw.len().min(MAX_NAME_LEN));
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        // No runs of separators, and never "..": the name may become a file name.
        if matches!(c, '-' | '.' | '_') && cleaned.ends_with(['-', '.', '_']) {
            continue;
        }
        cleaned.push(c);
        if cleaned.len() >= MAX_NAME_LEN {
            break;
        }
    }
    let cleaned = cleaned.trim_matches(['-', '.', '_']);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw.as_bytes());
    let hash: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let keep = MAX_NAME_LEN - hash.len() - 1;
    let head: String = cleaned.chars().take(keep).collect();
    let head = head.trim_end_matches(['-', '.', '_']);
    if head.is_empty() {
        format!("cluster-{hash}")
    } else {
        format!("{head}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn discovered(name: &str, pairs: &[(&str, &str)]) -> Discovered {
        Discovered {
            id: format!("test:{name}"),
            name: name.into(),
            cloud: Some(Cloud::Aws),
            region: Some("eu-west-1".into()),
            endpoint: "https://ABC.gr7.eu-west-1.eks.amazonaws.com".into(),
            ca_pem: None,
            labels: labels(pairs),
            user: serde_norway::Mapping::new(),
        }
    }

    #[test]
    fn tags_become_access_settings() {
        let c = build(
            discovered(
                "prod",
                &[
                    ("k8s-tunnels/hostname", "prod.k8s.example.com"),
                    ("env", "Prod"),
                    ("k8s-tunnels/origin", "bastion"),
                ],
            ),
            &MetadataKeys::default(),
        )
        .unwrap();
        assert_eq!(c.access.url.as_str(), "wss://prod.k8s.example.com/");
        assert_eq!(c.environment, "prod");
        assert_eq!(c.access.origin, OriginMode::Bastion);
        assert_eq!(c.api.port, 443);
        // GCP-style label keys work too, and a bare IP endpoint becomes https.
        let mut d = discovered("g", &[("k8s-tunnels-hostname", "g.example.com")]);
        d.endpoint = "34.1.2.3".into();
        let c = build(d, &MetadataKeys::default()).unwrap();
        assert_eq!(c.api.url.as_str(), "https://34.1.2.3/");
        assert_eq!(c.environment, UNKNOWN_ENVIRONMENT);
        assert_eq!(c.access.origin, OriginMode::Socks);
    }

    #[test]
    fn hostile_data_is_rejected_per_cluster() {
        let keys = MetadataKeys::default();
        assert_eq!(
            build(discovered("x", &[]), &keys),
            Err(Rejection::NotPublished)
        );
        for bad in [
            "https://user:pw@k8s.example.com",
            "k8s.example.com/?q=1",
            "ws://k8s.example.com",
            "http://127.0.0.1:8080",
            "ftp://k8s.example.com",
        ] {
            let err =
                build(discovered("x", &[("k8s-tunnels/hostname", bad)]), &keys).expect_err(bad);
            assert!(matches!(err, Rejection::Invalid(_)), "{bad}: {err:?}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        let mut d = discovered("x", &[("k8s-tunnels/hostname", "ok.example.com")]);
        d.ca_pem = Some("not a certificate".into());
        assert!(matches!(build(d, &keys), Err(Rejection::Invalid(m)) if m.contains("CA")));
        let mut d = discovered("x", &[("k8s-tunnels/hostname", "ok.example.com")]);
        d.endpoint = "http://10.0.0.1".into();
        assert!(matches!(build(d, &keys), Err(Rejection::Invalid(_))));
        let d = discovered(
            "x",
            &[
                ("k8s-tunnels/hostname", "ok.example.com"),
                ("k8s-tunnels/origin", "ssh"),
            ],
        );
        assert!(matches!(build(d, &keys), Err(Rejection::Invalid(_))));
    }

    #[test]
    fn safe_names_are_valid_distinct_and_stable() {
        let hostile = [
            "a/b",
            "../../etc/passwd",
            "with space",
            "ünïcödé",
            "key: value",
            "- item",
            "{flow}",
            "*alias",
            "&anchor",
            "!tag",
            "",
            "...",
            "$(rm -rf ~)",
        ];
        let long = "x".repeat(10 * 1024);
        let mut seen = std::collections::BTreeSet::new();
        for raw in hostile
            .iter()
            .copied()
            .chain(std::iter::once(long.as_str()))
        {
            let name = safe_name(raw);
            assert!(
                validate::check_name("n", &name).is_ok(),
                "{raw:?} -> {name:?}"
            );
            assert!(!name.contains(".."), "{name}");
            assert_eq!(name, safe_name(raw), "stable");
            assert!(seen.insert(name.clone()), "{raw:?} collides as {name}");
        }
        assert_eq!(safe_name("prod-eu.1"), "prod-eu.1", "valid names are kept");
        assert_ne!(safe_name("a/b"), safe_name("a b"));
    }
}
