//! The OpenAPI 3 document of the socket and admin API. Generated from the wire types,
//! checked in as `api/openapi.json` (served at `GET /openapi.json`); a test keeps them equal.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use crate::merge::Owners;
use crate::wire::{CareView, ConfigView, Event, NewCare, ProblemDetails, StatusView};
use crate::NetworkConfigurationSpec;

/// The checked-in document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Builds the document from the types.
pub fn generate() -> Value {
    let (refs, schemas) = schemas();
    let p = Parts { refs };
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "nes pod network API",
            "version": "v1",
            "description": "Served by nes-agent on the abstract unix socket @nes inside each pod's network namespace (a pod reaches only itself), and on the host admin socket with ?pod=NAME. Try: curl --abstract-unix-socket nes http://nes/v1/self/status. The same resources, addressed by namespace and pod, are served by nes-operator's cliserver over HTTPS (paths under /v1/namespaces) with a bearer token."
        },
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
            "description": "cliserver only: a Kubernetes token, checked by TokenReview"}}},
        "paths": agent_paths(&p)
    });
    if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), cliserver_paths(&p))
    {
        for (path, item) in more {
            let mut item = item;
            if let Some(ops) = item.as_object_mut() {
                for op in ops.values_mut() {
                    op["security"] = json!([{"bearer": []}]);
                }
            }
            paths.insert(path, item);
        }
    }
    doc
}

/// The schemas of the wire types, and the `$ref` of each one the paths name.
fn schemas() -> (
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
) {
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
    refs.insert("care".into(), gen.subschema_for::<CareView>().to_value());
    refs.insert("newCare".into(), gen.subschema_for::<NewCare>().to_value());
    let _ = gen.subschema_for::<Owners>();
    let schemas = gen.take_definitions(true).into_iter().collect();
    (refs, schemas)
}

/// The parameters and answers both sets of paths use.
struct Common {
    config_ok: Value,
    manager: Value,
    since: Value,
    care_name: Value,
}

/// The pieces both sets of paths use.
struct Parts {
    refs: serde_json::Map<String, Value>,
}

impl Parts {
    fn common(&self) -> Common {
        Common {
            config_ok: self.config_ok(),
            manager: Self::manager(),
            since: Self::since(),
            care_name: Self::care_name(),
        }
    }

    fn r(&self, k: &str) -> Value {
        self.refs[k].clone()
    }

    fn problem(&self, description: &str) -> Value {
        json!({"description": description, "content": {"application/problem+json": {"schema": self.r("problem")}}})
    }

    fn config_ok(&self) -> Value {
        json!({"description": "The merged desired configuration", "content": {"application/json": {"schema": self.r("config")}}})
    }

    fn care_ok(&self, description: &str) -> Value {
        json!({"description": description, "content": {"application/json": {"schema": self.r("care")}}})
    }

    fn manager() -> Value {
        json!({"name": "manager", "in": "query", "required": true, "schema": {"type": "string", "maxLength": 128},
            "description": "Who is asking: each manager owns its own entries (like a server-side apply field manager)."})
    }

    fn since() -> Value {
        json!({"name": "since", "in": "query", "required": false, "schema": {"type": "integer", "format": "uint64"},
            "description": "The last sequence the reader saw; the stream starts after it. Without it, every buffered event is sent."})
    }

    fn path_param(name: &str, description: &str) -> Value {
        json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "description": description})
    }

    fn care_name() -> Value {
        Self::path_param("name", "The NetworkCare (the subscriber's name).")
    }
}

