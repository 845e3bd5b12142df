//! The inventory file: a full valid file, every kind of error located by file, line, column and
//! field path, relative paths, Access hostname rules and hostile input.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use k8s_tunnels::discovery::file::{InventoryError, load, parse};
use k8s_tunnels::inventory::{AccessAuth, Cloud, OriginMode, SecretRef};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One valid cluster; the line numbers in the tests below refer to this text.
const BASE: &str = "\
clusters:
  - name: a
    cloud: aws
    environment: prod
    server: https://a.internal:6443
    access:
      hostname: a.example.com
      origin: socks
    user:
      token: abc
";

const FILE: &str = "/etc/kt/inventory.yaml";

fn err_of(text: &str) -> String {
    match parse(text, Path::new(FILE)) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// Replaces exactly one occurrence, so a test cannot silently mutate nothing.
fn with(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} must occur once");
    BASE.replace(from, to)
}

#[test]
fn full_file_with_every_option() {
    let path = fixtures().join("full.yaml");
    let clusters = load(&path).expect("the full fixture is valid");
    assert_eq!(clusters.len(), 3);
    let api_ca = std::fs::read_to_string(fixtures().join("certs/api-ca.pem")).unwrap();
    let gw_ca = std::fs::read_to_string(fixtures().join("certs/gateway-ca.pem")).unwrap();

    let prod = &clusters[0];
    assert_eq!(prod.id.0, "file:prod-eu");
    assert_eq!(prod.name, "prod-eu");
    assert_eq!(prod.cloud, Cloud::Aws);
    assert_eq!(prod.environment, "prod");
    assert_eq!(prod.region.as_deref(), Some("eu-west-1"));
    assert_eq!(prod.api.url.as_str(), "https://prod-eu.k8s.internal:6443/");
    assert_eq!(prod.api.host, "prod-eu.k8s.internal");
    assert_eq!(prod.api.port, 6443);
    // ca_file is relative to the inventory's folder.
    assert_eq!(prod.api.ca_pem.as_deref(), Some(api_ca.as_str()));
    assert_eq!(
        prod.api.tls_server_name.as_deref(),
        Some("kubernetes.default")
    );
    assert_eq!(prod.access.hostname, "prod-eu-k8s.example.com");
    assert_eq!(prod.access.url.as_str(), "wss://prod-eu-k8s.example.com/");
    assert_eq!(prod.access.origin, OriginMode::Socks);
    assert_eq!(prod.access.connect_to.as_deref(), Some("127.0.0.1:8443"));
    assert_eq!(prod.access.edge_ca_pem.as_deref(), Some(gw_ca.as_str()));
    assert_eq!(
        prod.access.auth,
        AccessAuth::ServiceToken {
            client_id: "abc.access".into(),
            client_secret: SecretRef::Env("CF_SECRET".into()),
        }
    );
    let exec = prod.user.get("exec").unwrap().as_mapping().unwrap();
    assert_eq!(exec.get("command").unwrap().as_str(), Some("aws"));
    assert_eq!(exec.get("args").unwrap().as_sequence().unwrap().len(), 4);

    let staging = &clusters[1];
    assert_eq!(staging.cloud, Cloud::Gcp);
    assert_eq!(staging.region, None);
    assert_eq!(staging.api.port, 443);
    assert_eq!(staging.api.host, "10.0.0.1");
    assert_eq!(
        staging.api.ca_pem.as_deref().map(str::trim),
        Some(api_ca.trim())
    );
    // The path of the Access URL is kept.
    assert_eq!(
        staging.access.url.as_str(),
        "wss://gke.example.com/k8s/staging"
    );
    assert_eq!(staging.access.origin, OriginMode::Bastion);
    assert_eq!(
        staging.access.auth,
        AccessAuth::Token(SecretRef::File(fixtures().join("tokens/staging.jwt")))
    );
    assert_eq!(
        staging.user.get("tokenFile").unwrap().as_str(),
        Some("/var/run/secrets/token")
    );

    let lab = &clusters[2];
    assert_eq!(lab.name, "lab.local_1");
    assert_eq!(lab.cloud, Cloud::Onprem);
    assert_eq!(lab.api.host, "fd00::1");
    assert_eq!(lab.api.host_port(), "[fd00::1]:6443");
    assert_eq!(lab.access.url.as_str(), "ws://127.0.0.1:18080/");
    assert_eq!(lab.access.origin, OriginMode::Tcp);
    assert_eq!(
        lab.access.auth,
        AccessAuth::Token(SecretRef::Env("LAB_TOKEN".into()))
    );
    assert!(lab.user.contains_key("client-key"), "user kept as given");
}

