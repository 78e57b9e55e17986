//! Pure decisions of the resolver: which sandbox is the pod's, and where its netns is.
//! No I/O here; `resolver.rs` feeds these with what the runtime answered.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1::{NamespaceMode, PodSandbox, PodSandboxState, PodSandboxStatus};

/// The CRI label every kubelet-created sandbox carries with its pod's UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// What a sandbox listing says about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxChoice {
    /// Exactly one ready sandbox: its id.
    One(String),
    /// Sandboxes exist but none is ready: their ids.
    NoneReady(Vec<String>),
    /// More than one ready sandbox: their ids, sorted.
    Several(Vec<String>),
    /// No sandbox of this pod at all.
    NotFound,
}

/// Picks the pod's ready sandbox from a listing. The listing may have been filtered by the
/// runtime already; the label and the state are checked again here, because an old sandbox
/// of the same pod lingers (not ready) until the kubelet removes it, and a runtime is not
/// obliged to honour every filter.
pub fn choose_sandbox(pod_uid: &str, listed: &[PodSandbox]) -> SandboxChoice {
    let mine: Vec<&PodSandbox> = listed
        .iter()
        .filter(|s| s.labels.get(POD_UID_LABEL).map(String::as_str) == Some(pod_uid))
        .collect();
    if mine.is_empty() {
        return SandboxChoice::NotFound;
    }
    let ready = PodSandboxState::SandboxReady as i32;
    let mut ready_ids: Vec<String> = mine
        .iter()
        .filter(|s| s.state == ready)
        .map(|s| s.id.clone())
        .collect();
    ready_ids.sort();
    match ready_ids.len() {
        0 => {
            let mut ids: Vec<String> = mine.iter().map(|s| s.id.clone()).collect();
            ids.sort();
            SandboxChoice::NoneReady(ids)
        }
        1 => SandboxChoice::One(ready_ids.remove(0)),
        _ => SandboxChoice::Several(ready_ids),
    }
}

/// Where the runtime says a sandbox's network namespace is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsLocation {
    /// A bind-mounted nsfs file (`/var/run/netns/cni-…` for containerd and CRI-O).
    Path(PathBuf),
    /// No path given: the namespace of the sandbox's process, `/proc/PID/ns/net`.
    Pid(u32),
}

impl NetnsLocation {
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Path(p) => p.clone(),
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }
}

/// Why no netns location could be read from a verbose sandbox status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsInfoProblem {
    /// The sandbox shares the node's network namespace.
    HostNetwork,
    /// Nothing usable in the status; the text says what was missing.
    Missing(String),
}

/// Whether the sandbox status declares the node's network namespace (hostNetwork pod).
pub fn is_host_network(status: &PodSandboxStatus) -> bool {
    status
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network == NamespaceMode::Node as i32)
}

