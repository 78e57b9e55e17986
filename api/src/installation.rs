//! `NesInstallation`: one cluster-scoped resource, the singleton `nes`, from which the operator
//! renders the agent DaemonSet, its Service and the MutatingWebhookConfiguration, and through
//! which it reports the install and drives a gated agent rollout.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{check_ifname, Invalid, Problem};

/// The only accepted name: one installation per cluster.
pub const INSTALLATION_NAME: &str = "nes";
/// Annotation on the `NesInstallation`: changing its value resumes a paused rollout.
pub const RETRY_ANNOTATION: &str = "nes.network-config.io/retry";
/// Annotation an agent sets on its own pod once it has re-bound every pod socket since its
/// start: the JSON of an [`AgentUpgradeReport`]. The rollout gate reads it.
pub const UPGRADE_REPORT_ANNOTATION: &str = "nes.network-config.io/upgrade-report";
/// The agent image of a default install (also the shim's).
pub const DEFAULT_AGENT_IMAGE: &str = "nes-agent:0.1.0";

/// Condition types of a `NesInstallation`.
pub mod condition {
    pub const AVAILABLE: &str = "Available";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
}

/// The fixed set of condition reasons of a `NesInstallation`.
pub mod reason {
    /// Every desired node runs a Ready agent of the target version.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// Some node has no Ready agent.
    pub const AGENTS_NOT_READY: &str = "AgentsNotReady";
    /// The DaemonSet does not exist yet (or was not observed).
    pub const NOT_RENDERED: &str = "NotRendered";
    /// Agent pods are being replaced node by node.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// A node's new agent reported writes to converged pods or a readiness change.
    pub const UPGRADE_DISTURBED_PODS: &str = "UpgradeDisturbedPods";
    /// A node's new agent did not become Ready and report in time.
    pub const UPGRADE_TIMED_OUT: &str = "UpgradeTimedOut";
    /// A node's new agent pod failed (crash loop, image pull, ...).
    pub const AGENT_FAILED: &str = "AgentFailed";
    /// The rollout is paused after a failing node, waiting for a spec change or a retry.
    pub const PAUSED: &str = "RolloutPaused";
    /// The target agent is outside the supported skew with the operator: nothing applied.
    pub const UNSUPPORTED_SKEW: &str = "UnsupportedVersionSkew";
    /// The target agent is more than one minor older than a running agent: nothing applied.
    pub const DOWNGRADE_REFUSED: &str = "DowngradeRefused";
}

/// How nes is installed in this cluster. The singleton `nes`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "nes.network-config.io",
    version = "v1alpha1",
    kind = "NesInstallation",
    plural = "nesinstallations",
    singular = "nesinstallation",
    shortname = "nesinst",
    category = "nes",
    status = "NesInstallationStatus",
    validation = Rule::new("self.metadata.name == 'nes'").message("the NesInstallation is a singleton named nes"),
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.observedVersion"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Progressing","type":"string","jsonPath":".status.conditions[?(@.type==\"Progressing\")].status"}"#,
    printcolumn = r#"{"name":"Degraded","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NesInstallationSpec {
    #[serde(default)]
    pub agent: AgentSpec,
    #[serde(default)]
    pub shim: ShimSpec,
    #[serde(default)]
    pub webhook: WebhookSpec,
    #[serde(default)]
    pub policy: DefaultPolicySpec,
}

/// The node agent's DaemonSet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    /// The agent's image; its tag is the installation's version.
    #[serde(default = "default_agent_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Secrets (in nes-system) to pull the agent's image with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<String>,
    /// Nodes the agent runs on (none: every node).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Absent: tolerate every taint (a labelled pod anywhere needs its node's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Absent: requests cpu 20m, memory 32Mi; limit memory 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub log_level: LogLevel,
    #[serde(default = "default_priority_class")]
    #[schemars(length(max = 253))]
    pub priority_class_name: String,
    #[serde(default)]
    pub update_strategy: UpdateStrategy,
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self {
            image: default_agent_image(),
            image_pull_policy: PullPolicy::default(),
            image_pull_secrets: vec![],
            node_selector: BTreeMap::new(),
            tolerations: None,
            resources: None,
            log_level: LogLevel::default(),
            priority_class_name: default_priority_class(),
            update_strategy: UpdateStrategy::default(),
        }
    }
}

fn default_agent_image() -> String {
    DEFAULT_AGENT_IMAGE.to_string()
}

