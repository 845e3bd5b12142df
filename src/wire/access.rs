//! The Cloudflare Access vocabulary both ends speak (see the reference's wire protocol): the
//! header, cookie and path names. The client and the gateway both take them from here, so a
//! spelling that drifts on one side is a compile error, not a silent mismatch.

/// The application token on a request to an Access application.
pub const TOKEN_HEADER: &str = "cf-access-token";
/// The cookie that carries a token instead of [`TOKEN_HEADER`] (a browser's, and the auth
/// domain's organisation session).
pub const TOKEN_COOKIE: &str = "CF_Authorization";
/// A service token's id.
pub const CLIENT_ID_HEADER: &str = "cf-access-client-id";
/// A service token's secret.
pub const CLIENT_SECRET_HEADER: &str = "cf-access-client-secret";
/// Where a bastion-mode edge dials on the client's behalf (`host:port`).
pub const JUMP_DESTINATION_HEADER: &str = "cf-access-jump-destination";
/// Asks an application for its signed metadata (auth domain, AUD) instead of a redirect.
pub const METADATA_REQUEST_HEADER: &str = "cf-access-metadata-request";
/// The signed metadata an application answers [`METADATA_REQUEST_HEADER`] with.
pub const METADATA_HEADER: &str = "cf-access-metadata";
/// The application's host, on the redirect to its auth domain's login.
pub const DOMAIN_HEADER: &str = "cf-access-domain";
/// The auth domain's key set.
pub const CERTS_PATH: &str = "/cdn-cgi/access/certs";
/// The auth domain's login page; the application's host follows it.
pub const LOGIN_PATH: &str = "/cdn-cgi/access/login/";
/// Where the auth domain sends the browser back to the application with its token.
pub const AUTHORIZED_PATH: &str = "/cdn-cgi/access/authorized";
/// The application's page that starts a command-line (transfer) login.
pub const CLI_PATH: &str = "/cdn-cgi/access/cli";

/// Whether a redirect `path` goes to an auth domain's login (with or without the host after it).
pub fn is_login_path(path: &str) -> bool {
    path.starts_with(LOGIN_PATH.trim_end_matches('/'))
}
