//! Admin policy: what the pods of each namespace may configure, decided by one pure
//! function for every entrance.
//!
//! # The resource
//!
//! [`NetworkConfigurationPolicy`] is cluster-scoped and admin-owned. Its `namespaceSelector`
//! picks the namespaces it governs; every rule is optional. An absent rule allows what nes
//! allows anyway, except `host` (absent: nothing outside the pod) and `webhookDestinations`
//! (absent: public addresses only). An empty list allows nothing.
//!
//! # Combination
//!
//! Several policies governing one namespace combine by intersection: a request must satisfy
//! each, and a denial lists every violation of every policy. A namespace no policy selects
//! is governed by the built-in [`default_policy`] (named [`DEFAULT_POLICY`],
//! `nes-default`): in-pod configuration as today, no host-side field, webhooks to public
//! addresses only. Host-side access is further bounded by the node: the agent's
//! `--allow-host-*` flags stay a ceiling, and a host-side field needs both (see
//! [`host_access`] and [`crate::host::HostAccess::intersect`]).
//!
//! # Wiring an entrance
//!
//! Every entrance lists the policies (a kube reflector, or the standalone agent's
//! `--policy FILE` read with [`parse_policy_file`], where a netns is selected by
//! [`netns_labels`]: its name as `kubernetes.io/metadata.name`, the label Kubernetes puts
//! on namespaces), reads the namespace's labels, and calls:
//!
//! ```ignore
//! let governing = policy::selecting(&all_policies, &namespace_labels);
//! policy::evaluate(Subject::Configuration(&spec), Origin::Pod, &governing)?;
//! ```
//!
//! - cliserver (REST, cluster caller): `Origin::Cluster` on the request's fragment before
//!   any apply; on `Err(denied)` answer 403 with `denied.problems()`.
//! - pod socket (`@nes`): `Origin::Pod` (adds `selfService`) on the fragment, 403 likewise.
//! - node agent, before every apply: `Origin::Cluster` on the merged spec (counts need the
//!   whole); on denial write no netlink, set Degraded with reason `PolicyDenied` and the
//!   `Display` of [`Denied`] as message ([`POLICY_DENIED_REASON`]), emit an Event. A policy change re-evaluates what is
//!   applied and reports Degraded; it never tears anything down.
//! - admission webhook (NetworkConfiguration and NetworkCare create/update):
//!   `Origin::Cluster`, `Subject::Configuration` or `Subject::Care`; deny with the `Display`.
//! - webhook delivery: [`check_destination`] on the host the HTTP client parsed and the
//!   addresses the connection will use, at connect time (a resolver hook, so a rebinding
//!   name cannot swap addresses between check and connect; no redirects followed); status
//!   gets a [`FailureClass`] only, the details go to the log.
//! - the agent's node ceiling: `node_access.intersect(&host_access(&governing))` checked
//!   with [`crate::host::HostAccess::check`] (both must allow a host-side field).
//!
//! Call the validator first (`crate::validate`, `validate_care`): evaluation assumes
//! well-formed values and refuses what it cannot read rather than letting it through.
//!
//! Validate a policy with [`validate_policy`] (admission of the policy itself, and the
//! standalone `--policy` file).

mod attach;
mod destination;
mod evaluate;
mod file;
mod governing;
mod host;
mod resource;
mod rules;
mod selector;
mod validation;
mod verdict;

#[cfg(test)]
mod tests;

pub use attach::{check_attaching, check_attachments, cni_allowed};
pub use destination::{check_destination, special_range, url_host, FailureClass};
pub use evaluate::{default_policy, evaluate, Origin, Subject};
pub use file::{parse_policy_file, PolicyFileError};
pub use governing::{Governing, Refusal, POLICY_UNAVAILABLE_REASON};
pub use host::host_access;
pub use resource::{
    AttachmentPolicy, CountLimits, FamilyCidrs, HostPolicy, IdRange, MtuRange,
    NetworkConfigurationPolicy, NetworkConfigurationPolicySpec, NetworkConfigurationPolicyStatus,
    RoutePolicy, SelfService, SelfServiceField, WebhookDestinations,
};
pub use selector::{governs, netns_labels, selecting, selects, NAME_LABEL};
pub use validation::validate_policy;
pub use verdict::{Denied, Rule, Violation, DEFAULT_POLICY, POLICY_DENIED_REASON};