fn default_priority_class() -> String {
    "system-node-critical".to_string()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// The operator's node-by-node rollout of agent pods (the DaemonSet itself is `OnDelete`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    /// Nodes whose agent is being replaced at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub max_unavailable: u32,
    /// Must be 0: the old agent is deleted first. (An overlap of two agents on a node needs
    /// a second DaemonSet, which nes does not render yet.)
    #[serde(default)]
    #[schemars(range(min = 0, max = 0))]
    pub max_surge: u32,
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        Self {
            max_unavailable: 1,
            max_surge: 0,
        }
    }
}

fn one() -> u32 {
    1
}

/// The shim the admission webhook injects into new labelled pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShimSpec {
    /// Absent: the agent's image (it carries the nes-shim binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}

/// The MutatingWebhookConfiguration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    /// Namespaces whose labelled pods get the shim (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Defaults that apply where no `NetworkConfigurationPolicy` says more: the node ceiling on
/// host-side access every agent enforces (its `--allow-host-*` flags). Absent: none.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultPolicySpec {
    #[serde(default)]
    pub host_access: HostAccessCeiling,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostAccessCeiling {
    #[serde(default)]
    pub veth: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub bridges: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub parents: Vec<String>,
    #[serde(default)]
    pub passthru: bool,
    /// CNI plugins may run on the node for hot-plugged attachments (the agent's
    /// `--allow-host-cni`); the admin policies must allow it too.
    #[serde(default)]
    pub cni_attachments: bool,
}

impl NesInstallationSpec {
    /// The image injected as the shim.
    pub fn shim_image(&self) -> &str {
        self.shim.image.as_deref().unwrap_or(&self.agent.image)
    }
}

/// Where the install stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NesInstallationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The agent version the spec asks for (the image tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// The version every desired node runs (absent while nodes differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_version: Option<String>,
    /// Each component's image, by component (agent, shim).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    #[serde(default)]
    pub nodes: NodeCounts,
    /// The last upgrade's result on each node, by node name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_upgrades: BTreeMap<String, NodeUpgrade>,
    /// The `retry` annotation value the current pause was taken under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at_retry: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    pub desired: u32,
    pub updated: u32,
    pub ready: u32,
}

/// One node's last agent upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpgrade {
    pub version: String,
    pub result: UpgradeResult,
    /// Why it failed, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradeResult {
    InProgress,
    Succeeded,
    Failed,
}

/// What an agent reports on its own pod ([`UPGRADE_REPORT_ANNOTATION`]) once it has
/// re-bound every pod socket since it started.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpgradeReport {
    /// Every pod socket of the node's converged pods is served again.
    pub sockets_rebound: bool,
    /// Netlink writes into pods that were converged when the agent started.
    pub writes_to_converged_pods: u64,
    /// Readiness changes of labelled pods since the agent started.
    pub readiness_changes: u64,
}

impl AgentUpgradeReport {
    /// Whether the upgrade left the node's workloads alone.
    pub fn is_clean(&self) -> bool {
        self.sockets_rebound && self.writes_to_converged_pods == 0 && self.readiness_changes == 0
    }
}

/// The version of an image reference: its tag (or digest), else `latest`.
pub fn image_version(image: &str) -> &str {
    if let Some((_, digest)) = image.split_once('@') {
        return digest;
    }
    // a ':' after the last '/' is a tag; one before it is a registry port
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map_or("latest", |(_, tag)| tag)
}

// === version skew ===

/// A `major.minor.patch` version (a leading `v` and a `-pre`/`+build` suffix are ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    /// `None` for what is not a release version (`latest`, a digest, a branch tag).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(Self {
            major,
            minor,
            patch,
        })
    }

    /// How many minors `self` is behind `other` (negative: ahead); `None` across majors.
    fn minors_behind(self, other: Self) -> Option<i128> {
        (self.major == other.major).then(|| i128::from(other.minor) - i128::from(self.minor))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The header carrying the forwarding agent's version on every REST call it forwards to the
/// cliserver, which refuses an agent outside [`check_skew`] with the operator.
pub const AGENT_VERSION_HEADER: &str = "X-Nes-Agent-Version";

/// Why a target agent version is refused: a fixed [`reason`] and words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkewRefusal {
    pub reason: &'static str,
    pub message: String,
}