#[test]
fn every_kind_of_error_names_file_line_column_and_field() {
    let cases: Vec<(String, &str, &str)> = vec![
        // (text, "line:column: field path", fragment of the explanation)
        (
            with("origin: socks", "origin: sox"),
            "8:15: clusters[0].access.origin",
            "unknown variant `sox`, expected one of `socks`, `tcp`, `bastion`",
        ),
        (
            with("cloud: aws", "cloud: aws2"),
            "3:12: clusters[0].cloud",
            "unknown variant `aws2`",
        ),
        (
            format!("{BASE}    colour: red\n"),
            "11:5: clusters[0]",
            "unknown field `colour`",
        ),
        (
            with(
                "      origin: socks\n",
                "      origin: socks\n      proxy: x\n",
            ),
            "9:7: clusters[0].access",
            "unknown field `proxy`",
        ),
        (
            format!("version: 2\n{BASE}"),
            "1:1",
            "unknown field `version`, expected `clusters`",
        ),
        (
            with("    server: https://a.internal:6443\n", ""),
            "2:5: clusters[0]",
            "missing field `server`",
        ),
        (
            with("environment: prod", "environment: [prod]"),
            "4:18: clusters[0].environment",
            "invalid type: sequence",
        ),
        (
            with("https://a.internal:6443", "http://a.internal:6443"),
            "5:13: clusters[0].server",
            "must use https",
        ),
        (
            with("https://a.internal:6443", "https://a.internal:6443/?x=1"),
            "5:13: clusters[0].server",
            "must not have a query",
        ),
        (
            with("hostname: a.example.com", "hostname: http://a.example.com"),
            // Judged with connect_to, so it points at the access section.
            "7:7: clusters[0].access",
            "allowed only to a loopback address",
        ),
        (
            with(
                "      origin: socks\n",
                "      origin: socks\n      connect_to: nowhere\n",
            ),
            "9:19: clusters[0].access.connect_to",
            "must be host:port",
        ),
        (
            with(
                "      origin: socks\n",
                "      origin: socks\n      token: { env: A }\n      service_token: { client_id: x, client_secret: { env: B } }\n",
            ),
            "7:7: clusters[0].access",
            "either token or service_token, not both",
        ),
        (
            with(
                "      origin: socks\n",
                "      origin: socks\n      token: { env: A, file: b }\n",
            ),
            "9:14: clusters[0].access.token",
            "exactly one of",
        ),
        (
            with(
                "      origin: socks\n",
                "      origin: socks\n      token: { env: 1-BAD }\n",
            ),
            "9:21: clusters[0].access.token.env",
            "not an environment variable name",
        ),
        (
            with("    access:\n", "    ca: not a pem\n    access:\n"),
            "6:9: clusters[0].ca",
            "not usable as a CA",
        ),
        (
            with(
                "    access:\n",
                "    tls_server_name: \"bad name!\"\n    access:\n",
            ),
            "6:22: clusters[0].tls_server_name",
            "not a valid DNS name",
        ),
        (
            with("      token: abc\n", "      colour: red\n"),
            "10:7: clusters[0].user",
            "needs one of exec, token, tokenFile",
        ),
        (
            with(
                "      token: abc\n",
                "      exec:\n        apiVersion: client.authentication.k8s.io/v1beta1\n        command: [aws, eks]\n",
            ),
            "10:7: clusters[0].user",
            "exec.command must be a plain string",
        ),
        (
            with("    user:\n      token: abc\n", "    user: alice\n"),
            "9:11: clusters[0].user",
            "invalid type: string \"alice\", expected a kubeconfig user mapping",
        ),
        (
            with("origin: socks", "origin: \"socks"),
            "11:1: ",
            "found unexpected end of stream at line 11 column 1, while scanning a quoted scalar at line 8 column 15",
        ),
    ];
    for (text, location, fragment) in cases {
        let err = err_of(&text);
        let prefix = format!("{FILE}:{location}");
        assert!(
            err.starts_with(&prefix),
            "expected prefix {prefix:?}, got {err:?}\n--- for ---\n{text}"
        );
        assert!(
            err.contains(fragment),
            "expected {fragment:?} in {err:?}\n--- for ---\n{text}"
        );
    }
}

