//! The standalone agent end to end: real namespaces, the real agent, real `@nes` sockets.
//! Each test runs its own agent on its own netns directory, with a throwaway "host".

use nes_tests::common;

use std::time::{Duration, Instant};

use api::wire::{ConfigView, Event, EventBody, ProblemDetails, StatusView};
use common::{eventually, process_holds_netns, require_root, NetlinkWitness, Netns};
use nes_common::sync::lock;
use nes_tests::client::PodClient;
use nes_tests::standalone::Standalone;

const DEADLINE: Duration = Duration::from_secs(10);

/// The agent of these tests: its own netns directory rescanned every 500 ms, started.
fn started_agent() -> Standalone {
    let mut agent = Standalone::new("sah").with_rescan(Duration::from_millis(500));
    agent.start();
    agent
}

fn pod_with_eth0(tag: &str) -> Netns {
    let ns = Netns::with_veth(tag, "eth0", "peer0");
    ns.ip(&["addr", "add", "10.244.0.5/24", "dev", "eth0"]);
    ns
}

const APP_CONFIG: &str = r#"
interfaces:
- name: eth0
  type: existing
  mtu: 1400
  addresses: [10.10.0.5/24, "fd00:10::5/64"]
- name: br0
  type: bridge
  addresses: [192.168.50.1/24]
routes:
- dst: 10.20.0.0/16
  via: 10.10.0.1
  dev: eth0
- dst: "fd00:20::/64"
  dev: eth0
"#;

#[tokio::test]
async fn a_pod_configures_itself_over_its_socket_and_the_kernel_has_it() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa1");
    agent.add_pod(&pod);
    let client = PodClient::new(&pod.path());
    let t0 = Instant::now();
    let (code, body) = client.put("app", APP_CONFIG).await;
    assert_eq!(code, 200, "{body}");
    let view: ConfigView = serde_json::from_str(&body).expect("config view");
    assert_eq!((view.pod.as_str(), view.generation), (pod.name.as_str(), 1));
    let status = client.wait_applied().await;
    eprintln!(
        "MEASURE configure -> applied (status poll): {:?}",
        t0.elapsed()
    );
    assert!(
        pod.addresses("eth0").contains(&"10.10.0.5/24".to_string()),
        "{:?}",
        pod.addresses("eth0")
    );
    assert!(
        pod.addresses("eth0").contains(&"10.244.0.5/24".to_string()),
        "the CNI's address must stay"
    );
    assert!(pod
        .addresses("br0")
        .contains(&"192.168.50.1/24".to_string()));
    assert!(
        pod.routes().contains("10.20.0.0/16 via 10.10.0.1"),
        "{}",
        pod.routes()
    );
    assert_eq!(pod.ip_json(&["link", "show", "eth0"])[0]["mtu"], 1400);
    let br0 = status
        .status
        .interfaces
        .iter()
        .find(|i| i.name == "br0")
        .expect("br0 status");
    assert_eq!(br0.state, api::ObjectState::Applied);
    assert!(br0.index.is_some() && br0.mac.is_some());
    // the admin socket sees the same pod
    let (code, body) = agent
        .admin("GET", &format!("/v1/self/config?pod={}", pod.name), "")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<ConfigView>(&body)
            .expect("view")
            .spec,
        view.spec
    );
}

