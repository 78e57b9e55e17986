//! What a pod may do outside its own network namespace: the one pure decision every
//! host-side write goes through. The default allows nothing; the node agent's flags (and,
//! later, the admin policy) name what is allowed.
//!
//! Host-side fields of a spec: a `veth` (its peer end is created in the host), its
//! `peerBridge` (a host bridge the peer joins), and `parentInHost` on a macvlan/ipvlan (a
//! host link becomes the parent; `passthru` hands the whole parent over).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::netconf::{InterfaceSpec, InterfaceType, LinkMode, NetworkConfigurationSpec};
use crate::validate::Problem;

/// Host-side access allowed to pods. `Default` is deny-all.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostAccess {
    /// Pods may create veth pairs whose peer end lives in the host namespace.
    #[serde(default)]
    pub veth: bool,
    /// Host bridges a veth peer may join.
    #[serde(default)]
    pub bridges: BTreeSet<String>,
    /// Host links a macvlan or ipvlan may run on (`parentInHost`).
    #[serde(default)]
    pub parents: BTreeSet<String>,
    /// macvlan `passthru` on a host parent (it takes the parent over).
    #[serde(default)]
    pub passthru: bool,
}

/// A spec asks for host-side access it does not have: every such field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host-side access refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Refused(pub Vec<Problem>);

impl HostAccess {
    /// Allows nothing outside the pod's netns.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Checks every interface of `spec`; the problems name fields of the spec only.
    pub fn check(&self, spec: &NetworkConfigurationSpec) -> Result<(), Refused> {
        let problems: Vec<Problem> = spec
            .interfaces
            .iter()
            .enumerate()
            .flat_map(|(i, iface)| {
                self.interface_problems(iface)
                    .into_iter()
                    .map(move |(field, message)| Problem {
                        field: format!("spec.interfaces[{i}]{field}"),
                        message,
                    })
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Refused(problems))
        }
    }

    /// Why one interface may not be configured: `(".field", message)` pairs, none when
    /// it is allowed (or touches nothing outside the pod).
    pub fn interface_problems(&self, iface: &InterfaceSpec) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut refuse = |field: &str, message: String| out.push((field.to_string(), message));
        if (iface.kind == InterfaceType::Veth || iface.peer.is_some()) && !self.veth {
            refuse(
                ".type",
                "a veth creates its peer end in the host namespace, which this node does not allow"
                    .into(),
            );
        }
        if let Some(bridge) = &iface.peer_bridge {
            if !self.bridges.contains(bridge) {
                refuse(
                    ".peerBridge",
                    format!("host bridge {bridge:?} is not one this node lets pods join"),
                );
            }
        }
        if iface.parent_in_host {
            match &iface.parent {
                Some(parent) if self.parents.contains(parent) => {}
                Some(parent) => refuse(
                    ".parent",
                    format!("host link {parent:?} is not one this node lets pods use as a parent"),
                ),
                None => refuse(
                    ".parent",
                    "parentInHost needs an allowed host parent".into(),
                ),
            }
            if iface.mode == Some(LinkMode::Passthru) && !self.passthru {
                refuse(
                    ".mode",
                    "passthru on a host parent takes the host link over, which this node does not allow".into(),
                );
            }
        }
        out
    }
}

/// Refuses every attachment of `spec` unless CNI attachments are `allowed` (see
/// [`crate::policy::cni_allowed`]): a CNI plugin runs as root in the node's namespace and
/// may create host links (bridge, veth host ends) or take host parents (macvlan), and nes
/// cannot bound what an arbitrary plugin does, so attaching is host-side access.
pub fn check_cni(allowed: bool, spec: &NetworkConfigurationSpec) -> Result<(), Refused> {
    if allowed || spec.attachments.is_empty() {
        return Ok(());
    }
    Err(Refused(
        spec.attachments
            .iter()
            .enumerate()
            .map(|(i, a)| Problem {
                field: format!("spec.attachments[{i}]"),
                message: format!(
                    "attaching {:?} runs a CNI plugin on the node, which this node or its policy does not allow (host.cniAttachments)",
                    a.name
                ),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth(bridge: Option<&str>) -> InterfaceSpec {
        InterfaceSpec {
            name: "v0".into(),
            kind: InterfaceType::Veth,
            peer: Some("hv0".into()),
            peer_bridge: bridge.map(str::to_string),
            ..Default::default()
        }
    }

    fn host_macvlan(parent: &str, mode: LinkMode) -> InterfaceSpec {
        InterfaceSpec {
            name: "mv0".into(),
            kind: InterfaceType::Macvlan,
            parent: Some(parent.into()),
            parent_in_host: true,
            mode: Some(mode),
            ..Default::default()
        }
    }

    fn spec(interfaces: Vec<InterfaceSpec>) -> NetworkConfigurationSpec {
        NetworkConfigurationSpec {
            interfaces,
            routes: vec![],
            ..Default::default()
        }
    }

    #[test]
    fn the_default_refuses_every_host_side_field_and_nothing_else() {
        let deny = HostAccess::deny_all();
        let pod_only = InterfaceSpec {
            name: "eth0".into(),
            mtu: Some(1400),
            ..Default::default()
        };
        assert_eq!(deny.check(&spec(vec![pod_only.clone()])), Ok(()));
        let err = deny
            .check(&spec(vec![
                pod_only,
                veth(Some("cni0")),
                host_macvlan("eth0", LinkMode::Passthru),
            ]))
            .unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.interfaces[1].type",
                "spec.interfaces[1].peerBridge",
                "spec.interfaces[2].parent",
                "spec.interfaces[2].mode",
            ]
        );
    }

    #[test]
    fn an_allowlist_allows_exactly_what_it_names() {
        let access = HostAccess {
            veth: true,
            bridges: ["nesbr0".to_string()].into(),
            parents: ["uplink0".to_string()].into(),
            passthru: false,
        };
        assert_eq!(access.check(&spec(vec![veth(Some("nesbr0"))])), Ok(()));
        assert_eq!(
            access.check(&spec(vec![host_macvlan("uplink0", LinkMode::Bridge)])),
            Ok(())
        );
        assert!(access.check(&spec(vec![veth(Some("cni0"))])).is_err());
        assert!(access
            .check(&spec(vec![host_macvlan("eth0", LinkMode::Bridge)]))
            .is_err());
        assert!(access
            .check(&spec(vec![host_macvlan("uplink0", LinkMode::Passthru)]))
            .is_err());
        let with_passthru = HostAccess {
            passthru: true,
            ..access
        };
        assert_eq!(
            with_passthru.check(&spec(vec![host_macvlan("uplink0", LinkMode::Passthru)])),
            Ok(())
        );
    }

    #[test]
    fn attachments_are_refused_unless_cni_is_allowed() {
        let with = NetworkConfigurationSpec {
            attachments: vec![crate::attach::AttachmentSpec {
                name: "data".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = check_cni(false, &with).unwrap_err();
        assert_eq!(err.0[0].field, "spec.attachments[0]");
        assert!(err.to_string().contains("cniAttachments"), "{err}");
        assert_eq!(check_cni(true, &with), Ok(()));
        assert_eq!(check_cni(false, &spec(vec![])), Ok(()));
    }
}
