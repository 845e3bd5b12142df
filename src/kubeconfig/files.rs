//! Reading and atomically replacing one kubeconfig file.
//!
//! A write never touches the file in place: the new content is serialized, read back and
//! compared, written to a private temporary file in the target's directory, flushed to disk,
//! given the target's owner mode (nobody else's: the file holds the tunnel secret; see
//! [`crate::private_file`]), renamed over the target, and the directory is flushed. A reader (or a crash)
//! sees the old file or the new one, never a mix. A symlink is followed to its final target,
//! which is what gets replaced, so the link stays a link.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::{KubeconfigError, YamlError};
use super::model::Document;
use crate::private_file;

/// Temporary files are named `.<file>.k8s-tunnels-tmp-<random>` so leftovers of a killed writer
/// are recognisable and cleaned by the next write.
const TEMP_MARKER: &str = ".k8s-tunnels-tmp-";

/// Symlink hops followed before giving up, as Linux does (`MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// Reads and parses a kubeconfig. A missing file is `Ok(None)`; an empty one is an empty
/// document (client-go treats both the same way when loading).
pub(crate) fn read_document(path: &Path) -> Result<Option<Document>, KubeconfigError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KubeconfigError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_document(path, &text).map(Some)
}

/// Parses kubeconfig text; errors name `path` and the line and column.
pub(crate) fn parse_document(path: &Path, text: &str) -> Result<Document, KubeconfigError> {
    let parse_error = |error: serde_norway::Error| KubeconfigError::Parse {
        path: path.to_owned(),
        source: YamlError::from_yaml(&error),
    };
    // First as plain YAML, so that an empty (or comment-only) file is recognised.
    let value: serde_norway::Value = serde_norway::from_str(text).map_err(parse_error)?;
    if value.is_null() {
        return Ok(Document::default());
    }
    // Then into the model from the text again (not from `value`), so that shape errors keep
    // their line and column.
    serde_norway::from_str(text).map_err(parse_error)
}

/// Serializes `document` and checks that the text reads back as the same document.
pub(crate) fn serialize_checked(
    path: &Path,
    document: &Document,
) -> Result<String, KubeconfigError> {
    let value = serde_norway::to_value(document).map_err(|error| KubeconfigError::Validation {
        path: path.to_owned(),
        source: YamlError::from_yaml(&error),
    })?;
    // Emitted for YAML 1.1 readers (client-go): see `emit`.
    let text = super::emit::to_yaml_text(&value).map_err(|error| KubeconfigError::Validation {
        path: path.to_owned(),
        source: YamlError::other(error.to_string()),
    })?;
    let reread = parse_document(path, &text).map_err(|error| match error {
        KubeconfigError::Parse { path, source } => KubeconfigError::Validation { path, source },
        other => other,
    })?;
    if reread != *document {
        return Err(KubeconfigError::Validation {
            path: path.to_owned(),
            source: YamlError::other("the serialized YAML parses to different values"),
        });
    }
    Ok(text)
}

/// Follows `path` through symlinks to the file that really holds the content. A dangling link
/// resolves to where its target would be, so a new file is created there.
pub(crate) fn resolve_symlinks(path: &Path) -> Result<PathBuf, KubeconfigError> {
    let mut current = path.to_owned();
    for _ in 0..MAX_SYMLINK_HOPS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current).map_err(|source| KubeconfigError::Io {
                    action: "read the symbolic link",
                    path: current.clone(),
                    source,
                })?;
                current = match current.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(KubeconfigError::SymlinkLoop {
        path: path.to_owned(),
    })
}