/// The version skew policy. An agent runs the operator's minor or the one before it (the
/// operator's REST API and CRDs keep serving what the previous minor's agents send), never a
/// newer one (upgrade the operator first). A rollout may go back at most one minor from any
/// running agent. What is not a release version (`latest`, a digest) is not judged.
pub fn check_skew(operator: &str, target: &str, running: &[&str]) -> Result<(), SkewRefusal> {
    let Some(t) = Version::parse(target) else {
        return Ok(());
    };
    if let Some(op) = Version::parse(operator) {
        let refuse = |why: &str| SkewRefusal {
            reason: reason::UNSUPPORTED_SKEW,
            message: format!("agent {t} with operator {op}: {why}"),
        };
        match t.minors_behind(op) {
            None => return Err(refuse("a different major version")),
            Some(n) if n < 0 => {
                return Err(refuse("the agent is newer; upgrade the operator first"))
            }
            Some(n) if n > 1 => return Err(refuse("the agent may be at most one minor behind")),
            Some(_) => {}
        }
    }
    for r in running.iter().filter_map(|r| Version::parse(r)) {
        if t < r && t.minors_behind(r).is_none_or(|n| n > 1) {
            return Err(SkewRefusal {
                reason: reason::DOWNGRADE_REFUSED,
                message: format!(
                    "a downgrade from {r} to {t} goes back more than one minor; go back one minor at a time"
                ),
            });
        }
    }
    Ok(())
}

