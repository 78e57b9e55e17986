use std::path::PathBuf;

use api::installation::{NesInstallation, NesInstallationSpec};
use pretty_assertions::assert_eq;
use serde_json::Value;

use super::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn manifest(file: &str, kind: &str) -> Value {
    let text = std::fs::read_to_string(repo(file)).expect("read manifest");
    let found = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .find(|d| d["kind"] == kind);
    found.expect("kind in manifest")
}

use serde::Deserialize;

fn json(o: &impl serde::Serialize) -> Value {
    serde_json::to_value(o).expect("json")
}

/// The checked-in default installation, with the uid the API server would give it.
fn default_installation() -> NesInstallation {
    let doc = manifest("manifests/50-installation.yaml", "NesInstallation");
    let mut inst: NesInstallation = serde_json::from_value(doc).expect("installation");
    inst.metadata.uid = Some("0d5e6a1c-1111-4222-8333-944445555666".into());
    inst
}

fn rendered(inst: &NesInstallation) -> (Value, Value, Value) {
    let r = render(inst, &RenderContext::default()).expect("render");
    (json(&r.daemonset), json(&r.service), json(&r.webhook))
}

#[test]
fn the_default_installation_renders_what_the_manifests_install_but_on_delete() {
    let (ds, svc, hook) = rendered(&default_installation());
    let mut want = manifest("manifests/30-agent.yaml", "DaemonSet");
    assert_eq!(
        ds["spec"]["updateStrategy"],
        serde_json::json!({"type": "OnDelete"})
    );
    want["spec"]["updateStrategy"] = ds["spec"]["updateStrategy"].clone();
    assert_eq!(ds["spec"], want["spec"]);
    assert_eq!(ds["metadata"]["labels"], want["metadata"]["labels"]);
    assert_eq!(ds["metadata"]["namespace"], want["metadata"]["namespace"]);
    let want = manifest("manifests/30-agent.yaml", "Service");
    assert_eq!(svc["spec"], want["spec"]);
    let want = manifest("manifests/40-webhook.yaml", "MutatingWebhookConfiguration");
    assert_eq!(hook["webhooks"], want["webhooks"]);
    assert_eq!(hook["metadata"]["labels"], want["metadata"]["labels"]);
}

#[test]
fn every_rendered_object_is_controlled_by_the_installation() {
    let (ds, svc, hook) = rendered(&default_installation());
    for obj in [ds, svc, hook] {
        let owner = &obj["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"], &owner["controller"]),
            (
                &Value::from("NesInstallation"),
                &Value::from("nes"),
                &Value::from(true)
            ),
            "{}",
            obj["kind"]
        );
    }
}

#[test]
fn spec_settings_reach_the_rendered_objects() {
    let spec: NesInstallationSpec = serde_json::from_value(serde_json::json!({
        "agent": {"image": "reg:5000/nes-agent:0.2.0", "imagePullPolicy": "Always",
                  "imagePullSecrets": ["pull"], "nodeSelector": {"nes": "yes"},
                  "tolerations": [], "logLevel": "debug", "priorityClassName": "pc",
                  "resources": {"limits": {"memory": "1Gi"}}},
        "webhook": {"namespaceSelector": {"matchLabels": {"nes": "on"}}},
        "policy": {"hostAccess": {"veth": true, "bridges": ["br0", "br1"], "cniAttachments": true}},
    }))
    .expect("spec");
    let mut inst = default_installation();
    inst.spec = spec;
    let (ds, _, hook) = rendered(&inst);
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "reg:5000/nes-agent:0.2.0");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(
        pod["imagePullSecrets"],
        serde_json::json!([{"name": "pull"}])
    );
    assert_eq!(pod["nodeSelector"], serde_json::json!({"nes": "yes"}));
    assert_eq!(pod["tolerations"], serde_json::json!([]));
    assert_eq!(pod["priorityClassName"], "pc");
    assert_eq!(
        c["resources"],
        serde_json::json!({"limits": {"memory": "1Gi"}})
    );
    let env: Vec<_> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or(""),
                e["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let downward: Vec<_> = c["env"].as_array().expect("env")[..2]
        .iter()
        .map(|e| {
            (
                e["name"].clone(),
                e["valueFrom"]["fieldRef"]["fieldPath"].clone(),
            )
        })
        .collect();
    assert_eq!(
        downward,
        [
            (
                serde_json::json!("NODE_NAME"),
                serde_json::json!("spec.nodeName")
            ),
            (
                serde_json::json!("POD_NAME"),
                serde_json::json!("metadata.name")
            )
        ],
        "the agent knows its node, and its own pod for the upgrade report"
    );
    assert_eq!(
        &env[2..],
        [
            ("NES_LOG", "debug"),
            ("NES_LOG_FORMAT", "json"),
            ("MALLOC_ARENA_MAX", "2"),
            ("NES_ALLOW_HOST_VETH", "true"),
            ("NES_ALLOW_HOST_BRIDGES", "br0,br1"),
            ("NES_ALLOW_HOST_CNI", "true")
        ]
    );
    assert_eq!(
        hook["webhooks"][0]["namespaceSelector"],
        serde_json::json!({"matchLabels": {"nes": "on"}, "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
             "values": ["kube-system", "nes-system"]}]}),
        "the spec's selector, and never the system namespaces"
    );
}

/// The rendered default install, checked in so `scripts/validate-manifests.sh` validates it
/// offline against the Kubernetes schemas; `NES_UPDATE_FIXTURES=1` rewrites it.
#[test]
fn the_rendered_fixture_is_current() {
    let r = render(&default_installation(), &RenderContext::default()).expect("render");
    let mut text = String::from(
        "# What the operator renders from manifests/50-installation.yaml; generated by\n\
         # `NES_UPDATE_FIXTURES=1 cargo nextest run -p nes-operator rendered_fixture`.\n",
    );
    for doc in [
        serde_yaml::to_string(&r.daemonset),
        serde_yaml::to_string(&r.service),
        serde_yaml::to_string(&r.webhook),
    ] {
        text.push_str("---\n");
        text.push_str(&doc.expect("yaml"));
    }
    let path = repo("operator/tests/fixtures/rendered-default.yaml");
    if std::env::var_os("NES_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &text).expect("write fixture");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == text,
        "{} is stale: rerun with NES_UPDATE_FIXTURES=1",
        path.display()
    );
}
