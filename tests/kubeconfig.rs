//! The kubeconfig writer against real files and the real kubectl: one test (at least) per rule
//! of the design's "Kubeconfig rules".
// Against Unix file modes, inodes and the Linux kubectl: the Windows side of these rules is
// covered by the library's unit tests, run under Wine (scripts/test-windows).
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod kubeconfig_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_tunnels::kubeconfig::{Kubeconfig, KubeconfigError};
use kubeconfig_support::*;
use serde_norway::Value;

/// A user's kubeconfig with everything the writer must keep: unknown top-level keys, unknown
/// keys in stanzas and inner maps, preferences, extensions, an exec user, an anchor.
const USER_CONFIG: &str = r#"apiVersion: v1
kind: Config
x-top-level: {team: platform, list: [1, "two", 3.5, null, true]}
preferences:
  colors: true
  extensions:
  - name: pref-ext
    extension: {a: 1}
extensions:
- name: top-ext
  extension: {nested: {deep: [x, y]}}
clusters:
- name: corp
  x-stanza-key: keep-me
  cluster:
    server: https://corp.example:6443
    certificate-authority: /etc/corp-ca.pem
    x-inner-key: &anchor {k: v}
    extensions:
    - name: cluster-ext
      extension: {region: eu}
contexts:
- name: corp
  context: {cluster: corp, user: corp-exec, namespace: payments, x-ctx: 1}
current-context: corp
users:
- name: corp-exec
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args: [eks, get-token, --cluster-name, corp]
      env:
      - {name: AWS_PROFILE, value: corp}
      interactiveMode: IfAvailable
      provideClusterInfo: true
    x-user-key: *anchor
- name: corp-token
  user: {token: user-own-token, x-other: "0123"}
"#;

fn home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn unknown_fields_and_an_exec_user_survive_an_upsert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let before = yaml(&path);
    let kubectl_env = kubeconfig_env(&[&path]);
    let home = home();
    let view_before = kubectl_view(&kubectl_env, home.path());

    let changed = Kubeconfig::with_paths(vec![path.clone()])
        .upsert(&entry("k8s-tunnels/prod", 1080))
        .unwrap();
    assert!(changed);

    let after = yaml(&path);
    assert_eq!(
        users_part(&after),
        users_part(&before),
        "the user's part is equal in meaning"
    );
    assert!(stanza(&after, "clusters", "k8s-tunnels/prod").is_some());

    // kubectl sees the user's entries exactly as before, plus ours.
    let view_after = kubectl_view(&kubectl_env, home.path());
    for (list, name) in [
        ("users", "corp-exec"),
        ("clusters", "corp"),
        ("contexts", "corp"),
    ] {
        let find = |v: &serde_json::Value| {
            v[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .cloned()
        };
        assert_eq!(find(&view_after), find(&view_before), "{list}/{name}");
    }
    let exec = &view_after["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "corp-exec")
        .unwrap()["user"]["exec"];
    assert_eq!(exec["provideClusterInfo"], true);
    assert_eq!(exec["interactiveMode"], "IfAvailable");
    assert_eq!(view_after["preferences"], view_before["preferences"]);
    assert_eq!(view_after["current-context"], "corp");
}

#[test]
fn the_users_entries_stay_and_an_app_entry_is_updated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let k = Kubeconfig::with_paths(vec![path.clone()]);
    k.upsert(&entry("k8s-tunnels/prod", 1080)).unwrap();

    // The user adds a namespace and an extension to the app's context and cluster.
    let mut doc = yaml(&path);
    let ctx = doc["contexts"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "k8s-tunnels/prod")
        .unwrap();
    ctx["context"]["namespace"] = Value::from("team-ns");
    let cluster = doc["clusters"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "k8s-tunnels/prod")
        .unwrap();
    cluster["cluster"]["disable-compression"] = Value::from(true);
    fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();

    assert!(k.upsert(&entry("k8s-tunnels/prod", 2090)).unwrap());
    let after = yaml(&path);
    assert_eq!(users_part(&after), users_part(&doc));
    let clusters = after["clusters"].as_sequence().unwrap();
    assert_eq!(
        clusters
            .iter()
            .filter(|c| c["name"] == "k8s-tunnels/prod")
            .count(),
        1,
        "updated in place, not duplicated"
    );
    let cluster = stanza(&after, "clusters", "k8s-tunnels/prod").unwrap();
    assert!(
        cluster["cluster"]["proxy-url"]
            .as_str()
            .unwrap()
            .ends_with(":2090")
    );
    assert_eq!(cluster["cluster"]["disable-compression"], Value::from(true));

    let env = kubeconfig_env(&[&path]);
    let home = home();
    let out = kubectl(
        &env,
        home.path(),
        &["config", "get-contexts", "k8s-tunnels/prod"],
    );
    assert!(
        out.contains("team-ns"),
        "kubectl sees the user's namespace: {out}"
    );
    let names = kubectl_context_names(&env, home.path());
    assert!(names.contains(&"corp".to_owned()) && names.contains(&"k8s-tunnels/prod".to_owned()));
}

