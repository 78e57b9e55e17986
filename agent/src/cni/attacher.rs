//! The keeper's hook: one pod's attachments, run at the start of every pass (before the
//! netlink plan, so addresses and routes declared on an attachment's interface find it),
//! and the gate an apply passes first (namespace isolation and the host boundary).

use std::sync::Arc;
use std::time::Duration;

use api::attach::AttachmentStatus;
use api::policy::NetworkConfigurationPolicy;
use api::wire::ProblemDetails;
use api::{AttachmentSpec, NetworkConfigurationSpec, ObjectState, Problem};

use futures::future::BoxFuture;

use super::keep::{self, PodRef, Want};
use super::CniOptions;
use crate::saved::Saved;

/// Where a pod's networks come from.
#[derive(Clone, Debug, Default)]
pub enum Networks {
    /// Conflists in `--cni-conf-dir`, by name (a standalone host).
    #[default]
    ConfDir,
    /// Another source: the cluster's NetworkAttachmentDefinitions.
    Source(Arc<dyn NetworkSource>),
}

/// Resolves a pod's declared attachments to networks (see [`keep::resolve_with`]).
pub trait NetworkSource: Send + Sync + std::fmt::Debug {
    fn resolve<'a>(
        &'a self,
        pod: &'a PodRef,
        specs: &'a [AttachmentSpec],
    ) -> BoxFuture<'a, Vec<Want>>;
}

/// Runs one pod's attachments.
#[derive(Clone, Debug)]
pub struct Attacher {
    pub opts: CniOptions,
    pub pod: PodRef,
    /// Whether CNI plugins may run for this pod (node flag and policies); when not, nothing
    /// runs and every declared attachment reports the refusal.
    pub allowed: bool,
    pub networks: Networks,
}

impl Attacher {
    /// One level-triggered pass over `specs`; a plugin runs only once `saved` is (see
    /// [`keep::converge`]), `None` when it never is.
    pub async fn pass(
        &self,
        specs: &[AttachmentSpec],
        saved: &Saved,
        waited: &mut Duration,
    ) -> Option<Vec<AttachmentStatus>> {
        if !self.allowed {
            return Some(refused(specs, &self.pod.namespace));
        }
        let wants = match &self.networks {
            Networks::ConfDir => keep::resolve_standalone(&self.opts, &self.pod, specs),
            Networks::Source(source) => source.resolve(&self.pod, specs).await,
        };
        keep::converge(&self.opts, &self.pod, &wants, saved, waited).await
    }

    /// Detaches everything nes attached to this pod's sandbox (the pod went).
    pub async fn detach_all(&self) {
        for error in keep::detach_all(&self.opts, &self.pod).await {
            tracing::warn!(pod = %self.pod.name, %error, "CNI DEL of a gone pod failed");
        }
    }
}

fn refused(specs: &[AttachmentSpec], namespace: &str) -> Vec<AttachmentStatus> {
    specs
        .iter()
        .map(|s| AttachmentStatus {
            name: s.name.clone(),
            interface: s.ifname(namespace),
            state: ObjectState::Failed,
            error: Some(
                "CNI attachments are not allowed on this node (--allow-host-cni and the policy's host.cniAttachments)"
                    .into(),
            ),
            network: None,
        })
        .collect()
}

/// Whether `spec`'s attachments may be applied for a pod of `namespace`: the network
/// namespaces the policies allow, and CNI allowed by the node (`node_allows`) and every
/// governing policy. A refusal is a 403 naming each attachment.
pub fn gate(
    spec: &NetworkConfigurationSpec,
    namespace: &str,
    policies: &[Arc<NetworkConfigurationPolicy>],
    node_allows: bool,
) -> Result<(), ProblemDetails> {
    if spec.attachments.is_empty() {
        return Ok(());
    }
    let refs: Vec<&NetworkConfigurationPolicy> = policies.iter().map(Arc::as_ref).collect();
    let mut problems: Vec<Problem> = Vec::new();
    let mut message = Vec::new();
    if let Err(denied) = api::policy::check_attachments(spec, namespace, &refs) {
        message.push(denied.to_string());
        problems.extend(denied.problems());
    }
    let allowed = api::policy::cni_allowed(node_allows, &refs);
    if let Err(refused) = api::host::check_cni(allowed, spec) {
        message.push(refused.to_string());
        problems.extend(refused.0);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ProblemDetails::policy_denied(message.join("; "), problems))
    }
}

/// A pass's attachments with `attacher` (none configured: each declared one fails, saying
/// so); `None` when a plugin was to run and `saved` never was.
pub async fn run(
    attacher: Option<&Attacher>,
    specs: &[AttachmentSpec],
    saved: &Saved,
    waited: &mut Duration,
) -> Option<Vec<AttachmentStatus>> {
    match attacher {
        Some(a) => a.pass(specs, saved, waited).await,
        None => Some(
            specs
                .iter()
                .map(|s| AttachmentStatus {
                    name: s.name.clone(),
                    interface: s.interface.clone().unwrap_or_default(),
                    state: ObjectState::Failed,
                    error: Some(
                        "this agent runs no CNI attachments (start it with --allow-host-cni)"
                            .into(),
                    ),
                    network: None,
                })
                .collect(),
        ),
    }
}
