//! CR → objects: the agent DaemonSet, its Service and the MutatingWebhookConfiguration a
//! `NesInstallation` stands for, as `manifests/30-agent.yaml` and `40-webhook.yaml` install
//! them, except that the DaemonSet is `OnDelete` (the operator drives the rollout) and every
//! object is owned by the installation.

use api::installation::NesInstallation;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use kube::Resource;
use serde_json::{json, Value};

/// The agent's name: DaemonSet, Service, ServiceAccount and container.
pub const AGENT: &str = "nes-agent";
/// The webhook configuration's name (the operator's).
pub const WEBHOOK: &str = "nes-operator";

/// Where the objects go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderContext {
    /// The namespace of the agent and of the operator's Service.
    pub namespace: String,
    /// The operator's Service the webhook calls.
    pub operator_service: String,
}

impl Default for RenderContext {
    fn default() -> Self {
        Self {
            namespace: "nes-system".into(),
            operator_service: "nes-operator".into(),
        }
    }
}

/// What a `NesInstallation` renders.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub daemonset: DaemonSet,
    pub service: Service,
    pub webhook: MutatingWebhookConfiguration,
}

#[derive(Debug, thiserror::Error)]
#[error("rendering {kind}: {source}")]
pub struct RenderError {
    kind: &'static str,
    source: serde_json::Error,
}

/// Renders the objects of an installation (which must have a name and uid: it owns them).
pub fn render(inst: &NesInstallation, ctx: &RenderContext) -> Result<Rendered, RenderError> {
    let owner = inst.controller_owner_ref(&()).map(|o| vec![o]);
    let mut daemonset: DaemonSet = from("DaemonSet", daemonset(inst, ctx))?;
    let mut service: Service = from("Service", service(ctx))?;
    let mut webhook: MutatingWebhookConfiguration =
        from("MutatingWebhookConfiguration", webhook(inst, ctx))?;
    daemonset.metadata.owner_references = owner.clone();
    service.metadata.owner_references = owner.clone();
    webhook.metadata.owner_references = owner;
    Ok(Rendered {
        daemonset,
        service,
        webhook,
    })
}

fn from<T: serde::de::DeserializeOwned>(kind: &'static str, v: Value) -> Result<T, RenderError> {
    serde_json::from_value(v).map_err(|source| RenderError { kind, source })
}

fn agent_labels() -> Value {
    json!({
        "app.kubernetes.io/name": AGENT,
        "app.kubernetes.io/component": "agent",
        "app.kubernetes.io/part-of": "nes",
    })
}

fn daemonset(inst: &NesInstallation, ctx: &RenderContext) -> Value {
    let agent = &inst.spec.agent;
    let mut pod = json!({
        "serviceAccountName": AGENT,
        "priorityClassName": agent.priority_class_name,
        "hostNetwork": true,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "hostPID": false,
        "tolerations": agent.tolerations.clone().map_or_else(|| json!([{"operator": "Exists"}]), |t| json!(t)),
        "terminationGracePeriodSeconds": 30,
        "containers": [container(inst)],
        "volumes": volumes(),
    });
    if !agent.node_selector.is_empty() {
        pod["nodeSelector"] = json!(agent.node_selector);
    }
    if !agent.image_pull_secrets.is_empty() {
        let secrets: Vec<_> = agent
            .image_pull_secrets
            .iter()
            .map(|n| json!({"name": n}))
            .collect();
        pod["imagePullSecrets"] = json!(secrets);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": AGENT, "namespace": ctx.namespace, "labels": agent_labels()},
        "spec": {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app.kubernetes.io/name": AGENT}},
            "updateStrategy": {"type": "OnDelete"},
            "template": {"metadata": {"labels": agent_labels()}, "spec": pod},
        },
    })
}