#[test]
fn two_files_are_written_the_way_client_go_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    fs::write(&first, USER_CONFIG).unwrap();
    Kubeconfig::with_paths(vec![second.clone()])
        .upsert(&entry("k8s-tunnels/in-second", 1000))
        .unwrap();
    let first_bytes = fs::read(&first).unwrap();
    let k = Kubeconfig::with_paths(vec![first.clone(), second.clone()]);

    // A stanza the second file defines is updated there; the first is not touched.
    assert!(k.upsert(&entry("k8s-tunnels/in-second", 1001)).unwrap());
    assert_eq!(fs::read(&first).unwrap(), first_bytes);
    let s = yaml(&second);
    let proxy = stanza(&s, "clusters", "k8s-tunnels/in-second").unwrap()["cluster"]["proxy-url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(proxy.ends_with(":1001"));

    // A new stanza goes to the first file.
    let second_bytes = fs::read(&second).unwrap();
    assert!(k.upsert(&entry("k8s-tunnels/new", 1002)).unwrap());
    assert_eq!(fs::read(&second).unwrap(), second_bytes);
    let f = yaml(&first);
    for list in ["clusters", "users", "contexts"] {
        assert!(
            stanza(&f, list, "k8s-tunnels/new").is_some(),
            "{list} in first"
        );
    }

    // kubectl sees the merged result.
    let env = kubeconfig_env(&[&first, &second]);
    let home = home();
    let names = kubectl_context_names(&env, home.path());
    for name in ["corp", "k8s-tunnels/in-second", "k8s-tunnels/new"] {
        assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
    }
    assert_eq!(k.current_context().unwrap().as_deref(), Some("corp"));
}

