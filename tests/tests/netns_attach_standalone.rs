//! `nescli attach`'s path on a standalone host: a PUT of an attachment through the pod's
//! own `@nes`, the agent's keeper running the real CNI plugins, the status listing the
//! attachment in the NPWG shape; DELETE detaches and releases the IP. The host boundary:
//! without `--allow-host-cni` and a policy allowing `host.cniAttachments`, attaching is
//! refused with a 403 and no plugin runs. Latencies are printed (`cargo nextest run -p
//! nes-tests --test netns_attach_standalone --no-capture`).

use std::time::{Duration, Instant};

use api::wire::{ProblemDetails, StatusView};
use api::ObjectState;
use nes_tests::client::PodClient;
use nes_tests::cni::Cni;
use nes_tests::common::{self, eventually, scaled, Netns};
use nes_tests::standalone::Standalone;

fn policy(namespaces: &[&str]) -> Vec<std::sync::Arc<api::policy::NetworkConfigurationPolicy>> {
    let docs: Vec<String> = namespaces
        .iter()
        .map(|ns| {
            format!(
                "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfigurationPolicy\nmetadata:\n  name: cni-{ns}\nspec:\n  namespaceSelector:\n    matchLabels:\n      kubernetes.io/metadata.name: {ns}\n  host:\n    cniAttachments: true\n"
            )
        })
        .collect();
    api::policy::parse_policy_file(&docs.join("---\n"))
        .expect("policy")
        .into_iter()
        .map(std::sync::Arc::new)
        .collect()
}

/// A standalone agent whose CNI plugins run in its host namespace.
fn agent(tag: &str) -> Option<(Standalone, Cni)> {
    let a = Standalone::new(tag);
    let cni = Cni::in_host(tag, Some(&a.host.name))?;
    cni.bridge_net("data", "nesbr0", "10.90.0.0/16");
    Some((a, cni))
}

const ATTACH: &str = r#"{"attachments": [{"name": "data", "interface": "net1"}]}"#;

async fn attachment(client: &PodClient) -> Option<api::AttachmentStatus> {
    let (_, body) = client.call_retrying("GET", "/v1/self/status", "").await;
    let view: StatusView = serde_json::from_str(&body).ok()?;
    view.status.attachments.into_iter().next()
}

