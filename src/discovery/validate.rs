//! Checks every source applies to untrusted cluster data (a hand-written inventory, cloud
//! tags and labels, Vault secrets), so that one rule decides what a valid name, API server URL
//! or Access hostname is, and errors show the offending value safely.

use url::{Host, Url};

/// The longest cluster name, environment or region: a DNS label, so it fits everywhere the
/// name ends up (kubeconfig keys, file names, tray menus).
pub const MAX_NAME_LEN: usize = 63;

/// Shows an untrusted value in a message: escaped (no control characters reach a terminal)
/// and cut short (a 10 KB name does not flood the error).
pub fn shown(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() > MAX {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}… ({} bytes)", value.len())
    } else {
        format!("{value:?}")
    }
}

/// `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 63 characters: safe as a kubeconfig key, a file
/// name component and a menu label. `what` names the value in the error.
pub fn check_name(what: &str, value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} {} is longer than {MAX_NAME_LEN} characters",
            shown(value)
        ));
    }
    if !first_ok || !rest_ok {
        return Err(format!(
            "{what} {} must start with a letter or digit and hold only letters, digits, '.', '_' and '-'",
            shown(value)
        ));
    }
    Ok(value.to_string())
}

/// The API server URL: https only, a host, no credentials, query or fragment. Returns the
/// URL, its host (IPv6 without brackets) and its port.
pub fn server_url(value: &str) -> Result<(Url, String, u16), String> {
    let url = Url::parse(value).map_err(|e| format!("{} is not a valid URL: {e}", shown(value)))?;
    if url.scheme() != "https" {
        return Err(format!(
            "{} must use https (the API server is reached with TLS end to end)",
            shown(value)
        ));
    }
    reject_extras(&url, value)?;
    let host = match url.host() {
        Some(Host::Domain(d)) => d.to_string(),
        Some(Host::Ipv4(a)) => a.to_string(),
        Some(Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("{} has no host", shown(value))),
    };
    let port = url.port_or_known_default().unwrap_or(443);
    Ok((url, host, port))
}

/// The Access hostname as `cloudflared --hostname` takes it (`https://` added when there is no
/// scheme, the path kept), turned into the WebSocket URL. Returns the hostname as given, the
/// URL, and whether it is a plain (unencrypted) URL to a host that is not loopback — which is
/// acceptable only with a loopback `connect_to` (see [`dials_loopback`]).
pub fn access_hostname(value: &str) -> Result<(String, Url, bool), String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("the Access hostname is empty".into());
    }
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("https://{value}")
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| format!("{} is not a valid hostname or URL: {e}", shown(value)))?;
    reject_extras(&url, value)?;
    let loopback = match url.host() {
        Some(host) => is_loopback_host(&host),
        None => return Err(format!("{} has no host", shown(value))),
    };
    let (ws_scheme, plain_remote) = match url.scheme() {
        "https" | "wss" => ("wss", false),
        "http" | "ws" => ("ws", !loopback),
        other => {
            return Err(format!(
                "{} has scheme {other:?}; use https (or http/ws to a loopback address)",
                shown(value)
            ));
        }
    };
    url.set_scheme(ws_scheme)
        .map_err(|()| format!("cannot turn {} into a WebSocket URL", shown(value)))?;
    Ok((value.to_string(), url, plain_remote))
}

/// Credentials, a query or a fragment in a URL would end up in logs and headers: refused.
fn reject_extras(url: &Url, value: &str) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{} must not hold credentials (user:password@)",
            shown(&redact_userinfo(value))
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{} must not have a query (?...) or fragment (#...)",
            shown(value)
        ));
    }
    Ok(())
}

/// The value with anything between `://` and `@` replaced, so a password is never echoed.
fn redact_userinfo(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(start), Some(at)) if at > start + 3 => {
            format!("{}://<credentials>{}", &value[..start], &value[at..])
        }
        _ => "<url with credentials>".to_string(),
    }
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(a) => a.is_loopback(),
        Host::Ipv6(a) => a.is_loopback(),
    }
}

/// Whether a checked `host:port` dials a loopback address.
pub fn dials_loopback(connect_to: &str) -> bool {
    // A special scheme, so that IP addresses parse as such (not as opaque names).
    Url::parse(&format!("http://{connect_to}"))
        .ok()
        .and_then(|u| u.host().map(|h| is_loopback_host(&h)))
        .unwrap_or(false)
}