#[test]
fn use_context_writes_where_kubectl_writes() {
    // Two setups, identical: kubectl switches in one, the writer in the other; the same file
    // must change in the same way. The second file sets current-context, the first does not.
    let setup = || {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let second = dir.path().join("second");
        fs::write(
            &first,
            "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n",
        )
        .unwrap();
        fs::write(&second, USER_CONFIG).unwrap();
        Kubeconfig::with_paths(vec![second.clone()])
            .upsert(&entry("k8s-tunnels/prod", 1000))
            .unwrap();
        (dir, first, second)
    };
    let (_d1, k_first, k_second) = setup();
    let (_d2, w_first, w_second) = setup();
    let home = home();
    let env = kubeconfig_env(&[&k_first, &k_second]);
    kubectl(
        &env,
        home.path(),
        &["config", "use-context", "k8s-tunnels/prod"],
    );
    let w = Kubeconfig::with_paths(vec![w_first.clone(), w_second.clone()]);
    w.use_context("k8s-tunnels/prod").unwrap();

    for (kubectl_file, writer_file) in [(&k_first, &w_first), (&k_second, &w_second)] {
        assert_eq!(
            yaml(kubectl_file).get("current-context"),
            yaml(writer_file).get("current-context"),
            "{}",
            writer_file.display()
        );
    }
    assert_eq!(
        w.current_context().unwrap().as_deref(),
        Some("k8s-tunnels/prod")
    );
    let w_env = kubeconfig_env(&[&w_first, &w_second]);
    assert_eq!(
        kubectl(&w_env, home.path(), &["config", "current-context"]).trim(),
        "k8s-tunnels/prod"
    );

    // An unknown context is an error naming it, and nothing is written.
    let before = fs::read(&w_first).unwrap();
    let err = w.use_context("nope").unwrap_err();
    assert!(
        matches!(err, KubeconfigError::ContextNotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nope"));
    assert_eq!(fs::read(&w_first).unwrap(), before);
}

#[test]
fn a_new_stanza_goes_where_kubectl_puts_one() {
    // Neither file exists: client-go writes to the last listed. Only the second exists: there.
    for second_exists in [false, true] {
        let kdir = tempfile::tempdir().unwrap();
        let wdir = tempfile::tempdir().unwrap();
        let files = |d: &Path| (d.join("a/first"), d.join("b/second"));
        let (kf, ks) = files(kdir.path());
        let (wf, ws) = files(wdir.path());
        if second_exists {
            for s in [&ks, &ws] {
                fs::create_dir_all(s.parent().unwrap()).unwrap();
                fs::write(s, USER_CONFIG).unwrap();
            }
        }
        let home = home();
        kubectl(
            &kubeconfig_env(&[&kf, &ks]),
            home.path(),
            &[
                "config",
                "set-cluster",
                "k8s-tunnels/x",
                "--server=https://x:6443",
            ],
        );
        Kubeconfig::with_paths(vec![wf.clone(), ws.clone()])
            .upsert(&entry("k8s-tunnels/x", 1))
            .unwrap();
        assert_eq!(
            kf.exists(),
            wf.exists(),
            "first file (second exists: {second_exists})"
        );
        assert!(ks.exists() && ws.exists());
        assert!(stanza(&yaml(&ws), "clusters", "k8s-tunnels/x").is_some());
        assert_eq!(
            fs::metadata(&ws).unwrap().mode() & 0o777,
            if second_exists {
                // Its owner's mode is kept, nobody else's (it now holds the SOCKS secret).
                0o644 & !umask_bits() & !0o077
            } else {
                0o600
            },
        );
    }
}

/// The bits the process umask clears (files written by `fs::write` get 0666 minus these).
fn umask_bits() -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    fs::write(&probe, "").unwrap();
    !fs::metadata(&probe).unwrap().mode() & 0o666
}

#[test]
fn kubeconfig_env_with_empty_entries_matches_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    fs::write(&a, USER_CONFIG).unwrap();
    // "::a::b:" — empty entries are skipped by kubectl and by the writer.
    let mut env = std::ffi::OsString::from(":");
    env.push(a.as_os_str());
    env.push("::");
    env.push(b.as_os_str());
    env.push(":");
    let k = Kubeconfig::from_env_values(Some(env.clone()), None).unwrap();
    assert_eq!(k.paths(), [a.clone(), b.clone()]);
    k.upsert(&entry("k8s-tunnels/env", 7)).unwrap();
    let home = home();
    let names = kubectl_context_names(&env, home.path());
    assert!(names.contains(&"k8s-tunnels/env".to_owned()), "{names:?}");
    assert!(!b.exists(), "the first existing file took the new stanza");
}

#[test]
fn a_symlinked_kubeconfig_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("dotfiles");
    fs::create_dir(&real_dir).unwrap();
    let target = real_dir.join("kubeconfig.yaml");
    fs::write(&target, USER_CONFIG).unwrap();
    let link = dir.path().join("config");
    std::os::unix::fs::symlink("dotfiles/kubeconfig.yaml", &link).unwrap();

    Kubeconfig::with_paths(vec![link.clone()])
        .upsert(&entry("k8s-tunnels/linked", 3))
        .unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("dotfiles/kubeconfig.yaml")
    );
    assert!(stanza(&yaml(&target), "clusters", "k8s-tunnels/linked").is_some());
    assert!(temp_files(dir.path(), "config").is_empty());
    assert!(temp_files(&real_dir, "kubeconfig.yaml").is_empty());
    let home = home();
    let names = kubectl_context_names(&kubeconfig_env(&[&link]), home.path());
    assert!(names.contains(&"k8s-tunnels/linked".to_owned()));
}

