//! The login tests' world: the gateway playing the Access edge (auth domain, transfer
//! service, one application in front of an echo origin), its CA, and clusters and settings
//! that point the client at it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::echo::echo_server;
use k8s_tunnels::access::transfer::BrowserOpener;
use k8s_tunnels::access::{AccessClient, AccessSettings, Timings, TokenStore};
use k8s_tunnels::gateway::{
    AccessConfig, ApplicationConfig, Claims, Gateway, GatewayConfig, GatewayHandle, IdentityConfig,
    Origin, SecretSource, TextSource, TlsConfig, TokenIssuer,
};
use k8s_tunnels::inventory::Cluster;
use k8s_tunnels::lab::pki::LabCa;
use k8s_tunnels::secret::Secret;

pub const AUTH_DOMAIN: &str = "lab.cloudflareaccess.com";
pub const TRANSFER_HOST: &str = "login.cloudflareaccess.org";
pub const APP: &str = "tcp.login.test";
pub const AUD: &str = "aud-login-0123456789";
/// A second application of the same team, with its own origin.
pub const APP_B: &str = "tcp-b.login.test";
pub const AUD_B: &str = "aud-login-b-987654321";
/// A host that no application of the team has: where hostile edges live.
pub const HOSTILE: &str = "hostile.login.test";
pub const API_HOST: &str = "api.login.test";
pub const EMAIL: &str = "ada@example.com";
pub const PASSWORD: &str = "correct horse battery staple";

/// Lifetimes the gateway gives tokens.
#[derive(Clone, Copy)]
pub struct Lifetimes {
    pub app: Duration,
    pub org: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            app: Duration::from_secs(3600),
            org: Duration::from_secs(7200),
        }
    }
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub gateway: GatewayHandle,
    pub signing: TokenIssuer,
    pub ca_path: PathBuf,
    pub ca_pem: String,
    pub inventory: PathBuf,
    ca: LabCa,
}

impl World {
    pub async fn start(lifetimes: Lifetimes) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let echo = echo_server().await;
        let ca = LabCa::new("login test CA").unwrap();
        let leaf = ca.issue(&[APP, APP_B, AUTH_DOMAIN, TRANSFER_HOST]).unwrap();
        let signing = TokenIssuer::generate().unwrap();
        let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
        config.tls = Some(TlsConfig {
            cert: TextSource::Inline(leaf.cert_pem.clone()),
            key: SecretSource::Value(Secret::new(leaf.key_pem.clone())),
        });
        let origin = Origin::Tcp {
            host: echo.ip().to_string(),
            port: echo.port(),
        };
        config.applications = vec![
            ApplicationConfig::new(APP, AUD, origin.clone()),
            ApplicationConfig::new(APP_B, AUD_B, origin),
        ];
        let mut access = AccessConfig::new(
            AUTH_DOMAIN,
            SecretSource::Value(signing.private_key_pem().clone()),
        );
        access.app_token_ttl = lifetimes.app;
        access.org_token_ttl = lifetimes.org;
        access.transfer_timeout = Duration::from_secs(2);
        access.identities.push(IdentityConfig {
            email: EMAIL.into(),
            password: SecretSource::Value(Secret::new(PASSWORD)),
        });
        config.access = Some(access);
        let gateway = Gateway::start(config).await.unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        let inventory = dir.path().join("inventory.yaml");
        std::fs::write(
            &inventory,
            format!(
                "clusters:\n- name: c1\n  cloud: aws\n  environment: test\n  server: https://{API_HOST}:6443\n  user: {{ token: x }}\n  access:\n    hostname: {APP}\n    origin: tcp\n    connect_to: \"{}\"\n    ca_file: {}\n",
                gateway.local_addr(),
                ca_path.display()
            ),
        )
        .unwrap();
        Self {
            dir,
            gateway,
            signing,
            ca_path,
            ca_pem: ca.cert_pem().to_string(),
            inventory,
            ca,
        }
    }

    /// A TLS server config for `names`, certified by the world's CA (which the clients trust).
    pub fn tls_for(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let leaf = self.ca.issue(names).unwrap();
        k8s_tunnels::tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    pub fn cluster(&self) -> Cluster {
        k8s_tunnels::discovery::file::load(&self.inventory)
            .unwrap()
            .remove(0)
    }

    pub fn cloudflared_dir(&self) -> PathBuf {
        self.dir.path().join("home").join(".cloudflared")
    }

    /// Client settings pointing every Access name at the gateway.
    pub fn settings(&self) -> AccessSettings {
        AccessSettings {
            resolve: [
                (AUTH_DOMAIN.to_string(), self.addr()),
                (TRANSFER_HOST.to_string(), self.addr()),
                (APP_B.to_string(), self.addr()),
            ]
            .into(),
            ca_file: Some(self.ca_path.clone()),
            cloudflared_dir: Some(self.cloudflared_dir()),
            ..AccessSettings::default()
        }
    }

    /// The `access:` section of config.yaml for the CLI.
    pub fn config_yaml(&self, browser: &str, extra: &str) -> String {
        format!(
            "access:\n  resolve: {{ \"{AUTH_DOMAIN}\": \"{addr}\", \"{TRANSFER_HOST}\": \"{addr}\", \"{APP_B}\": \"{addr}\" }}\n  ca_file: {ca}\n  cloudflared_dir: {cf}\n  browser: {browser:?}\n{extra}",
            addr = self.addr(),
            ca = self.ca_path.display(),
            cf = self.cloudflared_dir().display(),
        )
    }

    /// Every name the browser must reach, for resolvers.
    pub fn names(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![
            (APP, self.addr()),
            (APP_B, self.addr()),
            (AUTH_DOMAIN, self.addr()),
            (TRANSFER_HOST, self.addr()),
        ]
    }

    /// An access client with `opener`, memory-only tokens and test timings.
    pub fn client(&self, opener: Arc<dyn BrowserOpener>, timings: Timings) -> AccessClient {
        AccessClient::with_timings(
            self.settings(),
            TokenStore::memory_only("tests keep tokens in memory"),
            opener,
            timings,
        )
    }

    /// An app token for the application, signed like the gateway's.
    pub fn mint_app_token(&self, lifetime: Duration) -> Secret {
        let mut claims = Claims::for_user(AUD, EMAIL, lifetime);
        claims.iss = Some(format!("https://{AUTH_DOMAIN}"));
        self.signing.mint(&claims).unwrap()
    }
}

/// Short timings for tests: a one-second skew margin, refresh only when expired.
pub fn test_timings() -> Timings {
    Timings {
        refresh_before: Duration::ZERO,
        warn_before: Duration::from_secs(2),
        skew: Duration::from_secs(1),
        poll: k8s_tunnels::access::transfer::PollSettings {
            request_timeout: Duration::from_secs(10),
            total: Duration::from_secs(60),
        },
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