#[tokio::test]
async fn two_managers_merge_and_a_conflicting_field_is_409_naming_its_owner() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa2");
    agent.add_pod(&pod);
    let client = PodClient::new(&pod.path());
    assert_eq!(
        client
            .put(
                "app",
                "interfaces: [{name: eth0, addresses: [10.1.0.1/24]}]"
            )
            .await
            .0,
        200
    );
    assert_eq!(
        client
            .put(
                "ops",
                "interfaces: [{name: eth0, mtu: 1300, addresses: [10.1.0.2/24]}]"
            )
            .await
            .0,
        200
    );
    client.wait_applied().await;
    let addrs = pod.addresses("eth0");
    assert!(
        addrs.contains(&"10.1.0.1/24".into()) && addrs.contains(&"10.1.0.2/24".into()),
        "{addrs:?}"
    );
    let (code, body) = client
        .put("app", "interfaces: [{name: eth0, mtu: 9000}]")
        .await;
    assert_eq!(code, 409, "{body}");
    let problem: ProblemDetails = serde_json::from_str(&body).expect("problem json");
    assert_eq!(problem.errors[0].field, "spec.interfaces[name=eth0].mtu");
    assert!(problem.detail.unwrap_or_default().contains("\"pod:ops\""));
    // app's earlier fragment still stands
    let (_, body) = client.call_retrying("GET", "/v1/self/config", "").await;
    let view: ConfigView = serde_json::from_str(&body).expect("view");
    assert_eq!(view.owners.interfaces["eth0"], ["pod:app", "pod:ops"]);
    assert_eq!(view.generation, 2);
    // removing ops takes away only what ops added
    assert_eq!(
        client
            .call_retrying("DELETE", "/v1/self/config?manager=ops", "")
            .await
            .0,
        200
    );
    assert!(
        eventually(DEADLINE, || !pod
            .addresses("eth0")
            .contains(&"10.1.0.2/24".into()))
        .await
    );
    assert!(pod.addresses("eth0").contains(&"10.1.0.1/24".into()));
    assert!(pod.addresses("eth0").contains(&"10.244.0.5/24".into()));
}

#[tokio::test]
async fn bad_input_gets_problem_json_and_changes_nothing() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa3");
    agent.add_pod(&pod);
    let client = PodClient::new(&pod.path());
    assert_eq!(
        client
            .put(
                "app",
                "interfaces: [{name: eth0, addresses: [10.3.0.1/24]}]"
            )
            .await
            .0,
        200
    );
    let huge = format!(
        "{{\"interfaces\":[{{\"name\":\"eth0\",\"addresses\":[\"{}\"]}}]}}",
        "x".repeat(2 << 20)
    );
    let limited = format!("limited to {} bytes", api::limits::MAX_REQUEST_BODY_BYTES);
    let cases: Vec<(String, &str, u16, &str)> = vec![
        (
            "/v1/self/config?manager=app".into(),
            r#"{"interfaces":[{"name":"eth0","vlanId":5}]}"#,
            422,
            "spec.interfaces[0].vlanId",
        ),
        (
            "/v1/self/config?manager=app".into(),
            r#"{"interfaces":[{"name":"eth0","colour":"red"}]}"#,
            400,
            "unknown field `colour`",
        ),
        (
            "/v1/self/config?manager=app".into(),
            "{not json",
            400,
            "malformed",
        ),
        ("/v1/self/config?manager=app".into(), &huge, 413, &limited),
        ("/v1/self/config".into(), r#"{}"#, 400, "manager"),
        (
            "/v1/self/config?manager=a%20b".into(),
            r#"{}"#,
            400,
            "not a valid manager name",
        ),
        (
            "/v1/self/config?manager=app&color=1".into(),
            r#"{}"#,
            400,
            "not a parameter",
        ),
        (
            format!("/v1/self/config?manager=app&pod={}x", pod.name),
            r#"{}"#,
            403,
            "serves only that pod",
        ),
    ];
    for (uri, body, want, text) in cases {
        let (code, answer) = client.call_retrying("PUT", &uri, body).await;
        assert_eq!(code, want, "{uri}: {answer}");
        let problem: ProblemDetails = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{uri}: not problem json ({e}): {answer}"));
        assert!(answer.contains(text), "{uri}: {problem:?}");
    }
    let (_, body) = client.call_retrying("GET", "/v1/self/config", "").await;
    let view: ConfigView = serde_json::from_str(&body).expect("view");
    assert_eq!(
        view.generation, 1,
        "a rejected request changed the configuration"
    );
    assert_eq!(view.spec.interfaces[0].addresses, ["10.3.0.1/24"]);
}

/// A file of a pod's state that cannot be replaced or written while this lives: a
/// non-empty directory stands at its path, so the rename that replaces it, or the write
/// into it, fails. The other files beside it can still be written (as when a full disk
/// refuses only the larger of two writes).
struct Unreplaceable {
    record: std::path::PathBuf,
    aside: std::path::PathBuf,
}

impl Unreplaceable {
    /// The pod's record: nothing but the order of saving and applying keeps an unsaved
    /// change off the kernel.
    fn block(state_dir: &std::path::Path, pod: &str) -> Self {
        Self::at(state_dir.join(format!("{pod}.json")))
    }

