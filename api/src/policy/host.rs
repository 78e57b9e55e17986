//! Host-side access has two owners: the node (the agent's `--allow-host-*` flags, a ceiling
//! like kubelet's `--allowed-unsafe-sysctls` next to Pod Security) and the admin policy of
//! the namespace. A host-side field is allowed only when both allow it, so neither can
//! widen what the other refuses.

use super::resource::HostPolicy;
use super::NetworkConfigurationPolicy;
use crate::host::HostAccess;

impl From<&HostPolicy> for HostAccess {
    fn from(policy: &HostPolicy) -> Self {
        HostAccess {
            veth: policy.veth,
            bridges: policy.bridges.iter().cloned().collect(),
            parents: policy.parents.iter().cloned().collect(),
            passthru: policy.passthru,
        }
    }
}

impl HostAccess {
    /// What both allow: veth and passthru when both do, the bridges and parents both list.
    pub fn intersect(&self, other: &HostAccess) -> HostAccess {
        HostAccess {
            veth: self.veth && other.veth,
            bridges: self.bridges.intersection(&other.bridges).cloned().collect(),
            parents: self.parents.intersection(&other.parents).cloned().collect(),
            passthru: self.passthru && other.passthru,
        }
    }
}

/// The host-side access the governing policies allow together (intersection); with none,
/// the built-in default: nothing. The agent checks a spec against
/// `node.intersect(&host_access(policies))` with [`HostAccess::check`] — the same answer as
/// [`super::evaluate`]'s `host` rule plus its own node ceiling.
pub fn host_access(policies: &[&NetworkConfigurationPolicy]) -> HostAccess {
    let mut each = policies.iter().map(|p| {
        p.spec
            .host
            .as_ref()
            .map(HostAccess::from)
            .unwrap_or_default()
    });
    let Some(first) = each.next() else {
        return HostAccess::deny_all();
    };
    each.fold(first, |acc, next| acc.intersect(&next))
}
