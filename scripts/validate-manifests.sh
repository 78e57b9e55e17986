#!/usr/bin/env bash
# Validates every manifest and example offline, no cluster needed:
#  1. every built-in object in manifests/ and examples/ against the Kubernetes 1.34 OpenAPI
#     schemas, strictly (unknown fields fail), with kubernetes-validate (PyPI, pinned, in a
#     venv under ~/.cache installed on first use);
#  2. every nes custom resource in examples/ against the OpenAPI schema of the generated CRDs
#     in manifests/crds.yaml (types, enums, patterns, limits; unknown fields fail). Their CEL
#     rules and api::validate are checked by api/tests/examples.rs;
#  3. the install's fixed wiring (what the binaries expect): names, ports, ServiceAccounts, the webhook, the
#     agent's privileges, and that the operator injects the agent's image as the shim.
#
#   scripts/validate-manifests.sh [ROOT]   # checks ROOT/manifests/*.yaml, ROOT/examples/*.yaml and
#                                          # ROOT/examples/rendered/*.yaml;
#                                          # ROOT defaults to this repository
set -euo pipefail
root=$(cd "${1:-$(dirname "$0")/..}" && pwd)
cd "$root"

K8S_VERSION=1.34.0
KV_VERSION=1.37.0
venv=${NES_VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nes/kubernetes-validate-$KV_VERSION}

