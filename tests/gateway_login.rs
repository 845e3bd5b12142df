//! The gateway playing the Access login, driven over real TLS by plain HTTP clients (reqwest,
//! once step by step with no redirects followed, once as a browser that follows redirects and
//! keeps cookies) and by a WebSocket client that opens real tunnel streams to an origin.
#![allow(clippy::unwrap_used)]

#[path = "support/echo.rs"]
mod echo;
mod log_support;
mod ws_peer;
use echo::echo_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use crypto_box::aead::{Aead, OsRng};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use k8s_tunnels::gateway::{
    AccessConfig, ApplicationConfig, Gateway, GatewayConfig, GatewayHandle, IdentityConfig, Origin,
    SecretSource, ServiceTokenConfig, TextSource, TlsConfig, TokenIssuer,
};
use k8s_tunnels::lab::pki::LabCa;
use k8s_tunnels::secret::Secret;
use log_support::CapturedLog;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use ws_peer::{PeerBytes, peer_config};

const AUTH_DOMAIN: &str = "lab.cloudflareaccess.com";
const TRANSFER_HOST: &str = "login.cloudflareaccess.org";
const APP: &str = "tcp.login.test";
const AUD: &str = "aud-login-0123456789";
const OTHER_APP: &str = "other.login.test";
const OTHER_AUD: &str = "aud-other-9876543210";
const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";
const SERVICE_ID: &str = "robot.access";
const SERVICE_SECRET: &str = "s3rvice-secret-never-logged";

/// Lifetimes, timeouts and limits a test may change.
#[derive(Clone, Copy)]
struct Timings {
    app_ttl: Duration,
    org_ttl: Duration,
    transfer_timeout: Duration,
    max_transfer_polls: usize,
    max_transfer_polls_per_client: usize,
    sign_in_failures: u32,
    sign_in_window: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            app_ttl: Duration::from_secs(3600),
            org_ttl: Duration::from_secs(7200),
            transfer_timeout: Duration::from_secs(2),
            max_transfer_polls: k8s_tunnels::gateway::config::DEFAULT_MAX_TRANSFER_POLLS,
            max_transfer_polls_per_client:
                k8s_tunnels::gateway::config::DEFAULT_MAX_TRANSFER_POLLS_PER_CLIENT,
            sign_in_failures: k8s_tunnels::gateway::config::DEFAULT_SIGN_IN_FAILURES,
            sign_in_window: k8s_tunnels::gateway::config::DEFAULT_SIGN_IN_WINDOW,
        }
    }
}

/// The gateway with an `access:` section, and what a client needs to reach it.
struct World {
    ca: LabCa,
    gateway: GatewayHandle,
}

impl World {
    async fn start(timings: Timings) -> Self {
        let echo = echo_server().await;
        let ca = LabCa::new("login test CA").unwrap();
        let leaf = ca
            .issue(&[APP, OTHER_APP, AUTH_DOMAIN, TRANSFER_HOST])
            .unwrap();
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
        // No key set of its own: the access section's key opens it.
        let mut app = ApplicationConfig::new(APP, AUD, origin.clone());
        app.service_tokens.push(ServiceTokenConfig {
            client_id: SERVICE_ID.into(),
            client_secret: SecretSource::Value(Secret::new(SERVICE_SECRET)),
        });
        // Its own key set too: the access key is added to it.
        let mut other = ApplicationConfig::new(OTHER_APP, OTHER_AUD, origin);
        other.jwks = Some(TextSource::Inline(
            TokenIssuer::generate().unwrap().jwks_json(),
        ));
        config.applications = vec![app, other];
        let mut access = AccessConfig::new(
            AUTH_DOMAIN,
            SecretSource::Value(signing.private_key_pem().clone()),
        );
        access.app_token_ttl = timings.app_ttl;
        access.org_token_ttl = timings.org_ttl;
        access.transfer_timeout = timings.transfer_timeout;
        access.max_transfer_polls = timings.max_transfer_polls;
        access.max_transfer_polls_per_client = timings.max_transfer_polls_per_client;
        access.sign_in_failures = timings.sign_in_failures;
        access.sign_in_window = timings.sign_in_window;
        access.identities.push(IdentityConfig {
            email: EMAIL.into(),
            password: SecretSource::Value(Secret::new(PASSWORD)),
        });
        config.access = Some(access);
        let gateway = Gateway::start(config).await.unwrap();
        Self { ca, gateway }
    }

    fn port(&self) -> u16 {
        self.gateway.local_addr().port()
    }