#[test]
fn the_owner_mode_is_kept_group_and_other_access_removed_and_a_new_file_is_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    // Once the file holds the SOCKS secret it is the user's alone: a group-readable 0660 file
    // (on macOS every user shares the group `staff`) loses its group bits, a world-readable
    // one its group and other bits; the owner's own bits stay as they were.
    for (before, after) in [
        (0o660, 0o600),
        (0o640, 0o600),
        (0o644, 0o600),
        (0o700, 0o700),
        (0o600, 0o600),
    ] {
        fs::set_permissions(&path, fs::Permissions::from_mode(before)).unwrap();
        Kubeconfig::with_paths(vec![path.clone()])
            .upsert(&entry("k8s-tunnels/m", 20_000 + before as u16))
            .unwrap();
        let mode = fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, after, "a {before:o} kubeconfig became {mode:o}");
    }

    let new = dir.path().join("deep/new/dir/config");
    Kubeconfig::with_paths(vec![new.clone()])
        .upsert(&entry("k8s-tunnels/m", 1))
        .unwrap();
    assert_eq!(fs::metadata(&new).unwrap().mode() & 0o7777, 0o600);
    let doc = yaml(&new);
    assert_eq!(doc["apiVersion"], Value::from("v1"));
    assert_eq!(doc["kind"], Value::from("Config"));
}

#[test]
fn a_file_that_does_not_parse_is_reported_and_left_untouched() {
    let bad_files = [
        (
            "tabs",
            "apiVersion: v1\nclusters:\n- name: a\n\tcluster: {}\n",
            4,
        ),
        (
            "indentation",
            "apiVersion: v1\nusers:\n- name: a\n  user:\n    token: x\n   bad: y\n",
            6,
        ),
        (
            "shape",
            "apiVersion: v1\nkind: Config\n\ncontexts: {name: oops}\n",
            4,
        ),
    ];
    for (what, text, line) in bad_files {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let bad = dir.path().join("bad");
        fs::write(&good, USER_CONFIG).unwrap();
        fs::write(&bad, text).unwrap();
        let good_bytes = fs::read(&good).unwrap();
        let k = Kubeconfig::with_paths(vec![good.clone(), bad.clone()]);
        let err = k.upsert(&entry("k8s-tunnels/a", 1)).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, KubeconfigError::Parse { .. }),
            "{what}: {message}"
        );
        assert!(
            message.contains(&bad.display().to_string()),
            "{what}: {message}"
        );
        assert!(
            message.contains(&format!("line {line}")),
            "{what}: {message}"
        );
        assert_eq!(
            fs::read(&bad).unwrap(),
            text.as_bytes(),
            "{what}: bad file untouched"
        );
        assert_eq!(
            fs::read(&good).unwrap(),
            good_bytes,
            "{what}: good file untouched"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            2,
            "{what}: no temp or lock files: {leftovers:?}"
        );
        assert!(k.use_context("corp").is_err());
        assert!(k.current_context().is_err());
    }
}

#[test]
fn a_no_op_upsert_does_not_rewrite_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let k = Kubeconfig::with_paths(vec![path.clone()]);
    assert!(k.upsert(&entry("k8s-tunnels/same", 5)).unwrap());
    let before = fs::metadata(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    k8s_tunnels::sync::pause_blocking(Duration::from_millis(20));
    assert!(!k.upsert(&entry("k8s-tunnels/same", 5)).unwrap());
    let after = fs::metadata(&path).unwrap();
    assert_eq!(after.ino(), before.ino(), "not replaced");
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(fs::read(&path).unwrap(), bytes);
    // And a real change does replace it.
    assert!(k.upsert(&entry("k8s-tunnels/same", 6)).unwrap());
    assert_ne!(fs::metadata(&path).unwrap().ino(), before.ino());
}