#[test]
fn duplicate_names_point_at_the_second_cluster() {
    let second = BASE.strip_prefix("clusters:\n").unwrap();
    let text = format!("{BASE}{second}");
    let err = err_of(&text);
    assert!(
        err.starts_with(&format!(
            "{FILE}:11:5: clusters[1]: duplicate cluster name \"a\""
        )),
        "{err}"
    );
    assert!(err.contains("clusters[0]"), "{err}");
}

#[test]
fn relative_ca_file_is_resolved_against_the_inventory_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::copy(
        fixtures().join("certs/api-ca.pem"),
        dir.path().join("certs/ca.pem"),
    )
    .unwrap();
    let text = with("    access:\n", "    ca_file: certs/ca.pem\n    access:\n");
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, &text).unwrap();
    // The working directory is elsewhere: only the inventory's folder makes the path resolve.
    let clusters = load(&path).unwrap();
    assert!(
        clusters[0]
            .api
            .ca_pem
            .as_deref()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    // A missing ca_file names the resolved path, the field and the cluster's line.
    let text = with(
        "    access:\n",
        "    ca_file: certs/missing.pem\n    access:\n",
    );
    std::fs::write(&path, &text).unwrap();
    let err = load(&path).unwrap_err().to_string();
    let resolved = dir.path().join("certs/missing.pem");
    assert!(
        err.starts_with(&format!(
            "{}:2:5: clusters[0]: ca_file: cannot read {}",
            path.display(),
            resolved.display()
        )),
        "{err}"
    );

    // A ca_file that is not PEM is refused too.
    std::fs::write(dir.path().join("certs/missing.pem"), "hello").unwrap();
    let err = load(&path).unwrap_err().to_string();
    assert!(err.contains("not usable as a CA"), "{err}");
}

#[test]
fn ca_and_ca_file_together_are_refused() {
    let pem = std::fs::read_to_string(fixtures().join("certs/api-ca.pem")).unwrap();
    let indented: String = pem.lines().map(|l| format!("      {l}\n")).collect();
    let text = with(
        "    access:\n",
        &format!("    ca_file: certs/api-ca.pem\n    ca: |\n{indented}    access:\n"),
    );
    let err = match parse(&text, &fixtures().join("inv.yaml")) {
        Ok(_) => panic!("ca with ca_file must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(":2:5: clusters[0]: set either ca or ca_file, not both"),
        "{err}"
    );
}

#[test]
fn missing_file_says_so_and_suggests_the_default_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, InventoryError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(msg.contains("default location is"), "{msg}");
    assert!(msg.contains("inventory.yaml"), "{msg}");
    assert!(msg.contains("--inventory"), "{msg}");
}

#[test]
fn empty_inventories() {
    assert!(err_of("").contains("the file is empty"));
    assert!(err_of("# only a comment\n").contains("the file is empty"));
    let none = parse("clusters:\n#  - name: a\n", Path::new(FILE)).unwrap();
    assert!(none.is_empty());
    assert!(parse("clusters: []\n", Path::new(FILE)).unwrap().is_empty());
    assert!(err_of("clusters: 3\n").contains("expected a list of clusters"));
}

fn access_url(hostname: &str) -> Result<String, String> {
    let text = with(
        "hostname: a.example.com",
        &format!("hostname: \"{hostname}\""),
    );
    parse(&text, Path::new(FILE))
        .map(|c| c[0].access.url.to_string())
        .map_err(|e| e.to_string())
}