# examples/rendered/: objects nes-operator writes (checked against the Kubernetes schemas);
# operator/tests/fixtures: what the operator renders from the default NesInstallation.
# manifests/optional/: files an admin applies by choice (the NPWG NAD CRD).
files=(manifests/*.yaml manifests/optional/*.yaml examples/*.yaml examples/rendered/*.yaml operator/tests/fixtures/*.yaml)

# --- the validator, installed once --------------------------------------------------
if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$KV_VERSION" ]; then
    echo "installing kubernetes-validate $KV_VERSION into $venv"
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
        else
            echo "validate-manifests: needs python3 with venv (Debian: apt-get install python3 python3-venv)" >&2
            exit 2
        fi
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
# Refuse to fall back silently to an older schema set.
"$venv/bin/python" - "$K8S_VERSION" <<'PY'
import sys
import kubernetes_validate.utils as u
if sys.argv[1] not in u.all_versions():
    sys.exit(f"kubernetes-validate has no schemas for Kubernetes {sys.argv[1]} (newest: {u.latest_version()})")
PY

# --- 1. built-in kinds against the Kubernetes schemas ------------------------------
echo "kubernetes-validate $KV_VERSION --strict, Kubernetes $K8S_VERSION: ${#files[@]} files in $root"
set +e
out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${files[@]}" 2>&1)
rc=$?
set -e
# nes's own kinds have no built-in schema: step 2 checks them. Any other kind without a schema
# (a typo in apiVersion or kind) would otherwise pass unchecked.
unexpected=$(printf '%s\n' "$out" | grep -v -e '^$' \
    -e "^WARN .*Couldn't find schema for kind \(NetworkConfiguration\|NetworkCare\|NetworkConfigurationPolicy\|NetworkService\|NesInstallation\) with api version nes\.network-config\.io/v1alpha1 " || true)
if [ "$rc" -ne 0 ] || [ -n "$unexpected" ]; then
    printf '%s\n' "$unexpected" >&2
    echo "validate-manifests: FAILED (Kubernetes $K8S_VERSION schemas)" >&2
    exit 1
fi

# --- 2. and 3. custom resources against the CRDs, and the install contract ---------------
"$venv/bin/python" - "${files[@]}" <<'PY'
import copy
import json
import sys

import jsonschema
import yaml

failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


docs = [(path, doc) for path in sys.argv[1:] for doc in load(path)]


def strict(schema):
    """kubectl's strict field validation: unknown fields fail where the schema lists fields."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if not isinstance(s, dict):
            return
        if "properties" in s and "additionalProperties" not in s \
                and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
        for sub in s.get("properties", {}).values():
            walk(sub)
        for key in ("items", "additionalProperties"):
            walk(s.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in s.get(key, []):
                walk(sub)

    walk(schema)
    # apiVersion, kind and metadata are the API server's, not in every generated schema.
    for field in ("apiVersion", "kind", "metadata"):
        schema.setdefault("properties", {}).setdefault(field, {})
    return schema


# --- 2. nes custom resources against the generated CRDs
crd_schemas = {}
for doc in load("manifests/crds.yaml"):
    spec = doc["spec"]
    for version in spec["versions"]:
        key = (f'{spec["group"]}/{version["name"]}', spec["names"]["kind"])
        crd_schemas[key] = strict(version["schema"]["openAPIV3Schema"])

checked = 0
for path, doc in docs:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if not str(key[0]).startswith("nes.network-config.io/"):
        continue
    where = f'{path} {key[1]}/{doc.get("metadata", {}).get("name")}'
    if key not in crd_schemas:
        fail(where, f"no CRD in manifests/crds.yaml for {key[0]} {key[1]}")
        continue
    for error in jsonschema.Draft7Validator(crd_schemas[key]).iter_errors(doc):
        path_text = ".".join(str(p) for p in error.absolute_path)
        fail(where, f"{path_text}: {error.message}")
    checked += 1
print(f"CRD schemas: {checked} custom resources checked")


# --- 3. the install wiring the binaries expect, for the files under manifests/
def find(kind, name):
    for path, doc in docs:
        if path.startswith("manifests/") and doc.get("kind") == kind \
                and doc.get("metadata", {}).get("name") == name:
            return doc
    return None


def check(where, ok, message):
    if not ok:
        fail(where, message)


def by_name(items):
    return {i["name"]: i for i in items or []}


def env_field(container, name):
    env = by_name(container.get("env")).get(name, {})
    return env.get("value") or env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")


def port_number(container, port):
    if isinstance(port, int):
        return port
    return by_name(container.get("ports")).get(port, {}).get("containerPort")


def probe(where, container, kind, path, port):
    p = container.get(kind, {}).get("httpGet", {})
    check(where, p.get("path") == path and port_number(container, p.get("port")) == port,
          f"{kind} must be GET {path} on :{port}")


NS = "nes-system"
cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                  "CustomResourceDefinition", "ValidatingAdmissionPolicy",
                  "ValidatingAdmissionPolicyBinding", "NesInstallation"}
for path, doc in docs:
    if path.startswith("manifests/") and doc["kind"] not in cluster_scoped:
        check(f'{path} {doc["kind"]}/{doc["metadata"]["name"]}',
              doc["metadata"].get("namespace") == NS, f"must be in namespace {NS}")
manifest_files = sorted({p for p, _ in docs if p.startswith("manifests/")})
check("manifests/", any(d["kind"] == "Namespace" for p, d in docs if p == manifest_files[0]),
      "the Namespace must be in the first file, so `kubectl apply -f manifests/` creates it first")

ns = find("Namespace", NS)
check("Namespace", ns and ns["metadata"].get("labels", {}).get(
    "pod-security.kubernetes.io/enforce") == "privileged",
    f"{NS} must exist with pod-security.kubernetes.io/enforce: privileged")
for sa in ("nes-operator", "nes-agent"):
    check("ServiceAccount", find("ServiceAccount", sa), f"{sa} missing")

agent_ds = find("DaemonSet", "nes-agent")
op = find("Deployment", "nes-operator")
if op:
    where = "Deployment nes-operator"
    spec = op["spec"]["template"]["spec"]
    c = by_name(spec["containers"]).get("nes-operator", {})
    check(where, op["spec"].get("replicas") == 2, "2 replicas")
    check(where, spec.get("serviceAccountName") == "nes-operator", "serviceAccountName nes-operator")
    check(where, "podAntiAffinity" in spec.get("affinity", {}), "pod anti-affinity")
    check(where, env_field(c, "POD_NAME") == "metadata.name", "POD_NAME from metadata.name")
    check(where, env_field(c, "POD_NAMESPACE") == "metadata.namespace",
          "POD_NAMESPACE from metadata.namespace")
    agent_image = agent_ds and agent_ds["spec"]["template"]["spec"]["containers"][0]["image"]
    check(where, env_field(c, "NES_SHIM_IMAGE") == agent_image,
          f"NES_SHIM_IMAGE must be the agent's image {agent_image!r}")
    check(where, port_number(c, "https") == 8443, "container port https 8443")
    probe(where, c, "livenessProbe", "/healthz", 8080)
    probe(where, c, "readinessProbe", "/readyz", 8080)
    psc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
    check(where, psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532,
          "runAsNonRoot, runAsUser 65532")
    check(where, psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
    check(where, sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"], "restricted: no escalation, drop ALL")
    svc = find("Service", "nes-operator")
    ports = {p["port"]: p for p in (svc or {}).get("spec", {}).get("ports", [])}
    check("Service nes-operator", 443 in ports and port_number(c, ports[443]["targetPort"]) == 8443,
          "port 443 -> 8443")
    check("Service nes-operator", 8080 in ports, "port 8080")
    pdb = find("PodDisruptionBudget", "nes-operator")
    check("PodDisruptionBudget nes-operator", pdb and pdb["spec"].get("minAvailable") == 1
          and pdb["spec"]["selector"] == op["spec"]["selector"], "minAvailable 1, selecting the operator")
else:
    fail("manifests/", "Deployment nes-operator missing")

if agent_ds:
    where = "DaemonSet nes-agent"
    spec = agent_ds["spec"]["template"]["spec"]
    c = by_name(spec["containers"]).get("nes-agent", {})
    sc = c.get("securityContext", {})
    check(where, spec.get("serviceAccountName") == "nes-agent", "serviceAccountName nes-agent")
    check(where, not sc.get("privileged"), "must not be privileged")
    check(where, sorted(sc.get("capabilities", {}).get("add", [])) == ["NET_ADMIN", "SYS_ADMIN"]
          and sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities: drop ALL, add NET_ADMIN SYS_ADMIN")
    check(where, env_field(c, "NODE_NAME") == "spec.nodeName", "NODE_NAME from spec.nodeName")
    check(where, agent_ds["spec"]["updateStrategy"]["rollingUpdate"].get("maxUnavailable") == 1,
          "RollingUpdate maxUnavailable 1")
    check(where, {"operator": "Exists"} in spec.get("tolerations", []), "tolerate every taint")
    check(where, spec.get("priorityClassName") == "system-node-critical", "system-node-critical")
    probe(where, c, "livenessProbe", "/healthz", 9090)
    probe(where, c, "readinessProbe", "/readyz", 9090)
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = by_name(spec.get("volumes"))
    check(where, any("/run/containerd/containerd.sock".startswith(m.rstrip("/") + "/")
                     or m == "/run/containerd/containerd.sock" for m in mounts),
          "containerd's socket /run/containerd/containerd.sock mounted")
    check(where, mounts.get("/var/run/netns", {}).get("mountPropagation") == "HostToContainer",
          "/var/run/netns with HostToContainer propagation")
    check(where, "/var/lib/nes" in mounts, "state dir /var/lib/nes")
    ca = mounts.get("/etc/nes/ca", {})
    check(where, volumes.get(ca.get("name"), {}).get("configMap", {}).get("name") == "nes-ca",
          "ConfigMap nes-ca at /etc/nes/ca")
else:
    fail("manifests/", "DaemonSet nes-agent missing")

hook = find("MutatingWebhookConfiguration", "nes-operator")
if hook:
    where = "MutatingWebhookConfiguration nes-operator"
    w = by_name(hook["webhooks"]).get("pods.nes.network-config.io", {})
    svc = w.get("clientConfig", {}).get("service", {})
    check(where, (svc.get("name"), svc.get("namespace"), svc.get("path"), svc.get("port", 443))
          == ("nes-operator", NS, "/mutate-pods", 443), "service nes-operator.nes-system:443/mutate-pods")
    check(where, "caBundle" not in w.get("clientConfig", {}), "caBundle is the operator's to set")
    check(where, w.get("rules") == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                     "resources": ["pods"], "scope": "Namespaced"}], "Pod CREATE only")
    check(where, w.get("objectSelector") == {"matchLabels": {"network-config/runtime-ip": "true"}},
          "objectSelector network-config/runtime-ip: \"true\"")
    excluded = [e for e in w.get("namespaceSelector", {}).get("matchExpressions", [])
                if e.get("key") == "kubernetes.io/metadata.name" and e.get("operator") == "NotIn"]
    check(where, any({"kube-system", NS} <= set(e.get("values", [])) for e in excluded),
          "namespaceSelector excludes kube-system and nes-system")
    check(where, (w.get("failurePolicy"), w.get("sideEffects"), w.get("timeoutSeconds"),
                  w.get("admissionReviewVersions")) == ("Ignore", "None", 5, ["v1"]),
          "failurePolicy Ignore, sideEffects None, timeoutSeconds 5, admissionReviewVersions [v1]")
else:
    fail("manifests/", "MutatingWebhookConfiguration nes-operator missing")

vhook = find("ValidatingWebhookConfiguration", "nes-operator")
if vhook:
    where = "ValidatingWebhookConfiguration nes-operator"
    w = by_name(vhook["webhooks"]).get("policy.nes.network-config.io", {})
    svc = w.get("clientConfig", {}).get("service", {})
    check(where, (svc.get("name"), svc.get("namespace"), svc.get("path"), svc.get("port", 443))
          == ("nes-operator", NS, "/validate-nes", 443), "service nes-operator.nes-system:443/validate-nes")
    check(where, "caBundle" not in w.get("clientConfig", {}), "caBundle is the operator's to set")
    covered = {(res, op) for r in w.get("rules", []) if r.get("apiGroups") == ["nes.network-config.io"]
               for res in r.get("resources", []) for op in r.get("operations", [])}
    for res in ("networkconfigurations", "networkcares", "networkconfigurationpolicies", "networkservices"):
        for op in ("CREATE", "UPDATE"):
            check(where, (res, op) in covered, f"{op} of {res} is validated")
    check(where, (w.get("failurePolicy"), w.get("sideEffects"), w.get("admissionReviewVersions"))
          == ("Fail", "None", ["v1"]), "failurePolicy Fail, sideEffects None, admissionReviewVersions [v1]")
    conditions = " ".join(c.get("expression", "") for c in w.get("matchConditions", []))
    check(where, "deletionTimestamp" in conditions and "oldObject.spec" in conditions,
          "matchConditions keep metadata-only updates and deletions away (cleanup must not need the operator)")
else:
    fail("manifests/", "ValidatingWebhookConfiguration nes-operator missing")

def rules(kind, name):
    return (find(kind, name) or {}).get("rules", [])

def allowed(rule_list, group, resource, verb, name=None):
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", [])
               and verb in r.get("verbs", [])
               and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rule_list)

agent = rules("ClusterRole", "nes-agent")
for verb in ("create", "update", "patch", "delete"):
    check("ClusterRole nes-agent", not allowed(agent, "nes.network-config.io", "networkconfigurations", verb),
          f"the agent must not {verb} NetworkConfiguration specs (only the cliserver writes them)")
check("ClusterRole nes-agent", allowed(agent, "nes.network-config.io", "networkconfigurations/status", "patch"),
      "patch networkconfigurations/status")
check("ClusterRole nes-agent", allowed(agent, "", "pods", "patch")
      and not any(allowed(agent, "", "pods", verb) for verb in ("create", "update", "delete"))
      and not allowed(agent, "", "pods/status", "patch"),
      "patch pods (annotations, held to them by nes-agent-pod-annotations), nothing else on pods")
role = rules("Role", "nes-operator")
for resource, group, name in (("secrets", "", "nes-operator-tls"), ("configmaps", "", "nes-ca"),
                              ("leases", "coordination.k8s.io", "nes-operator")):
    for verb in ("create", "get", "update", "patch"):
        check("Role nes-operator", allowed(role, group, resource, verb, name), f"{verb} {resource}/{name}")
    check("Role nes-operator", not allowed(role, group, resource, "get", "someone-else"),
          f"get on {resource} must be limited to {name}")
check("ClusterRole nes-operator", allowed(rules("ClusterRole", "nes-operator"), "admissionregistration.k8s.io",
                                          "mutatingwebhookconfigurations", "patch", "nes-operator")
      and not allowed(rules("ClusterRole", "nes-operator"), "admissionregistration.k8s.io",
                      "mutatingwebhookconfigurations", "patch", "someone-else"),
      "patch its own MutatingWebhookConfiguration only")
op_rules = rules("ClusterRole", "nes-operator")
check("ClusterRole nes-operator", allowed(op_rules, "admissionregistration.k8s.io",
                                          "validatingwebhookconfigurations", "patch", "nes-operator")
      and not allowed(op_rules, "admissionregistration.k8s.io",
                      "validatingwebhookconfigurations", "patch", "someone-else"),
      "patch its own ValidatingWebhookConfiguration only")
for resource, group in (("networkconfigurationpolicies", "nes.network-config.io"), ("namespaces", "")):
    for verb in ("get", "list", "watch"):
        check("ClusterRole nes-operator", allowed(op_rules, group, resource, verb), f"{verb} {resource}")
    for verb in ("create", "update", "patch", "delete"):
        check("ClusterRole nes-operator", not allowed(op_rules, group, resource, verb),
              f"must not {verb} {resource}")
for resource, group in (("services", ""), ("endpointslices", "discovery.k8s.io")):
    for verb in ("get", "list", "watch", "patch"):
        check("ClusterRole nes-operator", allowed(op_rules, group, resource, verb),
              f"{verb} {resource} (NetworkService publishing)")
check("ClusterRole nes-operator", allowed(op_rules, "nes.network-config.io", "networkservices/status", "patch"),
      "patch networkservices/status")
check("ClusterRole nes-operator", allowed(op_rules, "nes.network-config.io", "nesinstallations/status", "patch")
      and allowed(op_rules, "nes.network-config.io", "nesinstallations", "watch")
      and not allowed(op_rules, "nes.network-config.io", "nesinstallations", "patch"),
      "read the NesInstallation and patch only its status")
check("ClusterRole nes-operator", not allowed(op_rules, "", "pods", "delete")
      and allowed(role, "", "pods", "delete") and allowed(role, "apps", "daemonsets", "patch"),
      "delete pods (agent rollout) and apply the DaemonSet in nes-system only")
for kind, name in (("ClusterRoleBinding", "nes-operator"), ("ClusterRoleBinding", "nes-agent"),
                   ("RoleBinding", "nes-operator")):
    b = find(kind, name) or {}
    check(f"{kind} {name}", b.get("subjects") == [{"kind": "ServiceAccount", "name": name, "namespace": NS}]
          and find(b.get("roleRef", {}).get("kind"), b.get("roleRef", {}).get("name")),
          f"binds ServiceAccount {NS}/{name} to a role defined here")
for policy, needle in (("nes-operator-webhook-cabundle-only", "caBundle"),
                       ("nes-agent-own-node-status", "authentication.kubernetes.io/node-name"),
                       ("nes-agent-pod-annotations", "authentication.kubernetes.io/pod-name")):
    vap = find("ValidatingAdmissionPolicy", policy) or {}
    binding = find("ValidatingAdmissionPolicyBinding", policy) or {}
    check(f"ValidatingAdmissionPolicy {policy}", needle in json.dumps(vap), f"exists and is about {needle}")
    check(f"ValidatingAdmissionPolicyBinding {policy}",
          binding.get("spec", {}).get("policyName") == policy
          and binding.get("spec", {}).get("validationActions") == ["Deny"], "binds it with Deny")
report_vap = json.dumps(find("ValidatingAdmissionPolicy", "nes-agent-pod-annotations") or {})
for needle in ("request.name == variables.pod", "nes.network-config.io/upgrade-report",
               "oldObject.spec.nodeName == variables.node", "k8s.v1.cni.cncf.io/network-status",
               "object.spec == oldObject.spec", "variables.old.all(", "variables.new.all("):
    check("ValidatingAdmissionPolicy nes-agent-pod-annotations", needle in report_vap,
          f"annotations only, own pod and own node only: {needle}")
if agent_ds:
    vols = by_name(agent_ds["spec"]["template"]["spec"].get("volumes"))
    token = [s.get("serviceAccountToken", {}) for v in vols.values()
             for s in v.get("projected", {}).get("sources", [])]
    check("DaemonSet nes-agent", any(t.get("audience") == "nes-operator" for t in token),
          "a projected token for the audience nes-operator (the cliserver's TokenReview audience)")
    env = {e.get("name"): e for c in agent_ds["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    mounts = {m.get("name"): m for c in agent_ds["spec"]["template"]["spec"]["containers"]
              for m in c.get("volumeMounts", [])}
    check("DaemonSet nes-agent",
          mounts.get("cni-bin", {}).get("mountPath") == "/opt/cni/bin" and mounts["cni-bin"].get("readOnly")
          and mounts.get("cni-cache", {}).get("mountPath") == "/var/lib/cni"
          and not any(e.startswith("NES_ALLOW_HOST_CNI") for e in env),
          "the CNI plugins (read-only) and libcni's cache are mounted; CNI stays off by default")
    check("DaemonSet nes-agent",
          env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
          "POD_NAME from the downward API (the pod the agent writes its upgrade report on)")
print("install contract: checked")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit("validate-manifests: FAILED")
PY
echo "validate-manifests: all ${#files[@]} files valid for Kubernetes $K8S_VERSION"
