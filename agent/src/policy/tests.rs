//! The agent's policy decisions as a table: what reaches the engine, and what is reported.

use std::sync::Arc;

use api::host::HostAccess;
use api::policy::{NetworkConfigurationPolicy, POLICY_DENIED_REASON, POLICY_UNAVAILABLE_REASON};
use api::NetworkConfigurationSpec;
use serde_json::{json, Value};

use super::*;

fn policy(name: &str, spec: Value) -> Arc<NetworkConfigurationPolicy> {
    let mut p: NetworkConfigurationPolicy = serde_json::from_value(json!({
        "apiVersion": "nes.network-config.io/v1alpha1",
        "kind": "NetworkConfigurationPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("policy");
    p.metadata.name = Some(name.into());
    Arc::new(p)
}

fn spec(v: Value) -> NetworkConfigurationSpec {
    serde_json::from_value(v).expect("spec")
}

fn desired(generation: i64, v: Value) -> Desired {
    Desired {
        generation,
        spec: spec(v).into(),
        saved: Default::default(),
        problem: None,
    }
}

fn eth0(addr: &str) -> Value {
    json!({"interfaces": [{"name": "eth0", "addresses": [addr]}]})
}

fn bridged() -> Value {
    json!({"interfaces": [{"name": "v0", "type": "veth", "peer": "hv0", "peerBridge": "br0"}]})
}

fn tenant() -> Arc<NetworkConfigurationPolicy> {
    policy("tenant", json!({"addresses": {"ipv4": ["10.1.0.0/16"]}}))
}

fn bridges() -> Arc<NetworkConfigurationPolicy> {
    policy(
        "bridges",
        json!({"host": {"veth": true, "bridges": ["br0"]}}),
    )
}

fn node_bridge() -> HostAccess {
    HostAccess {
        veth: true,
        bridges: ["br0".to_string()].into(),
        ..HostAccess::deny_all()
    }
}

/// (case, governing, node ceiling, current, next) -> (applied spec is next, reason, hold)
#[test]
fn a_refused_configuration_never_reaches_the_engine_and_the_last_good_one_stays() {
    let known = |p: Vec<Arc<NetworkConfigurationPolicy>>| Governing::Known(p);
    let good = desired(1, eth0("10.1.0.5/24"));
    type Row<'a> = (
        &'a str,
        Governing,
        HostAccess,
        Option<Desired>,
        Desired,
        Option<(&'a str, bool)>,
    );
    let table: Vec<Row<'_>> = vec![
        (
            "no policy: the built-in default allows in-pod configuration",
            known(vec![]),
            HostAccess::deny_all(),
            None,
            desired(1, eth0("192.0.2.1/24")),
            None,
        ),
        (
            "allowed by the policy: applied",
            known(vec![tenant()]),
            HostAccess::deny_all(),
            None,
            good.clone(),
            None,
        ),
        (
            "an address outside the CIDR, first sight: nothing is written",
            known(vec![tenant()]),
            HostAccess::deny_all(),
            None,
            desired(1, eth0("10.2.0.5/24")),
            Some((POLICY_DENIED_REASON, true)),
        ),
        (
            "an address outside the CIDR, with a good one applied: it stays",
            known(vec![tenant()]),
            HostAccess::deny_all(),
            Some(good.clone()),
            desired(2, eth0("10.2.0.5/24")),
            Some((POLICY_DENIED_REASON, false)),
        ),
        (
            "a policy change forbids what is applied: Degraded, never torn down",
            known(vec![policy(
                "strict",
                json!({"addresses": {"ipv4": ["10.9.0.0/16"]}}),
            )]),
            HostAccess::deny_all(),
            Some(good.clone()),
            good.clone(),
            Some((POLICY_DENIED_REASON, false)),
        ),
        (
            "a host bridge under the default policy, although the node allows it",
            known(vec![]),
            node_bridge(),
            None,
            desired(1, bridged()),
            Some((POLICY_DENIED_REASON, true)),
        ),
        (
            "a host bridge the policy allows but the node does not",
            known(vec![bridges()]),
            HostAccess::deny_all(),
            None,
            desired(1, bridged()),
            Some((POLICY_DENIED_REASON, true)),
        ),
        (
            "a host bridge both allow",
            known(vec![bridges()]),
            node_bridge(),
            None,
            desired(1, bridged()),
            None,
        ),
        (
            "two policies intersect: the bridge policy does not widen the tenant's",
            known(vec![tenant(), bridges()]),
            node_bridge(),
            None,
            desired(1, bridged()),
            Some((POLICY_DENIED_REASON, true)),
        ),
        (
            "policies not listed: fail closed",
            Governing::Unknown("not listed".into()),
            HostAccess::deny_all(),
            Some(good.clone()),
            desired(2, eth0("10.1.0.6/24")),
            Some((POLICY_UNAVAILABLE_REASON, false)),
        ),
        (
            "the deleted configuration's empty spec is always allowed",
            known(vec![tenant()]),
            HostAccess::deny_all(),
            Some(good.clone()),
            Desired::default(),
            None,
        ),
    ];
    for (case, governing, node, current, next, want) in table {
        let got = gate_apply(next.clone(), current.as_ref(), &governing, &node);
        let problem = got.problem.as_ref().map(|p| (p.reason.as_str(), p.hold));
        assert_eq!(problem, want, "{case}: {got:?}");
        match want {
            None => assert_eq!(got, next, "{case}"),
            Some((_, true)) => assert_eq!(got.spec, Default::default(), "{case}"),
            Some((_, false)) => {
                assert_eq!(Some(&got.spec), current.as_ref().map(|c| &c.spec), "{case}");
                assert_eq!(got.generation, next.generation, "{case}");
            }
        }
    }
}

#[test]
fn a_policy_selects_namespaces_by_label() {
    let p = policy(
        "prod",
        json!({"namespaceSelector": {"matchLabels": {"env": "prod"}},
               "addresses": {"ipv4": ["10.1.0.0/16"]}}),
    );
    let prod = [("env".to_string(), "prod".to_string())].into();
    let dev = [("env".to_string(), "dev".to_string())].into();
    assert!(
        matches!(Governing::of(std::slice::from_ref(&p), &prod), Governing::Known(v) if v.len() == 1)
    );
    assert!(matches!(Governing::of(&[p], &dev), Governing::Known(v) if v.is_empty()));
}