#[test]
fn the_stamp_tells_a_keeper_whether_anyone_wrote_and_upsert_all_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = home();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let k = Kubeconfig::with_paths(vec![path.clone()]);
    let entries: Vec<_> = (0..20)
        .map(|i| entry(&format!("k8s-tunnels/c{i}"), 7000 + i))
        .collect();

    // Twenty entries, one read and one write (one rename: one new inode).
    let before = fs::metadata(&path).unwrap().ino();
    let (changed, stamp) = k.upsert_all(&entries).unwrap();
    assert!(changed);
    assert_ne!(fs::metadata(&path).unwrap().ino(), before);
    let names = kubectl_context_names(&kubeconfig_env(&[&path]), home.path());
    for i in 0..20 {
        assert!(names.contains(&format!("k8s-tunnels/c{i}")), "{names:?}");
    }

    // Nobody writes: the stamp holds, and a check finds nothing to do.
    k8s_tunnels::sync::pause_blocking(Duration::from_millis(20));
    assert_eq!(k.stamp(), stamp);
    let (changed, again) = k.upsert_all(&entries).unwrap();
    assert!(!changed);
    assert_eq!(again, stamp);

    // kubectl writes (its own context): the stamp moves; a check (which may rewrite kubectl's
    // layout of the file once) leaves a stamp that holds again.
    kubectl(
        &kubeconfig_env(&[&path]),
        home.path(),
        &["config", "set-context", "mine", "--cluster=c1"],
    );
    assert_ne!(k.stamp(), stamp, "kubectl's write went unseen");
    let (_, stamp) = k.upsert_all(&entries).unwrap();
    let (changed, again) = k.upsert_all(&entries).unwrap();
    assert!(!changed);
    assert_eq!(again, stamp);

    // kubectl deletes one of ours: seen, and put back.
    let stamp = k.stamp();
    kubectl(
        &kubeconfig_env(&[&path]),
        home.path(),
        &["config", "delete-context", "k8s-tunnels/c3"],
    );
    assert_ne!(k.stamp(), stamp);
    let (changed, _) = k.upsert_all(&entries).unwrap();
    assert!(changed);
    let names = kubectl_context_names(&kubeconfig_env(&[&path]), home.path());
    assert!(names.contains(&"k8s-tunnels/c3".to_string()), "{names:?}");

    // A file that appears or goes away changes the stamp too.
    let missing = Kubeconfig::with_paths(vec![dir.path().join("none")]);
    let empty = missing.stamp();
    fs::write(dir.path().join("none"), USER_CONFIG).unwrap();
    assert_ne!(missing.stamp(), empty);
}

#[test]
fn a_stale_lock_of_a_dead_process_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    // As this writer leaves it: pid, nonce, and the boot and pid namespace the pid is of.
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let namespace = fs::read_link("/proc/self/ns/pid").unwrap();
    let scope = format!("{}/{}", boot.trim(), namespace.display());
    fs::write(
        dir.path().join("config.lock"),
        format!("{dead_pid} 0000 {scope}\n"),
    )
    .unwrap();

    let started = Instant::now();
    Kubeconfig::with_paths(vec![path.clone()])
        .with_lock_timeout(Duration::from_secs(5))
        .upsert(&entry("k8s-tunnels/after-crash", 1))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "recovered without waiting out the timeout"
    );
    assert!(
        !dir.path().join("config.lock").exists(),
        "released after the write"
    );
    assert!(stanza(&yaml(&path), "clusters", "k8s-tunnels/after-crash").is_some());
}

