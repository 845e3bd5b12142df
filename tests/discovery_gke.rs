//! The GKE source, with the real google-cloud-container-v1 client, against a fake of the
//! container v1 `projects.locations.clusters.list` REST API (no GKE here): clusters, ids,
//! labels, the exec user, grouping, 403 / 404 projects, `missingZones`, hostile data, and the
//! kubeconfig written from the result loading in the real kubectl.
#![allow(clippy::unwrap_used)]

mod fakes;
#[path = "support/listed.rs"]
mod listed;

use std::collections::{BTreeMap, BTreeSet};

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use k8s_tunnels::discovery::gke::{GkeConfig, GkeSource};
use k8s_tunnels::discovery::{ClusterSource, Rejection};
use k8s_tunnels::inventory::{Cloud, OriginMode};
use serde_json::Value;

use fakes::gke::{Project, cluster};
use listed::{groups, listed};

fn source(endpoint: &str, projects: &[&str]) -> GkeSource {
    GkeSource::with_credentials(
        GkeConfig {
            projects: projects.iter().map(|p| (*p).to_string()).collect(),
            endpoint: Some(endpoint.into()),
            ..GkeConfig::default()
        },
        Anonymous::new().build(),
    )
}

fn ok(clusters: Vec<Value>) -> Project {
    Project::Clusters {
        clusters,
        missing_zones: Vec::new(),
    }
}

#[tokio::test]
async fn lists_each_project_once_and_maps_labels_ids_users_groups() {
    let ca = fakes::ca_pem();
    let projects = BTreeMap::from([
        (
            "shop-prod".to_string(),
            ok(vec![
                cluster(
                    "shop-prod",
                    "europe-west1",
                    "web",
                    "34.78.10.1",
                    &ca,
                    &[
                        ("k8s-tunnels-hostname", "web_k8s_example_com"),
                        ("env", "prod"),
                        ("k8s-tunnels-origin", "bastion"),
                    ],
                ),
                cluster(
                    "shop-prod",
                    "europe-west1-b",
                    "batch",
                    "34.78.10.2",
                    &ca,
                    &[
                        ("k8s-tunnels-hostname", "batch_k8s_example_com"),
                        ("env", "prod"),
                    ],
                ),
                cluster(
                    "shop-prod",
                    "us-central1",
                    "private",
                    "10.0.0.2",
                    &ca,
                    &[("env", "prod")],
                ),
            ]),
        ),
        (
            "shop-dev".to_string(),
            ok(vec![{
                let mut c = cluster(
                    "shop-dev",
                    "us-east1",
                    "dev",
                    "35.1.2.3",
                    &ca,
                    &[("environment", "dev")],
                );
                // A hostname too long for a label value sits in the description.
                c["description"] = "Dev cluster.\nk8s-tunnels-hostname=dev.k8s.example.com".into();
                c
            }]),
        ),
    ]);
    let (served, state) = fakes::gke::start(projects).await;
    let source = source(&served.url(), &["shop-prod", "shop-dev"]);
    assert_eq!(source.name(), "gke");
    let (report, progress) = fakes::discover(&source).await;

    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let scanned: BTreeSet<&str> = report.scanned.iter().map(String::as_str).collect();
    assert_eq!(scanned, BTreeSet::from(["gke:shop-prod", "gke:shop-dev"]));
    let ids: BTreeSet<&str> = report
        .found
        .iter()
        .map(|f| f.cluster.id.0.as_str())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "gke:shop-prod:europe-west1:web",
            "gke:shop-prod:europe-west1-b:batch",
            "gke:shop-dev:us-east1:dev",
        ])
    );
    let all = fakes::clusters(&report);
    let web = all.iter().find(|c| c.name == "web").unwrap();
    assert_eq!(web.cloud, Cloud::Gcp);
    assert_eq!(web.environment, "prod");
    assert_eq!(web.region.as_deref(), Some("europe-west1"));
    assert_eq!(web.api.url.as_str(), "https://34.78.10.1/");
    assert_eq!(
        web.api.ca_pem.as_deref(),
        Some(ca.as_str()),
        "base64 decoded to PEM"
    );
    assert_eq!(web.access.hostname, "web.k8s.example.com");
    assert_eq!(web.access.origin, OriginMode::Bastion);
    let exec = web.user["exec"].as_mapping().unwrap();
    assert_eq!(exec["command"].as_str(), Some("gke-gcloud-auth-plugin"));
    assert_eq!(
        exec["apiVersion"].as_str(),
        Some("client.authentication.k8s.io/v1beta1")
    );
    assert_eq!(exec["provideClusterInfo"].as_bool(), Some(true));
    assert!(
        exec["installHint"]
            .as_str()
            .unwrap()
            .contains("gke-gcloud-auth-plugin")
    );
    let dev = all.iter().find(|c| c.name == "dev").unwrap();
    assert_eq!(dev.access.hostname, "dev.k8s.example.com");
    assert_eq!(dev.environment, "dev");

    // The cluster without a hostname label is listed, not dropped.
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].name, "\"private\"");
    assert_eq!(report.rejected[0].scope, "gke:shop-prod");
    assert_eq!(report.rejected[0].reason, Rejection::NotPublished);

    assert_eq!(
        listed(&all, Cloud::Gcp),
        groups(&[("prod", &["batch", "web"]), ("dev", &["dev"])])
    );

    // One call per project, every location at once.
    let mut paths: Vec<String> = k8s_tunnels::sync::lock(&state.requests)
        .iter()
        .map(|r| r.split('?').next().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "GET /v1/projects/shop-dev/locations/-/clusters",
            "GET /v1/projects/shop-prod/locations/-/clusters",
        ]
    );
    let last = progress.last().unwrap();
    assert_eq!((last.source.as_str(), last.done, last.total), ("gke", 2, 2));

    let dir = tempfile::tempdir().unwrap();
    let view = fakes::kubectl_view(dir.path(), &all);
    let user = view["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "k8s-tunnels/web")
        .unwrap();
    assert_eq!(user["user"]["exec"]["command"], "gke-gcloud-auth-plugin");
    assert_eq!(user["user"]["exec"]["provideClusterInfo"], true);
}

