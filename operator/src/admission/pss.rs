//! Test-only checker of the Pod Security Standards `restricted` profile (which includes
//! `baseline`), limited to what a pod spec and its containers say: enough to show that
//! injecting the shim keeps a restricted pod restricted.
//! <https://kubernetes.io/docs/concepts/security/pod-security-standards/>

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, SeccompProfile};

/// Volume sources `restricted` allows.
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every rule `pod` breaks, pod-level rules first, then each container's.
pub fn pod_violations(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return vec!["pod has no spec".into()];
    };
    let mut found = pod_level(spec);
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        found.extend(container_violations(spec, c));
    }
    found
}

/// The rules of the pod itself: host namespaces, volume types, sysctls.
fn pod_level(spec: &PodSpec) -> Vec<String> {
    let mut found = Vec::new();
    for (set, what) in [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ] {
        if set == Some(true) {
            found.push(format!("pod: {what} must not be true"));
        }
    }
    for volume in spec.volumes.iter().flatten() {
        // A volume is one source: its only non-name field names the type.
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(volume) else {
            found.push(format!("volume {}: cannot be read", volume.name));
            continue;
        };
        for kind in fields.keys().filter(|k| *k != "name") {
            if !ALLOWED_VOLUMES.contains(&kind.as_str()) {
                found.push(format!(
                    "volume {}: type {kind} is not allowed",
                    volume.name
                ));
            }
        }
    }
    let psc = spec.security_context.as_ref();
    if psc.and_then(|s| s.run_as_user) == Some(0) {
        found.push("pod: runAsUser must not be 0".into());
    }
    if let Some(profile) = psc.and_then(|s| s.seccomp_profile.as_ref()) {
        if !seccomp_allowed(profile) {
            found.push(format!(
                "pod: seccompProfile {} is not allowed",
                profile.type_
            ));
        }
    }
    if psc.and_then(|s| s.windows_options.as_ref()?.host_process) == Some(true) {
        found.push("pod: hostProcess must not be true".into());
    }
    found
}

/// The rules for one container, reading the pod-level settings it inherits.
pub fn container_violations(spec: &PodSpec, c: &Container) -> Vec<String> {
    let mut found = Vec::new();
    let mut bad = |rule: &str| found.push(format!("container {}: {rule}", c.name));
    let psc = spec.security_context.as_ref();
    let sc = c.security_context.clone().unwrap_or_default();

    if sc.privileged == Some(true) {
        bad("privileged must not be true");
    }
    if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        bad("hostProcess must not be true");
    }
    if sc.allow_privilege_escalation != Some(false) {
        bad("allowPrivilegeEscalation must be false");
    }
    let non_root = sc
        .run_as_non_root
        .or_else(|| psc.and_then(|p| p.run_as_non_root));
    if non_root != Some(true) {
        bad("runAsNonRoot must be true (here or on the pod)");
    }
    if sc.run_as_user == Some(0) {
        bad("runAsUser must not be 0");
    }
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or_else(|| psc.and_then(|p| p.seccomp_profile.as_ref()));
    match seccomp {
        Some(profile) if seccomp_allowed(profile) => {}
        Some(profile) => bad(&format!("seccompProfile {} is not allowed", profile.type_)),
        None => bad("seccompProfile must be RuntimeDefault or Localhost (here or on the pod)"),
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.drop.iter().flatten().any(|d| d == "ALL") {
        bad("capabilities must drop ALL");
    }
    for add in caps.add.iter().flatten() {
        if add != "NET_BIND_SERVICE" {
            bad(&format!("capability {add} must not be added"));
        }
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        bad("procMount must be Default");
    }
    if let Some(selinux) = &sc.se_linux_options {
        if selinux.user.is_some() || selinux.role.is_some() {
            bad("seLinuxOptions user and role must not be set");
        }
    }
    for port in c.ports.iter().flatten() {
        if port.host_port.is_some_and(|p| p != 0) {
            bad("hostPort must not be set");
        }
    }
    found
}

fn seccomp_allowed(profile: &SeccompProfile) -> bool {
    matches!(profile.type_.as_str(), "RuntimeDefault" | "Localhost")
}