/// The pod socket's and the admin socket's paths (nes-agent).
fn agent_paths(p: &Parts) -> Value {
    let Common {
        config_ok,
        manager,
        since,
        care_name,
    } = p.common();
    let pod = json!({"name": "pod", "in": "query", "required": false, "schema": {"type": "string"},
        "description": "Admin socket only: the pod (network namespace name) addressed. A pod's own socket refuses another pod with 403."});
    let wait = json!({"name": "wait", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^[0-9]+(ms|s|m)$", "example": "30s"},
        "description": "Long-poll: answer once the agent's pass for the awaited generation (or a later one) has run, applied or failed, or when this much time (with its unit, at most 60s; 0s answers at once) has passed. The answer carries the header Nes-Wait: settled (the body is the pass's outcome) or Nes-Wait: timeout (the body is the current state). A desired state that cannot be applied (Degraded) settles at once. An invalid value is a 400 naming the parameter; nothing is stored."});
    let generation = json!({"name": "generation", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0},
        "description": "With wait=: the generation whose pass is awaited (e.g. the one a PUT answered). Without it, the generation current when the request arrives."});
    let nes_wait = json!({"Nes-Wait": {"description": "Long-polls only: settled, or timeout", "schema": {"type": "string", "enum": ["settled", "timeout"]}}});
    let status_ok = json!({"description": "Status; with wait=, once the pass ran or the wait ended (see Nes-Wait)", "headers": nes_wait,
        "content": {"application/json": {"schema": p.r("status")}}});
    let put_ok = json!({"description": "The merged desired configuration; with wait=, the status after the pass for this change (see Nes-Wait), with each declared object's state and error",
        "headers": nes_wait,
        "content": {"application/json": {"schema": {"oneOf": [p.r("config"), p.r("status")]}}}});
    json!({
        "/v1/self/config": {
            "get": {"summary": "The merged desired configuration and the owner of each entry", "parameters": [pod],
                    "responses": {"200": config_ok, "404": p.problem("No such pod")}},
            "put": {"summary": "Apply this manager's fragment (replaces its previous one); with wait=, answer after the pass", "parameters": [pod, manager, wait],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": p.r("spec")}}},
                    "responses": {"200": put_ok, "400": p.problem("Malformed body (errors name the field), unknown or repeated parameter, invalid wait"),
                                  "409": p.problem("A field is owned by another manager with a different value"),
                                  "413": p.problem("Body over 1 MiB"), "415": p.problem("The body is not sent as application/json"), "422": p.problem("The merged configuration is invalid")}},
            "delete": {"summary": "Remove this manager's entries (and the kernel objects nes created for them)", "parameters": [pod, manager],
                       "responses": {"200": config_ok}}
        },
        "/v1/self/status": {
            "get": {"summary": "Live status read from the kernel; with wait=, a long-poll for a pass", "parameters": [pod, wait, generation],
                    "responses": {"200": status_ok, "400": p.problem("Invalid wait or generation, or generation without wait")}}
        },
        "/v1/self/events": {
            "get": {"summary": "NDJSON stream of events, one JSON object per line, each with a growing sequence", "parameters": [pod, since],
                    "responses": {"200": {"description": "Events, then live ones", "content": {"application/x-ndjson": {"schema": p.r("event")}}},
                                  "410": p.problem("since is not held by this agent (older than the buffer, or never issued by it); oldestSequence tells where it starts")}}
        },
        "/v1/self/networkcares": {
            "post": {"summary": "Create a subscription in the pod's namespace, owned by the pod's workload (in-cluster: forwarded to the cliserver for the pod; standalone: kept by the agent, removed with the creating pod's namespace)",
                     "parameters": [pod.clone()],
                     "requestBody": {"required": true, "content": {"application/json": {"schema": p.r("newCare")}}},
                     "responses": {"201": p.care_ok("Created"), "400": p.problem("Malformed body (errors name the field)"), "415": p.problem("The body is not sent as application/json"),
                                   "409": p.problem("A subscription of that name exists"), "422": p.problem("Invalid subscription; errors name each field"),
                                   "501": p.problem("Standalone agent: webhook delivery is nes-operator's (stream subscriptions are served)"),
                                   "503": p.problem("The cliserver cannot be reached; nothing was created")}}
        },
        "/v1/self/networkcares/{name}/events": {
            "get": {"summary": "NDJSON stream of the subscription as this node sees it: the live netlink events of the selected pods served on this node, merged with the cliserver's events of the selected pods elsewhere, numbered by this node's feed",
                    "parameters": [pod.clone(), care_name.clone(), since.clone()],
                    "responses": {"200": {"description": "Events, then live ones", "content": {"application/x-ndjson": {"schema": p.r("event")}}},
                                  "404": p.problem("No such subscription"),
                                  "410": p.problem("since is not held by this node's feed; oldestSequence tells where it starts")}}
        },
        "/v1/pods": {
            "get": {"summary": "Admin socket only: the pods served",
                    "responses": {"200": {"description": "Pod names", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}},
                                  "403": p.problem("Asked on a pod socket")}}
        },
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3 document"}}}},
        "/healthz": {"get": {"summary": "Liveness of the agent", "responses": {"200": {"description": "ok"}}}}
    })
}

