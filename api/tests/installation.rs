//! The checked-in default `NesInstallation` (manifests/50-installation.yaml) is what the API
//! server and nes accept, and is the default install; the CRD's CEL rule keeps it a
//! singleton named `nes`.

use std::path::PathBuf;

use api::installation::validate_installation;
use api::{NesInstallation, NesInstallationSpec};
use kube::core::crd::CustomResourceExt;
use serde_json::{json, Value};

fn manifest() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/50-installation.yaml");
    let text = std::fs::read_to_string(&path).expect("read manifests/50-installation.yaml");
    serde_yaml::from_str(&text).expect("one YAML document")
}

fn cel_errors(doc: &Value) -> Vec<String> {
    let crd = serde_json::to_value(NesInstallation::crd()).expect("crd json");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    match kube_cel::validate(schema, doc, None) {
        Ok(()) => vec![],
        Err(errs) => errs.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn the_checked_in_installation_is_the_valid_default_install() {
    let doc = manifest();
    let inst: NesInstallation = serde_json::from_value(doc.clone()).expect("parses");
    assert_eq!(inst.spec, NesInstallationSpec::default());
    let name = inst.metadata.name.as_deref().unwrap_or_default();
    assert_eq!(validate_installation(name, &inst.spec), Ok(()));
    assert_eq!(cel_errors(&doc), Vec::<String>::new());
}

#[test]
fn the_crd_refuses_an_installation_not_named_nes() {
    let mut doc = manifest();
    doc["metadata"] = json!({"name": "second"});
    assert_eq!(
        cel_errors(&doc),
        ["the NesInstallation is a singleton named nes"]
    );
}
