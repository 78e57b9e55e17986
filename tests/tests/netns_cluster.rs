//! The in-cluster agent end to end, against the tower-test mock API server, a fake netns
//! resolver and real network namespaces: watch -> apply -> status, the pod-IP proof, a new
//! sandbox, an agent restart, drift, coalesced status patches, pod isolation, and writes
//! forwarded to a stub cliserver over HTTPS. MEASURE lines give event-path latencies
//! (`cargo nextest run -p nes-tests --test netns_cluster --success-output final`).

use nes_tests::cluster_support;
use nes_tests::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::wire::{ConfigView, EventBody, ProblemDetails, StatusView};
use cluster_support::harness::{events_of, measure, stub_cliserver, Agent, ServedPod};
use cluster_support::{
    pod, ApiServer, FakeResolver, Patched, PodClient, AGENT_POD, DEADLINE, NODE, NS,
};
use common::{eventually, require_root, NetlinkWitness, Netns, PodFixture};
use serde_json::json;

fn spec_v1() -> serde_json::Value {
    json!({
        "interfaces": [{"name": "eth0", "type": "existing", "mtu": 1400,
                        "addresses": ["10.10.0.5/24"]}],
        "routes": [{"dst": "10.20.0.0/16", "via": "10.10.0.1", "dev": "eth0"}],
    })
}

fn spec_v2() -> serde_json::Value {
    json!({
        "interfaces": [{"name": "eth0", "type": "existing", "mtu": 1400,
                        "addresses": ["10.10.0.5/24", "fd00:10::5/64"]}],
        "routes": [{"dst": "10.20.0.0/16", "via": "10.10.0.1", "dev": "eth0"}],
    })
}