    fn at(record: std::path::PathBuf) -> Self {
        let mut aside = record.clone().into_os_string();
        aside.push(".aside");
        let aside = std::path::PathBuf::from(aside);
        std::fs::rename(&record, &aside).expect("move the file aside");
        std::fs::create_dir(&record).expect("a directory in its place");
        std::fs::write(record.join("keep"), b"").expect("not empty");
        Self { record, aside }
    }
}

impl Drop for Unreplaceable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.record);
        let _ = std::fs::rename(&self.aside, &self.record);
    }
}

#[tokio::test]
async fn a_desired_state_that_cannot_be_saved_is_a_500_and_changes_nothing() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa9");
    agent.add_pod(&pod);
    let client = PodClient::new(&pod.path());
    let first = "interfaces: [{name: eth0, addresses: [10.3.0.1/24]}]";
    let second = "interfaces: [{name: eth0, addresses: [10.3.0.2/24]}]";
    assert_eq!(client.put("app", first).await.0, 200);
    client.wait_applied().await;
    let witness = NetlinkWitness::start(&pod).await;
    let blocked = Unreplaceable::block(&agent.options().state_dir, &pod.name);
    let (code, answer) = client.put("app", second).await;
    assert_eq!(code, 500, "{answer}");
    let problem: ProblemDetails = serde_json::from_str(&answer).expect("problem json");
    assert!(problem.title.contains("cannot persist"), "{problem:?}");
    let (_, body) = client.call_retrying("GET", "/v1/self/config", "").await;
    let view: ConfigView = serde_json::from_str(&body).expect("view");
    assert_eq!(view.generation, 1, "the refused change took a generation");
    assert_eq!(view.spec.interfaces[0].addresses, ["10.3.0.1/24"]);
    let status = client.status().await;
    assert!(
        status
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "StateNotWritable"),
        "{:#?}",
        status.status.conditions
    );
    let seen = witness.stop().await;
    assert!(
        !pod.ip(&["addr", "show", "eth0"]).contains("10.3.0.2/24"),
        "an unsaved change reached the kernel: {seen:#?}"
    );
    assert!(
        seen.is_empty(),
        "netlink changes for an unsaved change: {seen:#?}"
    );
    // Once the record can be replaced again, the same change is the next generation.
    drop(blocked);
    let (code, answer) = client.put("app", second).await;
    assert_eq!(code, 200, "{answer}");
    let view: ConfigView = serde_json::from_str(&answer).expect("view");
    assert_eq!(view.generation, 2);
    client.wait_applied().await;
    assert!(pod.ip(&["addr", "show", "eth0"]).contains("10.3.0.2/24"));
}

/// The pass of a change goes on once its record is written, while its power-loss copy is
/// synced. A change whose copy cannot be synced is a 500 and is not kept: the record and
/// the kernel end as they were, whether its pass wrote before the failure or not.
#[tokio::test]
async fn a_change_whose_sync_fails_is_a_500_and_taken_back() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa10");
    agent.add_pod(&pod);
    let client = PodClient::new(&pod.path());
    let first = "interfaces: [{name: eth0, addresses: [10.3.1.1/24]}]";
    let second = "interfaces: [{name: eth0, addresses: [10.3.1.1/24, 10.3.1.2/24]}]";
    assert_eq!(client.put("app", first).await.0, 200);
    client.wait_applied().await;
    // The power-loss copy cannot be written: the record is written, its sync fails.
    let blocked = Unreplaceable::at(agent.options().state_dir.join("journal").join(&pod.name));
    let (code, answer) = client.put("app", second).await;
    assert_eq!(code, 500, "{answer}");
    let (_, body) = client.call_retrying("GET", "/v1/self/config", "").await;
    let view: ConfigView = serde_json::from_str(&body).expect("view");
    assert_eq!(
        view.generation, 1,
        "the change that was not kept took a generation"
    );
    let record =
        std::fs::read_to_string(agent.options().state_dir.join(format!("{}.json", pod.name)))
            .expect("the record");
    assert!(
        !record.contains("10.3.1.2"),
        "the record kept the change: {record}"
    );
    let as_kept = || {
        let addresses = pod.addresses("eth0");
        addresses.iter().any(|a| a == "10.3.1.1/24")
            && !addresses.iter().any(|a| a == "10.3.1.2/24")
    };
    assert!(
        eventually(DEADLINE, as_kept).await,
        "the kernel did not go back to the kept record: {:?}",
        pod.addresses("eth0")
    );
    drop(blocked);
    let (code, answer) = client.put("app", second).await;
    assert_eq!(code, 200, "{answer}");
    client.wait_applied().await;
    assert!(pod.addresses("eth0").iter().any(|a| a == "10.3.1.2/24"));
}