#[test]
fn a_kubeconfig_on_a_file_system_without_hard_links_is_written_and_locked() {
    let disk = ExfatMount::new();
    let path = disk.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let link = fs::hard_link(&path, disk.path().join("link")).unwrap_err();
    // EPERM, what FAT and exFAT answer to link(2).
    assert_eq!(
        link.raw_os_error(),
        Some(1),
        "exFAT has no hard links: {link}"
    );

    let k = Kubeconfig::with_paths(vec![path.clone()]).with_lock_timeout(Duration::from_secs(2));
    k.upsert(&entry("k8s-tunnels/usb", 1111)).unwrap();
    k.upsert(&entry("k8s-tunnels/usb", 2222)).unwrap();
    k.use_context("k8s-tunnels/usb").unwrap();
    assert!(!disk.path().join("config.lock").exists(), "released");
    assert!(temp_files(disk.path(), "config").is_empty());

    // A lock held by someone else there is still waited for.
    fs::write(disk.path().join("config.lock"), "").unwrap();
    let err = k
        .clone()
        .with_lock_timeout(Duration::from_millis(200))
        .upsert(&entry("k8s-tunnels/usb", 3333))
        .unwrap_err();
    assert!(matches!(err, KubeconfigError::LockTimeout { .. }), "{err}");
    fs::remove_file(disk.path().join("config.lock")).unwrap();

    let home = home();
    let env = kubeconfig_env(&[&path]);
    assert_eq!(
        kubectl(&env, home.path(), &["config", "current-context"]).trim(),
        "k8s-tunnels/usb"
    );
    let view = kubectl_view(&env, home.path());
    let names: Vec<_> = view["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"corp".to_owned()),
        "the user's entries stay: {names:?}"
    );
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .contains("127.0.0.1:2222")
    );
}

#[test]
fn a_live_lock_is_waited_on_and_times_out_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let lock = dir.path().join("config.lock");
    // kubectl's lock: an empty, fresh file.
    fs::write(&lock, "").unwrap();
    let k =
        Kubeconfig::with_paths(vec![path.clone()]).with_lock_timeout(Duration::from_millis(300));
    let err = k.upsert(&entry("k8s-tunnels/w", 1)).unwrap_err();
    assert!(matches!(err, KubeconfigError::LockTimeout { .. }), "{err}");
    assert!(err.to_string().contains("config.lock"), "{err}");
    assert!(lock.exists(), "someone else's live lock is not removed");

    let released = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            k8s_tunnels::sync::pause_blocking(Duration::from_millis(400));
            fs::remove_file(lock).unwrap();
        })
    };
    let started = Instant::now();
    let k = k.with_lock_timeout(Duration::from_secs(5));
    k.upsert(&entry("k8s-tunnels/w", 1)).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "it waited for the holder"
    );
    released.join().unwrap();
    assert!(stanza(&yaml(&path), "clusters", "k8s-tunnels/w").is_some());
}

