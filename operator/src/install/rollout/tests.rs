use api::installation::{reason, AgentUpgradeReport};
use pretty_assertions::assert_eq;

use super::*;

pub const OLD: &str = "nes-agent:0.1.0";
pub const NEW: &str = "nes-agent:0.2.0";

pub fn clean() -> Option<AgentUpgradeReport> {
    Some(AgentUpgradeReport {
        sockets_rebound: true,
        ..Default::default()
    })
}

/// An agent pod on `node`: `old` (Ready, old image) by default.
pub fn pod(node: &str, image: &str) -> AgentPod {
    AgentPod {
        name: format!(
            "nes-agent-{node}-{}",
            api::installation::image_version(image)
        ),
        node: node.into(),
        image: image.into(),
        ready: true,
        deleting: false,
        age_secs: 30,
        failure: None,
        report: if image == NEW { clean() } else { None },
    }
}

pub fn nodes(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn decide_with(
    pods: &[AgentPod],
    max_unavailable: u32,
    paused: Option<&Pause>,
    retry: Option<&str>,
) -> Decision {
    let nodes: Vec<String> = nodes(&["a", "b", "c"]);
    decide(&Input {
        target_image: NEW,
        max_unavailable,
        generation: 2,
        retry,
        nodes: &nodes,
        pods,
        paused,
    })
}

fn delete(names: &[&str]) -> Decision {
    Decision::Delete(names.iter().map(|s| s.to_string()).collect())
}

fn disturbed(node: &str) -> AgentPod {
    AgentPod {
        report: Some(AgentUpgradeReport {
            sockets_rebound: true,
            writes_to_converged_pods: 3,
            readiness_changes: 0,
        }),
        ..pod(node, NEW)
    }
}

#[test]
fn the_rollout_replaces_agents_node_by_node_within_max_unavailable() {
    struct Case {
        name: &'static str,
        pods: Vec<AgentPod>,
        max_unavailable: u32,
        want: Decision,
    }
    let not_ready = AgentPod {
        ready: false,
        report: None,
        ..pod("a", NEW)
    };
    let going = AgentPod {
        deleting: true,
        ..pod("a", OLD)
    };
    let cases = [
        Case {
            name: "start: first node only",
            pods: vec![pod("a", OLD), pod("b", OLD), pod("c", OLD)],
            max_unavailable: 1,
            want: delete(&["nes-agent-a-0.1.0"]),
        },
        Case {
            name: "two at a time",
            pods: vec![pod("a", OLD), pod("b", OLD), pod("c", OLD)],
            max_unavailable: 2,
            want: delete(&["nes-agent-a-0.1.0", "nes-agent-b-0.1.0"]),
        },
        Case {
            name: "old pod still terminating: wait",
            pods: vec![going, pod("b", OLD), pod("c", OLD)],
            max_unavailable: 1,
            want: delete(&[]),
        },
        Case {
            name: "no pod on a node yet: wait",
            pods: vec![pod("b", OLD), pod("c", OLD)],
            max_unavailable: 1,
            want: delete(&[]),
        },
        Case {
            name: "new agent not Ready: wait",
            pods: vec![not_ready, pod("b", OLD), pod("c", OLD)],
            max_unavailable: 1,
            want: delete(&[]),
        },
        Case {
            name: "node a passed: next node",
            pods: vec![pod("a", NEW), pod("b", OLD), pod("c", OLD)],
            max_unavailable: 1,
            want: delete(&["nes-agent-b-0.1.0"]),
        },
        Case {
            name: "every node passed",
            pods: vec![pod("a", NEW), pod("b", NEW), pod("c", NEW)],
            max_unavailable: 1,
            want: Decision::Done,
        },
    ];
    for case in cases {
        assert_eq!(
            decide_with(&case.pods, case.max_unavailable, None, None),
            case.want,
            "{}",
            case.name
        );
    }
}

#[test]
fn a_failing_node_pauses_the_rollout_naming_the_node_and_deletes_nothing() {
    let crashing = AgentPod {
        failure: Some("CrashLoopBackOff".into()),
        ready: false,
        report: None,
        ..pod("b", NEW)
    };
    let slow = AgentPod {
        ready: false,
        report: None,
        age_secs: NODE_TIMEOUT_SECS + 1,
        ..pod("b", NEW)
    };
    for (bad, reason) in [
        (disturbed("b"), reason::UPGRADE_DISTURBED_PODS),
        (crashing, reason::AGENT_FAILED),
        (slow, reason::UPGRADE_TIMED_OUT),
    ] {
        let Decision::Pause(p) = decide_with(&[pod("a", NEW), bad, pod("c", OLD)], 2, None, None)
        else {
            panic!("{reason}: did not pause");
        };
        assert_eq!((p.node.as_str(), p.reason, p.generation), ("b", reason, 2));
        assert!(
            p.message.starts_with("node b: agent nes-agent-b-0.2.0"),
            "{}",
            p.message
        );
    }
}

#[test]
fn a_pause_holds_until_the_spec_or_the_retry_annotation_changes() {
    let pods = [pod("a", NEW), disturbed("b"), pod("c", OLD)];
    let Decision::Pause(pause) = decide_with(&pods, 1, None, Some("1")) else {
        panic!("no pause")
    };
    // the failed agent comes back Ready later: still paused, nothing deleted
    let healed = [pod("a", NEW), pod("b", NEW), pod("c", OLD)];
    assert_eq!(
        decide_with(&healed, 1, Some(&pause), Some("1")),
        Decision::Pause(pause.clone())
    );
    // retry: the failed agent is replaced again, and only it (it fills maxUnavailable)
    assert_eq!(
        decide_with(&pods, 1, Some(&pause), Some("2")),
        delete(&["nes-agent-b-0.2.0"])
    );
    // a new generation resumes too
    let older = Pause {
        generation: 1,
        ..pause
    };
    assert_eq!(
        decide_with(&healed, 1, Some(&older), Some("1")),
        delete(&["nes-agent-c-0.1.0"])
    );
}