/// Validates a `NesInstallation` (name and spec): the same rules as the CRD's, and what a
/// schema cannot say.
pub fn validate_installation(name: &str, spec: &NesInstallationSpec) -> Result<(), Invalid> {
    let mut problems = vec![];
    let mut add = |field: &str, message: String| {
        problems.push(Problem {
            field: field.to_string(),
            message,
        })
    };
    if name != INSTALLATION_NAME {
        add(
            "metadata.name",
            format!("the NesInstallation is a singleton named {INSTALLATION_NAME}, got {name:?}"),
        );
    }
    for (field, image) in [
        ("spec.agent.image", Some(spec.agent.image.as_str())),
        ("spec.shim.image", spec.shim.image.as_deref()),
    ] {
        if let Some(image) = image {
            if image.is_empty() || image.len() > 512 || image.chars().any(char::is_whitespace) {
                add(field, format!("not an image reference: {image:?}"));
            }
        }
    }
    let strategy = spec.agent.update_strategy;
    if !(1..=100).contains(&strategy.max_unavailable) {
        add(
            "spec.agent.updateStrategy.maxUnavailable",
            format!("must be 1..=100, got {}", strategy.max_unavailable),
        );
    }
    if strategy.max_surge > 0 {
        add(
            "spec.agent.updateStrategy.maxSurge",
            format!(
                "must be 0, got {}: two agents on a node need a second DaemonSet, which nes \
                 does not render yet; the old agent is deleted first",
                strategy.max_surge
            ),
        );
    }
    let ceiling = &spec.policy.host_access;
    for (list, names) in [("bridges", &ceiling.bridges), ("parents", &ceiling.parents)] {
        for (i, n) in names.iter().enumerate() {
            if let Err(why) = check_ifname(n) {
                add(&format!("spec.policy.hostAccess.{list}[{i}]"), why);
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_version_is_the_tag_or_digest_not_a_registry_port() {
        for (image, version) in [
            ("nes-agent:0.1.0", "0.1.0"),
            ("registry:5000/nes/nes-agent:0.2.0", "0.2.0"),
            ("registry:5000/nes/nes-agent", "latest"),
            ("nes-agent@sha256:abc", "sha256:abc"),
        ] {
            assert_eq!(image_version(image), version, "{image}");
        }
    }

    #[test]
    fn an_empty_spec_is_the_default_install_and_valid() {
        let spec: NesInstallationSpec = serde_json::from_str("{}").expect("empty spec");
        assert_eq!(spec, NesInstallationSpec::default());
        assert_eq!(spec.shim_image(), DEFAULT_AGENT_IMAGE);
        assert_eq!(validate_installation("nes", &spec), Ok(()));
    }

    #[test]
    fn validation_names_every_problem() {
        let mut spec = NesInstallationSpec::default();
        spec.agent.image = "bad image".into();
        spec.agent.update_strategy = UpdateStrategy {
            max_unavailable: 0,
            max_surge: 1,
        };
        spec.policy.host_access.bridges = vec!["a/b".into()];
        let Err(Invalid(problems)) = validate_installation("other", &spec) else {
            panic!("accepted an invalid installation");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.agent.image",
                "spec.agent.updateStrategy.maxUnavailable",
                "spec.agent.updateStrategy.maxSurge",
                "spec.policy.hostAccess.bridges[0]"
            ]
        );
    }

    #[test]
    fn max_surge_is_refused_with_the_reason() {
        let mut spec = NesInstallationSpec::default();
        spec.agent.update_strategy.max_surge = 1;
        let Err(Invalid(problems)) = validate_installation("nes", &spec) else {
            panic!("accepted maxSurge 1");
        };
        assert_eq!(problems[0].field, "spec.agent.updateStrategy.maxSurge");
        assert!(
            problems[0].message.contains("second DaemonSet"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn versions_parse_from_release_tags_only() {
        let v = |major, minor, patch| {
            Some(Version {
                major,
                minor,
                patch,
            })
        };
        for (tag, want) in [
            ("0.2.0", v(0, 2, 0)),
            ("v1.10.3", v(1, 10, 3)),
            ("0.3.0-rc.1", v(0, 3, 0)),
            ("latest", None),
            ("sha256:abc", None),
            ("0.2", None),
            ("0.2.0.1", None),
        ] {
            assert_eq!(Version::parse(tag), want, "{tag}");
        }
    }

    #[test]
    fn the_skew_policy_allows_one_minor_behind_and_one_minor_back() {
        struct Case {
            name: &'static str,
            operator: &'static str,
            target: &'static str,
            running: &'static [&'static str],
            want: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "same minor",
                operator: "0.2.0",
                target: "0.2.1",
                running: &["0.2.0"],
                want: None,
            },
            Case {
                name: "one minor behind the operator",
                operator: "0.3.0",
                target: "0.2.5",
                running: &["0.2.0"],
                want: None,
            },
            Case {
                name: "upgrade by several minors is allowed",
                operator: "0.5.0",
                target: "0.5.0",
                running: &["0.2.0"],
                want: None,
            },
            Case {
                name: "two minors behind the operator",
                operator: "0.4.0",
                target: "0.2.0",
                running: &[],
                want: Some(reason::UNSUPPORTED_SKEW),
            },
            Case {
                name: "newer than the operator",
                operator: "0.2.0",
                target: "0.3.0",
                running: &[],
                want: Some(reason::UNSUPPORTED_SKEW),
            },
            Case {
                name: "another major",
                operator: "1.0.0",
                target: "0.9.0",
                running: &[],
                want: Some(reason::UNSUPPORTED_SKEW),
            },
            Case {
                name: "back one minor",
                operator: "0.3.0",
                target: "0.2.0",
                running: &["0.3.1", "0.3.0"],
                want: None,
            },
            Case {
                name: "back two minors from a running agent",
                operator: "0.3.0",
                target: "0.2.0",
                running: &["0.2.0", "0.4.0"],
                want: Some(reason::DOWNGRADE_REFUSED),
            },
            Case {
                name: "back a major",
                operator: "1.0.0",
                target: "1.0.0",
                running: &["2.0.0"],
                want: Some(reason::DOWNGRADE_REFUSED),
            },
            Case {
                name: "a tag that is no version is not judged",
                operator: "0.3.0",
                target: "latest",
                running: &["0.9.0"],
                want: None,
            },
            Case {
                name: "running agents without versions are not judged",
                operator: "0.3.0",
                target: "0.3.0",
                running: &["latest"],
                want: None,
            },
        ];
        for c in cases {
            let got = check_skew(c.operator, c.target, c.running);
            assert_eq!(
                got.as_ref().err().map(|r| r.reason),
                c.want,
                "{}: {got:?}",
                c.name
            );
            if let Err(r) = got {
                assert!(r.message.contains(c.target), "{}: {}", c.name, r.message);
            }
        }
    }

    #[test]
    fn a_report_is_clean_only_with_sockets_rebound_and_nothing_disturbed() {
        let clean = AgentUpgradeReport {
            sockets_rebound: true,
            ..Default::default()
        };
        assert!(clean.is_clean());
        assert!(!AgentUpgradeReport::default().is_clean());
        assert!(!AgentUpgradeReport {
            writes_to_converged_pods: 1,
            ..clean
        }
        .is_clean());
        assert!(!AgentUpgradeReport {
            readiness_changes: 1,
            ..clean
        }
        .is_clean());
    }
}