#[test]
fn kubectl_writing_concurrently_loses_no_entry() {
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let env = kubeconfig_env(&[&path]);
    let home = home();

    let kubectl_loop = {
        let env = env.clone();
        let home = home.path().to_owned();
        std::thread::spawn(move || {
            let mut lock_conflicts = 0;
            for i in 0..N {
                let name = format!("user-ctx-{i}");
                // kubectl does not wait for a lock: it fails with "file exists". A user (or
                // script) retries; so does this loop, boundedly.
                let mut attempts = 0;
                loop {
                    let out = kubectl_raw(
                        &env,
                        &home,
                        &["config", "set-context", &name, "--cluster=x"],
                    );
                    if out.status.success() {
                        break;
                    }
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    assert!(
                        stderr.contains(".lock"),
                        "kubectl failed for another reason: {stderr}"
                    );
                    lock_conflicts += 1;
                    attempts += 1;
                    assert!(attempts < 200, "kubectl never got the lock");
                    k8s_tunnels::sync::pause_blocking(Duration::from_millis(5));
                }
            }
            lock_conflicts
        })
    };
    let k = Kubeconfig::with_paths(vec![path.clone()]);
    for i in 0..N {
        k.upsert(&entry(&format!("k8s-tunnels/c{i}"), 2000 + i as u16))
            .unwrap();
        // Every state we leave behind parses.
        yaml(&path);
    }
    let conflicts = kubectl_loop.join().unwrap();
    eprintln!("kubectl hit the lock {conflicts} times");

    // Our writer reads under the lock, so it can never drop what kubectl wrote: every one of
    // kubectl's contexts must be there.
    let names = kubectl_context_names(&env, home.path());
    let lost_user: Vec<String> = (0..N)
        .map(|i| format!("user-ctx-{i}"))
        .filter(|n| !names.contains(n))
        .collect();
    assert!(
        lost_user.is_empty(),
        "the writer lost kubectl's entries: {lost_user:?}"
    );
    assert!(names.contains(&"corp".to_owned()));

    // kubectl is not as careful: `config set-context` reads the config *before* taking the
    // lock, and client-go's ModifyConfig then deletes every stanza missing from that early
    // read — so an app entry written in that window is removed by kubectl. The engine heals
    // this by upserting again; after one pass all 100 are there, and a second pass writes
    // nothing. (The first pass may rewrite entries kubectl merely re-serialized: kubectl adds
    // its defaults, e.g. `env: null` to an exec user.)
    let lost_app: Vec<String> = (0..N)
        .map(|i| format!("k8s-tunnels/c{i}"))
        .filter(|n| !names.contains(n))
        .collect();
    eprintln!(
        "kubectl's read-before-lock race removed {} app entries: {lost_app:?}",
        lost_app.len()
    );
    let upsert_all = || {
        (0..N)
            .filter(|&i| {
                k.upsert(&entry(&format!("k8s-tunnels/c{i}"), 2000 + i as u16))
                    .unwrap()
            })
            .count()
    };
    upsert_all();
    assert_eq!(upsert_all(), 0, "a second pass must not rewrite anything");
    let names = kubectl_context_names(&env, home.path());
    let missing: Vec<String> = (0..N)
        .map(|i| format!("user-ctx-{i}"))
        .chain((0..N).map(|i| format!("k8s-tunnels/c{i}")))
        .filter(|n| !names.contains(n))
        .collect();
    assert!(missing.is_empty(), "lost entries: {missing:?}");
    assert!(!dir.path().join("config.lock").exists());
}

/// Env var that turns the ignored test below into a writer loop for the kill test.
const HELPER_ENV: &str = "K8S_TUNNELS_KUBECONFIG_WRITER_LOOP";

/// Not a test: the child process of `a_writer_killed_mid_write_leaves_the_old_or_the_new_file`.
/// It writes the file named by the env var in a loop, alternating two contents, until killed.
#[test]
#[ignore = "helper process, run by a_writer_killed_mid_write_leaves_the_old_or_the_new_file"]
fn writer_loop_helper() {
    let path = std::env::var_os(HELPER_ENV).expect("run only as the kill test's helper");
    let k = Kubeconfig::with_paths(vec![path.into()]);
    for round in 0u64.. {
        let port = if round % 2 == 0 { 1111 } else { 2222 };
        k.upsert(&entry("k8s-tunnels/killed", port)).unwrap();
    }
}

