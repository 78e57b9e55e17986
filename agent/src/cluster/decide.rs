//! The cluster agent's decisions, as pure functions: which pods to serve, whether a netns
//! is the pod's, whether a sandbox is new, what a pass means for Kubernetes Events, and
//! who owns which entry of a `NetworkConfiguration`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use api::merge::{Owners, RouteOwners};
use api::{NetworkConfiguration, NetworkConfigurationSpec, RouteKey};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

use crate::observe::ObservedAddress;
use crate::podapi::Desired;

/// What to do with a pod seen by the pod watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodPlan {
    /// Not ours to serve (any more): release its sockets and state.
    Release(&'static str),
    /// Ours, but not ready to be paired with a netns yet.
    Wait(&'static str),
    /// Serve it: its UID and the IPs its netns must hold.
    Serve { uid: String, ips: Vec<IpAddr> },
}

/// Decides from the pod object alone whether this node's agent serves it.
pub fn pod_plan(pod: &Pod, node: &str) -> PodPlan {
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_some() {
        return PodPlan::Release("the pod is being deleted");
    }
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(api::SELECTION_LABEL))
        .is_some_and(|v| v == "true");
    if !labelled {
        return PodPlan::Release("the pod does not carry the selection label");
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.node_name.as_deref()) != Some(node) {
        return PodPlan::Release("the pod is not on this node");
    }
    if spec.and_then(|s| s.host_network) == Some(true) {
        return PodPlan::Release("a hostNetwork pod's netns is the node's");
    }
    let Some(uid) = meta.uid.clone() else {
        return PodPlan::Wait("the pod has no UID yet");
    };
    let ips: Vec<IpAddr> = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        return PodPlan::Wait("the pod has no IP yet");
    }
    PodPlan::Serve { uid, ips }
}

/// Whether a released pod is leaving (gone, or being deleted), so what nes attached to it
/// is detached; a pod merely unlabelled or moved keeps it.
pub fn pod_leaving(pod: Option<&Pod>) -> bool {
    pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
}

/// Whether a netns holds one of the pod's IPs: the proof that the runtime's answer and the
/// API server's pod are the same pod before anything is written there.
pub fn holds_pod_ip(addresses: &[ObservedAddress], pod_ips: &[IpAddr]) -> bool {
    addresses.iter().any(|a| pod_ips.contains(&a.addr.addr()))
}

/// A sandbox as the agent tells them apart: the kernel reuses a freed namespace's inode
/// number, so the netns identity alone cannot tell a new sandbox from the old one; the
/// runtime's sandbox id can.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub id: String,
    pub dev: u64,
    pub inode: u64,
}

impl Sandbox {
    pub fn new(id: &str, netns: &api::NetnsIdentity) -> Self {
        Self {
            id: id.to_string(),
            dev: netns.dev,
            inode: netns.inode,
        }
    }
}

/// The desired state a `NetworkConfiguration` declares; none declares nothing.
pub fn desired_of(conf: Option<&NetworkConfiguration>) -> Desired {
    conf.map(|c| Desired {
        generation: c.metadata.generation.unwrap_or(0),
        spec: Arc::new(c.spec.clone()),
        saved: Default::default(),
        problem: None,
    })
    .unwrap_or_default()
}

/// Where the pod's `NetworkConfiguration` is, as far as the agent knows.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// In this node's watch.
    InWatch(&'a NetworkConfiguration),
    /// Not in the watch, and the API server answers 404 for it by name: deleted.
    Deleted,
    /// Not in the watch, but it exists (another node's label, or anything else).
    Elsewhere,
    /// Not in the watch, and asking the API server failed or timed out.
    Unknown,
}

/// Whether a pod no longer in the watch holds something worth asking the API server about:
/// a spec (or a problem) being kept, or what nes owns there after a restart.
pub fn holds_something(current: Option<&Desired>, owns_something: bool) -> bool {
    match current {
        Some(d) => *d.spec != NetworkConfigurationSpec::default() || d.problem.is_some(),
        None => owns_something,
    }
}

