//! The typed kubeconfig model. Only the fields the app owns are typed; everything else — unknown
//! top-level keys, unknown keys in stanzas and in their inner maps, `preferences`, `extensions`,
//! exec users — rides along in `#[serde(flatten)]` maps of YAML values and is written back
//! unchanged in meaning.
//!
//! None of these types derives `Debug`: they hold `proxy-url` values and user credentials.

use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};

/// One kubeconfig file.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Document {
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Value>,
    // `Option` so that a file without (or with a null) list keeps it that way when untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<NamedCluster>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Vec<NamedContext>>,
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<NamedUser>>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// A `clusters:` list item.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NamedCluster {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFields>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// The inner `cluster:` map.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClusterFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(
        rename = "certificate-authority-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority_data: Option<String>,
    #[serde(
        rename = "tls-server-name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_server_name: Option<String>,
    #[serde(rename = "proxy-url", default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// A `contexts:` list item.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NamedContext {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextFields>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// The inner `context:` map.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContextFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// A `users:` list item. The inner `user:` map stays untyped: credentials come in many shapes
/// (exec, token, tokenFile, client certificates, auth-provider) and must survive as they are.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NamedUser {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Mapping>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// Cluster keys the app owns but never writes: they would conflict with (or weaken) the CA the
/// app sets, and kubectl refuses `certificate-authority` together with `-data`.
const CLUSTER_KEYS_REMOVED: [&str; 2] = ["certificate-authority", "insecure-skip-tls-verify"];

/// User keys that select a credential. The app owns all of them on its own user stanza, so that
/// switching e.g. from `token` to `exec` does not leave the old credential behind; any other key
/// (impersonation, extensions, ...) the user added is kept.
const USER_CREDENTIAL_KEYS: [&str; 10] = [
    "token",
    "tokenFile",
    "exec",
    "auth-provider",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "username",
    "password",
];

/// The values the app writes for one cluster, already validated and encoded.
pub(crate) struct OwnedCluster<'a> {
    pub server: &'a str,
    pub certificate_authority_data: Option<String>,
    pub tls_server_name: Option<&'a str>,
    pub proxy_url: &'a str,
}

impl Document {
    /// A document for a file the writer creates.
    pub fn new_file() -> Self {
        Self {
            api_version: Some(Value::String("v1".into())),
            kind: Some(Value::String("Config".into())),
            ..Self::default()
        }
    }

    pub fn defines_cluster(&self, name: &str) -> bool {
        self.clusters.iter().flatten().any(|c| c.name == name)
    }

    pub fn defines_user(&self, name: &str) -> bool {
        self.users.iter().flatten().any(|u| u.name == name)
    }

    pub fn defines_context(&self, name: &str) -> bool {
        self.contexts.iter().flatten().any(|c| c.name == name)
    }

    /// Sets the app-owned fields of cluster `name`, adding the stanza if the file lacks it. Every
    /// stanza of that name in the file is updated, so duplicates cannot disagree.
    pub fn upsert_cluster(&mut self, name: &str, owned: &OwnedCluster<'_>) {
        let list = self.clusters.get_or_insert_with(Vec::new);
        let mut found = false;
        for stanza in list.iter_mut().filter(|c| c.name == name) {
            found = true;
            apply_cluster(stanza.cluster.get_or_insert_with(Default::default), owned);
        }
        if !found {
            let mut fields = ClusterFields::default();
            apply_cluster(&mut fields, owned);
            list.push(NamedCluster {
                name: name.to_owned(),
                cluster: Some(fields),
                extra: Mapping::new(),
            });
        }
    }

    /// Sets the credential of user `name` (see [`USER_CREDENTIAL_KEYS`]), adding the stanza if
    /// the file lacks it.
    pub fn upsert_user(&mut self, name: &str, credential: &Mapping) {
        let list = self.users.get_or_insert_with(Vec::new);
        let mut found = false;
        for stanza in list.iter_mut().filter(|u| u.name == name) {
            found = true;
            apply_user(stanza.user.get_or_insert_with(Mapping::new), credential);
        }
        if !found {
            list.push(NamedUser {
                name: name.to_owned(),
                user: Some(credential.clone()),
                extra: Mapping::new(),
            });
        }
    }

    /// Points context `name` at the cluster and user of the same name, adding the stanza if the
    /// file lacks it; `namespace` and any other key the user set stay.
    pub fn upsert_context(&mut self, name: &str) {
        let list = self.contexts.get_or_insert_with(Vec::new);
        let mut found = false;
        for stanza in list.iter_mut().filter(|c| c.name == name) {
            found = true;
            let fields = stanza.context.get_or_insert_with(Default::default);
            set_if_different(&mut fields.cluster, name);
            set_if_different(&mut fields.user, name);
        }
        if !found {
            list.push(NamedContext {
                name: name.to_owned(),
                context: Some(ContextFields {
                    cluster: Some(name.to_owned()),
                    user: Some(name.to_owned()),
                    extra: Mapping::new(),
                }),
                extra: Mapping::new(),
            });
        }
    }