/// Routes nes or the CNI own: the kernel's own IPv6 link-local routes come and go with
/// duplicate address detection, which can finish at any moment (seen in the VM).
fn routes(ns: &Netns) -> String {
    ns.routes()
        .lines()
        .filter(|l| !l.contains("fe80"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn mtu(ns: &Netns, dev: &str) -> u64 {
    ns.ip_json(&["link", "show", "dev", dev])[0]["mtu"]
        .as_u64()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_labelled_pod_gets_its_configuration_applied_and_its_status_reported() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("cla", "demo-0", "uid-a");
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(&p.name, spec_v1());
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let mut agent = Agent::new(&api, &resolver);
    let started = agent.start();

    let first = api.wait_patch(&p.name, started, |s| s.applied(1)).await;
    measure(
        "agent start (pod and CR listed) -> status Applied",
        started,
        first.at,
    );
    assert_eq!(first.status.node.as_deref(), Some(NODE));
    assert_eq!(first.status.observed_generation, Some(1));
    let netns = agent::netns::identity(p.fx.pod.path()).expect("identity");
    let reported = first.status.netns.clone().expect("netns identity reported");
    assert_eq!((reported.dev, reported.inode), (netns.dev, netns.inode));
    assert_eq!(first.status.interfaces[0].mtu, Some(1400));
    assert!(p
        .fx
        .pod
        .addresses("eth0")
        .contains(&"10.10.0.5/24".to_string()));
    assert!(p.fx.pod.routes().contains("10.20.0.0/16 via 10.10.0.1"));
    assert_eq!(mtu(&p.fx.pod, "eth0"), 1400);
    api.wait_event(&p.name, "Applied").await;

    // A CR change reaches the kernel and the status.
    let changed = api.put_conf(&p.name, spec_v2());
    let second = api.wait_patch(&p.name, changed, |s| s.applied(2)).await;
    measure("CR change -> status Applied", changed, second.at);
    assert!(p
        .fx
        .pod
        .addresses("eth0")
        .contains(&"fd00:10::5/64".to_string()));

    // The pod's own socket answers status and config locally.
    let client = p.client();
    let (code, body) = client.call("GET", "/v1/self/status", "").await;
    assert_eq!(code, 200, "{body}");
    let status: StatusView = serde_json::from_str(&body).expect("status");
    assert!(status.is_applied(), "{status:?}");
    assert_eq!((status.pod.as_str(), status.generation), ("demo-0", 2));
    let (code, body) = client.call("GET", "/v1/self/config", "").await;
    assert_eq!(code, 200, "{body}");
    let config: ConfigView = serde_json::from_str(&body).expect("config");
    assert_eq!(config.generation, 2);
    assert_eq!(config.spec.interfaces[0].addresses.len(), 2);

    // The pod is deleted: its socket closes; nothing is torn down in the kernel.
    api.delete_pod(&p.name);
    let end = Instant::now() + DEADLINE;
    while client.reachable().await {
        assert!(
            Instant::now() < end,
            "@nes still served after the pod was deleted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mtu(&p.fx.pod, "eth0"), 1400, "release never writes");
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn a_netns_without_the_pods_ip_is_refused_and_nothing_is_written() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("clm", "demo-1", "uid-m");
    // The API server says 10.244.0.99; the netns the runtime names holds 10.244.0.5.
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.99"]));
    api.put_conf(&p.name, spec_v1());
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let mut agent = Agent::new(&api, &resolver);
    let started = agent.start();

    let refused = api
        .wait_patch(&p.name, started, |s| {
            s.condition("Degraded").map(|c| (c.0, c.1)) == Some(("True", "NetnsMismatch"))
        })
        .await;
    assert_eq!(
        refused.condition("Applied").map(|c| c.0),
        Some("False"),
        "{:?}",
        refused.status
    );
    api.wait_event(&p.name, "NetnsMismatch").await;
    assert_eq!(
        mtu(&p.fx.pod, "eth0"),
        1500,
        "a wrong pairing is never configured"
    );
    assert!(!p
        .fx
        .pod
        .addresses("eth0")
        .contains(&"10.10.0.5/24".to_string()));
    assert!(
        !p.client().reachable().await,
        "no socket in a netns that is not the pod's"
    );

    // The pod's real IP shows up: now it is the pod's netns.
    let fixed = Instant::now();
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    let applied = api.wait_patch(&p.name, fixed, |s| s.applied(1)).await;
    measure("pod IP corrected -> status Applied", fixed, applied.at);
    assert_eq!(mtu(&p.fx.pod, "eth0"), 1400);
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn a_new_sandbox_gets_the_whole_configuration_again_and_its_own_socket() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let old = ServedPod::new("clr", "demo-2", "uid-r");
    api.put_pod(pod(&old.name, &old.uid, &["10.244.0.5"]));
    api.put_conf(&old.name, spec_v1());
    resolver.set(&old.uid, "sb-1", &old.fx.pod.path());
    let mut agent = Agent::new(&api, &resolver);
    let started = agent.start();
    api.wait_patch(&old.name, started, |s| s.applied(1)).await;
    let old_client = old.client();
    assert!(old_client.reachable().await);

    // The pod restarts: a new sandbox with a new netns (the old one still exists, as a
    // sandbox being torn down would).
    let new = PodFixture::new("clr2");
    let restarted = resolver.set(&old.uid, "sb-2", &new.pod.path());
    let new_id = agent::netns::identity(new.pod.path()).expect("identity");
    let applied = api
        .wait_patch(&old.name, restarted, |s| {
            s.applied(1) && s.status.netns.as_ref().map(|n| n.inode) == Some(new_id.inode)
        })
        .await;
    measure(
        "new sandbox (runtime event) -> status Applied in it",
        restarted,
        applied.at,
    );
    assert_eq!(mtu(&new.pod, "eth0"), 1400);
    assert!(new
        .pod
        .addresses("eth0")
        .contains(&"10.10.0.5/24".to_string()));
    let new_client = PodClient::new(&new.pod.path());
    let (code, body) = new_client.call("GET", "/v1/self/status", "").await;
    assert_eq!(code, 200, "{body}");
    let end = Instant::now() + DEADLINE;
    while old_client.reachable().await {
        assert!(Instant::now() < end, "the old sandbox's @nes is still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The sandbox goes away altogether: everything bound in it is closed.
    resolver.forget(&old.uid);
    let end = Instant::now() + DEADLINE;
    while new_client.reachable().await {
        assert!(Instant::now() < end, "@nes outlived its sandbox");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

/// The upgrade report of an agent that re-bound every socket and disturbed nothing, as the
/// operator's rollout gate parses it.
const CLEAN_REPORT: &str =
    r#"{"socketsRebound":true,"writesToConvergedPods":0,"readinessChanges":0}"#;

/// What the operator's rollout gate decides for a one-node cluster whose agent pod (Ready,
/// created long before the gate's timeout) carries `report`.
fn rollout_gate(report: &str) -> operator::install::rollout::Decision {
    use operator::install::rollout::{decide, Input};
    const IMAGE: &str = "nes-agent:0.2.0";
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": AGENT_POD, "namespace": "nes-system",
                     "creationTimestamp": "2020-01-01T00:00:00Z",
                     "annotations": {api::installation::UPGRADE_REPORT_ANNOTATION: report}},
        "spec": {"nodeName": NODE, "containers": [{"name": "nes-agent", "image": IMAGE}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("an agent pod");
    let now = k8s_openapi::jiff::Timestamp::now();
    let agent = operator::controllers::install::agent_pod(&pod, now).expect("the agent's pod");
    let nodes = [NODE.to_string()];
    decide(&Input {
        target_image: IMAGE,
        max_unavailable: 1,
        generation: 1,
        retry: None,
        nodes: &nodes,
        pods: &[agent],
        paused: None,
    })
}

#[test]
fn the_rollout_gate_passes_a_clean_report_and_times_out_without_one() {
    use operator::install::rollout::Decision;
    assert_eq!(rollout_gate(CLEAN_REPORT), Decision::Done);
    for report in [
        "",
        r#"{"socketsRebound":true,"writesToConvergedPods":1,"readinessChanges":0}"#,
        r#"{"socketsRebound":true,"writesToConvergedPods":0,"readinessChanges":2}"#,
    ] {
        assert!(
            matches!(rollout_gate(report), Decision::Pause(_)),
            "{report:?} must pause the rollout"
        );
    }
}

#[tokio::test]
async fn an_agent_restart_rebinds_every_socket_with_zero_netlink_writes() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let a = ServedPod::new("clu", "demo-3", "uid-u");
    let b = ServedPod::new("clv", "demo-4", "uid-v");
    for p in [&a, &b] {
        api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
        api.put_conf(&p.name, spec_v1());
        resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    }
    let mut agent = Agent::new(&api, &resolver);
    agent.own_pod = Some(agent::cluster::upgrade::OwnPod {
        namespace: "nes-system".into(),
        name: AGENT_POD.into(),
    });
    let started = agent.start();
    for p in [&a, &b] {
        api.wait_patch(&p.name, started, |s| s.applied(1)).await;
    }
    // An independent witness in each pod: ip monitor must see no write by nes.
    let witnesses = [
        NetlinkWitness::start(&a.fx.pod).await,
        NetlinkWitness::start(&b.fx.pod).await,
    ];
    let before: Vec<String> = [&a, &b].iter().map(|p| routes(&p.fx.pod)).collect();

    agent.shutdown().await;
    assert!(
        !a.client().reachable().await,
        "a stopped agent holds no socket"
    );
    let restarted = agent.start();
    let clients = [a.client(), b.client()];
    for client in &clients {
        client.connect().await;
    }
    measure(
        "agent restart -> every pod's @nes re-bound",
        restarted,
        Instant::now(),
    );
    for client in &clients {
        let end = Instant::now() + DEADLINE;
        let applied = loop {
            let events = events_of(client).await;
            if let Some(writes) = events.iter().find_map(|e| match e.body {
                EventBody::ConfigApplied { writes, .. } => Some(writes),
                _ => None,
            }) {
                break writes;
            }
            assert!(
                Instant::now() < end,
                "no ConfigApplied after the restart: {events:?}"
            );
        };
        assert_eq!(
            applied, 0,
            "a restarted agent must adopt with zero netlink writes"
        );
    }
    let after: Vec<String> = [&a, &b].iter().map(|p| routes(&p.fx.pod)).collect();
    assert_eq!(before, after);
    // The restarted agent tells the operator's rollout gate so, and the gate lets it pass.
    let (reported, report) = api.wait_upgrade_report(restarted).await;
    measure(
        "agent restart -> upgrade report on its pod",
        restarted,
        reported,
    );
    assert_eq!(report, CLEAN_REPORT);
    assert_eq!(
        rollout_gate(&report),
        operator::install::rollout::Decision::Done
    );
    for (p, witness) in [&a, &b].into_iter().zip(witnesses) {
        let seen = witness.stop().await;
        assert!(
            seen.is_empty(),
            "{}: netlink changes during the restart: {seen:#?}",
            p.name
        );
    }
    assert!(
        !api.event_reasons(&a.name)
            .iter()
            .any(|r| r == "DriftRepaired"),
        "a restart is not drift"
    );
    // No status re-patch in the whole restart window: a CR change closes it (a pod's work,
    // and so its status writes, are in order), and nothing may have been patched before it.
    let fence = Instant::now();
    for p in [&a, &b] {
        api.put_conf(&p.name, spec_v2());
    }
    for p in [&a, &b] {
        api.wait_patch(&p.name, fence, |s| s.applied(2)).await;
    }
    let repatched: Vec<String> = api
        .patches()
        .into_iter()
        .filter(|p| p.at >= restarted && p.at < fence)
        .map(|p| p.name)
        .collect();
    assert_eq!(
        repatched,
        Vec::<String>::new(),
        "an unchanged status was patched again after the restart"
    );
    // Writes asked for by a changed CR are not writes into converged pods.
    assert_eq!(
        api.upgrade_reports(restarted),
        vec![CLEAN_REPORT.to_string()]
    );
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn drift_is_restored_with_an_event_and_a_flapping_link_cannot_flood_status() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("cld", "demo-5", "uid-d");
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    // cni-peer is declared with nothing to set: its live state is reported, never enforced.
    let mut spec = spec_v1();
    spec["interfaces"]
        .as_array_mut()
        .expect("interfaces")
        .push(json!({"name": "cni-peer"}));
    api.put_conf(&p.name, spec);
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let mut agent = Agent::new(&api, &resolver);
    let started = agent.start();
    api.wait_patch(&p.name, started, |s| s.applied(1)).await;

    let drifted = Instant::now();
    p.fx.pod.ip(&["addr", "del", "10.10.0.5/24", "dev", "eth0"]);
    assert!(
        eventually(DEADLINE, || p
            .fx
            .pod
            .addresses("eth0")
            .contains(&"10.10.0.5/24".to_string()))
        .await,
        "drift not restored"
    );
    measure(
        "address removed from outside -> restored",
        drifted,
        Instant::now(),
    );
    api.wait_event(&p.name, "DriftRepaired").await;

    // A link flapping 40 times, each state held ~15 ms so that the agent sees most of
    // them: patches stay within the budget (burst 4, then 1 per 250 ms).
    let flap = Instant::now();
    for _ in 0..40 {
        for state in ["down", "up"] {
            p.fx.pod.ip(&["link", "set", "cni-peer", state]);
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    let flapped = flap.elapsed();
    // Settled once the newest patch reports the final state (up). It may predate the
    // flapping: a read that waited for the budget and found the link up again, as last
    // reported, rightly sends nothing; the coalescer never sends an unchanged status.
    let eth0_up = |x: &Patched| {
        x.status
            .interfaces
            .iter()
            .any(|i| i.name == "eth0" && i.oper_state.as_deref() == Some("up"))
    };
    assert!(
        eventually(DEADLINE, || api
            .patches()
            .iter()
            .rev()
            .find(|x| x.name == p.name)
            .is_some_and(eth0_up))
        .await,
        "the final state of the flapping link was never reported"
    );
    let window = flap.elapsed();
    let patches = api
        .patches()
        .iter()
        .filter(|x| x.name == p.name && x.at >= flap)
        .count();
    let budget = 4 + (window.as_millis() / 250) as usize + 1;
    println!(
        "MEASURE 80 link changes in {:.0} ms -> {patches} status patches (budget {budget})",
        flapped.as_secs_f64() * 1e3
    );
    assert!(
        patches <= budget,
        "{patches} patches for a flapping link, budget {budget}"
    );
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn a_process_in_one_pods_netns_reaches_only_its_own_pod() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let a = ServedPod::new("cli", "demo-6", "uid-i");
    let b = ServedPod::new("clj", "demo-7", "uid-j");
    for (p, spec) in [
        (&a, spec_v1()),
        (&b, json!({"interfaces": [{"name": "eth0", "mtu": 1300}]})),
    ] {
        api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
        api.put_conf(&p.name, spec);
        resolver.set(&p.uid, &format!("sb-{}", p.uid), &p.fx.pod.path());
    }
    let mut agent = Agent::new(&api, &resolver);
    let started = agent.start();
    for p in [&a, &b] {
        api.wait_patch(&p.name, started, |s| s.applied(1)).await;
    }
    for (p, other, mtu) in [(&a, &b, 1400), (&b, &a, 1300)] {
        let client = p.client();
        let (code, body) = client.call("GET", "/v1/self/status", "").await;
        assert_eq!(code, 200, "{body}");
        let status: StatusView = serde_json::from_str(&body).expect("status");
        assert_eq!(status.pod, p.name);
        assert_eq!(status.status.interfaces[0].mtu, Some(mtu));
        let (code, _) = client
            .call("GET", &format!("/v1/self/status?pod={}", other.name), "")
            .await;
        assert_eq!(code, 403, "pod {} reached pod {}", p.name, other.name);
    }
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

// === forwarding ===

#[tokio::test]
async fn pod_socket_writes_are_forwarded_to_the_cliserver_and_its_answer_relayed() {
    if !require_root() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("clf", "demo-8", "uid-f");
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let mut agent = Agent::new(&api, &resolver);
    let view = ConfigView {
        pod: p.name.clone(),
        generation: 1,
        spec: serde_json::from_value(spec_v1()).expect("spec"),
        owners: Default::default(),
    };
    let conflict = ProblemDetails::new(409, "conflict with another manager", "mtu is owned by ops");
    let invalid = json!({"type": "https://nes.network-config.io/problems/invalid",
        "title": "invalid network configuration", "status": 422,
        "detail": "spec.interfaces[0].mtu: below 68",
        "errors": [{"field": "spec.interfaces[0].mtu", "message": "below 68"}]});
    let (url, seen) = stub_cliserver(
        agent.dir.path(),
        vec![
            (200, serde_json::to_value(&view).expect("view")),
            (409, serde_json::to_value(&conflict).expect("problem")),
            (422, invalid.clone()),
            (200, serde_json::to_value(&view).expect("view")),
        ],
    )
    .await;
    agent.cliserver = url;
    agent.start();
    let client = p.client();
    let fragment = spec_v1();

    let asked = Instant::now();
    let (code, body) = client
        .call("PUT", "/v1/self/config?manager=app", &fragment.to_string())
        .await;
    measure(
        "pod socket PUT -> cliserver answer relayed",
        asked,
        Instant::now(),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<ConfigView>(&body).expect("view"),
        view
    );

    // The token rotates: the next request carries the new one.
    std::fs::write(agent.token_file(), "token-2\n").expect("rotate");
    let (code, body) = client
        .call("PUT", "/v1/self/config?manager=app", &fragment.to_string())
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        serde_json::from_str::<ProblemDetails>(&body).expect("problem"),
        conflict
    );
    let (code, body) = client
        .call("PUT", "/v1/self/config?manager=app", &fragment.to_string())
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("json"),
        invalid
    );
    let (code, body) = client
        .call("DELETE", "/v1/self/config?manager=app", "")
        .await;
    assert_eq!(code, 200, "{body}");

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 4, "{requests:?}");
    let path = format!("/v1/namespaces/{NS}/pods/{}/config?manager=pod:app", p.name);
    for (i, s) in requests.iter().enumerate() {
        assert_eq!(s.uri, path);
        assert_eq!(s.pod_uid, p.uid);
        let token = if i == 0 {
            "Bearer token-1"
        } else {
            "Bearer token-2"
        };
        assert_eq!(s.token, token, "request {i}");
    }
    assert_eq!(
        requests
            .iter()
            .map(|s| s.method.as_str())
            .collect::<Vec<_>>(),
        ["PUT", "PUT", "PUT", "DELETE"]
    );
    let forwarded: api::NetworkConfigurationSpec =
        serde_json::from_value(requests[0].body.clone()).expect("a spec fragment");
    assert_eq!(
        forwarded,
        serde_json::from_value(fragment.clone()).expect("spec")
    );
    assert_eq!(
        requests[3].body,
        serde_json::Value::Null,
        "DELETE has no body"
    );

    // A malformed fragment is refused by the socket itself and never forwarded.
    let (code, _) = client
        .call("PUT", "/v1/self/config?manager=app", r#"{"bogus": 1}"#)
        .await;
    assert_eq!(code, 400);
    assert_eq!(seen.lock().unwrap().len(), 4, "never forwarded");
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn an_unreachable_cliserver_is_a_clear_503_and_changes_nothing() {
    if !require_root() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("clk", "demo-9", "uid-k");
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(&p.name, spec_v1());
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let mut agent = Agent::new(&api, &resolver);
    // A valid CA (the stub's) and token, but nothing listens on the cliserver's port.
    let _stub = stub_cliserver(agent.dir.path(), vec![]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    agent.cliserver = format!(
        "https://127.0.0.1:{}",
        closed.local_addr().expect("addr").port()
    );
    drop(closed);
    let started = agent.start();
    api.wait_patch(&p.name, started, |s| s.applied(1)).await;
    let client = p.client();
    let config = || client.call("GET", "/v1/self/config", "");
    let before = (config().await, routes(&p.fx.pod), mtu(&p.fx.pod, "eth0"));
    assert_eq!(before.2, 1400, "the configuration is applied");

    let change = json!({"interfaces": [{"name": "eth0", "mtu": 1300}]}).to_string();
    for (method, body) in [("PUT", change.as_str()), ("DELETE", "")] {
        let (code, answer) = client
            .call(method, "/v1/self/config?manager=app", body)
            .await;
        assert_eq!(code, 503, "{method}: {answer}");
        let problem: ProblemDetails = serde_json::from_str(&answer).expect("problem json");
        assert_eq!(problem.title, "cliserver unreachable");
        let detail = problem.detail.unwrap_or_default();
        assert!(
            detail.contains("refused") && !detail.contains("CA file"),
            "{method}: not the unreachable path: {detail}"
        );
    }
    let after = (config().await, routes(&p.fx.pod), mtu(&p.fx.pod, "eth0"));
    assert_eq!(before, after, "a refused write changed the pod");
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn a_squatted_pod_socket_degrades_the_pod_with_an_event() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("cls", "demo-10", "uid-s");
    // Something in the pod holds @nes before the agent arrives (and does not answer as nes).
    let squatter = p
        .client()
        .exec
        .run(|| {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"nes")?;
            std::os::unix::net::UnixListener::bind_addr(&addr)
        })
        .await
        .expect("run in netns")
        .expect("squat @nes");
    squatter.set_nonblocking(true).expect("nonblocking");
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(&p.name, spec_v1());
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let mut agent = Agent::new(&api, &resolver);
    let started = agent.start();
    let degraded = api
        .wait_patch(&p.name, started, |s| {
            s.condition("Degraded").map(|c| (c.0, c.1)) == Some(("True", "SocketSquatted"))
        })
        .await;
    assert_eq!(degraded.status.observed_generation, Some(1));
    api.wait_event(&p.name, "SocketSquatted").await;
    // The configuration itself is still kept applied.
    assert!(
        eventually(DEADLINE, || mtu(&p.fx.pod, "eth0") == 1400).await,
        "configuration not applied"
    );
    drop(squatter);
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn a_new_sandbox_seen_only_through_the_pod_watch_is_configured_too() {
    if !require_root() {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let old = ServedPod::new("clw", "demo-11", "uid-w");
    api.put_pod(pod(&old.name, &old.uid, &["10.244.0.5"]));
    api.put_conf(&old.name, spec_v1());
    resolver.set(&old.uid, "sb-1", &old.fx.pod.path());
    let mut agent = Agent::new(&api, &resolver);
    let started = agent.start();
    api.wait_patch(&old.name, started, |s| s.applied(1)).await;

    // No runtime event: the kubelet's pod status update (the shim restarted) is the news.
    let new = PodFixture::new("clw2");
    resolver.set_quietly(&old.uid, "sb-2", &new.pod.path());
    let mut restarted_pod = pod(&old.name, &old.uid, &["10.244.0.5"]);
    restarted_pod["status"]["containerStatuses"] = json!([{"name": "nes-shim", "restartCount": 1, "ready": false, "image": "nes",
                "imageID": "", "started": true, "state": {"running": {}}}]);
    let changed = Instant::now();
    api.put_pod(restarted_pod);
    let new_id = agent::netns::identity(new.pod.path()).expect("identity");
    let applied = api
        .wait_patch(&old.name, changed, |s| {
            s.applied(1) && s.status.netns.as_ref().map(|n| n.inode) == Some(new_id.inode)
        })
        .await;
    measure(
        "new sandbox (pod watch only) -> status Applied in it",
        changed,
        applied.at,
    );
    assert_eq!(mtu(&new.pod, "eth0"), 1400);
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}