/// The desired state given where the pod's configuration is. Only an explicit delete
/// (`Deleted`) becomes the empty spec, which removes what nes applied in the pod; one that
/// merely left the watch (relabelled, or the API server cannot say) never does: the last
/// good one (`current`) stands, or, when nes already owns something there and no spec is
/// known (an agent restart), nothing is written. The pod reports Degraded either way.
pub fn next_desired(
    lookup: Lookup<'_>,
    current: Option<&Desired>,
    owns_something: bool,
) -> Desired {
    let message = match lookup {
        Lookup::InWatch(conf) => return desired_of(Some(conf)),
        Lookup::Deleted => return Desired::default(),
        Lookup::Elsewhere => "the pod's NetworkConfiguration is not in this node's watch (its node label changed); what was applied is kept until the pod goes",
        Lookup::Unknown => "the pod's NetworkConfiguration left this node's watch and the API server could not say whether it was deleted; what was applied is kept",
    };
    if !holds_something(current, owns_something) {
        return Desired::default();
    }
    let gone = |hold| {
        Some(crate::podapi::StateProblem {
            reason: "ConfigurationGone".into(),
            message: message.into(),
            hold,
        })
    };
    match current {
        Some(d) => Desired {
            problem: gone(d.problem.as_ref().is_some_and(|p| p.hold)),
            ..d.clone()
        },
        None => Desired {
            problem: gone(true),
            ..Desired::default()
        },
    }
}

/// The `Degraded` reason of a pod whose NPWG `networks` annotation cannot be applied.
pub const INVALID_NETWORKS_ANNOTATION: &str = "InvalidNetworksAnnotation";

/// `desired` with the attachments the pod's NPWG annotation declares (`annotated`, see
/// [`super::netstatus::annotated`]) merged in as one more manager: one validator, one
/// merge, one owner per entry. An annotation that cannot be read, merged or validated
/// changes nothing: the last good state (`current`) stays and the pod reports Degraded.
pub fn with_annotated(
    desired: Desired,
    current: Option<&Desired>,
    annotated: Option<Result<Vec<api::AttachmentSpec>, String>>,
) -> Desired {
    if desired.problem.is_some() {
        return desired;
    }
    let specs = match annotated {
        None => return desired,
        Some(Ok(specs)) if specs.is_empty() => return desired,
        Some(Ok(specs)) => specs,
        Some(Err(why)) => {
            return crate::policy::hold(desired, current, INVALID_NETWORKS_ANNOTATION, why)
        }
    };
    let fragment = api::NetworkConfigurationSpec {
        attachments: specs,
        ..Default::default()
    };
    let merged = api::merge::merge([
        ("networkconfiguration", &*desired.spec),
        (super::netstatus::ANNOTATION_MANAGER, &fragment),
    ])
    .map_err(|c| c.to_string())
    .and_then(|m| {
        api::validate(&m.spec)
            .map(|()| m)
            .map_err(|e| e.to_string())
    });
    match merged {
        Ok(m) => Desired {
            spec: Arc::new(m.spec),
            ..desired
        },
        Err(why) => crate::policy::hold(
            desired,
            current,
            INVALID_NETWORKS_ANNOTATION,
            format!("{}: {why}", api::attach::NETWORKS_ANNOTATION),
        ),
    }
}

/// What one converge pass looked like, for deciding Kubernetes Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    pub generation: i64,
    pub converged: bool,
    pub writes: u64,
    pub error: String,
}

