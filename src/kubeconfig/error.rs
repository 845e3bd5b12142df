//! Errors of the kubeconfig writer. Every variant names the file (or the entry) it is about, and
//! no message can carry the SOCKS password of a `proxy-url`: YAML messages are redacted before
//! they are stored.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while reading, locking or writing kubeconfig files.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Neither `KUBECONFIG` nor `$HOME` is set, so there is no kubeconfig to use.
    #[error("cannot locate the kubeconfig: KUBECONFIG is empty and $HOME is not set")]
    NoHome,

    /// The writer was given an empty list of files.
    #[error("no kubeconfig file to write: the list of files is empty")]
    NoFiles,

    /// A file-system operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, e.g. "read" or "rename a temporary file over".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// A kubeconfig file is not valid YAML or not shaped like a kubeconfig. The file is left
    /// untouched.
    #[error("{}{}: not a valid kubeconfig, left untouched", path.display(), location_suffix(source))]
    Parse {
        /// The file that does not parse.
        path: PathBuf,
        /// The parser's complaint (redacted), with its line and column.
        #[source]
        source: YamlError,
    },

    /// What the writer was about to write did not read back as the same kubeconfig, so nothing
    /// was written.
    #[error("refusing to write {}: the new content does not read back as the same kubeconfig", path.display())]
    Validation {
        /// The file that would have been written.
        path: PathBuf,
        /// Why the content was rejected.
        #[source]
        source: YamlError,
    },

    /// Another program held the kubeconfig lock for longer than the configured wait.
    #[error(
        "timed out after {waited:?} waiting for the lock {}; if no kubectl or k8s-tunnels is writing the kubeconfig, delete that file",
        lock.display()
    )]
    LockTimeout {
        /// The `<kubeconfig>.lock` file.
        lock: PathBuf,
        /// How long the writer waited.
        waited: Duration,
    },

    /// A chain of symbolic links is too long or loops.
    #[error("too many levels of symbolic links at {}", path.display())]
    SymlinkLoop {
        /// The link the writer started from.
        path: PathBuf,
    },

    /// The entry is not named with the app's prefix; the writer never touches other entries.
    #[error(
        "refusing to write the kubeconfig entry {name:?}: k8s-tunnels only owns entries named {prefix:?}<cluster>"
    )]
    NotOwned {
        /// The rejected name.
        name: String,
        /// The configured prefix.
        prefix: String,
    },

    /// A field of the entry is not acceptable. The message never contains the field's value
    /// when that value may hold a secret.
    #[error("kubeconfig entry {name:?}: invalid {field}: {reason}")]
    InvalidEntry {
        /// The entry's name.
        name: String,
        /// The offending field, e.g. "proxy-url".
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// `use_context` named a context that no kubeconfig file defines.
    #[error("no context named {context:?} in {files}")]
    ContextNotFound {
        /// The requested context.
        context: String,
        /// The files searched, separated by commas.
        files: String,
    },
}

fn location_suffix(error: &YamlError) -> String {
    match error.location {
        Some((line, column)) => format!(": line {line}, column {column}"),
        None => String::new(),
    }
}

/// A YAML parser or serializer message, with any URL credentials removed, and where the parser
/// stopped (1-based line and column).
#[derive(Debug, Clone)]
pub struct YamlError {
    message: String,
    location: Option<(usize, usize)>,
}

impl YamlError {
    /// Wraps a `serde_norway` error, redacting `scheme://user:password@` credentials from it.
    pub(crate) fn from_yaml(error: &serde_norway::Error) -> Self {
        Self {
            message: redact_url_credentials(&error.to_string()),
            location: error.location().map(|l| (l.line(), l.column())),
        }
    }

    /// A message of the writer's own (no location).
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            location: None,
        }
    }

    /// The 1-based line of the error, when the parser reported one.
    pub fn line(&self) -> Option<usize> {
        self.location.map(|(line, _)| line)
    }

    /// The 1-based column of the error, when the parser reported one.
    pub fn column(&self) -> Option<usize> {
        self.location.map(|(_, column)| column)
    }
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for YamlError {}

/// Replaces the user-info part of every `scheme://user:password@host` in `text` with
/// `<redacted>`. Parser messages quote scalar values ("invalid type: string ..."), and a
/// `proxy-url` value carries the SOCKS password.
pub(crate) fn redact_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (head, tail) = rest.split_at(start + 3);
        out.push_str(head);
        // The authority ends at the first character that cannot be part of it in a message.
        let authority_end = tail
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c == '`' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("<redacted>");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_redacted() {
        let text = r#"invalid type: string "socks5://u:s3cr3t@127.0.0.1:1080", expected x; see https://example.com/a@b"#;
        let redacted = redact_url_credentials(text);
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert!(
            redacted.contains("socks5://<redacted>@127.0.0.1:1080"),
            "{redacted}"
        );
        // An '@' after the authority (in the path) is not user info.
        assert!(redacted.contains("https://example.com/a@b"), "{redacted}");
    }

    #[test]
    fn a_password_containing_at_is_fully_redacted() {
        let redacted = redact_url_credentials("socks5://user:p@ss@host:1 and more");
        assert_eq!(redacted, "socks5://<redacted>@host:1 and more");
    }
}
