//! The checked-in CRDs are what `api` generates, and their schemas are structural.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

fn checked_in() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn generated_docs() -> Vec<Value> {
    let yaml = api::crd::crds_yaml().expect("render CRDs");
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| {
            serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(doc).expect("yaml"))
                .expect("json")
        })
        .collect()
}

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let generated = api::crd::crds_yaml().expect("render CRDs");
    assert!(
        checked_in() == generated,
        "manifests/crds.yaml is stale: run scripts/crdgen.sh and commit the result"
    );
}

#[test]
fn crds_have_status_subresource_short_names_and_printer_columns() {
    let docs = generated_docs();
    let names: Vec<_> = docs
        .iter()
        .map(|d| d["spec"]["names"]["shortNames"][0].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["netconf", "ncare", "ncpolicy", "netsvc", "nesinst"]);
    for doc in &docs {
        let version = &doc["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(
            version["subresources"]["status"].is_object(),
            "{}: no status subresource",
            doc["metadata"]["name"]
        );
    }
    let columns: Vec<_> = docs[0]["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(columns, ["Node", "Applied", "Reason", "Age"]);
}

#[test]
fn interfaces_and_routes_are_list_maps_so_server_side_apply_merges_per_entry() {
    let docs = generated_docs();
    let spec = &docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert_eq!(spec["interfaces"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        spec["interfaces"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
    assert_eq!(spec["routes"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        spec["routes"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["dst", "table", "metric"])
    );
    // list-map keys must be required or defaulted, or the API server refuses the CRD
    let route = &spec["routes"]["items"];
    let required: Vec<_> = route["required"].as_array().cloned().unwrap_or_default();
    assert!(required.contains(&Value::from("dst")));
    assert_eq!(route["properties"]["table"]["default"], 254);
    assert_eq!(route["properties"]["metric"]["default"], 0);
    assert_eq!(spec["interfaces"]["maxItems"], 64);
    assert_eq!(spec["routes"]["maxItems"], 1024);
}

#[test]
fn schema_carries_the_validators_field_limits_and_cel_rules() {
    let docs = generated_docs();
    let spec = &docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let iface = &spec["properties"]["interfaces"]["items"];
    assert_eq!(iface["properties"]["name"]["maxLength"], 15);
    assert_eq!(iface["properties"]["vlanId"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(
        iface["properties"]["vlanId"]["maximum"].as_f64(),
        Some(4094.0)
    );
    assert_eq!(iface["properties"]["mtu"]["minimum"].as_f64(), Some(68.0));
    let rules = |v: &Value| -> Vec<String> {
        v["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["rule"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(rules(iface).iter().any(|r| r.contains("has(self.vlanId)")));
    assert!(rules(iface).iter().any(|r| r.contains("isCIDR")));
    assert!(rules(iface).iter().any(|r| r.contains("self.mtu >= 1280")));
    assert!(rules(spec)
        .iter()
        .any(|r| r.contains("self.interfaces.exists(i, i.name == r.dev)")));
    let dst = &spec["properties"]["routes"]["items"]["properties"]["dst"];
    assert!(rules(dst).iter().any(|r| r.contains("cidr(self).masked()")));
}

#[test]
fn the_policy_crd_is_cluster_scoped_with_its_rules_in_the_schema() {
    let docs = generated_docs();
    let policy = docs
        .iter()
        .find(|d| d["spec"]["names"]["kind"] == "NetworkConfigurationPolicy")
        .expect("the policy CRD is generated");
    assert_eq!(policy["spec"]["scope"], "Cluster");
    assert_eq!(
        policy["metadata"]["name"],
        "networkconfigurationpolicies.nes.network-config.io"
    );
    let version = &policy["spec"]["versions"][0];
    let columns: Vec<_> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(columns, ["Selector", "Age"]);
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in [
        "namespaceSelector",
        "interfaceTypes",
        "addresses",
        "routes",
        "vlanIds",
        "mtu",
        "limits",
        "routeTables",
        "host",
        "selfService",
        "webhookDestinations",
    ] {
        assert!(
            spec[field].is_object(),
            "spec.{field} missing from the schema"
        );
    }
    let min_le_max = |v: &Value| {
        v["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| {
                r["rule"]
                    .as_str()
                    .unwrap_or("")
                    .contains("self.min <= self.max")
            })
    };
    assert!(min_le_max(&spec["mtu"]));
    assert!(min_le_max(&spec["vlanIds"]["items"]));
    assert_eq!(
        spec["limits"]["properties"]["interfaces"]["maximum"].as_f64(),
        Some(64.0)
    );
    assert_eq!(
        spec["limits"]["properties"]["routes"]["maximum"].as_f64(),
        Some(1024.0)
    );
}

/// Walks a schema and reports every node that breaks the structural-schema rules
/// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema).
fn structural_problems(path: &str, node: &Value, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        return out.push(format!("{path}: not an object"));
    };
    for banned in [
        "$ref",
        "definitions",
        "$defs",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
    ] {
        if obj.contains_key(banned) {
            out.push(format!("{path}: has {banned}"));
        }
    }
    let intended_untyped = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if obj.get("type").and_then(Value::as_str).is_none() && !intended_untyped {
        out.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: additionalProperties beside properties"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_problems(&format!("{path}.{k}"), v, out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_problems(&format!("{path}[]"), items, out);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_problems(&format!("{path}{{}}"), ap, out);
    }
}

/// Paths where int-or-string or preserve-unknown-fields are intended; anything else is a bug.
fn untyped_paths(path: &str, node: &Value, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    if obj.contains_key("x-kubernetes-int-or-string")
        || obj.contains_key("x-kubernetes-preserve-unknown-fields")
    {
        out.push(path.to_string());
    }
    for (k, v) in obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        untyped_paths(&format!("{path}.{k}"), v, out);
    }
    if let Some(items) = obj.get("items") {
        untyped_paths(&format!("{path}[]"), items, out);
    }
}

#[test]
fn crd_schemas_are_structural() {
    for doc in generated_docs() {
        let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_string();
        let schema = &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut problems = vec![];
        structural_problems(&name, schema, &mut problems);
        assert!(
            problems.is_empty(),
            "not structural:\n{}",
            problems.join("\n")
        );
        let mut untyped = vec![];
        untyped_paths(&name, schema, &mut untyped);
        assert!(
            untyped.is_empty(),
            "int-or-string / preserve-unknown-fields where none is intended: {untyped:?}"
        );
    }
}

#[test]
fn a_network_configuration_round_trips_through_yaml() {
    let yaml = r#"
apiVersion: nes.network-config.io/v1alpha1
kind: NetworkConfiguration
metadata:
  name: web-0
  namespace: default
spec:
  interfaces:
  - name: eth0
    type: existing
    mtu: 1450
    addresses: [10.0.0.5/24, fd00::5/64]
  - name: eth0.100
    type: vlan
    parent: eth0
    vlanId: 100
    vlanProtocol: 802.1ad
    state: up
  - name: vx0
    type: vxlan
    vni: 42
    remote: 192.0.2.1
  routes:
  - dst: 10.1.0.0/16
    via: 10.0.0.1
    dev: eth0
    metric: 100
"#;
    let obj: api::NetworkConfiguration = serde_yaml::from_str(yaml).expect("parse");
    assert_eq!(obj.spec.interfaces[1].vlan_id, Some(100));
    assert_eq!(
        obj.spec.interfaces[1].vlan_protocol,
        Some(api::VlanProtocol::Dot1Ad)
    );
    assert_eq!(
        obj.spec.routes[0].table,
        api::netconf::MAIN_TABLE,
        "table defaults to main"
    );
    assert_eq!(api::validate(&obj.spec), Ok(()));
    let again: api::NetworkConfiguration =
        serde_yaml::from_str(&serde_yaml::to_string(&obj).expect("render")).expect("reparse");
    assert_eq!(again.spec, obj.spec);
    assert_eq!(again.metadata.name.as_deref(), Some("web-0"));
}

#[test]
fn unknown_spec_fields_are_rejected_when_parsing() {
    let err = serde_yaml::from_str::<api::NetworkConfigurationSpec>(
        "interfaces:\n- name: eth0\n  vlan: 5\n",
    )
    .expect_err("unknown field accepted");
    assert!(err.to_string().contains("unknown field `vlan`"), "{err}");
}

#[test]
fn the_network_service_crd_is_namespaced_showing_network_and_endpoints() {
    let docs = generated_docs();
    let svc = docs
        .iter()
        .find(|d| d["spec"]["names"]["kind"] == "NetworkService")
        .expect("the NetworkService CRD is generated");
    assert_eq!(svc["spec"]["scope"], "Namespaced");
    let columns: Vec<_> = svc["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or(""),
                c["jsonPath"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("Network", ".spec.network"),
            ("Endpoints", ".status.endpoints"),
            ("Age", ".metadata.creationTimestamp")
        ]
    );
    let spec = &svc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<_> = spec["required"].as_array().cloned().unwrap_or_default();
    assert!(
        required.contains(&Value::from("network")) && required.contains(&Value::from("selector"))
    );
}
