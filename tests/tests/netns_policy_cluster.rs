//! The in-cluster agent checks every NetworkConfiguration against the admin policies
//! before it applies (defence in depth: a CR written with kubectl skips the cliserver):
//! a refused CR gets zero netlink writes in the pod and on the host, a Degraded
//! `PolicyDenied` status and an Event; a policy change that forbids what is applied is
//! reported Degraded and removes nothing; removing the policy applies again.

use nes_tests::cluster_support;
use nes_tests::common;

use std::sync::Arc;
use std::time::Instant;

use cluster_support::harness::{Agent, ServedPod};
use cluster_support::{pod, ApiServer, FakeResolver, Patched};
use common::{host_access, require_kind, require_root, NetlinkWitness};
use serde_json::json;

fn degraded(p: &Patched) -> Option<(String, String)> {
    p.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

fn has_address(p: &ServedPod, prefix: &str) -> bool {
    p.fx.pod
        .addresses("eth0")
        .iter()
        .any(|a| a.starts_with(prefix))
}

#[tokio::test]
async fn a_policy_violating_cr_is_refused_with_zero_writes_and_a_policy_change_removes_nothing() {
    if !require_root() || !require_kind("veth") || !require_kind("bridge") {
        return;
    }
    let api = ApiServer::default();
    api.put_policy("tenant", json!({"addresses": {"ipv4": ["10.10.0.0/16"]}}));
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("polc", "demo-0", "uid-pol");
    let mut agent = Agent::new(&api, &resolver);
    // The node would allow the bridge: the admin policy is what refuses it.
    agent.host_access = host_access(&["polbr1"], &[]);
    agent.host.ip(&["link", "add", "polbr1", "type", "bridge"]);
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(
        &p.name,
        json!({"interfaces": [
            {"name": "eth0", "type": "existing", "addresses": ["10.99.0.5/24"]},
            {"name": "v0", "type": "veth", "peer": "hpolc0", "peerBridge": "polbr1"},
        ]}),
    );
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let pod_witness = NetlinkWitness::start(&p.fx.pod).await;
    let host_witness = NetlinkWitness::start(&agent.host).await;
    let started = agent.start();

    let refused = api
        .wait_patch(&p.name, started, |s| {
            degraded(s).is_some_and(|(reason, _)| reason == "PolicyDenied")
        })
        .await;
    let (_, message) = degraded(&refused).expect("degraded");
    assert!(message.contains("\"tenant\""), "{message}");
    assert!(
        message.contains("spec.interfaces[0].addresses[0]"),
        "{message}"
    );
    assert!(
        message.contains("polbr1"),
        "the host bridge is named: {message}"
    );
    api.wait_event(&p.name, "PolicyDenied").await;
    assert!(
        api.event_notes(&p.name, "PolicyDenied")[0].contains("tenant"),
        "{:?}",
        api.event_notes(&p.name, "PolicyDenied")
    );
    assert_eq!(
        pod_witness.stop().await,
        Vec::<String>::new(),
        "pod netns written"
    );
    assert_eq!(
        host_witness.stop().await,
        Vec::<String>::new(),
        "host netns written"
    );
    assert!(!p.fx.pod.has_link("v0") && !agent.host.has_link("hpolc0"));

    // The owner fixes the CR: it applies.
    let fixed = api.put_conf(
        &p.name,
        json!({"interfaces": [{"name": "eth0", "type": "existing", "addresses": ["10.10.0.5/24"]}]}),
    );
    api.wait_patch(&p.name, fixed, |s| s.applied(2) && degraded(s).is_none())
        .await;
    assert!(has_address(&p, "10.10.0.5"));

    // The admin narrows the range: reported, never torn down.
    let witness = NetlinkWitness::start(&p.fx.pod).await;
    let narrowed = Instant::now();
    api.put_policy("tenant", json!({"addresses": {"ipv4": ["10.77.0.0/16"]}}));
    let held = api
        .wait_patch(&p.name, narrowed, |s| {
            degraded(s).is_some_and(|(reason, _)| reason == "PolicyDenied")
        })
        .await;
    assert!(degraded(&held)
        .expect("degraded")
        .1
        .contains("10.10.0.5/24"));
    assert_eq!(
        witness.stop().await,
        Vec::<String>::new(),
        "a policy change wrote"
    );
    assert!(
        has_address(&p, "10.10.0.5"),
        "a policy change tore the address down"
    );

    // The admin removes the policy: the built-in default allows it again.
    let removed = Instant::now();
    api.delete_policy("tenant");
    api.wait_patch(&p.name, removed, |s| degraded(s).is_none() && s.applied(2))
        .await;
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
    agent.shutdown().await;
}

#[tokio::test]
async fn a_namespace_relabel_re_evaluates_its_pods() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    api.put_policy(
        "prod-only-10-10",
        json!({"namespaceSelector": {"matchLabels": {"env": "prod"}},
               "addresses": {"ipv4": ["10.10.0.0/16"]}}),
    );
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("poln", "demo-0", "uid-poln");
    let mut agent = Agent::new(&api, &resolver);
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(
        &p.name,
        json!({"interfaces": [{"name": "eth0", "type": "existing", "addresses": ["10.99.0.5/24"]}]}),
    );
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let started = agent.start();
    api.wait_patch(&p.name, started, |s| s.applied(1) && degraded(s).is_none())
        .await;
    let relabelled = Instant::now();
    api.put_namespace(cluster_support::NS, json!({"env": "prod"}));
    let held = api
        .wait_patch(&p.name, relabelled, |s| {
            degraded(s).is_some_and(|(reason, _)| reason == "PolicyDenied")
        })
        .await;
    assert!(degraded(&held)
        .expect("degraded")
        .1
        .contains("prod-only-10-10"));
    assert!(
        has_address(&p, "10.99.0.5"),
        "a relabel tore the address down"
    );
    agent.shutdown().await;
}