#[tokio::test]
async fn an_agent_restart_adopts_the_applied_state_with_zero_netlink_writes() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa4");
    agent.add_pod(&pod);
    let client = PodClient::new(&pod.path());
    assert_eq!(client.put("app", APP_CONFIG).await.0, 200);
    client.wait_applied().await;
    // An independent witness: ip monitor in the pod must see no write by nes.
    let witness = NetlinkWitness::start(&pod).await;
    let before = pod.ip(&["-br", "addr"]);
    agent.restart().await;
    let mut events = client.events(None).await;
    let seen = events
        .until(|e| {
            matches!(
                e.body,
                EventBody::ConfigApplied { .. } | EventBody::ConfigFailed { .. }
            )
        })
        .await;
    let last = seen.last().expect("an event");
    assert!(
        matches!(
            last.body,
            EventBody::ConfigApplied {
                writes: 0,
                generation: 1
            }
        ),
        "{last:?}"
    );
    assert_eq!(
        pod.ip(&["-br", "addr"]),
        before,
        "the restart changed the pod's addresses"
    );
    client.wait_applied().await;
    let seen = witness.stop().await;
    assert!(
        seen.is_empty(),
        "netlink changes during the restart: {seen:#?}"
    );
}

/// Log lines of everything that runs on this thread (the agents of a current-thread test).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn contain(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&lock(&self.0)).contains(needle)
    }
}