/// A Kubernetes Event to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Event a pass deserves, given the one before it in the same sandbox: a generation
/// applied, drift repaired (writes with nothing new asked), or a new failure. Quiet passes
/// and repeats of the same failure say nothing.
pub fn pass_event(prev: Option<&Pass>, pass: &Pass) -> Option<KubeEvent> {
    let same_generation = prev.is_some_and(|p| p.generation == pass.generation);
    if !pass.converged {
        let repeat = prev.is_some_and(|p| {
            !p.converged && p.error == pass.error && p.generation == pass.generation
        });
        return (!repeat).then(|| KubeEvent {
            warning: true,
            reason: "ApplyFailed",
            note: format!("generation {}: {}", pass.generation, pass.error),
        });
    }
    match prev {
        Some(p) if same_generation && p.converged && pass.writes > 0 => Some(KubeEvent {
            warning: false,
            reason: "DriftRepaired",
            note: format!(
                "objects changed from outside were restored ({} netlink writes)",
                pass.writes
            ),
        }),
        Some(p) if same_generation && p.converged => None,
        _ => Some(KubeEvent {
            warning: false,
            reason: "Applied",
            note: format!(
                "generation {} is applied ({} netlink writes)",
                pass.generation, pass.writes
            ),
        }),
    }
}

/// The Events a pass's attachments deserve against the pass before: attached (newly, or
/// another network or address behind the interface), failed (a new error), detached (an
/// attachment that was attached is no longer declared).
pub fn attachment_events(
    before: &[api::AttachmentStatus],
    now: &[api::AttachmentStatus],
) -> Vec<KubeEvent> {
    use api::ObjectState::{Applied, Failed};
    let key = |a: &api::AttachmentStatus| (a.name.clone(), a.interface.clone());
    let prior = |a: &api::AttachmentStatus| before.iter().find(|b| key(b) == key(a));
    let mut out = Vec::new();
    for a in now {
        let was = prior(a);
        match a.state {
            Applied if was.is_none_or(|b| b.state != Applied || b.network != a.network) => {
                let ips = a
                    .network
                    .as_ref()
                    .map(|n| n.ips.join(", "))
                    .unwrap_or_default();
                out.push(KubeEvent {
                    warning: false,
                    reason: "Attached",
                    note: format!("network {} attached as {} ({ips})", a.name, a.interface),
                });
            }
            Failed if was.is_none_or(|b| b.state != Failed || b.error != a.error) => {
                out.push(KubeEvent {
                    warning: true,
                    reason: "AttachFailed",
                    note: format!(
                        "network {} on {}: {}",
                        a.name,
                        a.interface,
                        a.error.as_deref().unwrap_or("failed")
                    ),
                });
            }
            _ => {}
        }
    }
    for b in before.iter().filter(|b| b.state == Applied) {
        if !now.iter().any(|a| key(a) == key(b)) {
            out.push(KubeEvent {
                warning: false,
                reason: "Detached",
                note: format!("network {} detached from {}", b.name, b.interface),
            });
        }
    }
    out
}

/// The Event for an admin policy's refusal, when it is new (not the same refusal as
/// before): a warning with the refusal's reason and every violation.
pub fn refusal_event(before: Option<&Desired>, now: &Desired) -> Option<KubeEvent> {
    let reason = match now.problem.as_ref()?.reason.as_str() {
        api::policy::POLICY_DENIED_REASON => api::policy::POLICY_DENIED_REASON,
        api::policy::POLICY_UNAVAILABLE_REASON => api::policy::POLICY_UNAVAILABLE_REASON,
        INVALID_NETWORKS_ANNOTATION => INVALID_NETWORKS_ANNOTATION,
        _ => return None,
    };
    let problem = now.problem.as_ref()?;
    if before.and_then(|b| b.problem.as_ref()) == Some(problem) {
        return None;
    }
    Some(KubeEvent {
        warning: true,
        reason,
        note: format!("generation {}: {}", now.generation, problem.message),
    })
}

