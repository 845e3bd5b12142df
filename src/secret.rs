//! A wrapper for secret strings (SOCKS passwords, Access tokens, service-token secrets).
//!
//! [`Secret`] has no `Serialize`, and its `Debug` and `Display` print `<redacted>`, so a secret
//! cannot reach a log line, an event or an error message by accident: every use of the value
//! goes through [`Secret::expose`], which is easy to audit.

use std::fmt;

/// A secret string. `Debug` and `Display` print `<redacted>`; there is no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_boxed_str())
    }

    /// The secret value itself. Call it only where the value leaves for its one legitimate
    /// destination (a header, a kubeconfig `proxy-url`, the keychain).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Generates a random secret of `len` URL-safe alphanumeric characters.
    pub fn random(len: usize) -> Self {
        use rand::Rng;
        use rand::distr::Alphanumeric;
        let value: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect();
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn random_secrets_differ_and_are_url_safe() {
        let a = Secret::random(32);
        let b = Secret::random(32);
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
