//! Helpers shared by the api crate's tests: the CRD schema and kube-cel's verdict on it.

#![allow(dead_code)] // each test file uses a part of it
use serde_json::Value;

/// The `openAPIV3Schema` of a custom resource's first version.
pub fn schema<K: kube::core::crd::CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).expect("crd json");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The CEL rules' errors for `doc`, as `path: message` (none when it passes).
pub fn cel_errors(schema: &Value, doc: &Value) -> Vec<String> {
    match kube_cel::validate(schema, doc, None) {
        Ok(()) => vec![],
        Err(errs) => errs
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}