/// Who declared each interface and route, read from the object's managed fields (the
/// fields of server-side apply), so `GET /v1/self/config` names owners as the standalone
/// agent does.
pub fn owners(managed: &[ManagedFieldsEntry]) -> Owners {
    let mut interfaces: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut attachments: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut routes: BTreeMap<RouteKey, Vec<String>> = BTreeMap::new();
    for entry in managed {
        if entry.subresource.as_deref().is_some_and(|s| !s.is_empty()) {
            continue; // status writers own no spec entry
        }
        let (Some(manager), Some(fields)) = (&entry.manager, &entry.fields_v1) else {
            continue;
        };
        let spec = &fields.0["f:spec"];
        for key in keys(&spec["f:interfaces"]) {
            if let Some(name) = key.get("name").and_then(|n| n.as_str()) {
                push_unique(interfaces.entry(name.to_string()).or_default(), manager);
            }
        }
        for key in keys(&spec["f:routes"]) {
            if let Ok(route) = serde_json::from_value::<RouteKey>(key) {
                push_unique(routes.entry(route).or_default(), manager);
            }
        }
        for key in keys(&spec["f:attachments"]) {
            if let Some(name) = key.get("name").and_then(|n| n.as_str()) {
                push_unique(attachments.entry(name.to_string()).or_default(), manager);
            }
        }
    }
    Owners {
        interfaces,
        attachments,
        routes: routes
            .into_iter()
            .map(|(key, managers)| RouteOwners { key, managers })
            .collect(),
    }
}

/// The list-map keys of a managed-fields set: `k:{"name":"eth0"}` -> `{"name":"eth0"}`.
fn keys(set: &serde_json::Value) -> Vec<serde_json::Value> {
    set.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("k:"))
        .filter_map(|k| serde_json::from_str(k).ok())
        .collect()
}