fn link_up(pod: &Netns, name: &str) -> bool {
    let out = pod.try_ip(&["-o", "link", "show", "dev", name]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(",UP")
}

#[tokio::test]
async fn attaching_is_refused_unless_the_node_and_the_policy_allow_cni() {
    let Some((mut a, cni)) = agent("atsr") else {
        return;
    };
    a.cni = Some(cni.opts.clone());
    // The policy allows it, the node does not.
    a.policies = policy(&["tenant-0"]);
    a.allow_host_cni = false;
    let pod = Netns::new("atsrp");
    a.add("tenant-0", &pod.path());
    a.start();
    let client = PodClient::new(&pod.path());
    let (code, answer) = client
        .call_retrying("PUT", "/v1/self/config?manager=attach:data", ATTACH)
        .await;
    assert_eq!(code, 403, "{answer}");
    let problem: ProblemDetails = serde_json::from_str(&answer).expect("problem");
    assert!(
        problem
            .errors
            .iter()
            .any(|e| e.field == "spec.attachments[0]" && e.message.contains("cniAttachments")),
        "{answer}"
    );
    a.shutdown().await;

    // The node allows it, no policy does (the default allows nothing on the host).
    a.policies = Vec::new();
    a.allow_host_cni = true;
    a.start();
    let (code, answer) = client
        .call_retrying("PUT", "/v1/self/config?manager=attach:data", ATTACH)
        .await;
    assert_eq!(code, 403, "{answer}");
    assert!(!pod.has_link("net1"));
    assert!(cni.leases("data").is_empty(), "no plugin ran");
    a.shutdown().await;
}

#[tokio::test]
async fn attach_and_detach_through_the_pod_socket_report_status_and_release_the_ip() {
    let Some((mut a, cni)) = agent("atsa") else {
        return;
    };
    a.cni = Some(cni.opts.clone());
    a.policies = policy(&["tenant-0"]);
    a.allow_host_cni = true;
    let pod = Netns::new("atsap");
    a.add("tenant-0", &pod.path());
    a.start();
    let client = PodClient::new(&pod.path());
    client.call_retrying("GET", "/v1/self/config", "").await;

    let asked = Instant::now();
    let (code, answer) = client
        .call("PUT", "/v1/self/config?manager=attach:data", ATTACH)
        .await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        eventually(Duration::from_secs(20), || link_up(&pod, "net1")).await,
        "net1 never came up"
    );
    let up = asked.elapsed();
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match attachment(&client).await {
            Some(s) if s.state == ObjectState::Applied => break s,
            other => assert!(Instant::now() < end, "never reported: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let reported = asked.elapsed();
    let net = status.network.expect("npwg entry");
    assert_eq!(
        (net.name.as_str(), net.interface.as_str(), net.default),
        ("tenant-0/data", "net1", false)
    );
    assert_eq!(cni.leases("data"), net.ips);
    eprintln!("LATENCY attach 1 pod: interface up {up:?}, status {reported:?}");

    let asked = Instant::now();
    let (code, answer) = client
        .call("DELETE", "/v1/self/config?manager=attach:data", "")
        .await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        eventually(Duration::from_secs(20), || !pod.has_link("net1")).await,
        "net1 stayed"
    );
    let gone = asked.elapsed();
    assert!(
        eventually(Duration::from_secs(20), || cni.leases("data").is_empty()).await,
        "the IP leaked"
    );
    eprintln!(
        "LATENCY detach 1 pod: interface gone {gone:?}, IP released {:?}",
        asked.elapsed()
    );
    a.shutdown().await;
}

#[tokio::test]
async fn fifty_pods_attach_at_once() {
    // 50 on the host (the latency figure); fewer under the VM lane's emulation.
    let pods_n = common::scale_pods(50);
    let Some((mut a, cni)) = agent("ats50") else {
        return;
    };
    a.cni = Some(cni.opts.clone());
    let names: Vec<String> = (0..pods_n).map(|i| format!("tenant-{i}")).collect();
    a.policies = policy(&names.iter().map(String::as_str).collect::<Vec<_>>());
    a.allow_host_cni = true;
    let pods: Vec<Netns> = (0..pods_n).map(|_| Netns::new("ats50p")).collect();
    for (name, pod) in names.iter().zip(&pods) {
        a.add(name, &pod.path());
    }
    a.start();
    let clients: Vec<PodClient> = pods.iter().map(|p| PodClient::new(&p.path())).collect();
    for c in &clients {
        c.call_retrying("GET", "/v1/self/config", "").await;
    }
    let asked = Instant::now();
    let puts = clients
        .iter()
        .map(|c| c.call("PUT", "/v1/self/config?manager=attach:data", ATTACH));
    for (code, answer) in futures::future::join_all(puts).await {
        assert_eq!(code, 200, "{answer}");
    }
    assert!(
        eventually(scaled(Duration::from_secs(60)), || pods
            .iter()
            .all(|p| link_up(p, "net1")))
        .await,
        "not every pod got net1"
    );
    let up = asked.elapsed();
    let end = Instant::now() + scaled(Duration::from_secs(60));
    for c in &clients {
        while !attachment(c)
            .await
            .is_some_and(|s| s.state == ObjectState::Applied)
        {
            assert!(Instant::now() < end, "a pod never reported its attachment");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let reported = asked.elapsed();
    assert_eq!(cni.leases("data").len(), pods_n);
    eprintln!("LATENCY attach {pods_n} pods: all interfaces up {up:?}, all status {reported:?}");

    let asked = Instant::now();
    let dels = clients
        .iter()
        .map(|c| c.call("DELETE", "/v1/self/config?manager=attach:data", ""));
    futures::future::join_all(dels).await;
    assert!(
        eventually(scaled(Duration::from_secs(60)), || cni
            .leases("data")
            .is_empty())
        .await,
        "IPs leaked"
    );
    eprintln!(
        "LATENCY detach {pods_n} pods: all IPs released {:?}",
        asked.elapsed()
    );
    assert!(pods.iter().all(|p| !p.has_link("net1")));
    a.shutdown().await;
}