/// The cliserver's paths (nes-operator, HTTPS): the same resources addressed by namespace
/// and pod, and the subscriptions.
fn cliserver_paths(p: &Parts) -> Value {
    let rest_wait = json!({"name": "wait", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^[0-9]+(ms|s|m)$", "example": "30s"},
        "description": "Long-poll: answer once the node agent has reported the pass for the awaited generation (or a later one) in the NetworkConfiguration's status (observedGeneration), or when this much time (with its unit, at most 60s) has passed. The answer carries the header Nes-Wait: settled or Nes-Wait: timeout (the body is the current status). An invalid value is a 400 naming the parameter."});
    let rest_generation = json!({"name": "generation", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0},
        "description": "With wait=: the generation awaited (e.g. the one a PUT answered). Without it, the NetworkConfiguration's generation when the request arrives."});
    let c = p.common();
    let ns = Parts::path_param("namespace", "Namespace of the pod or subscription.");
    let pod_path = Parts::path_param(
        "pod",
        "The pod, and the NetworkConfiguration named after it.",
    );
    let forwarded = json!({"name": "X-Nes-Pod-Uid", "in": "header", "required": false, "schema": {"type": "string"},
        "description": "Set only by a node agent forwarding a pod's own request: the pod's UID. Accepted only from the agent ServiceAccount for a pod on its node; no SubjectAccessReview then."});
    let forwarded_name = json!({"name": "X-Nes-Pod-Name", "in": "header", "required": false, "schema": {"type": "string"},
        "description": "Set only by a node agent forwarding a subscriber pod's request, with X-Nes-Pod-Uid: the pod's name, which these paths do not carry. Forwarded requests may create and read subscriptions, not list or delete them."});
    let auth_errors = |mut responses: Value| {
        responses["401"] = p.problem("Missing or rejected bearer token (TokenReview)");
        responses["403"] = p.problem("Denied by SubjectAccessReview, or a forwarded request for a pod not on the agent's node (or a forwarded list or delete of subscriptions)");
        responses
    };
    json!({
        "/v1/namespaces/{namespace}/pods/{pod}/config": {
            "get": {"summary": "The merged desired configuration and the owner of each entry (RBAC: get networkconfigurations)",
                    "parameters": [ns.clone(), pod_path.clone(), forwarded.clone()],
                    "responses": auth_errors(json!({"200": c.config_ok.clone(), "404": p.problem("The pod has no NetworkConfiguration")}))},
            "put": {"summary": "Server-side apply of this manager's fragment to the pod's NetworkConfiguration (RBAC: update networkconfigurations)",
                    "parameters": [ns.clone(), pod_path.clone(), c.manager.clone(), forwarded.clone()],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": p.r("spec")}}},
                    "responses": auth_errors(json!({"200": c.config_ok.clone(), "400": p.problem("Malformed body (errors name the field), unknown or repeated parameter"),
                                  "404": p.problem("No such pod"),
                                  "409": p.problem("A field is owned by another manager (server-side apply conflict); errors name the field"),
                                  "413": p.problem("Body over 1 MiB"), "415": p.problem("The body is not sent as application/json"), "422": p.problem("The merged configuration is invalid; errors name each field")}))},
            "delete": {"summary": "Remove this manager's entries (RBAC: update networkconfigurations)",
                       "parameters": [ns.clone(), pod_path.clone(), c.manager.clone(), forwarded.clone()],
                       "responses": auth_errors(json!({"200": c.config_ok.clone(), "404": p.problem("The pod has no NetworkConfiguration"),
                                     "422": p.problem("What is left would be invalid (e.g. another manager's route uses this manager's interface)")}))}
        },
        "/v1/namespaces/{namespace}/pods/{pod}/status": {
            "get": {"summary": "The status the node agent reported in the NetworkConfiguration (RBAC: get networkconfigurations); with wait=, a long-poll for the agent's report",
                    "parameters": [ns.clone(), pod_path.clone(), rest_wait, rest_generation, forwarded.clone()],
                    "responses": auth_errors(json!({"200": {"description": "Status; with wait=, once the agent reported the awaited generation or the wait ended (see Nes-Wait)",
                                                            "headers": {"Nes-Wait": {"description": "Long-polls only: settled, or timeout", "schema": {"type": "string", "enum": ["settled", "timeout"]}}},
                                                            "content": {"application/json": {"schema": p.r("status")}}},
                                  "400": p.problem("Invalid wait or generation, or generation without wait"),
                                  "404": p.problem("The pod has no NetworkConfiguration")}))}
        },
        "/v1/namespaces/{namespace}/pods/{pod}/events": {
            "get": {"summary": "NDJSON stream of events built from the NetworkConfiguration's status changes (RBAC: get networkconfigurations)",
                    "parameters": [ns.clone(), pod_path.clone(), c.since.clone(), forwarded.clone()],
                    "responses": auth_errors(json!({"200": {"description": "Events, then live ones", "content": {"application/x-ndjson": {"schema": p.r("event")}}},
                                  "410": p.problem("since is not held by this server; oldestSequence tells where it starts")}))}
        },
        "/v1/namespaces/{namespace}/networkcares": {
            "get": {"summary": "The subscriptions of the namespace (RBAC: list networkcares)", "parameters": [ns.clone()],
                    "responses": auth_errors(json!({"200": {"description": "Subscriptions", "content": {"application/json": {"schema": {"type": "array", "items": p.r("care")}}}}}))},
            "post": {"summary": "Create a subscription, owned by the caller's workload when the caller is a pod of the namespace (RBAC: create networkcares)",
                     "parameters": [ns.clone(), forwarded.clone(), forwarded_name.clone()],
                     "requestBody": {"required": true, "content": {"application/json": {"schema": p.r("newCare")}}},
                     "responses": auth_errors(json!({"201": p.care_ok("Created"), "400": p.problem("Malformed body (errors name the field)"), "415": p.problem("The body is not sent as application/json"),
                                   "409": p.problem("A subscription of that name exists"), "422": p.problem("Invalid subscription; errors name each field")}))}
        },
        "/v1/namespaces/{namespace}/networkcares/{name}": {
            "get": {"summary": "One subscription (RBAC: get networkcares)", "parameters": [ns.clone(), c.care_name.clone(), forwarded.clone(), forwarded_name.clone()],
                    "responses": auth_errors(json!({"200": p.care_ok("The subscription"), "404": p.problem("No such subscription")}))},
            "delete": {"summary": "Delete a subscription (RBAC: delete networkcares)", "parameters": [ns.clone(), c.care_name.clone()],
                       "responses": auth_errors(json!({"204": {"description": "Deleted"}, "404": p.problem("No such subscription")}))}
        },
        "/v1/namespaces/{namespace}/networkcares/{name}/events": {
            "get": {"summary": "NDJSON stream of the subscription: the events of every pod it selects, of the kinds it wants, numbered by the subscription (RBAC: get networkcares)",
                    "parameters": [ns.clone(), c.care_name.clone(), c.since.clone(), forwarded.clone(), forwarded_name.clone()],
                    "responses": auth_errors(json!({"200": {"description": "Events, then live ones", "content": {"application/x-ndjson": {"schema": p.r("event")}}},
                                  "404": p.problem("No such subscription"),
                                  "410": p.problem("since is not held by this server; oldestSequence tells where it starts")}))}
        }
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