/// Two agents overlapping on a node (an upgrade): the newcomer finds `@nes` held by a root
/// peer that answers as a nes agent, waits without degrading the pod, and serves `@nes` once
/// the old agent has gone.
#[tokio::test]
async fn a_second_agent_waits_for_the_agent_holding_at_nes_and_takes_over_when_it_goes() {
    if !require_root() {
        return;
    }
    let logs = Logs::default();
    let writer = logs.clone();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let mut old = started_agent();
    let pod = pod_with_eth0("sa10");
    old.add_pod(&pod);
    let client = PodClient::new(&pod.path());
    assert_eq!(client.put("app", APP_CONFIG).await.0, 200);
    client.wait_applied().await;

    // The newcomer has its own state directory: what @nes answers tells the two apart.
    let mut new = started_agent();
    new.add_pod(&pod);
    assert!(
        eventually(DEADLINE, || logs
            .contain("waiting for the other agent to release @nes"))
        .await,
        "the newcomer never found @nes held by the other agent"
    );
    let (code, body) = new
        .admin("GET", &format!("/v1/self/status?pod={}", pod.name), "")
        .await;
    assert_eq!(code, 200, "{body}");
    let status: StatusView = serde_json::from_str(&body).expect("status json");
    assert!(
        !status
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True"),
        "an overlap is not squatting: {status:?}"
    );
    assert!(!logs.contain("pod socket squatted"));
    let generation = |body: &str| -> i64 {
        serde_json::from_str::<ConfigView>(body)
            .expect("config view")
            .generation
    };
    let (_, body) = client.call_retrying("GET", "/v1/self/config", "").await;
    assert_eq!(generation(&body), 1, "the old agent still serves @nes");

    old.shutdown().await;
    let end = Instant::now() + DEADLINE;
    loop {
        let (_, body) = client.call_retrying("GET", "/v1/self/config", "").await;
        if generation(&body) == 0 {
            break;
        }
        assert!(Instant::now() < end, "the newcomer never took @nes over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    new.shutdown().await;
}

#[tokio::test]
async fn watch_sees_a_link_go_down_and_up_in_order_and_since_replays_without_gaps() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa5");
    agent.add_pod(&pod);
    let client = PodClient::new(&pod.path());
    assert_eq!(
        client
            .put(
                "app",
                "interfaces: [{name: eth0, addresses: [10.5.0.1/24]}]"
            )
            .await
            .0,
        200
    );
    client.wait_applied().await;
    let mut events = client.events(None).await;
    events
        .until(|e| matches!(e.body, EventBody::ConfigApplied { .. }))
        .await;
    pod.ip(&["link", "set", "peer0", "down"]);
    let down = events
        .until(|e| matches!(&e.body, EventBody::LinkDown { ifname } if ifname == "eth0"))
        .await;
    pod.ip(&["link", "set", "peer0", "up"]);
    let up = events
        .until(|e| matches!(&e.body, EventBody::LinkUp { ifname } if ifname == "eth0"))
        .await;
    let all: Vec<&Event> = down.iter().chain(up.iter()).collect();
    assert!(
        all.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "sequence has gaps: {all:?}"
    );
    // resume right after the LinkDown: the next events, in order, are replayed
    let down_seq = down.last().expect("down").seq;
    let mut again = client.events(Some(down_seq)).await;
    let replay = again
        .until(|e| matches!(&e.body, EventBody::LinkUp { ifname } if ifname == "eth0"))
        .await;
    assert_eq!(replay.first().map(|e| e.seq), Some(down_seq + 1));
    assert_eq!(replay.last().map(|e| e.seq), up.last().map(|e| e.seq));
    // a sequence from before this agent started is gone, and says where the buffer begins
    let (code, body) = client
        .call_retrying("GET", "/v1/self/events?since=5", "")
        .await;
    assert_eq!(code, 410, "{body}");
    assert!(serde_json::from_str::<ProblemDetails>(&body)
        .expect("problem")
        .oldest_sequence
        .is_some());
}

#[tokio::test]
async fn a_pod_reaches_only_its_own_configuration_and_the_host_reaches_none() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let (a, b) = (pod_with_eth0("sa6a"), pod_with_eth0("sa6b"));
    agent.add_pod(&a);
    agent.add_pod(&b);
    let (ca, cb) = (PodClient::new(&a.path()), PodClient::new(&b.path()));
    assert_eq!(
        ca.put(
            "app",
            "interfaces: [{name: eth0, addresses: [10.6.0.1/24]}]"
        )
        .await
        .0,
        200
    );
    assert_eq!(
        cb.put(
            "app",
            "interfaces: [{name: eth0, addresses: [10.6.0.2/24]}]"
        )
        .await
        .0,
        200
    );
    let (_, body) = ca.call_retrying("GET", "/v1/self/config", "").await;
    assert_eq!(
        serde_json::from_str::<ConfigView>(&body).expect("view").pod,
        a.name
    );
    let (code, _) = ca
        .call_retrying("GET", &format!("/v1/self/config?pod={}", b.name), "")
        .await;
    assert_eq!(code, 403, "pod A reached pod B");
    let (code, _) = ca.call_retrying("GET", "/v1/pods", "").await;
    assert_eq!(code, 403);
    ca.wait_applied().await;
    assert!(!b.addresses("eth0").contains(&"10.6.0.1/24".into()));
    // the test process itself is in the (real) host namespace: no @nes there
    let host = std::os::unix::net::SocketAddr::from_abstract_name(b"nes").expect("addr");
    use std::os::linux::net::SocketAddrExt;
    assert!(
        std::os::unix::net::UnixStream::connect_addr(&host).is_err(),
        "@nes is reachable from the host"
    );
    // the admin socket is root-only
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent.options().admin_socket)
        .expect("admin socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_deleted_namespace_is_released_and_its_desired_state_kept_for_a_restart() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa7");
    agent.add_pod(&pod);
    let inode = agent::netns::identity(pod.path()).expect("identity").inode;
    {
        let client = PodClient::new(&pod.path());
        assert_eq!(
            client
                .put(
                    "app",
                    "interfaces: [{name: eth0, addresses: [10.7.0.1/24]}]"
                )
                .await
                .0,
            200
        );
        let _stream = client.events(None).await; // an open connection must not pin the namespace
        client.wait_applied().await;
        agent.remove_pod(&pod);
    }
    let mut listed = true;
    for _ in 0..500 {
        let (_, body) = agent.admin("GET", "/v1/pods", "").await;
        listed = body.contains(&pod.name);
        if !listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!listed, "the agent still serves a removed namespace");
    assert!(
        eventually(DEADLINE, || !process_holds_netns(inode)).await,
        "the agent still holds the namespace open"
    );
    assert!(
        agent
            .options()
            .state_dir
            .join(format!("{}.json", pod.name))
            .exists(),
        "desired state must survive for a pod restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_all_get_their_answers() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let pod = pod_with_eth0("sa8");
    agent.add_pod(&pod);
    let client = std::sync::Arc::new(PodClient::new(&pod.path()));
    assert_eq!(
        client
            .put(
                "app",
                "interfaces: [{name: eth0, addresses: [10.8.0.1/24]}]"
            )
            .await
            .0,
        200
    );
    client.wait_applied().await;
    let t0 = Instant::now();
    let calls = (0..200).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.call_retrying("GET", "/v1/self/status", "").await })
    });
    let answers = futures::future::join_all(calls).await;
    let elapsed = t0.elapsed();
    for answer in answers {
        let (code, body) = answer.expect("task");
        assert_eq!(code, 200, "{body}");
        let s: StatusView = serde_json::from_str(&body).expect("status");
        assert_eq!(s.pod, pod.name);
        assert!(s.is_applied());
    }
    eprintln!(
        "MEASURE 200 concurrent status reads in {elapsed:?} ({:.0}/s)",
        200.0 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn a_subscription_relays_the_selected_pods_live_and_goes_with_its_owners_namespace() {
    if !require_root() {
        return;
    }
    let mut agent = started_agent();
    let (web, db, mon) = (
        pod_with_eth0("sacw"),
        pod_with_eth0("sacd"),
        pod_with_eth0("sacm"),
    );
    for ns in [&web, &db, &mon] {
        agent.add_pod(ns);
    }
    let (web_client, mon_client) = (PodClient::new(&web.path()), PodClient::new(&mon.path()));
    let care = serde_json::json!({"name": "watch-web",
        "spec": {"podNames": [web.name], "events": ["link"]}});
    let (code, body) = mon_client
        .call_retrying("POST", "/v1/self/networkcares", &care.to_string())
        .await;
    assert_eq!(code, 201, "{body}");
    let view: api::wire::CareView = serde_json::from_str(&body).expect("view");
    assert_eq!(
        (view.name.as_str(), view.spec.pod_names.clone()),
        ("watch-web", vec![web.name.clone()])
    );
    let (code, _) = mon_client
        .call_retrying("POST", "/v1/self/networkcares", &care.to_string())
        .await;
    assert_eq!(code, 409, "a second one of the same name");
    let hook = serde_json::json!({"name": "hook", "spec": {"podNames": [web.name],
        "delivery": {"mode": "webhook", "url": "https://receiver.example/x"}}});
    let (code, body) = mon_client
        .call_retrying("POST", "/v1/self/networkcares", &hook.to_string())
        .await;
    assert_eq!(code, 501, "{body}");

    // Kept across an agent restart.
    agent.restart().await;
    let uri = "/v1/self/networkcares/watch-web/events";
    let mut reader = web_client.stream(uri).await;
    db.ip(&["link", "set", "peer0", "mtu", "1300"]);
    web.ip(&["addr", "add", "10.9.9.9/32", "dev", "peer0"]);
    let changed = Instant::now();
    web.ip(&["link", "set", "peer0", "mtu", "1400"]);
    let seen = reader
        .until(|e| matches!(&e.body, EventBody::MtuChanged { ifname, new: 1400, .. } if ifname == "peer0"))
        .await;
    println!(
        "MEASURE standalone: netlink change -> subscriber: {:.1} ms (`ip` included)",
        changed.elapsed().as_secs_f64() * 1e3
    );
    for e in &seen {
        assert_eq!(e.pod, web.name, "only the selected pod: {seen:?}");
        assert_eq!(
            e.body.kind(),
            api::care::EventKind::Link,
            "only links: {seen:?}"
        );
    }
    assert!(
        seen.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "gapless: {seen:?}"
    );

    // The owner's namespace deleted: the subscription goes, its readers' streams end.
    agent.remove_pod(&mon);
    assert!(reader.ends().await, "delivery stops with the owner");
    let (code, body) = web_client.call_retrying("GET", uri, "").await;
    assert_eq!(code, 404, "{body}");
    let kept = std::fs::read_to_string(agent.dir.path().join("state/networkcares.json"))
        .expect("subscriptions file");
    assert!(!kept.contains("watch-web"), "{kept}");
    agent.shutdown().await;
}
