//! The OpenAPI 3 document of the socket and admin API. Generated from the wire types,
//! checked in as `api/openapi.json` (served at `GET /openapi.json`); a test keeps them equal.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use crate::merge::Owners;
use crate::wire::{ConfigView, Event, ProblemDetails, StatusView};
use crate::NetworkConfigurationSpec;

/// The checked-in document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Builds the document from the types.
pub fn generate() -> Value {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let mut refs = serde_json::Map::new();
    refs.insert(
        "spec".into(),
        gen.subschema_for::<NetworkConfigurationSpec>().to_value(),
    );
    refs.insert(
        "config".into(),
        gen.subschema_for::<ConfigView>().to_value(),
    );
    refs.insert(
        "status".into(),
        gen.subschema_for::<StatusView>().to_value(),
    );
    refs.insert("event".into(), gen.subschema_for::<Event>().to_value());
    refs.insert(
        "problem".into(),
        gen.subschema_for::<ProblemDetails>().to_value(),
    );
    let _ = gen.subschema_for::<Owners>();
    let schemas: serde_json::Map<String, Value> = gen.take_definitions(true).into_iter().collect();
    let r = |k: &str| refs[k].clone();

    let problem = |description: &str| json!({"description": description, "content": {"application/problem+json": {"schema": r("problem")}}});
    let pod = json!({"name": "pod", "in": "query", "required": false, "schema": {"type": "string"},
        "description": "Admin socket only: the pod (network namespace name) addressed. A pod's own socket refuses another pod with 403."});
    let manager = json!({"name": "manager", "in": "query", "required": true, "schema": {"type": "string", "maxLength": 128},
        "description": "Who is asking: each manager owns its own entries (like a server-side apply field manager)."});
    let since = json!({"name": "since", "in": "query", "required": false, "schema": {"type": "integer", "format": "uint64"},
        "description": "The last sequence the reader saw; the stream starts after it. Without it, every buffered event is sent."});
    let config_ok = json!({"description": "The merged desired configuration", "content": {"application/json": {"schema": r("config")}}});

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "nes pod network API",
            "version": "v1",
            "description": "Served by nes-agent on the abstract unix socket @nes inside each pod's network namespace (a pod reaches only itself), and on the host admin socket with ?pod=NAME. Try: curl --abstract-unix-socket nes http://nes/v1/self/status"
        },
        "paths": {
            "/v1/self/config": {
                "get": {"summary": "The merged desired configuration and the owner of each entry", "parameters": [pod],
                        "responses": {"200": config_ok, "404": problem("No such pod")}},
                "put": {"summary": "Apply this manager's fragment (replaces its previous one)", "parameters": [pod, manager],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": r("spec")}}},
                        "responses": {"200": config_ok, "400": problem("Malformed body, unknown field or parameter"),
                                      "409": problem("A field is owned by another manager with a different value"),
                                      "413": problem("Body over 1 MiB"), "422": problem("The merged configuration is invalid")}},
                "delete": {"summary": "Remove this manager's entries (and the kernel objects nes created for them)", "parameters": [pod, manager],
                           "responses": {"200": config_ok}}
            },
            "/v1/self/status": {
                "get": {"summary": "Live status read from the kernel", "parameters": [pod],
                        "responses": {"200": {"description": "Status", "content": {"application/json": {"schema": r("status")}}}}}
            },
            "/v1/self/events": {
                "get": {"summary": "NDJSON stream of events, one JSON object per line, each with a growing sequence", "parameters": [pod, since],
                        "responses": {"200": {"description": "Events, then live ones", "content": {"application/x-ndjson": {"schema": r("event")}}},
                                      "410": problem("since is older than the buffer; oldestSequence tells where it starts")}}
            },
            "/v1/pods": {
                "get": {"summary": "Admin socket only: the pods served",
                        "responses": {"200": {"description": "Pod names", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}},
                                      "403": problem("Asked on a pod socket")}}
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3 document"}}}},
            "/healthz": {"get": {"summary": "Liveness of the agent", "responses": {"200": {"description": "ok"}}}}
        },
        "components": {"schemas": schemas}
    })
}

/// The document as checked in (pretty JSON with a trailing newline).
pub fn render() -> String {
    let mut s = serde_json::to_string_pretty(&generate()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_openapi_document_matches_the_generated_one() {
        assert!(
            super::DOCUMENT == super::render(),
            "api/openapi.json is stale: run scripts/crdgen.sh"
        );
    }

    #[test]
    fn openapi_document_references_only_schemas_it_defines() {
        let doc = super::generate();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling $ref to {name}");
        }
        assert!(schemas.contains_key("ProblemDetails") && schemas.contains_key("StatusView"));
    }
}
