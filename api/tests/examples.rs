//! Every custom resource in `examples/` is what the API server and nes would accept: it
//! parses into the CRD types (unknown fields refused), passes the one validator, and passes
//! the CEL rules of the generated CRD (evaluated offline with kube-cel). Together the examples
//! show every interface type and route feature, and the sample workload opts in with the
//! selection label. (Built-in kinds in `examples/` are checked by
//! `scripts/validate-manifests.sh` against the Kubernetes 1.34 schemas, and the OpenAPI part of
//! the CRD schemas there too.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube::core::crd::CustomResourceExt;
use serde::Deserialize;
use serde_json::Value;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every YAML document of every file in `examples/`, with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("read examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples found");
    files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("read example");
            let name = file_name(path);
            serde_yaml::Deserializer::from_str(&text)
                .map(|doc| {
                    let value = serde_yaml::Value::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
                    let json = serde_yaml::from_value::<Value>(value)
                        .unwrap_or_else(|e| panic!("{name}: not JSON-compatible: {e}"));
                    (name.clone(), json)
                })
                .filter(|(_, doc)| !doc.is_null())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).expect("crd json");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn cel_errors(schema: &Value, doc: &Value) -> Vec<String> {
    match kube_cel::validate(schema, doc, None) {
        Ok(()) => vec![],
        Err(errs) => errs
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

/// Everything wrong with one nes custom resource, as the API server and nes would say it.
fn problems(doc: &Value) -> Vec<String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    if api_version != format!("{}/v1alpha1", api::GROUP) {
        return vec![format!("apiVersion {api_version:?} is not nes's")];
    }
    let mut found = vec![];
    match doc["kind"].as_str() {
        Some("NetworkConfiguration") => {
            match serde_json::from_value::<api::NetworkConfiguration>(doc.clone()) {
                Ok(conf) => {
                    if let Err(invalid) = api::validate(&conf.spec) {
                        found.push(invalid.to_string());
                    }
                }
                Err(e) => found.push(format!("does not parse: {e}")),
            }
            found.extend(cel_errors(&schema_of::<api::NetworkConfiguration>(), doc));
        }
        Some("NetworkCare") => {
            match serde_json::from_value::<api::NetworkCare>(doc.clone()) {
                Ok(care) => {
                    if let Err(invalid) = api::validate::validate_care(&care.spec) {
                        found.push(invalid.to_string());
                    }
                }
                Err(e) => found.push(format!("does not parse: {e}")),
            }
            found.extend(cel_errors(&schema_of::<api::NetworkCare>(), doc));
        }
        Some("NetworkConfigurationPolicy") => {
            match serde_json::from_value::<api::NetworkConfigurationPolicy>(doc.clone()) {
                Ok(policy) => {
                    if let Err(invalid) = api::policy::validate_policy(&policy.spec) {
                        found.push(invalid.to_string());
                    }
                }
                Err(e) => found.push(format!("does not parse: {e}")),
            }
            found.extend(cel_errors(
                &schema_of::<api::NetworkConfigurationPolicy>(),
                doc,
            ));
        }
        Some("NetworkService") => {
            match serde_json::from_value::<api::NetworkService>(doc.clone()) {
                Ok(svc) => {
                    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
                    if let Err(invalid) = api::validate_network_service(name, &svc.spec) {
                        found.push(invalid.to_string());
                    }
                }
                Err(e) => found.push(format!("does not parse: {e}")),
            }
            found.extend(cel_errors(&schema_of::<api::NetworkService>(), doc));
        }
        other => found.push(format!("kind {other:?} is not a nes resource")),
    }
    found
}

fn nes_resources() -> Vec<(String, Value)> {
    documents()
        .into_iter()
        .filter(|(_, doc)| {
            doc["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with(api::GROUP))
        })
        .collect()
}

fn configurations() -> Vec<api::NetworkConfiguration> {
    nes_resources()
        .into_iter()
        .filter(|(_, doc)| doc["kind"] == "NetworkConfiguration")
        .map(|(name, doc)| {
            serde_json::from_value(doc).unwrap_or_else(|e| panic!("{name}: does not parse: {e}"))
        })
        .collect()
}

#[test]
fn every_example_resource_parses_validates_and_passes_the_crd_rules() {
    let resources = nes_resources();
    assert!(
        resources.len() >= 10,
        "expected a NetworkConfiguration per feature and a NetworkCare, found {}",
        resources.len()
    );
    let failures: Vec<String> = resources
        .iter()
        .flat_map(|(name, doc)| {
            problems(doc)
                .into_iter()
                .map(move |p| format!("{name} ({}): {p}", doc["metadata"]["name"]))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "examples rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_example_check_rejects_a_broken_resource() {
    let (_, mut doc) = nes_resources()
        .into_iter()
        .find(|(name, _)| name == "netconf-vlan.yaml")
        .expect("netconf-vlan.yaml");
    // A VLAN without its id: refused by the validator and by the CRD's CEL rule.
    let vlan = doc["spec"]["interfaces"]
        .as_array_mut()
        .and_then(|list| list.iter_mut().find(|i| i["type"] == "vlan"))
        .expect("a vlan interface");
    vlan.as_object_mut().expect("object").remove("vlanId");
    let found = problems(&doc);
    assert!(
        found.iter().any(|p| p.contains("vlanId")) && found.iter().any(|p| p.contains("needs")),
        "expected the missing vlanId to be reported, got {found:?}"
    );

    // A field of the wrong type does not even parse.
    doc["spec"]["interfaces"][0]["mtu"] = Value::String("big".into());
    assert!(problems(&doc).iter().any(|p| p.contains("does not parse")));
}

#[test]
fn examples_cover_every_interface_type() {
    let types: BTreeSet<&'static str> = configurations()
        .iter()
        .flat_map(|c| c.spec.interfaces.iter().map(|i| i.kind.as_str()))
        .collect();
    let all: BTreeSet<&'static str> = [
        "existing", "vlan", "macvlan", "ipvlan", "bridge", "veth", "vxlan",
    ]
    .into_iter()
    .collect();
    assert_eq!(types, all);
}

#[test]
fn examples_cover_mtu_host_parents_host_bridges_qinq_and_ipv6() {
    let confs = configurations();
    let ifaces: Vec<&api::InterfaceSpec> = confs
        .iter()
        .flat_map(|c| c.spec.interfaces.iter())
        .collect();
    let has = |what: &str, pred: &dyn Fn(&api::InterfaceSpec) -> bool| {
        assert!(ifaces.iter().any(|i| pred(i)), "no example shows {what}");
    };
    has("an MTU on an existing interface", &|i| {
        i.kind == api::InterfaceType::Existing && i.mtu.is_some()
    });
    has("an address on an existing interface", &|i| {
        i.kind == api::InterfaceType::Existing && !i.addresses.is_empty()
    });
    has("a host-parent macvlan or ipvlan", &|i| i.parent_in_host);
    has("a veth to a host bridge", &|i| i.peer_bridge.is_some());
    has("an interface enslaved to a pod bridge", &|i| {
        i.master.is_some()
    });
    has("QinQ (802.1ad)", &|i| {
        i.vlan_protocol == Some(api::VlanProtocol::Dot1Ad)
    });
    has("an IPv6 address", &|i| {
        i.addresses.iter().any(|a| a.contains(':'))
    });
}

#[test]
fn examples_cover_routes_with_table_metric_and_ipv6() {
    let routes: Vec<api::RouteSpec> = configurations()
        .into_iter()
        .flat_map(|c| c.spec.routes)
        .collect();
    assert!(
        routes.iter().any(|r| r.table != api::netconf::MAIN_TABLE),
        "no route in a table other than main"
    );
    assert!(
        routes.iter().any(|r| r.metric != 0),
        "no route with a metric"
    );
    assert!(routes.iter().any(|r| r.dst.contains(':')), "no IPv6 route");
    assert!(
        routes.iter().any(|r| r.via.is_none()),
        "no device-only route"
    );
}

#[test]
fn the_sample_statefulset_opts_in_with_the_selection_label() {
    let docs = documents();
    let sts = docs
        .iter()
        .find(|(_, d)| d["kind"] == "StatefulSet")
        .map(|(_, d)| d)
        .expect("a sample StatefulSet in examples/");
    assert_eq!(
        sts["spec"]["template"]["metadata"]["labels"][api::SELECTION_LABEL],
        Value::String("true".into()),
        "the pod template must carry {}: \"true\"",
        api::SELECTION_LABEL
    );
}