/// Reads the netns location out of `PodSandboxStatusResponse.info` (verbose):
/// `info["info"]` is JSON; `runtimeSpec.linux.namespaces[type=network].path` wins, else
/// `pid` gives `/proc/PID/ns/net`. A spec that lists namespaces but no network one means
/// the sandbox runs in the host's network namespace, which nes must never touch.
pub fn netns_location(info: &HashMap<String, String>) -> Result<NetnsLocation, NetnsInfoProblem> {
    let raw = info
        .get("info")
        .ok_or_else(|| NetnsInfoProblem::Missing("verbose info has no \"info\" key".into()))?;
    let doc: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| NetnsInfoProblem::Missing(format!("verbose info is not JSON: {e}")))?;

    let namespaces = doc
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(|v| v.as_array());
    if let Some(namespaces) = namespaces {
        let network = namespaces
            .iter()
            .find(|ns| ns.get("type").and_then(|t| t.as_str()) == Some("network"));
        match network {
            None => return Err(NetnsInfoProblem::HostNetwork),
            Some(ns) => {
                if let Some(path) = ns.get("path").and_then(|p| p.as_str()) {
                    if !path.is_empty() {
                        return Ok(NetnsLocation::Path(PathBuf::from(path)));
                    }
                }
            }
        }
    }

    match doc.get("pid").and_then(|p| p.as_u64()) {
        Some(pid) if pid > 0 => u32::try_from(pid)
            .map(NetnsLocation::Pid)
            .map_err(|_| NetnsInfoProblem::Missing(format!("pid {pid} out of range"))),
        _ => Err(NetnsInfoProblem::Missing(
            "no runtimeSpec network namespace path and no pid".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxPodSandboxStatus, Namespace, NamespaceOption};

    fn sandbox(id: &str, uid: &str, ready: bool) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            state: if ready {
                PodSandboxState::SandboxReady as i32
            } else {
                PodSandboxState::SandboxNotready as i32
            },
            labels: [(POD_UID_LABEL.to_string(), uid.to_string())].into(),
            ..Default::default()
        }
    }

    struct ChoiceCase {
        name: &'static str,
        listed: Vec<PodSandbox>,
        want: SandboxChoice,
    }

    #[test]
    fn choose_sandbox_cases() {
        let cases = vec![
            ChoiceCase {
                name: "empty listing is not found",
                listed: vec![],
                want: SandboxChoice::NotFound,
            },
            ChoiceCase {
                name: "other pods only is not found",
                listed: vec![sandbox("a", "other", true)],
                want: SandboxChoice::NotFound,
            },
            ChoiceCase {
                name: "one ready sandbox is chosen",
                listed: vec![sandbox("a", "u1", true)],
                want: SandboxChoice::One("a".into()),
            },
            ChoiceCase {
                name: "an old not-ready sandbox next to the new ready one is ignored",
                listed: vec![sandbox("old", "u1", false), sandbox("new", "u1", true)],
                want: SandboxChoice::One("new".into()),
            },
            ChoiceCase {
                name: "only not-ready sandboxes",
                listed: vec![sandbox("b", "u1", false), sandbox("a", "u1", false)],
                want: SandboxChoice::NoneReady(vec!["a".into(), "b".into()]),
            },
            ChoiceCase {
                name: "two ready sandboxes are refused",
                listed: vec![sandbox("b", "u1", true), sandbox("a", "u1", true)],
                want: SandboxChoice::Several(vec!["a".into(), "b".into()]),
            },
            ChoiceCase {
                name: "a runtime ignoring the label filter does not leak other pods",
                listed: vec![sandbox("x", "u2", true), sandbox("a", "u1", true)],
                want: SandboxChoice::One("a".into()),
            },
            ChoiceCase {
                name: "a sandbox without labels is not the pod's",
                listed: vec![PodSandbox {
                    id: "nolabel".into(),
                    ..Default::default()
                }],
                want: SandboxChoice::NotFound,
            },
        ];
        for case in cases {
            assert_eq!(
                choose_sandbox("u1", &case.listed),
                case.want,
                "{}",
                case.name
            );
        }
    }

    struct InfoCase {
        name: &'static str,
        info: Option<&'static str>,
        want: Result<NetnsLocation, NetnsInfoProblem>,
    }

    #[test]
    fn netns_location_cases() {
        let cases = vec![
            InfoCase {
                name: "containerd: spec path wins over pid",
                info: Some(
                    r#"{"pid":42,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}}"#,
                ),
                want: Ok(NetnsLocation::Path("/var/run/netns/cni-1".into())),
            },
            InfoCase {
                name: "network namespace without path falls back to pid",
                info: Some(
                    r#"{"pid":42,"runtimeSpec":{"linux":{"namespaces":[{"type":"network"}]}}}"#,
                ),
                want: Ok(NetnsLocation::Pid(42)),
            },
            InfoCase {
                name: "empty path falls back to pid",
                info: Some(
                    r#"{"pid":7,"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":""}]}}}"#,
                ),
                want: Ok(NetnsLocation::Pid(7)),
            },
            InfoCase {
                name: "no runtimeSpec falls back to pid",
                info: Some(r#"{"pid":9}"#),
                want: Ok(NetnsLocation::Pid(9)),
            },
            InfoCase {
                name: "namespaces without a network one is the host network",
                info: Some(r#"{"pid":9,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"}]}}}"#),
                want: Err(NetnsInfoProblem::HostNetwork),
            },
            InfoCase {
                name: "pid zero is missing",
                info: Some(r#"{"pid":0}"#),
                want: Err(NetnsInfoProblem::Missing(
                    "no runtimeSpec network namespace path and no pid".into(),
                )),
            },
            InfoCase {
                name: "no info key",
                info: None,
                want: Err(NetnsInfoProblem::Missing(
                    "verbose info has no \"info\" key".into(),
                )),
            },
        ];
        for case in cases {
            let info: HashMap<String, String> = case
                .info
                .map(|s| [("info".to_string(), s.to_string())].into())
                .unwrap_or_default();
            assert_eq!(netns_location(&info), case.want, "{}", case.name);
        }
    }

    #[test]
    fn netns_location_rejects_non_json() {
        let info = [("info".to_string(), "not json".to_string())].into();
        assert!(matches!(
            netns_location(&info),
            Err(NetnsInfoProblem::Missing(m)) if m.starts_with("verbose info is not JSON")
        ));
    }

    #[test]
    fn pid_location_reads_proc() {
        assert_eq!(
            NetnsLocation::Pid(12).path(),
            PathBuf::from("/proc/12/ns/net")
        );
    }

    #[test]
    fn host_network_is_read_from_namespace_options() {
        let status = |mode: NamespaceMode| PodSandboxStatus {
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(NamespaceOption {
                        network: mode as i32,
                        ..Default::default()
                    }),
                }),
            }),
            ..Default::default()
        };
        assert!(is_host_network(&status(NamespaceMode::Node)));
        assert!(!is_host_network(&status(NamespaceMode::Pod)));
        assert!(!is_host_network(&PodSandboxStatus::default()));
    }
}
