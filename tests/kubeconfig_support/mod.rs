//! Helpers for the kubeconfig writer tests: entries, the real kubectl, file inspection.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_tunnels::kubeconfig::ClusterEntry;
use k8s_tunnels::secret::Secret;
use serde_norway::Value;

/// The real kubectl on the machine image; tests that use it fail loudly without it.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// The SOCKS password every test entry carries, to search for leaks.
pub const SOCKS_SECRET: &str = "s0cks-pa55word-never-leak";

/// An app entry whose proxy port is `port`, with an exec user.
pub fn entry(name: &str, port: u16) -> ClusterEntry {
    ClusterEntry {
        name: name.to_owned(),
        server: "https://10.1.2.3:6443".to_owned(),
        certificate_authority_pem: Some(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned(),
        ),
        tls_server_name: Some("kubernetes.default".to_owned()),
        proxy_url: Secret::new(format!("socks5://k8s-tunnels:{SOCKS_SECRET}@127.0.0.1:{port}")),
        user: serde_norway::from_str(
            "exec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: k8s-tunnels\n  args: [token]\n  interactiveMode: Never\n",
        )
        .expect("static user stanza parses"),
    }
}

/// `KUBECONFIG` for a list of files.
pub fn kubeconfig_env(paths: &[&Path]) -> OsString {
    std::env::join_paths(paths).expect("paths join")
}

/// Runs the real kubectl with `KUBECONFIG` set on the child (never on this process) and a
/// private `HOME`, so the user's own files are never read.
pub fn kubectl_raw(kubeconfig: &OsString, home: &Path, args: &[&str]) -> Output {
    assert!(
        Path::new(KUBECTL).exists(),
        "kubectl is required at {KUBECTL} for this test"
    );
    Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .output()
        .expect("kubectl runs")
}

/// Runs kubectl and returns its stdout, failing the test if it fails.
pub fn kubectl(kubeconfig: &OsString, home: &Path, args: &[&str]) -> String {
    let out = kubectl_raw(kubeconfig, home, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

/// The merged view kubectl loads, as JSON.
pub fn kubectl_view(kubeconfig: &OsString, home: &Path) -> serde_json::Value {
    let text = kubectl(kubeconfig, home, &["config", "view", "--raw", "-o", "json"]);
    serde_json::from_str(&text).expect("kubectl prints JSON")
}

/// The names kubectl lists with `config get-contexts -o name`.
pub fn kubectl_context_names(kubeconfig: &OsString, home: &Path) -> Vec<String> {
    kubectl(kubeconfig, home, &["config", "get-contexts", "-o", "name"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A file parsed as plain YAML.
pub fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(path).expect("file reads"))
        .expect("file parses")
}

/// The stanza named `name` in list `list` (`clusters`, `users`, `contexts`) of `doc`.
pub fn stanza<'a>(doc: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    doc.get(list)?
        .as_sequence()?
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
}

/// `doc` without the app's stanzas (names starting with `k8s-tunnels/`): what the user owns.
pub fn users_part(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(map) = doc.as_mapping_mut() {
        for list in ["clusters", "users", "contexts"] {
            if let Some(Value::Sequence(items)) = map.get_mut(list) {
                items.retain(|s| {
                    !s.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with("k8s-tunnels/"))
                });
            }
        }
    }
    doc
}

/// Temporary files the writer leaves for `file` in `dir`.
pub fn temp_files(dir: &Path, file: &str) -> Vec<PathBuf> {
    let prefix = format!(".{file}.k8s-tunnels-tmp-");
    std::fs::read_dir(dir)
        .expect("dir reads")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// A real exFAT file system, mounted for one test: no hard links, no Unix modes, as on the USB
/// disks and some network shares people keep files on. An image file on a loop device, mounted
/// with Debian's FUSE exFAT driver (scripts/install-test-deps); needs root, a loop device and
/// /dev/fuse, and fails loudly without them. Unmounted and detached on drop.
pub struct ExfatMount {
    dir: tempfile::TempDir,
    device: String,
    _image: tempfile::NamedTempFile,
}

impl ExfatMount {
    pub fn new() -> Self {
        let image = tempfile::NamedTempFile::new().expect("an image file");
        image.as_file().set_len(16 << 20).expect("16 MiB image");
        run("mkfs.exfat", &[image.path().as_os_str()]);
        let device = run(
            "losetup",
            &["-f".as_ref(), "--show".as_ref(), image.path().as_os_str()],
        );
        let dir = tempfile::tempdir().expect("a mount point");
        let mounted = Command::new("mount.exfat-fuse")
            .arg(&device)
            .arg(dir.path())
            .output()
            .expect("mount.exfat-fuse runs (Debian exfat-fuse)");
        if !mounted.status.success() {
            let _ = Command::new("losetup").args(["-d", &device]).status();
            panic!(
                "mounting exFAT failed: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
        }
        Self {
            dir,
            device,
            _image: image,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ExfatMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Runs a set-up tool, panicking with its output when it fails; returns its stdout, trimmed.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/install-test-deps): {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
