//! The standalone agent's `--policy FILE` at the pod socket: a host bridge and an address
//! outside the allowed range are refused through `@nes` with a 403 naming the policy and
//! the field, with zero netlink writes in the pod and on the host; an allowed request still
//! applies; a stored configuration a policy forbids is never applied.

use nes_tests::common;
use nes_tests::standalone::Standalone;

use api::wire::{ConfigView, ProblemDetails};
use common::{eventually, host_access, require_kind, require_root, NetlinkWitness, Netns};
use nes_tests::client::PodClient;
use serde_json::json;
use std::time::Duration;

const POLICY: &str = r#"
apiVersion: nes.network-config.io/v1alpha1
kind: NetworkConfigurationPolicy
metadata:
  name: tenant-a
spec:
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: tenant-0
  addresses:
    ipv4: ["10.1.0.0/16"]
  host:
    veth: true
---
apiVersion: nes.network-config.io/v1alpha1
kind: NetworkConfigurationPolicy
metadata:
  name: elsewhere
spec:
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: someone-else
  addresses:
    ipv4: ["10.250.0.0/16"]
"#;

fn agent_with_policy(tag: &str) -> Standalone {
    let mut a = Standalone::new(tag);
    a.policies = agent::cli::read_policy_file(&write(POLICY)).expect("policy file");
    // The node would allow the bridge: the admin policy is what refuses it.
    a.host_access = host_access(&["polbr0"], &[]);
    a.host.ip(&["link", "add", "polbr0", "type", "bridge"]);
    a
}

/// A pod netns with an `eth0` (both ends of a veth inside it, as a CNI would leave one).
fn pod_netns(tag: &str) -> Netns {
    let pod = Netns::new(tag);
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod
}

/// Puts `address` on the pod's eth0 through `@nes`, which must accept it and apply it.
async fn apply_address(client: &PodClient, pod: &Netns, address: &str) {
    let body =
        json!({"interfaces": [{"name": "eth0", "type": "existing", "addresses": [address]}]});
    let (code, answer) = client
        .call_retrying("PUT", "/v1/self/config?manager=app", &body.to_string())
        .await;
    assert_eq!(code, 200, "an allowed request applies: {answer}");
    assert!(
        eventually(Duration::from_secs(10), || pod
            .addresses("eth0")
            .iter()
            .any(|a| a == address))
        .await,
        "{address} was never applied: {:?}",
        pod.addresses("eth0")
    );
}

fn write(text: &str) -> std::path::PathBuf {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), text).expect("write policy");
    file.into_temp_path().keep().expect("keep")
}

#[tokio::test]
async fn a_pod_is_refused_a_host_bridge_and_an_out_of_range_address_with_zero_writes() {
    if !require_root() || !require_kind("veth") || !require_kind("bridge") {
        return;
    }
    let mut a = agent_with_policy("polh");
    let pod = pod_netns("polp");
    a.add("tenant-0", &pod.path());
    a.start();
    let client = PodClient::new(&pod.path());
    let (code, body) = client.call_retrying("GET", "/v1/self/config", "").await;
    assert_eq!(code, 200, "{body}");
    let pod_witness = NetlinkWitness::start(&pod).await;
    let host_witness = NetlinkWitness::start(&a.host).await;

    let cases = [
        (
            r#"{"interfaces": [{"name": "v0", "type": "veth", "peer": "hpol0", "peerBridge": "polbr0"}]}"#,
            "spec.interfaces[0]",
            "polbr0",
        ),
        (
            r#"{"interfaces": [{"name": "eth0", "type": "existing", "addresses": ["10.2.0.5/24"]}]}"#,
            "spec.interfaces[0].addresses[0]",
            "10.2.0.5/24",
        ),
    ];
    for (body, field, value) in cases {
        let (code, answer) = client
            .call("PUT", "/v1/self/config?manager=app", body)
            .await;
        assert_eq!(code, 403, "{body}: {answer}");
        let problem: ProblemDetails = serde_json::from_str(&answer).expect("problem json");
        assert_eq!(problem.status, 403);
        assert!(
            problem
                .detail
                .as_deref()
                .unwrap_or_default()
                .contains("\"tenant-a\""),
            "the policy is named: {answer}"
        );
        assert!(
            problem.errors.iter().any(|e| e.field.starts_with(field)
                && e.message.contains("tenant-a")
                && e.message.contains(value)),
            "{field} is named with its value: {answer}"
        );
    }
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
    assert!(!pod.has_link("v0") && !a.host.has_link("hpol0"));
    let (_, body) = client.call("GET", "/v1/self/config", "").await;
    let view: ConfigView = serde_json::from_str(&body).expect("view");
    assert_eq!(view.generation, 0, "a refused request was stored: {body}");

    apply_address(&client, &pod, "10.1.0.5/24").await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_stored_configuration_a_new_policy_forbids_is_held_not_torn_down() {
    if !require_root() {
        return;
    }
    let mut a = Standalone::new("polr");
    let pod = pod_netns("polq");
    a.add("tenant-0", &pod.path());
    a.start();
    let client = PodClient::new(&pod.path());
    apply_address(&client, &pod, "10.2.0.5/24").await;
    a.shutdown().await;
    // The admin restricts the range; the agent restarts with the policy.
    a.policies = agent::cli::read_policy_file(&write(POLICY)).expect("policy file");
    let witness = NetlinkWitness::start(&pod).await;
    a.start();
    let end = std::time::Instant::now() + nes_tests::cluster_support::DEADLINE;
    let status = loop {
        let (_, body) = client.call_retrying("GET", "/v1/self/status", "").await;
        let status: api::wire::StatusView = serde_json::from_str(&body).expect("status");
        let degraded = status
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .cloned();
        if degraded
            .as_ref()
            .is_some_and(|c| c.reason == "PolicyDenied")
        {
            break degraded.expect("degraded");
        }
        assert!(std::time::Instant::now() < end, "never Degraded: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.message.contains("tenant-a"), "{status:?}");
    assert!(
        pod.addresses("eth0")
            .iter()
            .any(|a| a.starts_with("10.2.0.5")),
        "torn down"
    );
    assert_eq!(witness.stop().await, Vec::<String>::new(), "written");
    a.shutdown().await;
}

#[test]
fn an_invalid_policy_file_fails_startup_with_a_clear_error() {
    let missing = agent::cli::read_policy_file(std::path::Path::new("/nonexistent/policy.yaml"))
        .expect_err("a missing file");
    assert!(
        format!("{missing:#}").contains("/nonexistent/policy.yaml"),
        "{missing:#}"
    );
    let wrong_kind = write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n");
    let error = agent::cli::read_policy_file(&wrong_kind).expect_err("not a policy");
    assert!(
        format!("{error:#}").contains("NetworkConfigurationPolicy"),
        "{error:#}"
    );
    let bad_cidr = write(
        "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfigurationPolicy\nmetadata:\n  name: bad\nspec:\n  addresses:\n    ipv4: [\"not-a-cidr\"]\n",
    );
    let error = agent::cli::read_policy_file(&bad_cidr).expect_err("invalid");
    assert!(format!("{error:#}").contains("bad"), "{error:#}");
}
