//! The demo lab: a gateway and fake Kubernetes API servers on loopback, with the inventory,
//! certificates and tokens to reach them through real tunnels.
//!
//! The desktop app and `k8s-tunnels demo` start it when no cloud is configured, so that a
//! newcomer can switch tunnels on and run kubectl at once; the end-to-end tests and the
//! benchmarks use it as their world.

pub mod apiserver;
pub mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::dirs::write_private;
use crate::gateway::{
    AccessConfig, ApplicationConfig, Claims, Gateway, GatewayConfig, GatewayHandle, IdentityConfig,
    Origin, SecretSource, ServiceTokenConfig, TextSource, TlsConfig, TokenIssuer,
};
use crate::inventory::{Cloud, OriginMode};
use crate::secret::Secret;
use apiserver::{FakeApiConfig, FakeApiHandle, FakeApiServer};
use pki::LabCa;

/// One cluster of the lab.
#[derive(Clone, Debug)]
pub struct LabClusterSpec {
    /// Cluster name.
    pub name: String,
    /// Cloud it pretends to run in.
    pub cloud: Cloud,
    /// Environment it is filed under (`prod`, `staging`, …).
    pub environment: String,
    /// Region.
    pub region: String,
    /// How the gateway reaches its API server.
    pub origin: OriginMode,
    /// Authenticate with a service token instead of a user token.
    pub service_token: bool,
    /// Namespaces its API server lists.
    pub namespaces: Vec<String>,
}

impl LabClusterSpec {
    /// A cluster with default namespaces, a user token and the given origin mode.
    pub fn new(name: &str, cloud: Cloud, environment: &str, origin: OriginMode) -> Self {
        Self {
            name: name.to_string(),
            cloud,
            environment: environment.to_string(),
            region: match cloud {
                Cloud::Aws => "eu-west-1",
                Cloud::Gcp => "europe-west1",
                _ => "dc1",
            }
            .to_string(),
            origin,
            service_token: false,
            namespaces: ["default", "kube-system", "kube-public"]
                .iter()
                .map(|s| s.to_string())
                .chain(std::iter::once(format!("{name}-apps")))
                .collect(),
        }
    }
}

/// The auth domain the lab's Access login answers on.
pub const LAB_AUTH_DOMAIN: &str = "lab.cloudflareaccess.com";

/// The lab gateway's Access login (its `access:` section): an auth domain, the transfer
/// service and one user who can sign in.
#[derive(Clone, Debug)]
pub struct LabAccess {
    /// The auth domain ([`LAB_AUTH_DOMAIN`] by default).
    pub auth_domain: String,
    /// The transfer service's host (`login.cloudflareaccess.org` by default).
    pub transfer_host: String,
    /// The e-mail address of the user who can sign in.
    pub email: String,
    /// That user's password (random by default).
    pub password: Secret,
    /// Lifetime of application tokens the login mints.
    pub app_token_ttl: Duration,
    /// Lifetime of the organisation token.
    pub org_token_ttl: Duration,
    /// How long a transfer long-poll waits before answering 404.
    pub transfer_timeout: Duration,
    /// Also give user-token clusters a ready token file in the inventory (as without the
    /// login). Off by default: the clusters name no credential, so a client must log in.
    pub inventory_tokens: bool,
}

impl Default for LabAccess {
    fn default() -> Self {
        Self {
            auth_domain: LAB_AUTH_DOMAIN.to_owned(),
            transfer_host: crate::gateway::config::DEFAULT_TRANSFER_HOST.to_owned(),
            email: LAB_USER.to_owned(),
            password: Secret::random(24),
            app_token_ttl: crate::gateway::config::DEFAULT_APP_TOKEN_TTL,
            org_token_ttl: crate::gateway::config::DEFAULT_ORG_TOKEN_TTL,
            transfer_timeout: crate::gateway::config::DEFAULT_TRANSFER_TIMEOUT,
            inventory_tokens: false,
        }
    }
}

