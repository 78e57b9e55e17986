use api::installation::{condition, reason, AgentUpgradeReport, NesInstallation, NodeCounts};
use pretty_assertions::assert_eq;

use super::*;
use crate::install::rollout::{decide, Decision, Input};

const OLD: &str = "nes-agent:0.1.0";
const NEW: &str = "nes-agent:0.2.0";

fn pod(node: &str, image: &str) -> AgentPod {
    AgentPod {
        name: format!("nes-agent-{node}-{}", image_version(image)),
        node: node.into(),
        image: image.into(),
        ready: true,
        deleting: false,
        age_secs: 30,
        failure: None,
        report: Some(AgentUpgradeReport {
            sockets_rebound: true,
            ..Default::default()
        }),
    }
}

fn installation() -> NesInstallation {
    let mut inst = NesInstallation::new("nes", Default::default());
    inst.spec.agent.image = NEW.into();
    inst.metadata.generation = Some(2);
    inst
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("now")
}

/// (type, status, reason) of every condition.
fn conditions(s: &NesInstallationStatus) -> Vec<(String, String, String)> {
    s.conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

fn triple(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

/// The status the controller would write for these pods, after asking the rollout.
fn status_for(pods: &[AgentPod], daemonset_exists: bool) -> NesInstallationStatus {
    let inst = installation();
    let nodes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let decision = decide(&Input {
        target_image: NEW,
        max_unavailable: 1,
        generation: 2,
        retry: None,
        nodes: &nodes,
        pods,
        paused: None,
    });
    let pause = match decision {
        Decision::Pause(p) => Some(p),
        _ => None,
    };
    let observed = Observed {
        daemonset_exists,
        nodes: &nodes,
        pods,
        paused: pause.as_ref(),
    };
    let status = compute(&inst, &observed, now());
    println!("{}", serde_yaml::to_string(&status).expect("yaml"));
    status
}

#[test]
fn status_counts_nodes_and_sets_conditions() {
    struct Case {
        name: &'static str,
        pods: Vec<AgentPod>,
        ds: bool,
        counts: (u32, u32, u32),
        observed: Option<&'static str>,
        want: [(&'static str, &'static str, &'static str); 3],
    }
    let not_ready = AgentPod {
        ready: false,
        report: None,
        ..pod("a", NEW)
    };
    let cases = [
        Case {
            name: "not rendered yet",
            pods: vec![],
            ds: false,
            counts: (3, 0, 0),
            observed: None,
            want: [
                ("False", "NotRendered", ""),
                ("True", reason::ROLLING_OUT, ""),
                ("False", reason::AS_EXPECTED, ""),
            ],
        },
        Case {
            name: "upgrade of node a in flight",
            ds: true,
            pods: vec![not_ready, pod("b", OLD), pod("c", OLD)],
            counts: (3, 0, 2),
            observed: None,
            want: [
                ("False", reason::AGENTS_NOT_READY, ""),
                ("True", reason::ROLLING_OUT, ""),
                ("False", reason::AS_EXPECTED, ""),
            ],
        },
        Case {
            name: "everything upgraded",
            ds: true,
            pods: vec![pod("a", NEW), pod("b", NEW), pod("c", NEW)],
            counts: (3, 3, 3),
            observed: Some("0.2.0"),
            want: [
                ("True", reason::AS_EXPECTED, ""),
                ("False", reason::AS_EXPECTED, ""),
                ("False", reason::AS_EXPECTED, ""),
            ],
        },
    ];
    for case in cases {
        let s = status_for(&case.pods, case.ds);
        let (desired, updated, ready) = case.counts;
        assert_eq!(
            s.nodes,
            NodeCounts {
                desired,
                updated,
                ready
            },
            "{}",
            case.name
        );
        assert_eq!(
            s.observed_version.as_deref(),
            case.observed,
            "{}",
            case.name
        );
        let want: Vec<_> = [
            condition::AVAILABLE,
            condition::PROGRESSING,
            condition::DEGRADED,
        ]
        .iter()
        .zip(case.want)
        .map(|(t, (st, r, _))| triple(t, st, r))
        .collect();
        assert_eq!(conditions(&s), want, "{}", case.name);
    }
}

#[test]
fn mid_rollout_status_reports_versions_images_and_per_node_results() {
    let in_flight = AgentPod {
        ready: false,
        report: None,
        ..pod("b", NEW)
    };
    let s = status_for(&[pod("a", NEW), in_flight, pod("c", OLD)], true);
    assert_eq!(
        (s.target_version.as_deref(), s.observed_version.as_deref()),
        (Some("0.2.0"), None)
    );
    assert_eq!(s.images["agent"], NEW);
    assert_eq!(s.images["shim"], NEW);
    let results: Vec<_> = s
        .node_upgrades
        .iter()
        .map(|(n, u)| (n.as_str(), u.result))
        .collect();
    assert_eq!(
        results,
        [
            ("a", UpgradeResult::Succeeded),
            ("b", UpgradeResult::InProgress)
        ]
    );
    assert_eq!(
        s.nodes,
        NodeCounts {
            desired: 3,
            updated: 1,
            ready: 2
        }
    );
}

#[test]
fn a_paused_rollout_is_degraded_naming_the_node_and_not_progressing() {
    let disturbed = AgentPod {
        report: Some(AgentUpgradeReport {
            sockets_rebound: true,
            writes_to_converged_pods: 2,
            readiness_changes: 1,
        }),
        ..pod("b", NEW)
    };
    let s = status_for(&[pod("a", NEW), disturbed, pod("c", OLD)], true);
    assert_eq!(
        conditions(&s),
        [
            triple(condition::AVAILABLE, "True", reason::AS_EXPECTED),
            triple(condition::PROGRESSING, "False", reason::PAUSED),
            triple(condition::DEGRADED, "True", reason::UPGRADE_DISTURBED_PODS),
        ]
    );
    let degraded = &s.conditions[2];
    assert_eq!(degraded.message,
        "node b: agent nes-agent-b-0.2.0 wrote 2 times to converged pods and saw 1 readiness changes");
    assert_eq!(s.node_upgrades["b"].result, UpgradeResult::Failed);
    assert_eq!(s.observed_generation, Some(2));
}