fn push_unique(managers: &mut Vec<String>, manager: &str) {
    if !managers.iter().any(|m| m == manager) {
        managers.push(manager.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ObjectMeta, Time};

    #[test]
    fn only_a_deleted_configuration_empties_the_spec_anything_else_keeps_or_holds() {
        let spec = |mtu| api::NetworkConfigurationSpec {
            interfaces: vec![api::InterfaceSpec {
                name: "eth0".into(),
                mtu: Some(mtu),
                ..Default::default()
            }],
            routes: vec![],
            ..Default::default()
        };
        let good = Desired {
            generation: 3,
            spec: spec(1400).into(),
            saved: Default::default(),
            problem: None,
        };
        let mut conf = NetworkConfiguration::new("demo-0", spec(1300));
        conf.metadata.generation = Some(4);
        let empty = Desired::default();
        // (lookup, current, owns something) -> (generation, spec, Degraded reason, hold)
        type Row<'a> = (Lookup<'a>, Option<&'a Desired>, bool);
        type Want = (
            i64,
            api::NetworkConfigurationSpec,
            Option<(&'static str, bool)>,
        );
        let table: Vec<(Row<'_>, Want)> = vec![
            (
                (Lookup::InWatch(&conf), Some(&good), true),
                (4, spec(1300), None),
            ),
            ((Lookup::InWatch(&conf), None, false), (4, spec(1300), None)),
            // Deleted: the empty spec, so nes removes what it created (and only that).
            (
                (Lookup::Deleted, Some(&good), false),
                (0, Default::default(), None),
            ),
            ((Lookup::Deleted, None, true), (0, Default::default(), None)),
            (
                (Lookup::Deleted, None, false),
                (0, Default::default(), None),
            ),
            // Relabelled or unknown: the last good spec stands, Degraded.
            (
                (Lookup::Elsewhere, Some(&good), false),
                (3, spec(1400), Some(("ConfigurationGone", false))),
            ),
            (
                (Lookup::Unknown, Some(&good), false),
                (3, spec(1400), Some(("ConfigurationGone", false))),
            ),
            // An agent restart with a record but no configuration: write nothing.
            (
                (Lookup::Elsewhere, None, true),
                (0, Default::default(), Some(("ConfigurationGone", true))),
            ),
            (
                (Lookup::Unknown, None, true),
                (0, Default::default(), Some(("ConfigurationGone", true))),
            ),
            // Nothing known, nothing owned: nothing to do.
            (
                (Lookup::Elsewhere, None, false),
                (0, Default::default(), None),
            ),
            (
                (Lookup::Unknown, Some(&empty), false),
                (0, Default::default(), None),
            ),
        ];
        for ((lookup, current, owns), want) in table {
            let got = next_desired(lookup, current, owns);
            let problem = got.problem.as_ref().map(|p| (p.reason.as_str(), p.hold));
            assert_eq!(
                (got.generation, &*got.spec, problem),
                (want.0, &want.1, want.2),
                "{lookup:?} {current:?} {owns}"
            );
        }
        // A held pod stays held while the configuration is still elsewhere.
        let held = next_desired(Lookup::Elsewhere, None, true);
        assert!(next_desired(Lookup::Unknown, Some(&held), false)
            .problem
            .is_some_and(|p| p.hold));
    }

    fn pod(labelled: bool, node: &str, ips: &[&str]) -> Pod {
        let labels = labelled.then(|| {
            [(api::SELECTION_LABEL.to_string(), "true".to_string())]
                .into_iter()
                .collect()
        });
        Pod {
            metadata: ObjectMeta {
                name: Some("demo-0".into()),
                namespace: Some("apps".into()),
                uid: Some("uid-1".into()),
                labels,
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pod_plan_serves_only_labelled_running_pods_of_this_node_with_an_ip() {
        let deleting = {
            let mut p = pod(true, "n1", &["10.0.0.5"]);
            p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            p
        };
        let host_net = {
            let mut p = pod(true, "n1", &["10.0.0.5"]);
            if let Some(s) = p.spec.as_mut() {
                s.host_network = Some(true);
            }
            p
        };
        let cases: Vec<(&str, Pod, PodPlan)> = vec![
            (
                "served",
                pod(true, "n1", &["10.0.0.5", "fd00::5"]),
                PodPlan::Serve {
                    uid: "uid-1".into(),
                    ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
                },
            ),
            (
                "deleting",
                deleting,
                PodPlan::Release("the pod is being deleted"),
            ),
            (
                "unlabelled",
                pod(false, "n1", &["10.0.0.5"]),
                PodPlan::Release("the pod does not carry the selection label"),
            ),
            (
                "other node",
                pod(true, "n2", &["10.0.0.5"]),
                PodPlan::Release("the pod is not on this node"),
            ),
            (
                "host network",
                host_net,
                PodPlan::Release("a hostNetwork pod's netns is the node's"),
            ),
            (
                "no ip",
                pod(true, "n1", &[]),
                PodPlan::Wait("the pod has no IP yet"),
            ),
        ];
        for (name, p, want) in cases {
            assert_eq!(pod_plan(&p, "n1"), want, "{name}");
        }
    }

    #[test]
    fn a_netns_is_the_pods_only_when_it_holds_one_of_its_ips() {
        let addrs = vec![
            ObservedAddress {
                index: 1,
                addr: "127.0.0.1/8".parse().unwrap(),
            },
            ObservedAddress {
                index: 2,
                addr: "10.244.0.5/24".parse().unwrap(),
            },
        ];
        let ip = |s: &str| vec![s.parse::<IpAddr>().unwrap()];
        assert!(holds_pod_ip(&addrs, &ip("10.244.0.5")));
        assert!(!holds_pod_ip(&addrs, &ip("10.244.0.6")));
        assert!(!holds_pod_ip(&addrs, &ip("fd00::5")));
        assert!(!holds_pod_ip(&[], &ip("10.244.0.5")));
    }

    #[test]
    fn a_reused_inode_with_a_new_sandbox_id_is_a_new_sandbox() {
        let ns = api::NetnsIdentity {
            path: None,
            dev: 4,
            inode: 4026532000,
        };
        assert_eq!(Sandbox::new("a", &ns), Sandbox::new("a", &ns));
        assert_ne!(Sandbox::new("a", &ns), Sandbox::new("b", &ns));
    }

    fn pass(generation: i64, converged: bool, writes: u64, error: &str) -> Pass {
        Pass {
            generation,
            converged,
            writes,
            error: error.into(),
        }
    }

    #[test]
    fn pass_events_name_applied_drift_and_new_failures_once() {
        let reason = |prev: Option<Pass>, p: Pass| pass_event(prev.as_ref(), &p).map(|e| e.reason);
        let cases = [
            (None, pass(1, true, 3, ""), Some("Applied")),
            (Some(pass(1, true, 3, "")), pass(1, true, 0, ""), None),
            (
                Some(pass(1, true, 0, "")),
                pass(1, true, 2, ""),
                Some("DriftRepaired"),
            ),
            (
                Some(pass(1, true, 0, "")),
                pass(2, true, 1, ""),
                Some("Applied"),
            ),
            (
                Some(pass(2, false, 1, "x")),
                pass(2, true, 1, ""),
                Some("Applied"),
            ),
            (
                Some(pass(1, true, 0, "")),
                pass(2, false, 0, "x"),
                Some("ApplyFailed"),
            ),
            (Some(pass(2, false, 0, "x")), pass(2, false, 0, "x"), None),
            (
                Some(pass(2, false, 0, "x")),
                pass(2, false, 0, "y"),
                Some("ApplyFailed"),
            ),
        ];
        for (i, (prev, p, want)) in cases.into_iter().enumerate() {
            assert_eq!(reason(prev, p), want, "case {i}");
        }
    }

    #[test]
    fn owners_come_from_spec_managed_fields_not_from_status_writers() {
        let entry =
            |manager: &str, sub: Option<&str>, fields: serde_json::Value| ManagedFieldsEntry {
                manager: Some(manager.into()),
                subresource: sub.map(str::to_string),
                fields_v1: Some(FieldsV1(fields)),
                ..Default::default()
            };
        let managed = vec![
            entry(
                "app",
                None,
                serde_json::json!({"f:spec": {
                    "f:interfaces": {"k:{\"name\":\"eth0\"}": {".": {}, "f:mtu": {}}},
                    "f:routes": {"k:{\"dst\":\"10.1.0.0/16\",\"metric\":0,\"table\":254}": {}}
                }}),
            ),
            entry(
                "ops",
                None,
                serde_json::json!({"f:spec": {"f:interfaces": {"k:{\"name\":\"eth0\"}": {"f:addresses": {}}}}}),
            ),
            entry(
                "nes-agent",
                Some("status"),
                serde_json::json!({"f:status": {"f:conditions": {}}}),
            ),
        ];
        let o = owners(&managed);
        assert_eq!(
            o.interfaces["eth0"],
            vec!["app".to_string(), "ops".to_string()]
        );
        assert_eq!(o.routes.len(), 1);
        assert_eq!(o.routes[0].key.dst, "10.1.0.0/16");
        assert_eq!(o.routes[0].managers, vec!["app".to_string()]);
    }

    #[test]
    fn attachment_events_tell_attached_failed_and_detached_once() {
        let status =
            |name: &str, state, ip: Option<&str>, error: Option<&str>| api::AttachmentStatus {
                name: name.into(),
                interface: "net1".into(),
                state,
                error: error.map(str::to_string),
                network: ip.map(|ip| api::NetworkStatus {
                    name: format!("apps/{name}"),
                    interface: "net1".into(),
                    ips: vec![ip.into()],
                    ..Default::default()
                }),
            };
        use api::ObjectState::{Applied, Failed, Pending};
        let up = status("a", Applied, Some("10.0.0.2"), None);
        let moved = status("a", Applied, Some("10.0.0.3"), None);
        let failed = status("a", Failed, None, Some("x"));
        let failed_other = status("a", Failed, None, Some("y"));
        let pending = status("a", Pending, None, None);
        let cases: Vec<(
            Vec<api::AttachmentStatus>,
            Vec<api::AttachmentStatus>,
            Vec<&str>,
        )> = vec![
            (vec![], vec![up.clone()], vec!["Attached"]),
            (vec![up.clone()], vec![up.clone()], vec![]),
            (vec![up.clone()], vec![moved.clone()], vec!["Attached"]),
            (
                vec![pending.clone()],
                vec![failed.clone()],
                vec!["AttachFailed"],
            ),
            (vec![failed.clone()], vec![failed.clone()], vec![]),
            (
                vec![failed.clone()],
                vec![failed_other],
                vec!["AttachFailed"],
            ),
            (vec![up.clone()], vec![], vec!["Detached"]),
            (vec![failed], vec![], vec![]),
            (vec![], vec![pending], vec![]),
        ];
        for (i, (before, now, want)) in cases.into_iter().enumerate() {
            let got: Vec<&str> = attachment_events(&before, &now)
                .iter()
                .map(|e| e.reason)
                .collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn annotated_attachments_merge_as_one_more_manager_and_bad_ones_hold_the_last_good() {
        let attach = |name: &str, interface: Option<&str>| api::AttachmentSpec {
            name: name.into(),
            interface: interface.map(str::to_string),
            ..Default::default()
        };
        let with = |attachments: Vec<api::AttachmentSpec>| Desired {
            generation: 2,
            spec: api::NetworkConfigurationSpec {
                attachments,
                ..Default::default()
            }
            .into(),
            saved: Default::default(),
            problem: None,
        };
        let good = with(vec![attach("a", Some("net1"))]);
        // (CR's attachments, annotated) -> (attachment names, Degraded reason)
        type Row = (
            Vec<api::AttachmentSpec>,
            Option<Result<Vec<api::AttachmentSpec>, String>>,
            Vec<&'static str>,
            Option<&'static str>,
        );
        let rows: Vec<Row> = vec![
            (vec![attach("a", None)], None, vec!["a"], None),
            (vec![], Some(Ok(vec![attach("b", None)])), vec!["b"], None),
            (
                vec![attach("a", None)],
                Some(Ok(vec![attach("b", None)])),
                vec!["a", "b"],
                None,
            ),
            // The same entry declared the same way twice has two owners, no conflict.
            (
                vec![attach("a", Some("net1"))],
                Some(Ok(vec![attach("a", Some("net1"))])),
                vec!["a"],
                None,
            ),
            // Declared otherwise: a conflict, the last good state stays.
            (
                vec![attach("a", Some("net1"))],
                Some(Ok(vec![attach("a", Some("net2"))])),
                vec!["a"],
                Some(INVALID_NETWORKS_ANNOTATION),
            ),
            (
                vec![],
                Some(Ok(vec![attach("a", Some("eth0"))])),
                vec!["a"],
                Some(INVALID_NETWORKS_ANNOTATION),
            ),
            (
                vec![],
                Some(Err("unreadable".into())),
                vec!["a"],
                Some(INVALID_NETWORKS_ANNOTATION),
            ),
        ];
        for (cr, annotated, want, reason) in rows {
            let got = with_annotated(with(cr.clone()), Some(&good), annotated.clone());
            let names: Vec<&str> = got
                .spec
                .attachments
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            let problem = got.problem.as_ref().map(|p| p.reason.as_str());
            assert_eq!((names, problem), (want, reason), "{cr:?} {annotated:?}");
        }
    }

    #[test]
    fn a_policy_refusal_is_announced_once_and_other_problems_not_at_all() {
        let refused = |reason: &str, message: &str, generation| Desired {
            generation,
            problem: Some(crate::podapi::StateProblem {
                reason: reason.into(),
                message: message.into(),
                hold: false,
            }),
            ..Desired::default()
        };
        let denied = refused("PolicyDenied", "denied by \"tenant\"", 2);
        let event = refusal_event(Some(&Desired::default()), &denied).expect("new refusal");
        assert_eq!((event.warning, event.reason), (true, "PolicyDenied"));
        assert!(event.note.contains("generation 2") && event.note.contains("tenant"));
        assert_eq!(
            refusal_event(Some(&denied), &denied),
            None,
            "the same refusal again"
        );
        let other = refused("PolicyDenied", "denied by \"strict\"", 2);
        assert!(
            refusal_event(Some(&denied), &other).is_some(),
            "a new violation"
        );
        let unavailable = refused("PolicyUnavailable", "not listed", 2);
        assert_eq!(
            refusal_event(None, &unavailable).map(|e| e.reason),
            Some("PolicyUnavailable")
        );
        let gone = refused("ConfigurationGone", "relabelled", 2);
        assert_eq!(refusal_event(None, &gone), None, "not the policy's");
        assert_eq!(refusal_event(Some(&denied), &Desired::default()), None);
    }
}
