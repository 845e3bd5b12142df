//! cloudflared's token files, for interop: `~/.cloudflared/<app_host>-<AUD>-token` (an app
//! token) and `~/.cloudflared/<auth_domain>-org-token` (the org token), plaintext JWTs
//! (`token/path.go`). Read always; written only when the user opts in, as private files (0600,
//! or user-only on Windows: [`crate::private_file`]) in a private directory.

use std::path::{Path, PathBuf};

use crate::private_file;
use crate::secret::Secret;

/// Errors reading or writing a token file. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The file or directory could not be read or written.
    #[error("cannot {operation} {}", path.display())]
    Io {
        /// read, write or create.
        operation: &'static str,
        /// The path.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
}

/// cloudflared's token directory.
#[derive(Clone, Debug)]
pub struct CloudflaredFiles {
    dir: PathBuf,
}

/// cloudflared replaces `/` and `*` in names (`token/path.go`), so a path-shaped hostname or a
/// wildcard application cannot escape the directory. We also replace what is a separator or
/// special on Windows (`\`, `:`) and control characters: the application's host may come from
/// the edge's unsigned `CF-Access-Domain` header, so it is untrusted. Names that cloudflared
/// itself writes never contain those, so the file names still match.
fn sanitise(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '*' | '\\' | ':' => '-',
            c if c.is_control() => '-',
            c => c,
        })
        .collect()
}

impl CloudflaredFiles {
    /// Files in `dir` (normally `~/.cloudflared`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<app_host>-<aud>-token`.
    pub fn app_token_path(&self, app_host: &str, aud: &str) -> PathBuf {
        self.dir.join(sanitise(&format!("{app_host}-{aud}-token")))
    }

    /// `<dir>/<auth_domain>-org-token`.
    pub fn org_token_path(&self, auth_domain: &str) -> PathBuf {
        self.dir.join(sanitise(&format!("{auth_domain}-org-token")))
    }

    /// The app token cloudflared stored for this application, if any.
    pub fn read_app_token(&self, app_host: &str, aud: &str) -> Result<Option<Secret>, FilesError> {
        read(&self.app_token_path(app_host, aud))
    }

    /// The org token cloudflared stored for this auth domain, if any.
    pub fn read_org_token(&self, auth_domain: &str) -> Result<Option<Secret>, FilesError> {
        read(&self.org_token_path(auth_domain))
    }

    /// Writes an app token (a private file in a private directory).
    pub fn write_app_token(
        &self,
        app_host: &str,
        aud: &str,
        token: &Secret,
    ) -> Result<(), FilesError> {
        self.write(&self.app_token_path(app_host, aud), token)
    }

    /// Writes the org token (a private file in a private directory).
    pub fn write_org_token(&self, auth_domain: &str, token: &Secret) -> Result<(), FilesError> {
        self.write(&self.org_token_path(auth_domain), token)
    }

    /// Deletes an app token file; a missing file is fine.
    pub fn remove_app_token(&self, app_host: &str, aud: &str) -> Result<(), FilesError> {
        remove(&self.app_token_path(app_host, aud))
    }

    /// Deletes the org token file; a missing file is fine.
    pub fn remove_org_token(&self, auth_domain: &str) -> Result<(), FilesError> {
        remove(&self.org_token_path(auth_domain))
    }

    fn write(&self, path: &Path, token: &Secret) -> Result<(), FilesError> {
        let io = |operation, path: &Path| {
            let path = path.to_path_buf();
            move |source| FilesError::Io {
                operation,
                path,
                source,
            }
        };
        private_file::create_private_dir(&self.dir).map_err(io("create", &self.dir))?;
        // A private temp file renamed over the old one: a reader never sees half a token, and
        // the file is never readable by others, even for a moment.
        private_file::write_private(path, token.expose().as_bytes()).map_err(io("write", path))
    }
}

fn read(path: &Path) -> Result<Option<Secret>, FilesError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(Secret::new(text.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FilesError::Io {
            operation: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn remove(path: &Path) -> Result<(), FilesError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FilesError::Io {
            operation: "delete",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_follow_cloudflared_and_cannot_escape() {
        let files = CloudflaredFiles::new("/home/u/.cloudflared");
        assert_eq!(
            files.app_token_path("app.example.com", "abc123"),
            Path::new("/home/u/.cloudflared/app.example.com-abc123-token")
        );
        assert_eq!(
            files.org_token_path("team.cloudflareaccess.com"),
            Path::new("/home/u/.cloudflared/team.cloudflareaccess.com-org-token")
        );
        assert_eq!(
            files.app_token_path("*.example.com/../x", "a/b"),
            Path::new("/home/u/.cloudflared/-.example.com-..-x-a-b-token")
        );
        assert_eq!(
            files.app_token_path("..\\..\\x:y\n", "a"),
            Path::new("/home/u/.cloudflared/..-..-x-y--a-token")
        );
    }

    #[test]
    fn written_files_are_private_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let files = CloudflaredFiles::new(root.path().join(".cloudflared"));
        assert!(files.read_app_token("h", "a").unwrap().is_none());
        files
            .write_app_token("h", "a", &Secret::new("tok-1"))
            .unwrap();
        files
            .write_org_token("team.cloudflareaccess.com", &Secret::new("org-1"))
            .unwrap();
        assert_eq!(
            files.read_app_token("h", "a").unwrap().unwrap().expose(),
            "tok-1"
        );
        assert_eq!(
            files
                .read_org_token("team.cloudflareaccess.com")
                .unwrap()
                .unwrap()
                .expose(),
            "org-1"
        );
        assert!(private_file::is_private(files.dir()).unwrap());
        assert!(private_file::is_private(&files.app_token_path("h", "a")).unwrap());
        assert!(
            private_file::is_private(&files.org_token_path("team.cloudflareaccess.com")).unwrap()
        );
        // Only our two tokens: no temp file left behind.
        assert_eq!(std::fs::read_dir(files.dir()).unwrap().count(), 2);
        files.remove_app_token("h", "a").unwrap();
        files.remove_app_token("h", "a").unwrap();
        assert!(files.read_app_token("h", "a").unwrap().is_none());
    }
}