#[tokio::test]
async fn forbidden_and_missing_projects_fail_alone() {
    let ca = fakes::ca_pem();
    let projects = BTreeMap::from([
        (
            "good".to_string(),
            ok(vec![cluster(
                "good",
                "europe-west4",
                "a",
                "34.0.0.1",
                &ca,
                &[("k8s-tunnels-hostname", "a_example_com")],
            )]),
        ),
        ("locked".to_string(), Project::Forbidden),
        ("gone".to_string(), Project::NotFound),
    ]);
    let (served, _state) = fakes::gke::start(projects).await;
    let (report, progress) =
        fakes::discover(&source(&served.url(), &["good", "locked", "gone"])).await;

    assert_eq!(report.scanned, vec!["gke:good".to_string()]);
    assert_eq!(report.found.len(), 1);
    let failed: BTreeMap<&str, &str> = report
        .failed
        .iter()
        .map(|f| (f.scope.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed["gke:locked"]
            .starts_with("HTTP 403 PERMISSION_DENIED: Permission 'container.clusters.list' denied"),
        "{}",
        failed["gke:locked"]
    );
    assert!(
        failed["gke:gone"].starts_with("HTTP 404 NOT_FOUND: Project \"gone\" not found"),
        "{}",
        failed["gke:gone"]
    );
    let last = progress.last().unwrap();
    assert_eq!((last.done, last.total), (3, 3));
}

#[tokio::test]
async fn missing_zones_are_a_scope_error_that_keeps_the_clusters_found() {
    let ca = fakes::ca_pem();
    let projects = BTreeMap::from([(
        "p-zones".to_string(),
        Project::Clusters {
            clusters: vec![cluster(
                "p-zones",
                "asia-east1-a",
                "still-here",
                "34.1.1.1",
                &ca,
                &[("k8s-tunnels-hostname", "here_example_com")],
            )],
            missing_zones: vec!["us-central1-c".into(), "europe-west2-a".into()],
        },
    )]);
    let (served, _state) = fakes::gke::start(projects).await;
    let (report, _) = fakes::discover(&source(&served.url(), &["p-zones"])).await;

    assert_eq!(
        report.found.len(),
        1,
        "the clusters that came back are kept"
    );
    assert_eq!(report.found[0].cluster.name, "still-here");
    assert_eq!(report.found[0].scope, "gke:p-zones");
    assert!(report.scanned.is_empty(), "not scanned completely");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].scope, "gke:p-zones");
    let message = &report.failed[0].message;
    assert!(
        message.contains("us-central1-c") && message.contains("europe-west2-a"),
        "{message}"
    );
}