/// The lab's settings.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Where the inventory, CA and token files are written (created if missing).
    pub dir: PathBuf,
    /// The clusters.
    pub clusters: Vec<LabClusterSpec>,
    /// Serve the gateway over TLS (wss); plain ws otherwise.
    pub tls: bool,
    /// The gateway's ping interval.
    pub ping_interval: Duration,
    /// Play the Access login too (needs `tls`).
    pub access: Option<LabAccess>,
}

impl LabConfig {
    /// A lab of `clusters` in `dir`: TLS on, the edge's ping interval, no Access login.
    pub fn new(dir: &Path, clusters: Vec<LabClusterSpec>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            clusters,
            tls: true,
            ping_interval: Duration::from_secs(54),
            access: None,
        }
    }

    /// The same lab with the Access login on.
    pub fn with_access(mut self, access: LabAccess) -> Self {
        self.access = Some(access);
        self
    }

    /// The demo: eight clusters across three clouds and three environments, every origin mode.
    pub fn demo(dir: &Path) -> Self {
        use Cloud::*;
        use OriginMode::*;
        let mut clusters = vec![
            LabClusterSpec::new("prod-eu", Aws, "prod", Socks),
            LabClusterSpec::new("prod-us", Aws, "prod", Tcp),
            LabClusterSpec::new("staging-eu", Aws, "staging", Socks),
            LabClusterSpec::new("analytics-prod", Gcp, "prod", Socks),
            LabClusterSpec::new("ml-staging", Gcp, "staging", Tcp),
            LabClusterSpec::new("sandbox", Gcp, "dev", Socks),
            LabClusterSpec::new("factory-dc1", Onprem, "prod", Bastion),
            LabClusterSpec::new("lab-dev", Onprem, "dev", Tcp),
        ];
        clusters[1].service_token = true;
        clusters[1].region = "us-east-1".into();
        Self::new(dir, clusters)
    }
}

