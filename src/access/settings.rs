//! The `access:` section of `config.yaml`: where the Access login talks to, and how.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Cloudflare's token transfer service.
pub const DEFAULT_TRANSFER_SERVICE: &str = "https://login.cloudflareaccess.org";
/// The suffix every Cloudflare Access auth domain has (cloudflared requires it too).
pub const DEFAULT_AUTH_DOMAIN_SUFFIX: &str = ".cloudflareaccess.com";

/// How the Access login reaches the edge and the user.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSettings {
    /// Auth domains the client accepts from an application's metadata; anything else is
    /// refused, so a spoofed answer cannot send the user's login elsewhere.
    pub auth_domain_suffixes: Vec<String>,
    /// The token transfer service the browser login long-polls.
    pub transfer_service: url::Url,
    /// Host name → address, like `curl --resolve` (a self-hosted gateway, the lab, tests).
    pub resolve: BTreeMap<String, SocketAddr>,
    /// An extra trust root (PEM) for the auth domain, the transfer service and app hosts.
    pub ca_file: Option<PathBuf>,
    /// Also write tokens to `~/.cloudflared` in cloudflared's format (plaintext, 0600), so
    /// `cloudflared access` shares the login.
    pub write_cloudflared_files: bool,
    /// How to open the login URL: unset = the system opener (`$BROWSER`, else the desktop's);
    /// a command (the URL is appended as its last argument); `none` = only print the URL.
    pub browser: Option<String>,
    /// cloudflared's token directory [default: `~/.cloudflared`].
    pub cloudflared_dir: Option<PathBuf>,
    /// Renew an app token through the SSO session when it has less than this left [default: 5m].
    #[serde(deserialize_with = "crate::duration::optional")]
    pub refresh_before: Option<Duration>,
    /// Announce a login that runs out within this time [default: 15m].
    #[serde(deserialize_with = "crate::duration::optional")]
    pub warn_before: Option<Duration>,
    /// How long the browser login waits for the user to sign in [default: 10m].
    #[serde(deserialize_with = "crate::duration::optional")]
    pub login_timeout: Option<Duration>,
    /// A token counts as expired this long before its `exp` [default: 60s].
    #[serde(deserialize_with = "crate::duration::optional")]
    pub clock_skew: Option<Duration>,
    /// Access hosts of discovered clusters that may also be sent the environment's
    /// credentials (`TUNNEL_SERVICE_TOKEN_*`, `K8S_TUNNELS_ACCESS_TOKEN`); the inventory
    /// file's clusters always may, discovered ones otherwise never.
    pub env_credential_hosts: Vec<String>,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            auth_domain_suffixes: vec![DEFAULT_AUTH_DOMAIN_SUFFIX.to_string()],
            transfer_service: url::Url::parse(DEFAULT_TRANSFER_SERVICE)
                .expect("the default transfer service is a valid URL"),
            resolve: BTreeMap::new(),
            ca_file: None,
            write_cloudflared_files: false,
            browser: None,
            cloudflared_dir: None,
            refresh_before: None,
            warn_before: None,
            login_timeout: None,
            clock_skew: None,
            env_credential_hosts: Vec::new(),
        }
    }
}

impl AccessSettings {
    /// Whether `domain` is an acceptable auth domain.
    pub fn auth_domain_allowed(&self, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        self.auth_domain_suffixes.iter().any(|suffix| {
            let suffix = suffix.to_ascii_lowercase();
            let bare = suffix.trim_start_matches('.');
            // `x.cloudflareaccess.com`, never `cloudflareaccess.com` itself nor `evilcloudflareaccess.com`.
            domain.len() > bare.len() && domain.ends_with(&format!(".{bare}"))
        })
    }

    /// The timings these settings ask for, defaults elsewhere.
    pub fn timings(&self) -> crate::access::Timings {
        let mut timings = crate::access::Timings::default();
        if let Some(d) = self.refresh_before {
            timings.refresh_before = d;
        }
        if let Some(d) = self.warn_before {
            timings.warn_before = d;
        }
        if let Some(d) = self.login_timeout {
            timings.poll.total = d;
        }
        if let Some(d) = self.clock_skew {
            timings.skew = d;
        }
        timings
    }

    /// cloudflared's token directory.
    pub fn cloudflared_dir(&self) -> Option<PathBuf> {
        self.cloudflared_dir.clone().or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cloudflared"))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_yaml_shape() {
        let s = AccessSettings::default();
        assert_eq!(
            s.transfer_service.as_str(),
            "https://login.cloudflareaccess.org/"
        );
        assert!(s.auth_domain_allowed("team.cloudflareaccess.com"));
        assert!(s.auth_domain_allowed("Team.CloudflareAccess.com"));
        assert!(!s.auth_domain_allowed("cloudflareaccess.com"));
        assert!(!s.auth_domain_allowed("evilcloudflareaccess.com"));
        assert!(!s.auth_domain_allowed("team.cloudflareaccess.com.evil.net"));

        let s: AccessSettings = serde_norway::from_str(
            "auth_domain_suffixes: [\".cloudflareaccess.com\"]\n\
             transfer_service: https://login.cloudflareaccess.org\n\
             resolve: { \"lab.cloudflareaccess.com\": \"127.0.0.1:8443\" }\n\
             ca_file: /x/lab-ca.pem\nwrite_cloudflared_files: true\nbrowser: none\n",
        )
        .unwrap();
        assert_eq!(
            s.resolve["lab.cloudflareaccess.com"],
            "127.0.0.1:8443".parse().unwrap()
        );
        assert!(s.write_cloudflared_files);
        assert_eq!(s.browser.as_deref(), Some("none"));
        assert!(serde_norway::from_str::<AccessSettings>("resolv: {}\n").is_err());
    }
}