#[test]
fn access_hostname_rules() {
    assert_eq!(
        access_url("k8s.example.com").unwrap(),
        "wss://k8s.example.com/"
    );
    assert_eq!(
        access_url("https://k8s.example.com").unwrap(),
        "wss://k8s.example.com/"
    );
    assert_eq!(
        access_url("wss://k8s.example.com:8443/p").unwrap(),
        "wss://k8s.example.com:8443/p"
    );
    assert_eq!(
        access_url("ws://127.0.0.1:18080").unwrap(),
        "ws://127.0.0.1:18080/"
    );
    assert_eq!(
        access_url("http://localhost:9000/x").unwrap(),
        "ws://localhost:9000/x"
    );
    assert_eq!(access_url("ws://[::1]:9000").unwrap(), "ws://[::1]:9000/");
    // Plain ws to a remote host would send tokens in clear: refused, unless the dial itself
    // goes to loopback (a local gateway reached by name, as the lab and benchmarks do).
    for refused in [
        "ws://example.com",
        "http://example.com",
        "http://10.0.0.1:80",
    ] {
        let err = access_url(refused).expect_err(refused);
        assert!(
            err.starts_with(&format!("{FILE}:7:7: clusters[0].access: ")),
            "{refused:?}: {err}"
        );
        assert!(err.contains("allowed only to a loopback address"), "{err}");
    }
    let via_loopback = with(
        "hostname: a.example.com",
        "hostname: ws://a.example.com\n      connect_to: 127.0.0.1:9000",
    );
    let clusters = parse(&via_loopback, Path::new(FILE)).expect("ws with loopback connect_to");
    assert_eq!(clusters[0].access.url.as_str(), "ws://a.example.com/");
    let via_remote = with(
        "hostname: a.example.com",
        "hostname: ws://a.example.com\n      connect_to: 10.0.0.1:9000",
    );
    assert!(err_of(&via_remote).contains("allowed only to a loopback address"));
    for refused in [
        "ftp://example.com",
        "https://user:pw@example.com",
        "https://example.com/?token=x",
        "https://example.com/#frag",
        "https://",
        "",
    ] {
        let err = access_url(refused).expect_err(refused);
        assert!(
            err.starts_with(&format!("{FILE}:7:17: clusters[0].access.hostname: ")),
            "{refused:?}: {err}"
        );
        assert!(!err.contains(":pw@"), "credentials echoed: {err}");
    }
}

#[test]
fn hostile_names_are_refused_cleanly() {
    let long = "a".repeat(10 * 1024);
    let hostile: Vec<String> = vec![
        "a/b".into(),
        "..".into(),
        "../etc".into(),
        "a b".into(),
        " a".into(),
        "prod-ü".into(),
        "名前".into(),
        "-a".into(),
        ".hidden".into(),
        "a:b".into(),
        "a\\u0000b".into(),
        "a\\nb".into(),
        "\\u001b[31mred".into(),
        "&anchor".into(),
        "*alias".into(),
        "!tag".into(),
        "$(rm -rf ~)".into(),
        "".into(),
        "a".repeat(64),
        long.clone(),
    ];
    for name in &hostile {
        let text = with("- name: a", &format!("- name: \"{name}\""));
        let err = err_of(&text);
        assert!(
            err.starts_with(&format!("{FILE}:2:11: clusters[0].name: cluster name ")),
            "{name:?}: {err}"
        );
        assert!(
            err.len() < 300,
            "error for a long name is bounded: {} bytes",
            err.len()
        );
        assert!(
            !err.contains('\n') && !err.contains('\u{1b}'),
            "raw control characters in {err:?}"
        );
    }
    // Unquoted YAML specials are YAML errors, still located.
    for raw in ["*alias", "&anchor", "@x", "`x", "[a", "{a"] {
        let text = with("- name: a", &format!("- name: {raw}"));
        let err = err_of(&text);
        assert!(err.starts_with(&format!("{FILE}:")), "{raw:?}: {err}");
        assert!(
            err.contains("line") || err.contains(":2:"),
            "{raw:?}: {err}"
        );
    }
    // The longest allowed name and every allowed character are accepted.
    let ok = format!("A{}", "b".repeat(62));
    for name in [ok.as_str(), "0", "a.b_c-d"] {
        let text = with("- name: a", &format!("- name: {name}"));
        let clusters = parse(&text, Path::new(FILE)).unwrap();
        assert_eq!(clusters[0].id.0, format!("file:{name}"));
    }
}

#[test]
fn hostile_environment_and_server_are_refused() {
    let err = err_of(&with("environment: prod", "environment: \"../../x\""));
    assert!(
        err.starts_with(&format!("{FILE}:4:18: clusters[0].environment: ")),
        "{err}"
    );
    let err = err_of(&with(
        "https://a.internal:6443",
        "\"https://admin:s3cret@a.internal\"",
    ));
    assert!(
        err.starts_with(&format!("{FILE}:5:13: clusters[0].server: ")),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let err = err_of(&with("https://a.internal:6443", "\"javascript:alert(1)\""));
    assert!(err.contains("must use https"), "{err}");
}