#[test]
fn a_writer_killed_mid_write_leaves_the_old_or_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, USER_CONFIG).unwrap();
    let k = Kubeconfig::with_paths(vec![path.clone()]);
    k.upsert(&entry("k8s-tunnels/killed", 1111)).unwrap();
    let old = fs::read(&path).unwrap();
    k.upsert(&entry("k8s-tunnels/killed", 2222)).unwrap();
    let new = fs::read(&path).unwrap();
    assert_ne!(old, new);

    let exe = std::env::current_exe().unwrap();
    let mut temp_left = 0;
    for round in 0..30 {
        let mut child = Command::new(&exe)
            .args([
                "writer_loop_helper",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(rand::random_range(20..120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let now = fs::read(&path).unwrap();
        assert!(
            now == old || now == new,
            "round {round}: the file is neither old nor new"
        );
        let temps = temp_files(dir.path(), "config");
        assert!(
            temps.len() <= 1,
            "round {round}: temp files accumulate: {temps:?}"
        );
        temp_left += temps.len();
    }
    eprintln!("{temp_left} of 30 kills landed mid-write (left a temp file)");

    // The next write recovers the dead writer's lock and cleans its temp file.
    k.with_lock_timeout(Duration::from_secs(2))
        .upsert(&entry("k8s-tunnels/killed", 3333))
        .unwrap();
    assert!(temp_files(dir.path(), "config").is_empty());
    assert!(!dir.path().join("config.lock").exists());
    let home = home();
    let names = kubectl_context_names(&kubeconfig_env(&[&path]), home.path());
    assert!(names.contains(&"k8s-tunnels/killed".to_owned()));
}

#[test]
fn no_debug_output_or_error_message_contains_the_socks_secret() {
    let e = entry("k8s-tunnels/s", 1);
    let debug = format!("{e:?}");
    assert!(!debug.contains(SOCKS_SECRET), "{debug}");
    assert!(debug.contains("k8s-tunnels/s"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let mut errors: Vec<KubeconfigError> = Vec::new();

    // A file whose app entry was mangled into a wrong shape around the proxy URL: the parser's
    // message quotes the value.
    fs::write(
        &path,
        format!(
            "clusters:\n- name: k8s-tunnels/s\n  cluster: \"socks5://k8s-tunnels:{SOCKS_SECRET}@127.0.0.1:1\"\n"
        ),
    )
    .unwrap();
    let k = Kubeconfig::with_paths(vec![path.clone()]);
    errors.push(k.upsert(&e).unwrap_err());
    // A bad scheme, a lock timeout, a name outside the prefix.
    fs::write(&path, USER_CONFIG).unwrap();
    let mut socks5h = entry("k8s-tunnels/s", 1);
    socks5h.proxy_url = k8s_tunnels::secret::Secret::new(format!(
        "socks5h://k8s-tunnels:{SOCKS_SECRET}@127.0.0.1:1"
    ));
    errors.push(k.upsert(&socks5h).unwrap_err());
    fs::write(dir.path().join("config.lock"), "").unwrap();
    errors.push(
        k.clone()
            .with_lock_timeout(Duration::from_millis(50))
            .upsert(&e)
            .unwrap_err(),
    );
    errors.push(k.upsert(&entry("prod", 1)).unwrap_err());

    for err in &errors {
        let mut texts = vec![err.to_string(), format!("{err:?}")];
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            texts.push(s.to_string());
            texts.push(format!("{s:?}"));
            source = s.source();
        }
        for text in texts {
            assert!(!text.contains(SOCKS_SECRET), "leak in: {text}");
        }
    }
    assert!(
        matches!(errors[0], KubeconfigError::Parse { .. }),
        "{}",
        errors[0]
    );
}

#[test]
fn strings_that_yaml_1_1_reads_as_booleans_stay_strings_for_kubectl() {
    // kubectl reads kubeconfig as YAML 1.1: a bare `no` or `on` is a boolean there, and a
    // boolean where a string belongs makes kubectl refuse the whole file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(
        &path,
        r#"apiVersion: v1
kind: Config
clusters:
- name: "y"
  cluster: {server: "https://y.example.com"}
users:
- name: "off"
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: tool, args: ["on", "0755", "yes"]}
contexts:
- name: norway
  context: {cluster: "y", user: "off", namespace: "no"}
current-context: norway
"#,
    )
    .unwrap();
    let k = Kubeconfig::with_paths(vec![path.clone()]);
    assert!(k.upsert(&entry("k8s-tunnels/n", 1111)).unwrap());
    let home = home();
    let view = kubectl_view(&kubeconfig_env(&[&path]), home.path());
    let context = view["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "norway")
        .unwrap();
    assert_eq!(context["context"]["namespace"], "no");
    assert_eq!(context["context"]["cluster"], "y");
    let user = view["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "off")
        .unwrap();
    assert_eq!(
        user["user"]["exec"]["args"],
        serde_json::json!(["on", "0755", "yes"])
    );
    let names = kubectl_context_names(&kubeconfig_env(&[&path]), home.path());
    assert!(names.contains(&"k8s-tunnels/n".to_owned()), "{names:?}");
}