/// Errors starting the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A certificate could not be made.
    #[error("cannot issue lab certificates")]
    Pki(#[from] rcgen::Error),
    /// The token issuer failed.
    #[error("cannot mint lab tokens")]
    Issuer(#[from] crate::gateway::IssuerError),
    /// The gateway did not start.
    #[error("cannot start the lab gateway")]
    Gateway(#[from] crate::gateway::GatewayError),
    /// A fake API server did not start.
    #[error("cannot start a lab API server")]
    ApiServer(#[source] apiserver::FakeApiError),
    /// The Access login needs the gateway on TLS (its cookies are `Secure`).
    #[error("the lab's Access login needs `tls: true`")]
    AccessWithoutTls,
    /// A lab file could not be written.
    #[error("cannot write lab files in {}", dir.display())]
    Files {
        /// The lab directory.
        dir: PathBuf,
        /// What refused to start.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A running lab. Dropping it stops the gateway and the API servers.
pub struct Lab {
    config: LabConfig,
    gateway_config: GatewayConfig,
    gateway: Option<GatewayHandle>,
    gateway_addr: SocketAddr,
    /// Each cluster's API server (`None` while a test has it stopped) and how to start it
    /// again on the same address.
    api_servers: Vec<(Option<FakeApiHandle>, FakeApiConfig)>,
    issuer: TokenIssuer,
    inventory: PathBuf,
    ca_pem: String,
}

const LAB_AUD_PREFIX: &str = "lab-aud-";
const LAB_USER: &str = "demo@k8s-tunnels.lab";
const ACCESS_DOMAIN: &str = "access.lab";
const API_DOMAIN: &str = "k8s.lab";

impl Lab {
    /// Starts the API servers and the gateway and writes the lab's files.
    pub async fn start(config: LabConfig) -> Result<Self, LabError> {
        let lab_dir = config.dir.clone();
        let files_err = |source: Box<dyn std::error::Error + Send + Sync>| LabError::Files {
            dir: lab_dir.clone(),
            source,
        };
        if config.access.is_some() && !config.tls {
            return Err(LabError::AccessWithoutTls);
        }
        std::fs::create_dir_all(&config.dir).map_err(|e| files_err(e.into()))?;
        let ca = LabCa::new("k8s-tunnels demo lab CA")?;
        let issuer = TokenIssuer::generate()?;
        let k8s_token = Secret::random(40);

        let mut api_servers = Vec::new();
        for spec in &config.clusters {
            let api_host = format!("{}.{API_DOMAIN}", spec.name);
            let cert = ca.issue(&[&api_host, "localhost", "127.0.0.1"])?;
            let mut api_config = FakeApiConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                tls: cert,
                cluster_name: spec.name.clone(),
                namespaces: spec.namespaces.clone(),
                bearer_token: Some(k8s_token.clone()),
            };
            let server = FakeApiServer::start(api_config.clone())
                .await
                .map_err(LabError::ApiServer)?;
            // From now on it restarts on the same port (tests stop and start it).
            api_config.listen = server.local_addr();
            api_servers.push((Some(server), api_config));
        }

        let hostnames: Vec<String> = config
            .clusters
            .iter()
            .map(|c| format!("{}.{ACCESS_DOMAIN}", c.name))
            .collect();
        let mut gateway_config = GatewayConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        gateway_config.ping_interval = config.ping_interval;
        // Every client of the lab comes from loopback: one address for all of them.
        gateway_config.limits.max_connections_per_client = gateway_config.limits.max_connections;
        gateway_config.jwks = Some(TextSource::Inline(issuer.jwks_json()));
        if config.tls {
            let mut names: Vec<&str> = hostnames.iter().map(String::as_str).collect();
            if let Some(access) = &config.access {
                names.extend([access.auth_domain.as_str(), access.transfer_host.as_str()]);
            }
            let cert = ca.issue(&names)?;
            gateway_config.tls = Some(TlsConfig {
                cert: TextSource::Inline(cert.cert_pem),
                key: SecretSource::Value(Secret::new(cert.key_pem)),
            });
        }
        let service_secret = Secret::random(48);
        for ((spec, (_, server)), hostname) in
            config.clusters.iter().zip(&api_servers).zip(&hostnames)
        {
            let origin = match spec.origin {
                OriginMode::Bastion => Origin::Bastion,
                _ => Origin::Tcp {
                    host: "127.0.0.1".into(),
                    port: server.listen.port(),
                },
            };
            let mut app = ApplicationConfig::new(hostname, aud(spec), origin);
            app.socks = spec.origin == OriginMode::Socks;
            if spec.origin == OriginMode::Bastion {
                // The lab's API servers listen on loopback, under the name its kubeconfig
                // uses (`localhost`, which the API certificates cover): the opt-in lets that
                // one entry reach this host. A bastion facing the internet names an IP
                // address instead, or nothing internal at all.
                app.allow = Some(vec![format!("localhost:{}", server.listen.port())]);
                app.allow_internal = true;
            }
            if spec.service_token {
                app.service_tokens.push(ServiceTokenConfig {
                    client_id: service_client_id(spec),
                    client_secret: SecretSource::Value(service_secret.clone()),
                });
            }
            gateway_config.applications.push(app);
        }
        if let Some(access) = &config.access {
            // The lab's issuer signs the login's tokens too, so tokens from `mint_token` and
            // from a login open the same applications.
            let mut section = AccessConfig::new(
                &access.auth_domain,
                SecretSource::Value(issuer.private_key_pem().clone()),
            );
            section.transfer_host = access.transfer_host.clone();
            section.app_token_ttl = access.app_token_ttl;
            section.org_token_ttl = access.org_token_ttl;
            section.transfer_timeout = access.transfer_timeout;
            // Every client of the lab comes from loopback: one address for all of them.
            section.max_transfer_polls_per_client = section.max_transfer_polls;
            section.identities.push(IdentityConfig {
                email: access.email.clone(),
                password: SecretSource::Value(access.password.clone()),
            });
            gateway_config.access = Some(section);
        }
        let gateway = Gateway::start(gateway_config.clone()).await?;
        let gateway_addr = gateway.local_addr();
        // From now on the gateway restarts on the same port (tests stop and start it).
        gateway_config.listen = gateway_addr;

        let mut lab = Self {
            config,
            gateway_config,
            gateway: Some(gateway),
            gateway_addr,
            api_servers,
            issuer,
            inventory: PathBuf::new(),
            ca_pem: ca.cert_pem().to_owned(),
        };
        lab.inventory = lab
            .write_files(&ca, &k8s_token, &service_secret)
            .map_err(files_err)?;
        Ok(lab)
    }

    /// The inventory file describing the lab's clusters.
    pub fn inventory_path(&self) -> &Path {
        &self.inventory
    }

    /// The gateway's address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// The lab's clusters.
    pub fn clusters(&self) -> &[LabClusterSpec] {
        &self.config.clusters
    }

    /// The fake API server of the `i`-th cluster, unless it is stopped.
    pub fn api_server(&self, i: usize) -> Option<&FakeApiHandle> {
        self.api_servers.get(i)?.0.as_ref()
    }

    /// Stops the `i`-th cluster's API server: its edge stays up, the cluster goes away.
    pub async fn stop_api_server(&mut self, i: usize) {
        if let Some(server) = self.api_servers.get_mut(i).and_then(|(s, _)| s.take()) {
            server.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// Starts the `i`-th cluster's API server again on the same address.
    pub async fn start_api_server(&mut self, i: usize) -> Result<(), LabError> {
        if let Some((slot @ None, config)) = self.api_servers.get_mut(i) {
            *slot = Some(
                FakeApiServer::start(config.clone())
                    .await
                    .map_err(LabError::ApiServer)?,
            );
        }
        Ok(())
    }

    /// The lab CA's certificate (PEM): it signs the gateway's certificate, which covers every
    /// application host and, with the Access login on, the auth domain and transfer host.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The lab CA's certificate file.
    pub fn ca_path(&self) -> PathBuf {
        self.config.dir.join("lab-ca.pem")
    }

    /// The Access hostname of cluster `name` (whether or not it is in the lab).
    pub fn access_hostname(&self, name: &str) -> String {
        format!("{name}.{ACCESS_DOMAIN}")
    }

    /// The AUD tag of cluster `name`'s Access application, if it is in the lab.
    pub fn aud(&self, name: &str) -> Option<String> {
        self.config
            .clusters
            .iter()
            .find(|c| c.name == name)
            .map(aud)
    }

    /// The Access login's settings, when it is on.
    pub fn access(&self) -> Option<&LabAccess> {
        self.config.access.as_ref()
    }

    /// The Access login's auth domain, when it is on.
    pub fn auth_domain(&self) -> Option<&str> {
        self.access().map(|a| a.auth_domain.as_str())
    }

    /// The transfer service's URL (`https://<transfer host>`), when the login is on. Like
    /// every lab name it resolves to [`Lab::gateway_addr`].
    pub fn transfer_service_url(&self) -> Option<String> {
        self.access()
            .map(|a| format!("https://{}", a.transfer_host))
    }

    /// Every host name the gateway answers for (applications, auth domain, transfer host):
    /// map each to [`Lab::gateway_addr`] (`resolve` in the client's config, like curl's).
    pub fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .config
            .clusters
            .iter()
            .map(|c| self.access_hostname(&c.name))
            .collect();
        if let Some(access) = self.access() {
            names.extend([access.auth_domain.clone(), access.transfer_host.clone()]);
        }
        names
    }

    /// The e-mail address and password of the user who can sign in, when the login is on.
    pub fn login_identity(&self) -> Option<(&str, &Secret)> {
        self.access().map(|a| (a.email.as_str(), &a.password))
    }

    /// The file holding the lab user's Access token.
    pub fn token_path(&self) -> PathBuf {
        self.config.dir.join("access-token")
    }

    /// Mints a token for the lab user valid for every lab application; `lifetime` may be in
    /// the past to make an expired token.
    pub fn mint_token(&self, lifetime: Duration, expired: bool) -> Result<Secret, LabError> {
        let email = self.access().map_or(LAB_USER, |a| a.email.as_str());
        let mut claims = Claims::for_user(LAB_AUD_PREFIX, email, lifetime);
        claims.aud = self.config.clusters.iter().map(aud).collect();
        if expired {
            claims.exp = claims.iat.saturating_sub(lifetime.as_secs().max(120));
        }
        Ok(self.issuer.mint(&claims)?)
    }

    /// Stops the gateway (tunnels see the edge go away).
    pub async fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// Starts the gateway again on the same address.
    pub async fn start_gateway(&mut self) -> Result<(), LabError> {
        if self.gateway.is_none() {
            self.gateway = Some(Gateway::start(self.gateway_config.clone()).await?);
        }
        Ok(())
    }

    fn write_files(
        &self,
        ca: &LabCa,
        k8s_token: &Secret,
        service_secret: &Secret,
    ) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
        let dir = &self.config.dir;
        let ca_path = dir.join("lab-ca.pem");
        std::fs::write(&ca_path, ca.cert_pem())?;
        let token = self.mint_token(Duration::from_secs(12 * 3600), false)?;
        write_private(&self.token_path(), token.expose().as_bytes())?;
        let k8s_token_path = dir.join("kubernetes-token");
        write_private(&k8s_token_path, k8s_token.expose().as_bytes())?;
        let service_secret_path = dir.join("service-token-secret");
        write_private(&service_secret_path, service_secret.expose().as_bytes())?;

        let clusters: Vec<serde_json::Value> = self
            .config
            .clusters
            .iter()
            .zip(&self.api_servers)
            .map(|(spec, (_, server))| {
                let server_url = match spec.origin {
                    // The bastion edge dials the destination itself, so it must resolve.
                    OriginMode::Bastion => {
                        format!("https://localhost:{}", server.listen.port())
                    }
                    _ => format!("https://{}.{API_DOMAIN}:6443", spec.name),
                };
                let login_only = self.access().is_some_and(|a| !a.inventory_tokens);
                let auth = if spec.service_token {
                    json!({"service_token": {
                        "client_id": service_client_id(spec),
                        "client_secret": {"file": service_secret_path},
                    }})
                } else if login_only {
                    // No credential: the client finds the login through the edge.
                    json!({})
                } else {
                    json!({"token": {"file": self.token_path()}})
                };
                let mut access = json!({
                    "hostname": format!("{}.{ACCESS_DOMAIN}", spec.name),
                    "origin": spec.origin.to_string(),
                    "connect_to": self.gateway_addr.to_string(),
                });
                if self.config.tls {
                    access["ca_file"] = json!(ca_path);
                } else {
                    // Plain WebSocket, for benchmarks: still routed by hostname, dialled on
                    // loopback through connect_to.
                    access["hostname"] = json!(format!("ws://{}.{ACCESS_DOMAIN}", spec.name));
                }
                if let (Some(access), Some(auth)) = (access.as_object_mut(), auth.as_object()) {
                    access.extend(auth.clone());
                }
                json!({
                    "name": spec.name,
                    "cloud": spec.cloud.to_string(),
                    "environment": spec.environment,
                    "region": spec.region,
                    "server": server_url,
                    "ca_file": ca_path,
                    "access": access,
                    "user": {"tokenFile": k8s_token_path},
                })
            })
            .collect();
        let inventory = json!({ "clusters": clusters });
        let path = dir.join("inventory.yaml");
        let text = format!(
            "# The k8s-tunnels demo lab: every cluster is a fake API server on this machine,\n\
             # reached through the lab gateway at {}.\n{}",
            self.gateway_addr,
            serde_norway::to_string(&inventory)?
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

fn aud(spec: &LabClusterSpec) -> String {
    format!("{LAB_AUD_PREFIX}{}", spec.name)
}

fn service_client_id(spec: &LabClusterSpec) -> String {
    format!("{}.lab-service.access", spec.name)
}