/// Atomically replaces the file `path` names (after symlinks) with `text`, keeping its owner's
/// mode but no access for anyone else (0600 for a new file; user-only on Windows) and creating
/// missing parent directories.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), KubeconfigError> {
    let target = resolve_symlinks(path)?;
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source: io::Error| KubeconfigError::Io {
            action,
            path,
            source,
        }
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| KubeconfigError::Io {
            action: "write",
            path: target.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        })?;
    fs::create_dir_all(&dir).map_err(io_error("create the directory", &dir))?;

    let existing_mode = match fs::metadata(&target) {
        Ok(meta) => Some(meta.permissions()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(KubeconfigError::Io {
                action: "inspect",
                path: target,
                source,
            });
        }
    };

    remove_stale_temp_files(&dir, &file_name);

    let prefix = format!(".{file_name}{TEMP_MARKER}");
    // Created private (0600 / user-only) and removed if anything below fails.
    let mut temp = private_file::temp_file_in(&dir, &prefix, "")
        .map_err(io_error("create a temporary file in", &dir))?;
    temp.write_all(text.as_bytes())
        .map_err(io_error("write a temporary file in", &dir))?;
    if let Some(permissions) = existing_mode {
        let loosened = private_file::restrict_like(temp.as_file(), &permissions)
            .map_err(io_error("set the mode of a temporary file in", &dir))?;
        if loosened {
            tracing::warn!(
                file = %target.display(),
                "kubeconfig was readable by other users or its group; removing their access since it holds the tunnel secret"
            );
        }
    }
    temp.as_file()
        .sync_all()
        .map_err(io_error("flush a temporary file in", &dir))?;
    private_file::replace(temp, &target).map_err(|source| KubeconfigError::Io {
        action: "rename a temporary file over",
        path: target.clone(),
        source,
    })?;
    private_file::sync_dir(&dir).map_err(io_error("flush the directory", &dir))?;
    Ok(())
}

/// Removes temporary files a killed writer left for `file_name`. Called with the kubeconfig
/// lock held, so no writer that respects the lock is using them.
fn remove_stale_temp_files(dir: &Path, file_name: &str) {
    let prefix = format!(".{file_name}{TEMP_MARKER}");
    for path in temp_files_in(dir, &prefix) {
        if let Err(error) = fs::remove_file(&path) {
            tracing::debug!(file = %path.display(), %error, "cannot remove a stale temporary kubeconfig");
        }
    }
}

/// Temporary files of this writer in `dir` whose names start with `prefix`.
pub(crate) fn temp_files_in(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_empty_or_comment_only_file_is_an_empty_kubeconfig() {
        let path = Path::new("/x/config");
        assert!(parse_document(path, "").unwrap() == Document::default());
        assert!(parse_document(path, "# nothing\n").unwrap() == Document::default());
    }

    #[test]
    fn a_parse_error_names_the_file_line_and_column() {
        let text = "apiVersion: v1\nclusters:\n- name: a\n\tcluster: {}\n";
        let err = parse_document(Path::new("/home/u/.kube/config"), text)
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(
            message.starts_with("/home/u/.kube/config: line 4"),
            "{message}"
        );
    }

    #[test]
    fn a_wrong_shape_names_the_line() {
        let text = "apiVersion: v1\nclusters:\n  name: a\n";
        let err = parse_document(Path::new("cfg"), text).err().unwrap();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    #[cfg(unix)]
    fn a_symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let err = resolve_symlinks(&a).err().unwrap();
        assert!(matches!(err, KubeconfigError::SymlinkLoop { .. }));
    }

    #[test]
    fn a_kubeconfig_that_was_open_to_its_group_is_private_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "apiVersion: v1\n").unwrap();
        #[cfg(unix)]
        {
            // kubectl's own default for a new file is 0600, but many setups leave 0660 or
            // 0644; on macOS every user shares the group `staff`.
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o660)).unwrap();
        }
        assert!(!private_file::is_private(&path).unwrap());
        write_atomic(&path, "apiVersion: v1\nkind: Config\n").unwrap();
        assert!(private_file::is_private(&path).unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "apiVersion: v1\nkind: Config\n"
        );
    }

    #[test]
    fn stale_temp_files_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join(format!(".config{TEMP_MARKER}abc123"));
        fs::write(&leftover, "half").unwrap();
        let unrelated = dir.path().join(".other.k8s-tunnels-tmp-zzz");
        fs::write(&unrelated, "x").unwrap();
        write_atomic(&dir.path().join("config"), "apiVersion: v1\n").unwrap();
        assert!(!leftover.exists());
        assert!(unrelated.exists(), "only this file's leftovers are cleaned");
    }
}