fn container(inst: &NesInstallation) -> Value {
    let agent = &inst.spec.agent;
    let mut env = vec![
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}),
        // The agent writes its upgrade report on its own pod.
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "NES_LOG", "value": agent.log_level.as_str()}),
        json!({"name": "NES_LOG_FORMAT", "value": "json"}),
        // Few malloc arenas keep the heap of an agent with a few worker threads compact.
        json!({"name": "MALLOC_ARENA_MAX", "value": "2"}),
    ];
    env.extend(host_access_env(inst));
    let probe = |path: &str, period: u32, failures: u32| {
        json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
               "timeoutSeconds": 2, "failureThreshold": failures})
    };
    json!({
        "name": AGENT,
        "image": agent.image,
        "imagePullPolicy": agent.image_pull_policy.as_str(),
        "command": ["/usr/local/bin/nes-agent"],
        "env": env,
        "ports": [{"name": "http", "containerPort": 9090, "protocol": "TCP"}],
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 2),
        "resources": agent.resources.clone().map_or_else(
            || json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}),
            |r| json!(r)),
        "securityContext": {
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false, "privileged": false,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "containerd", "mountPath": "/run/containerd", "readOnly": true},
            {"name": "netns", "mountPath": "/var/run/netns", "readOnly": true,
             "mountPropagation": "HostToContainer"},
            {"name": "state", "mountPath": "/var/lib/nes"},
            {"name": "ca", "mountPath": "/etc/nes/ca", "readOnly": true},
            {"name": "operator-token", "mountPath": "/var/run/secrets/nes", "readOnly": true},
            {"name": "cni-bin", "mountPath": "/opt/cni/bin", "readOnly": true},
            {"name": "cni-cache", "mountPath": "/var/lib/cni"},
        ],
    })
}

/// The node ceiling on host-side access, as the agent's environment (only what is allowed:
/// the default install sets none).
fn host_access_env(inst: &NesInstallation) -> Vec<Value> {
    let ceiling = &inst.spec.policy.host_access;
    let mut env = vec![];
    let mut set = |name: &str, value: String| env.push(json!({"name": name, "value": value}));
    if ceiling.veth {
        set("NES_ALLOW_HOST_VETH", "true".into());
    }
    if !ceiling.bridges.is_empty() {
        set("NES_ALLOW_HOST_BRIDGES", ceiling.bridges.join(","));
    }
    if !ceiling.parents.is_empty() {
        set("NES_ALLOW_HOST_PARENTS", ceiling.parents.join(","));
    }
    if ceiling.passthru {
        set("NES_ALLOW_HOST_PASSTHRU", "true".into());
    }
    if ceiling.cni_attachments {
        set("NES_ALLOW_HOST_CNI", "true".into());
    }
    env
}

fn volumes() -> Value {
    json!([
        // The token forwarded requests carry to the cliserver, for the operator's audience only.
        {"name": "operator-token", "projected": {"sources": [{"serviceAccountToken":
            {"audience": "nes-operator", "expirationSeconds": 3600, "path": "token"}}]}},
        {"name": "containerd", "hostPath": {"path": "/run/containerd", "type": "Directory"}},
        {"name": "netns", "hostPath": {"path": "/var/run/netns", "type": "DirectoryOrCreate"}},
        {"name": "state", "hostPath": {"path": "/var/lib/nes", "type": "DirectoryOrCreate"}},
        {"name": "ca", "configMap": {"name": "nes-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        // Attachments: the node's CNI plugins, and libcni's result cache shared with the runtime.
        {"name": "cni-bin", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}},
        {"name": "cni-cache", "hostPath": {"path": "/var/lib/cni", "type": "DirectoryOrCreate"}},
    ])
}

fn service(ctx: &RenderContext) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": AGENT, "namespace": ctx.namespace, "labels": agent_labels()},
        "spec": {
            "clusterIP": "None",
            "selector": {"app.kubernetes.io/name": AGENT},
            "ports": [{"name": "http", "port": 9090, "targetPort": "http", "protocol": "TCP"}],
        },
    })
}

fn webhook(inst: &NesInstallation, ctx: &RenderContext) -> Value {
    let mut hook = json!({
        "name": "pods.nes.network-config.io",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": ctx.operator_service, "namespace": ctx.namespace,
                                     "path": "/mutate-pods", "port": 443}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["pods"], "scope": "Namespaced"}],
        "objectSelector": {"matchLabels": {api::SELECTION_LABEL: "true"}},
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "timeoutSeconds": 5,
        "reinvocationPolicy": "Never",
    });
    hook["namespaceSelector"] = namespace_selector(inst);
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK, "labels": {"app.kubernetes.io/name": WEBHOOK,
                                                  "app.kubernetes.io/part-of": "nes"}},
        "webhooks": [hook],
    })
}

/// The webhook's namespaces: the spec's selector, and never the system namespaces (a pod
/// there that cannot be created keeps the cluster, or nes itself, from coming back).
fn namespace_selector(inst: &NesInstallation) -> Value {
    let mut selector = inst
        .spec
        .webhook
        .namespace_selector
        .clone()
        .unwrap_or_default();
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(vec!["kube-system".into(), "nes-system".into()]),
        });
    json!(selector)
}

#[cfg(test)]
mod tests;