    /// `https://<host>:<port><path>`: every name maps to the gateway's loopback address.
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port())
    }

    /// A client without redirects or cookies whose connections come from `source`, a loopback
    /// address of its own (another client address to the gateway's limits).
    fn stepper_from(&self, source: &str) -> reqwest::Client {
        self.client_builder()
            .redirect(Policy::none())
            .local_address(source.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        let tls = k8s_tunnels::tls::client_config(Some(self.ca.cert_pem().as_bytes())).unwrap();
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(Duration::from_secs(20));
        for host in [APP, OTHER_APP, AUTH_DOMAIN, TRANSFER_HOST] {
            builder = builder.resolve(host, self.gateway.local_addr());
        }
        builder
    }

    /// A client that follows no redirect and keeps no cookie: every step is visible.
    fn stepper(&self) -> reqwest::Client {
        self.client_builder()
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    /// A browser: follows redirects, keeps cookies per host.
    fn browser(&self) -> reqwest::Client {
        self.client_builder()
            .redirect(Policy::limited(10))
            .cookie_store(true)
            .build()
            .unwrap()
    }

    async fn jwks(&self, host: &str) -> JwkSet {
        self.stepper()
            .get(self.url(host, "/cdn-cgi/access/certs"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Verifies `token` against the auth domain's JWKS, checking `aud`.
    async fn verify(&self, token: &str, aud: &str) -> (jsonwebtoken::Header, Value) {
        let set = self.jwks(AUTH_DOMAIN).await;
        let header = jsonwebtoken::decode_header(token).unwrap();
        let jwk = set
            .find(header.kid.as_deref().unwrap())
            .expect("kid in JWKS");
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[aud]);
        validation.set_required_spec_claims(&["aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap();
        (data.header, data.claims)
    }

    /// Opens a tunnel stream to `host` with `token` and echoes a payload through it.
    async fn tunnel_echo(&self, host: &str, token: &str) -> Result<(), http::StatusCode> {
        let mut request = format!("wss://{host}:{}/", self.port())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("cf-access-token", token.parse().unwrap());
        let tcp = TcpStream::connect(self.gateway.local_addr()).await.unwrap();
        let tls = k8s_tunnels::tls::client_config(Some(self.ca.cert_pem().as_bytes())).unwrap();
        let ws = match tokio_tungstenite::client_async_tls_with_config(
            request,
            tcp,
            Some(peer_config()),
            Some(Connector::Rustls(tls)),
        )
        .await
        {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(response.status());
            }
            Err(e) => panic!("upgrade failed: {e}"),
        };
        let mut stream = PeerBytes::new(ws);
        stream.write_all(b"through the tunnel").await.unwrap();
        stream.flush().await.unwrap();
        let mut back = [0u8; 18];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"through the tunnel");
        Ok(())
    }
}

fn location(response: &reqwest::Response) -> url::Url {
    let text = response.headers()["location"].to_str().unwrap();
    response.url().join(text).unwrap()
}

fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// The `CF_Authorization` value and attributes of a response's `Set-Cookie`.
fn set_cookie(response: &reqwest::Response) -> (String, String) {
    let header = response
        .headers()
        .get("set-cookie")
        .expect("a Set-Cookie")
        .to_str()
        .unwrap();
    let (pair, attributes) = header.split_once(';').unwrap();
    let value = pair.strip_prefix("CF_Authorization=").expect(header);
    (value.to_owned(), attributes.to_owned())
}

/// The sign-in form's `action`, resolved against the page's URL (HTML entities undone).
fn form_action(page_url: &url::Url, html: &str) -> url::Url {
    let start = html.find("action=\"").expect("a form") + "action=\"".len();
    let end = start + html[start..].find('"').unwrap();
    let action = html[start..end]
        .replace("&amp;", "&")
        .replace("&quot;", "\"");
    page_url.join(&action).unwrap()
}

/// The sign-in form's fields as a browser posts them: the hidden form token the page holds, the
/// e-mail address and the password.
fn form(page: &str, email: &str, password: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair(CSRF_FIELD, &hidden_value(page, CSRF_FIELD))
        .append_pair("email", email)
        .append_pair("password", password)
        .finish()
}

const CSRF_FIELD: &str = "csrf";
const CSRF_COOKIE: &str = "__Host-CF_Login_CSRF";

/// The value of the page's hidden input `name`.
fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("the hidden input") + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_owned()
}

/// The sign-in page as a client without a cookie store gets it: the form's action, the page
/// and the `Cookie` header the form token's cookie makes.
struct SignInForm {
    action: url::Url,
    html: String,
    cookie: String,
}

impl SignInForm {
    async fn get(client: &reqwest::Client, url: &str) -> Self {
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|c| c.to_str().ok())
            .find(|c| c.starts_with(&format!("{CSRF_COOKIE}=")))
            .expect("the form token's cookie")
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let page_url = response.url().clone();
        let html = response.text().await.unwrap();
        Self {
            action: form_action(&page_url, &html),
            html,
            cookie,
        }
    }

    /// Posts the form, filled in, with its cookie.
    async fn post(
        &self,
        client: &reqwest::Client,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        client
            .post(self.action.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &self.cookie)
            .body(form(&self.html, email, password))
            .send()
            .await
            .unwrap()
    }
}

/// Signs in on the auth domain step by step: returns the org token and the redirect to
/// `/cdn-cgi/access/authorized`.
async fn sign_in(world: &World, client: &reqwest::Client) -> (String, url::Url) {
    let login = world.url(
        AUTH_DOMAIN,
        &format!("/cdn-cgi/access/login/{APP}?kid={AUD}&redirect_url=%2F"),
    );
    let response = SignInForm::get(client, &login)
        .await
        .post(client, EMAIL, PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let (org, attributes) = set_cookie(&response);
    for attribute in ["Secure", "HttpOnly", "Path=/", "Expires=", "SameSite=Lax"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    (org, location(&response))
}

#[tokio::test]
async fn the_metadata_answer_is_signed_by_the_auth_domain_key() {
    let world = World::start(Timings::default()).await;
    let client = world.stepper();
    let response = client
        .head(world.url(APP, "/"))
        .header("cf-access-metadata-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let jwt = response.headers()["cf-access-metadata"].to_str().unwrap();
    let (header, claims) = world.verify(jwt, AUD).await;
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(claims["type"], "match");
    assert_eq!(claims["hostname"], APP);
    assert_eq!(claims["auth_domain"], AUTH_DOMAIN);
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["app_hostname"], APP);
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(jsonwebtoken::get_current_timestamp()) < 60);

    // The application's own JWKS holds the auth domain's key next to its own.
    let auth_kid = header.kid.unwrap();
    let other = world.jwks(OTHER_APP).await;
    assert!(other.find(&auth_kid).is_some());
    assert_eq!(other.keys.len(), 2);
    assert!(!serde_json::to_string(&other).unwrap().contains("\"d\""));

    // Without the header, an unauthenticated HEAD gets the login redirect (the older form).
    let response = client.head(world.url(APP, "/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(response.headers().get("cf-access-metadata").is_none());
}

#[tokio::test]
async fn a_request_without_a_token_is_redirected_to_the_auth_domain() {
    let world = World::start(Timings::default()).await;
    let client = world.stepper();
    let response = client
        .get(world.url(APP, "/some/path?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["cf-access-domain"], APP);
    let url = location(&response);
    assert_eq!(url.scheme(), "https");
    assert_eq!(url.host_str(), Some(AUTH_DOMAIN));
    assert_eq!(url.port(), Some(world.port()), "the client's port is kept");
    assert_eq!(url.path(), format!("/cdn-cgi/access/login/{APP}"));
    let q = query(&url);
    assert_eq!(q["kid"], AUD);
    assert_eq!(q["redirect_url"], "/some/path?x=1");
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .contains("redirect_url=%2Fsome%2Fpath%3Fx%3D1")
    );

    // The WebSocket upgrade gets the same redirect; a rejected service token a 403 that says so.
    assert_eq!(
        world.tunnel_echo(APP, "not.a.jwt").await,
        Err(http::StatusCode::FOUND)
    );
    let response = client
        .get(world.url(APP, "/"))
        .header("cf-access-client-id", SERVICE_ID)
        .header("cf-access-client-secret", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("service token rejected")
    );
}

#[tokio::test]
async fn the_sign_in_page_checks_the_password_and_sets_the_org_cookie() {
    let world = World::start(Timings::default()).await;
    let client = world.stepper();
    let login = world.url(
        AUTH_DOMAIN,
        &format!("/cdn-cgi/access/login/{APP}?kid={AUD}&redirect_url=%2Fback"),
    );
    let page = SignInForm::get(&client, &login).await;
    assert!(page.html.contains("type=\"password\""), "{}", page.html);
    let action = page.action.clone();
    assert_eq!(action.host_str(), Some(AUTH_DOMAIN));
    assert_eq!(action.path(), format!("/cdn-cgi/access/login/{APP}"));
    assert_eq!(query(&action)["redirect_url"], "/back");

    // Wrong password, unknown user: 401 with the form again, no cookie.
    for (email, password) in [(EMAIL, "wrong"), ("eve@example.com", PASSWORD)] {
        let response = page.post(&client, email, password).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get("set-cookie").is_none());
        let html = response.text().await.unwrap();
        assert!(html.contains("Wrong e-mail address or password"), "{html}");
        assert!(html.contains("<form"), "{html}");
    }

    // The right one: the org cookie, and on to the application with a fresh app token.
    let response = page.post(&client, "Ada@Example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let (org, attributes) = set_cookie(&response);
    for attribute in ["Secure", "HttpOnly", "Path=/", "Expires=", "SameSite=Lax"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    let (org_header, org_claims) = world.verify(&org, AUTH_DOMAIN).await;
    assert_eq!(org_claims["type"], "org");
    assert_eq!(org_claims["email"], EMAIL);
    assert_eq!(org_claims["iss"], format!("https://{AUTH_DOMAIN}"));
    assert!(org_header.kid.is_some());
    let next = location(&response);
    assert_eq!(next.host_str(), Some(APP));
    assert_eq!(next.port(), Some(world.port()));
    assert_eq!(next.path(), "/cdn-cgi/access/authorized");
    let q = query(&next);
    assert_eq!(q["redirect_url"], "/back");
    let (_, app_claims) = world.verify(&q["token"], AUD).await;
    assert_eq!(app_claims["type"], "app");
    assert_eq!(app_claims["aud"], serde_json::json!([AUD]));
    assert_eq!(app_claims["email"], EMAIL);
    assert_eq!(
        app_claims["exp"].as_u64().unwrap() - app_claims["iat"].as_u64().unwrap(),
        3600
    );

    // The org token opens no application.
    assert_eq!(
        world.tunnel_echo(APP, &org).await,
        Err(http::StatusCode::FOUND)
    );
}

#[tokio::test]
async fn the_org_cookie_buys_an_app_token_silently_through_authorized() {
    let world = World::start(Timings::default()).await;
    let client = world.stepper();
    let (org, _) = sign_in(&world, &client).await;

    // cloudflared's exchange: HEAD the app, follow to the login with the org cookie, stop after
    // /cdn-cgi/access/authorized and take the cookie it sets.
    let response = client.head(world.url(APP, "/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let login = location(&response);
    let response = client
        .head(login)
        .header("cookie", format!("CF_Authorization={org}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "no sign-in page");
    let authorized = location(&response);
    assert_eq!(authorized.path(), "/cdn-cgi/access/authorized");
    let response = client.head(authorized).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], "/");
    let (app_token, attributes) = set_cookie(&response);
    for attribute in ["Secure", "HttpOnly", "Path=/", "Expires=", "SameSite=Lax"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    world.tunnel_echo(APP, &app_token).await.unwrap();

    // The app token is for this application only; /authorized refuses another's token, a
    // forged one, and keeps its redirects on the application.
    assert_eq!(
        world.tunnel_echo(OTHER_APP, &app_token).await,
        Err(http::StatusCode::FOUND)
    );
    let token = url::form_urlencoded::byte_serialize(app_token.as_bytes()).collect::<String>();
    let response = client
        .get(world.url(
            OTHER_APP,
            &format!("/cdn-cgi/access/authorized?token={token}&redirect_url=%2F"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = client
        .get(world.url(
            APP,
            &format!("/cdn-cgi/access/authorized?token={token}&redirect_url=https%3A%2F%2Fevil.example%2F"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], "/");
    let forged = TokenIssuer::generate()
        .unwrap()
        .mint(&k8s_tunnels::gateway::Claims::for_user(
            AUD,
            EMAIL,
            Duration::from_secs(60),
        ))
        .unwrap();
    let response = client
        .get(world.url(
            APP,
            &format!("/cdn-cgi/access/authorized?token={}", forged.expose()),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_org_cookie_shows_the_sign_in_page_again() {
    let world = World::start(Timings {
        org_ttl: Duration::from_secs(1),
        ..Timings::default()
    })
    .await;
    let client = world.stepper();
    let (org, _) = sign_in(&world, &client).await;
    let login = world.url(
        AUTH_DOMAIN,
        &format!("/cdn-cgi/access/login/{APP}?kid={AUD}&redirect_url=%2F"),
    );
    let with_cookie = || {
        client
            .get(&login)
            .header("cookie", format!("CF_Authorization={org}"))
            .send()
    };
    assert_eq!(with_cookie().await.unwrap().status(), StatusCode::FOUND);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = with_cookie().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("type=\"password\""));
}

#[tokio::test]
async fn a_transfer_nobody_deposits_for_times_out_with_404() {
    let world = World::start(Timings {
        transfer_timeout: Duration::from_secs(1),
        ..Timings::default()
    })
    .await;
    let key = crypto_box::SecretKey::generate(&mut OsRng);
    let public = URL_SAFE.encode(key.public_key().as_bytes());
    let started = Instant::now();
    let response = world
        .stepper()
        .get(world.url(TRANSFER_HOST, &format!("/transfer/{public}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

/// The whole browser transfer, as `cloudflared access login` runs it: a key pair, the cli URL
/// opened in a browser that signs in, the long-poll, the decryption; then both tokens used.
#[tokio::test(flavor = "current_thread")]
async fn the_browser_transfer_hands_both_tokens_to_the_client_and_logs_no_secret() {
    let (captured, _guard) = CapturedLog::start();

    let world = World::start(Timings {
        transfer_timeout: Duration::from_secs(4),
        ..Timings::default()
    })
    .await;
    let client_key = crypto_box::SecretKey::generate(&mut OsRng);
    let public = URL_SAFE.encode(client_key.public_key().as_bytes());
    assert!(public.ends_with('='), "padded base64url, as cloudflared");

    // The client long-polls before the user has even seen the page.
    let poller = world.stepper();
    let transfer_url = world.url(TRANSFER_HOST, &format!("/transfer/{public}"));
    let poll = tokio::spawn({
        let (poller, url) = (poller.clone(), transfer_url.clone());
        async move { poller.get(url).send().await.unwrap() }
    });

    // The URL cloudflared opens (token/transfer.go buildRequestURL).
    let mut back = url::Url::parse(&world.url(APP, "/")).unwrap();
    back.query_pairs_mut()
        .append_pair("aud", AUD)
        .append_pair("token", &public);
    let mut cli = url::Url::parse(&world.url(APP, "/cdn-cgi/access/cli")).unwrap();
    cli.query_pairs_mut()
        .append_pair("aud", AUD)
        .append_pair("edge_token_transfer", "true")
        .append_pair("redirect_url", back.as_str())
        .append_pair("send_org_token", "true")
        .append_pair("token", &public);

    // The browser: not signed in, so it lands on the auth domain's sign-in page.
    let browser = world.browser();
    let response = browser.get(cli.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.url().host_str(), Some(AUTH_DOMAIN));
    let page_url = response.url().clone();
    let html = response.text().await.unwrap();
    let action = form_action(&page_url, &html);
    let response = browser
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&html, EMAIL, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.url().host_str(), Some(APP));
    assert_eq!(response.url().path(), "/cdn-cgi/access/cli");
    // Signed in, the browser is asked first: nothing is deposited on a GET.
    let confirm_url = response.url().clone();
    let html = response.text().await.unwrap();
    assert!(
        html.contains("id=\"allow\"") && html.contains(EMAIL),
        "{html}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "tokens were handed out on a GET");
    // Another site posting the form is refused.
    let action = form_action(&confirm_url, &html);
    let response = browser
        .post(action.clone())
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(!poll.is_finished(), "tokens went to a cross-site post");
    // The user allows it, ticking "keep signed in" too: the form posts back from the page's
    // own origin.
    assert!(html.contains("name=\"send_org_token\""), "{html}");
    let response = browser
        .post(action)
        .header("origin", world.url(APP, "").trim_end_matches('/'))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("send_org_token=true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("you can close this tab"), "{html}");

    // The long-poll returns the sealed tokens.
    let response = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let service_key = response.headers()["service-public-key"]
        .to_str()
        .unwrap()
        .to_owned();
    let sealed = STANDARD.decode(response.text().await.unwrap()).unwrap();
    let service_key: [u8; 32] = URL_SAFE.decode(service_key).unwrap().try_into().unwrap();
    let opener = crypto_box::SalsaBox::new(&crypto_box::PublicKey::from(service_key), &client_key);
    let (nonce, sealed) = sealed.split_at(24);
    let plain = opener
        .decrypt(crypto_box::Nonce::from_slice(nonce), sealed)
        .expect("the box opens with the client's key");
    let tokens: Value = serde_json::from_slice(&plain).unwrap();
    let app_token = tokens["app_token"].as_str().unwrap().to_owned();
    let org_token = tokens["org_token"].as_str().unwrap().to_owned();

    // The app token opens a real stream; the org token buys another app token silently.
    world.tunnel_echo(APP, &app_token).await.unwrap();
    let response = poller
        .get(world.url(
            AUTH_DOMAIN,
            &format!("/cdn-cgi/access/login/{OTHER_APP}?kid={OTHER_AUD}&redirect_url=%2F"),
        ))
        .header("cookie", format!("CF_Authorization={org_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let other_token = query(&location(&response))["token"].clone();
    world.tunnel_echo(OTHER_APP, &other_token).await.unwrap();

    // The deposit was served once: polling again waits and gets 404.
    let again = tokio::time::timeout(Duration::from_secs(15), poller.get(&transfer_url).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    // Signed in already (app cookie in the browser): a second login needs no sign-in page, only
    // the confirmation (here posted without an Origin, as non-browser clients do).
    let second_key = crypto_box::SecretKey::generate(&mut OsRng);
    let second = URL_SAFE.encode(second_key.public_key().as_bytes());
    let mut cli2 = cli.clone();
    cli2.query_pairs_mut().clear();
    cli2.query_pairs_mut()
        .append_pair("aud", AUD)
        .append_pair("send_org_token", "false")
        .append_pair("token", &second);
    let response = browser.get(cli2).send().await.unwrap();
    assert_eq!(response.url().host_str(), Some(APP), "no sign-in page");
    let confirm_url = response.url().clone();
    let html = response.text().await.unwrap();
    assert!(html.contains("id=\"allow\""), "{html}");
    let response = browser
        .post(form_action(&confirm_url, &html))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = poller
        .get(world.url(TRANSFER_HOST, &format!("/transfer/{second}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Nothing secret reached the log, though the lines name who signed in.
    tokio::task::yield_now().await;
    let log = captured.text();
    assert!(log.contains(EMAIL), "{log}");
    for secret in [
        app_token.as_str(),
        org_token.as_str(),
        other_token.as_str(),
        PASSWORD,
    ] {
        assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    }
    for token in [&app_token, &org_token] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !log.contains(signature),
            "a token signature in the log:\n{log}"
        );
    }
}

/// One browser sign-in for a fresh client key through `/cdn-cgi/access/cli` (the link asking for
/// the org token when `ask_org`), the user allowing it with "keep signed in" ticked or not;
/// returns the consent page's HTML and the tokens the client's long-poll receives.
async fn consent(
    world: &World,
    browser: &reqwest::Client,
    ask_org: bool,
    tick: bool,
) -> (String, String, Value) {
    let key = crypto_box::SecretKey::generate(&mut OsRng);
    let public = URL_SAFE.encode(key.public_key().as_bytes());
    let mut cli = url::Url::parse(&world.url(APP, "/cdn-cgi/access/cli")).unwrap();
    cli.query_pairs_mut()
        .append_pair("aud", AUD)
        .append_pair("send_org_token", if ask_org { "true" } else { "false" })
        .append_pair("token", &public);
    let mut response = browser.get(cli).send().await.unwrap();
    if response.url().host_str() == Some(AUTH_DOMAIN) {
        let page = response.url().clone();
        let html = response.text().await.unwrap();
        response = browser
            .post(form_action(&page, &html))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&html, EMAIL, PASSWORD))
            .send()
            .await
            .unwrap();
    }
    let confirm_url = response.url().clone();
    let html = response.text().await.unwrap();
    let body = if tick { "send_org_token=true" } else { "" };
    let done = browser
        .post(form_action(&confirm_url, &html))
        .header("origin", world.url(APP, "").trim_end_matches('/'))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let deposit = world
        .stepper()
        .get(world.url(TRANSFER_HOST, &format!("/transfer/{public}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deposit.status(), StatusCode::OK);
    let service_key: [u8; 32] = URL_SAFE
        .decode(deposit.headers()["service-public-key"].to_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sealed = STANDARD.decode(deposit.text().await.unwrap()).unwrap();
    let (nonce, sealed) = sealed.split_at(24);
    let plain = crypto_box::SalsaBox::new(&crypto_box::PublicKey::from(service_key), &key)
        .decrypt(crypto_box::Nonce::from_slice(nonce), sealed)
        .unwrap();
    (html, public, serde_json::from_slice(&plain).unwrap())
}

/// The consent page names the application, the account and the code of the key it
/// authorises, and hands over the team session (org token) only when the user ticks it —
/// whatever the link asked for.
#[tokio::test]
async fn the_consent_page_names_the_client_key_and_keeps_the_session_unless_asked() {
    let world = World::start(Timings::default()).await;
    let browser = world.browser();
    let (html, public, tokens) = consent(&world, &browser, true, false).await;
    let code = k8s_tunnels::access::transfer::key_code(&public);
    assert_eq!(code.len(), 19, "{code}");
    assert!(
        html.contains(&format!("<code id=\"code\">{code}</code>")),
        "{html}"
    );
    assert!(
        html.contains(&format!("<b id=\"application\">{APP}</b>")),
        "{html}"
    );
    assert!(html.contains(EMAIL), "{html}");
    assert!(
        html.contains("name=\"send_org_token\""),
        "the session is offered: {html}"
    );
    assert!(
        !html.contains("checked"),
        "and not ticked for the user: {html}"
    );
    assert!(tokens["app_token"].is_string(), "{tokens}");
    assert!(
        tokens["org_token"].is_null(),
        "unticked: no session: {tokens}"
    );

    // The link did not ask: no choice on the page, and a posted field does not count.
    let (html, _, tokens) = consent(&world, &browser, false, true).await;
    assert!(!html.contains("name=\"send_org_token\""), "{html}");
    assert!(tokens["org_token"].is_null(), "{tokens}");

    // Asked and ticked: the session goes too.
    let (_, _, tokens) = consent(&world, &browser, true, true).await;
    assert!(tokens["org_token"].is_string(), "{tokens}");
}

/// The lab with its Access login on: the names it hands a client all reach the gateway, the
/// login signs its user in, the minted token opens a cluster's tunnel, and the inventory's
/// user clusters carry no credential, so a client has to log in.
#[tokio::test]
async fn the_lab_turns_the_login_on() {
    use k8s_tunnels::inventory::{AccessAuth, Cloud, OriginMode};
    use k8s_tunnels::lab::{LAB_AUTH_DOMAIN, Lab, LabAccess, LabClusterSpec, LabConfig};

    let dir = tempfile::tempdir().unwrap();
    let mut robot = LabClusterSpec::new("robot", Cloud::Aws, "test", OriginMode::Tcp);
    robot.service_token = true;
    let clusters = vec![
        LabClusterSpec::new("alpha", Cloud::Aws, "test", OriginMode::Tcp),
        robot,
    ];
    let lab = Lab::start(LabConfig::new(dir.path(), clusters).with_access(LabAccess::default()))
        .await
        .unwrap();
    assert_eq!(lab.auth_domain(), Some(LAB_AUTH_DOMAIN));
    assert_eq!(
        lab.transfer_service_url().as_deref(),
        Some("https://login.cloudflareaccess.org")
    );
    let host = lab.access_hostname("alpha");
    let aud = lab.aud("alpha").unwrap();
    let (email, password) = lab.login_identity().unwrap();
    assert_eq!(
        std::fs::read_to_string(lab.ca_path()).unwrap(),
        lab.ca_pem()
    );

    let tls = k8s_tunnels::tls::client_config(Some(lab.ca_pem().as_bytes())).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .redirect(Policy::none());
    for name in lab.host_names() {
        builder = builder.resolve(&name, lab.gateway_addr());
    }
    let client = builder.build().unwrap();
    let port = lab.gateway_addr().port();

    let response = client
        .head(format!("https://{host}:{port}/"))
        .header("cf-access-metadata-request", "true")
        .send()
        .await
        .unwrap();
    let metadata = response.headers()["cf-access-metadata"].to_str().unwrap();
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(metadata)
        .unwrap()
        .claims;
    assert_eq!(claims["aud"], aud);
    assert_eq!(claims["auth_domain"], LAB_AUTH_DOMAIN);

    let response = SignInForm::get(
        &client,
        &format!(
            "https://{LAB_AUTH_DOMAIN}:{port}/cdn-cgi/access/login/{host}?kid={aud}&redirect_url=%2F"
        ),
    )
    .await
    .post(&client, email, password.expose())
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let token = query(&location(&response))["token"].clone();

    // The token opens alpha's tunnel through to its (fake) API server.
    let mut request = format!("wss://{host}:{port}/")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cf-access-token", token.parse().unwrap());
    let tcp = TcpStream::connect(lab.gateway_addr()).await.unwrap();
    tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        Some(peer_config()),
        Some(Connector::Rustls(tls)),
    )
    .await
    .expect("the login's token opens the tunnel");

    let clusters = k8s_tunnels::discovery::file::load(lab.inventory_path()).unwrap();
    let auth = |name: &str| {
        clusters
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.access.auth.clone())
            .unwrap()
    };
    assert!(
        matches!(auth("alpha"), AccessAuth::Default),
        "{:?}",
        auth("alpha")
    );
    assert!(matches!(auth("robot"), AccessAuth::ServiceToken { .. }));
}

/// Issue 16: the metadata answer is signed once per host and served from a cache, not signed
/// again for every unauthenticated request.
#[tokio::test]
async fn the_metadata_answer_is_signed_once_and_served_from_a_cache() {
    let world = World::start(Timings::default()).await;
    let client = world.stepper();
    let ask = |host: &'static str| {
        let client = client.clone();
        let url = world.url(host, "/");
        async move {
            let response = client
                .head(url)
                .header("cf-access-metadata-request", "true")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.headers()["cf-access-metadata"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let first = ask(APP).await;
    // A second later a fresh signature would carry another `iat`.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ask(APP).await, first, "signed again");
    let other = ask(OTHER_APP).await;
    assert_ne!(other, first);
    let (_, claims) = world.verify(&other, OTHER_AUD).await;
    assert_eq!(claims["hostname"], OTHER_APP);
}

/// Issue 16: wrong passwords are throttled per client address and per account: past
/// `sign_in_failures` the page answers 429 with `Retry-After`, even to the right password,
/// until one failure is forgiven.
#[tokio::test]
async fn wrong_passwords_are_throttled_per_address_and_per_account() {
    let world = World::start(Timings {
        sign_in_failures: 2,
        sign_in_window: Duration::from_secs(4),
        ..Timings::default()
    })
    .await;
    let login = world.url(
        AUTH_DOMAIN,
        &format!("/cdn-cgi/access/login/{APP}?kid={AUD}&redirect_url=%2F"),
    );
    let client = world.stepper();
    let page = SignInForm::get(&client, &login).await;
    for _ in 0..2 {
        let response = page.post(&client, EMAIL, "wrong").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let throttled = page.post(&client, EMAIL, PASSWORD).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().get("set-cookie").is_none());
    let retry: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert!(
        throttled
            .text()
            .await
            .unwrap()
            .contains("Too many wrong passwords")
    );

    // The same account from another address is throttled too; another account from there is not.
    let elsewhere = world.stepper_from("127.0.0.2");
    let page2 = SignInForm::get(&elsewhere, &login).await;
    assert_eq!(
        page2.post(&elsewhere, EMAIL, PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        page2
            .post(&elsewhere, "eve@example.com", "guess")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // And the first address is throttled for every account.
    assert_eq!(
        page.post(&client, "bob@example.com", "guess")
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // One failure is forgiven every window / failures (2 s): then the right password works.
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(200)).await;
    let response = page.post(&client, EMAIL, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FOUND);
}

/// Issue 16: the sign-in form counts only when posted from its own page: with the page's
/// form token in the field and in its cookie, and no other site's `Origin`.
#[tokio::test]
async fn a_sign_in_post_without_the_forms_token_is_refused() {
    let world = World::start(Timings::default()).await;
    let client = world.stepper();
    let login = world.url(
        AUTH_DOMAIN,
        &format!("/cdn-cgi/access/login/{APP}?kid={AUD}&redirect_url=%2F"),
    );
    let page = SignInForm::get(&client, &login).await;
    let token = hidden_value(&page.html, CSRF_FIELD);
    assert!(page.cookie.ends_with(&format!("={token}")));
    let other = SignInForm::get(&client, &login).await;
    let fields = |csrf: Option<&str>| {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        if let Some(csrf) = csrf {
            form.append_pair(CSRF_FIELD, csrf);
        }
        form.append_pair("email", EMAIL)
            .append_pair("password", PASSWORD)
            .finish()
    };
    let post = |body: String, cookie: Option<&str>, origin: Option<&str>| {
        let mut request = client
            .post(page.action.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie.to_owned());
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin.to_owned());
        }
        request.send()
    };
    let own_origin = format!("https://{AUTH_DOMAIN}:{}", world.port());
    for (what, body, cookie, origin) in [
        (
            "no token at all (another site's form)",
            fields(None),
            None,
            None,
        ),
        (
            "the field without its cookie",
            fields(Some(&token)),
            None,
            None,
        ),
        (
            "the cookie without the field",
            fields(None),
            Some(page.cookie.as_str()),
            None,
        ),
        (
            "a field and a cookie of two different pages",
            fields(Some(&token)),
            Some(other.cookie.as_str()),
            None,
        ),
        (
            "a forged token",
            fields(Some("AAAA")),
            Some(&*format!("{CSRF_COOKIE}=AAAA")),
            None,
        ),
        (
            "another site's Origin",
            fields(Some(&token)),
            Some(page.cookie.as_str()),
            Some("https://evil.example"),
        ),
    ] {
        let response = post(body, cookie, origin).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
        assert!(
            cookies
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("CF_Authorization")),
            "{what}: signed in"
        );
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("Please sign in again"),
            "{what}"
        );
    }
    // The page's own post, also with its own Origin, signs in.
    let response = post(
        fields(Some(&token)),
        Some(page.cookie.as_str()),
        Some(&own_origin),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(set_cookie(&response).0.len() > 20);
}

/// Issue 16: transfer long-polls are bounded (past `max_transfer_polls` a poll gets 429 at
/// once), and a new poll for a key takes over from the earlier one, which answers "still
/// waiting" at once.
#[tokio::test]
async fn transfer_polls_are_bounded_and_a_new_poll_takes_over_its_key() {
    let world = World::start(Timings {
        max_transfer_polls: 1,
        transfer_timeout: Duration::from_secs(20),
        ..Timings::default()
    })
    .await;
    let key = || {
        URL_SAFE.encode(
            crypto_box::SecretKey::generate(&mut OsRng)
                .public_key()
                .as_bytes(),
        )
    };
    let (a, b) = (key(), key());
    let client = world.stepper();
    let poll = |k: &str| {
        let (client, url) = (
            client.clone(),
            world.url(TRANSFER_HOST, &format!("/transfer/{k}")),
        );
        tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
    };
    let first = poll(&a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let busy = poll(&b).await.unwrap();
    assert_eq!(busy, StatusCode::TOO_MANY_REQUESTS);
    assert!(started.elapsed() < Duration::from_secs(2));
    let second = poll(&a);
    let replaced = tokio::time::timeout(Duration::from_secs(2), first)
        .await
        .expect("the earlier poll answered at once")
        .unwrap();
    assert_eq!(replaced, StatusCode::NOT_FOUND);
    assert!(!second.is_finished());
    second.abort();
}

/// Issue 16 review: one client address holds at most `max_transfer_polls_per_client` of the
/// waiting polls (past it, 429 at once), so it cannot take every place; another address still
/// gets its own.
#[tokio::test]
async fn one_address_cannot_hold_every_transfer_poll() {
    let world = World::start(Timings {
        max_transfer_polls: 10,
        max_transfer_polls_per_client: 2,
        transfer_timeout: Duration::from_secs(20),
        ..Timings::default()
    })
    .await;
    let key = || {
        URL_SAFE.encode(
            crypto_box::SecretKey::generate(&mut OsRng)
                .public_key()
                .as_bytes(),
        )
    };
    let poll = |client: &reqwest::Client| {
        let (client, url) = (
            client.clone(),
            world.url(TRANSFER_HOST, &format!("/transfer/{}", key())),
        );
        tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
    };
    let here = world.stepper();
    let held = [poll(&here), poll(&here)];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_eq!(poll(&here).await.unwrap(), StatusCode::TOO_MANY_REQUESTS);
    assert!(started.elapsed() < Duration::from_secs(2));
    let elsewhere = poll(&world.stepper_from("127.0.0.2"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!elsewhere.is_finished(), "another address's poll waits");
    assert!(held.iter().all(|p| !p.is_finished()));
    elsewhere.abort();
    for p in held {
        p.abort();
    }
}