#[tokio::test]
async fn an_invalid_project_id_fails_before_any_request() {
    let (served, state) = fakes::gke::start(BTreeMap::new()).await;
    let (report, _) =
        fakes::discover(&source(&served.url(), &["../../v1/other", "Bad Project"])).await;
    assert_eq!(report.failed.len(), 2);
    assert!(
        report
            .failed
            .iter()
            .all(|f| f.message.contains("not valid"))
    );
    assert!(k8s_tunnels::sync::lock(&state.requests).is_empty());
}

#[tokio::test]
async fn hostile_clusters_are_rejected_or_made_safe_and_kubectl_still_loads_the_result() {
    let ca = fakes::ca_pem();
    let host = [("k8s-tunnels-hostname", "h_example_com")];
    let named = |name: &str| cluster("hostile", "europe-west1", name, "34.9.9.9", &ca, &host);
    let long = "n".repeat(10 * 1024);
    let mut clusters_json = vec![
        named("a/b/../../etc"),
        named("with space"),
        named("dots.in.name"),
        named(".."),
        named("ünïcödé-集群"),
        named("key: value # {flow} *alias &anchor !tag"),
        named(&long),
    ];
    let mut hostile = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut c = named(name);
        edit(&mut c);
        clusters_json.push(c);
    };
    hostile("host-with-path", &|c| {
        c["resourceLabels"]["k8s-tunnels-hostname"] = "k8s_example_com/team".into();
    });
    hostile("host-with-creds", &|c| {
        c["resourceLabels"]["k8s-tunnels-hostname"] = "https://bob:hunter2@k8s_example_com".into();
    });
    hostile("endpoint-with-creds", &|c| {
        c["endpoint"] = "admin:hunter2@34.1.1.1".into();
    });
    hostile("ca-not-base64", &|c| {
        c["masterAuth"]["clusterCaCertificate"] = "%%% not base64 %%%".into();
    });
    hostile("ca-not-pem", &|c| {
        c["masterAuth"]["clusterCaCertificate"] = "bm90IGEgY2VydGlmaWNhdGU=".into();
    });
    hostile("provisioning", &|c| {
        c["endpoint"] = "".into();
        c["status"] = "PROVISIONING".into();
    });
    hostile("bad-origin", &|c| {
        c["resourceLabels"]["k8s-tunnels-origin"] = "ssh".into();
    });
    let (served, _state) =
        fakes::gke::start(BTreeMap::from([("hostile".to_string(), ok(clusters_json))])).await;
    let (report, _) = fakes::discover(&source(&served.url(), &["hostile"])).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let found = fakes::clusters(&report);
    assert_eq!(found.len(), 8, "{:?}", report.rejected);
    let names = fakes::assert_safe_distinct_names(&found);
    assert!(names.contains("dots.in.name"), "a valid name is kept");
    let with_path = found
        .iter()
        .find(|c| c.id.0 == "gke:hostile:europe-west1:host-with-path")
        .unwrap();
    assert_eq!(with_path.access.url.as_str(), "wss://k8s.example.com/team");

    let rejected: BTreeMap<&str, &Rejection> = report
        .rejected
        .iter()
        .map(|r| (r.name.as_str(), &r.reason))
        .collect();
    assert_eq!(rejected.len(), 6, "{rejected:?}");
    for name in [
        "host-with-creds",
        "endpoint-with-creds",
        "ca-not-base64",
        "ca-not-pem",
        "provisioning",
        "bad-origin",
    ] {
        assert!(
            matches!(
                rejected.get(format!("{name:?}").as_str()),
                Some(Rejection::Invalid(_))
            ),
            "{name}: {rejected:?}"
        );
    }
    assert!(
        matches!(rejected["\"provisioning\""], Rejection::Invalid(m) if m.contains("PROVISIONING"))
    );
    let text = format!("{report:?}");
    assert!(!text.contains("hunter2"), "a password leaked: {text}");
    let messages = format!("{:?} {:?}", report.rejected, report.failed);
    assert!(
        !messages.contains(&long),
        "the 10 KB name is not echoed whole"
    );

    let dir = tempfile::tempdir().unwrap();
    let view = fakes::kubectl_view(dir.path(), &found);
    assert_eq!(view["clusters"].as_array().unwrap().len(), found.len());
}