    /// The file's `current-context`, if set and not empty (client-go treats empty as unset).
    pub fn current_context(&self) -> Option<&str> {
        self.current_context.as_deref().filter(|c| !c.is_empty())
    }
}

fn set_if_different(slot: &mut Option<String>, value: &str) {
    if slot.as_deref() != Some(value) {
        *slot = Some(value.to_owned());
    }
}

fn apply_cluster(fields: &mut ClusterFields, owned: &OwnedCluster<'_>) {
    set_if_different(&mut fields.server, owned.server);
    fields
        .certificate_authority_data
        .clone_from(&owned.certificate_authority_data);
    fields.tls_server_name = owned.tls_server_name.map(str::to_owned);
    set_if_different(&mut fields.proxy_url, owned.proxy_url);
    for key in CLUSTER_KEYS_REMOVED {
        fields.extra.shift_remove(key);
    }
}

fn apply_user(user: &mut Mapping, credential: &Mapping) {
    for key in USER_CREDENTIAL_KEYS {
        if !credential.contains_key(key) {
            user.shift_remove(key);
        }
    }
    for (key, value) in credential {
        // `insert` keeps an existing key in place, so an unchanged credential is not reordered.
        if user.get(key) != Some(value) {
            user.insert(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const USER_FILE: &str = r#"
apiVersion: v1
kind: Config
x-top: {keep: [1, 2]}
preferences: {colors: true, extensions: [{name: p, extension: {a: 1}}]}
clusters:
- name: k8s-tunnels/a
  x-stanza: kept
  cluster:
    server: https://old
    certificate-authority: /path/ca.pem
    disable-compression: true
    extensions: [{name: e, extension: {b: 2}}]
contexts:
- name: k8s-tunnels/a
  context: {cluster: other, user: other, namespace: team-ns}
users:
- name: k8s-tunnels/a
  user:
    token: old-token
    as: impersonated
"#;

    fn owned() -> OwnedCluster<'static> {
        OwnedCluster {
            server: "https://new",
            certificate_authority_data: Some("Q0E=".into()),
            tls_server_name: Some("api.internal"),
            proxy_url: "socks5://u:p@127.0.0.1:1",
        }
    }

    #[test]
    fn updating_an_app_entry_keeps_the_users_extra_fields() {
        let mut doc: Document = serde_norway::from_str(USER_FILE).unwrap();
        let before = doc.clone();
        doc.upsert_cluster("k8s-tunnels/a", &owned());
        let exec: Mapping = serde_norway::from_str("exec: {apiVersion: x, command: c}").unwrap();
        doc.upsert_user("k8s-tunnels/a", &exec);
        doc.upsert_context("k8s-tunnels/a");

        let text = serde_norway::to_string(&doc).unwrap();
        let value: Value = serde_norway::from_str(&text).unwrap();
        let cluster = &value["clusters"][0];
        assert_eq!(cluster["x-stanza"], Value::from("kept"));
        assert_eq!(cluster["cluster"]["server"], Value::from("https://new"));
        assert_eq!(cluster["cluster"]["disable-compression"], Value::from(true));
        assert_eq!(
            cluster["cluster"]["extensions"][0]["extension"]["b"],
            Value::from(2)
        );
        assert!(cluster["cluster"].get("certificate-authority").is_none());
        let context = &value["contexts"][0]["context"];
        assert_eq!(context["namespace"], Value::from("team-ns"));
        assert_eq!(context["cluster"], Value::from("k8s-tunnels/a"));
        let user = &value["users"][0]["user"];
        assert!(user.get("token").is_none(), "old credential must go");
        assert_eq!(user["as"], Value::from("impersonated"));
        assert_eq!(user["exec"]["command"], Value::from("c"));
        assert_eq!(
            value["x-top"],
            serde_norway::to_value(&before.extra["x-top"]).unwrap()
        );
        assert_eq!(
            value["preferences"]["extensions"][0]["extension"]["a"],
            Value::from(1)
        );
    }

    #[test]
    fn applying_the_same_entry_twice_is_a_no_op() {
        let mut doc: Document = serde_norway::from_str(USER_FILE).unwrap();
        doc.upsert_cluster("k8s-tunnels/a", &owned());
        doc.upsert_context("k8s-tunnels/a");
        let once = doc.clone();
        doc.upsert_cluster("k8s-tunnels/a", &owned());
        doc.upsert_context("k8s-tunnels/a");
        assert!(doc == once);
    }
}
