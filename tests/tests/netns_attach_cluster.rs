//! The cluster path of CNI attachments: a NetworkConfiguration's `attachments` resolved from
//! the cluster's NetworkAttachmentDefinitions (a mock API server answering like the real one)
//! and run through the real plugins of Debian's `containernetworking-plugins` in real netns:
//! status on the CR, namespace isolation, a missing NAD CRD named as such, DEL (IP released)
//! when the pod goes.

use nes_tests::cluster_support;
use nes_tests::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ObjectState;
use cluster_support::harness::{Agent, ServedPod};
use cluster_support::{pod, ApiServer, FakeResolver, Patched, NS};
use nes_tests::cni::Cni;
use serde_json::{json, Value};

fn bridge_config(cni: &Cni, bridge: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge", "bridge": bridge,
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": cni.ipam_dir()}}]})
}

fn attachment(p: &Patched) -> Option<&api::AttachmentStatus> {
    p.status.attachments.first()
}

fn attached(p: &Patched) -> bool {
    attachment(p).is_some_and(|a| a.state == ObjectState::Applied)
}

fn applied_reason(p: &Patched) -> Option<(String, String)> {
    p.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// A cluster agent allowed to run CNI, a policy allowing it for the pods' namespace.
fn cluster(tag: &str) -> Option<(ApiServer, Arc<FakeResolver>, Agent, Cni)> {
    let cni = Cni::new(tag)?;
    let api = ApiServer::default();
    api.put_policy("cni", json!({"host": {"cniAttachments": true}}));
    let resolver = Arc::new(FakeResolver::default());
    let mut agent = Agent::new(&api, &resolver);
    agent.cni = Some(cni.opts.clone());
    Some((api, resolver, agent, cni))
}

#[tokio::test]
async fn a_cr_attachment_runs_its_nad_through_the_plugins_and_the_pods_deletion_releases_the_ip() {
    let Some((api, resolver, mut agent, cni)) = cluster("atc") else {
        return;
    };
    api.put_nad(NS, "data", &bridge_config(&cni, "nescb0", "10.91.0.0/24"));
    let p = ServedPod::new("atcp", "demo-0", "uid-atc");
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(
        &p.name,
        json!({"attachments": [{"name": "data", "interface": "net1"}]}),
    );
    resolver.set(&p.uid, "sb-atc", &p.fx.pod.path());
    let started = agent.start();

    let done = api
        .wait_patch(&p.name, started, |s| s.applied(1) && attached(s))
        .await;
    let net = attachment(&done)
        .and_then(|a| a.network.clone())
        .expect("npwg entry");
    assert_eq!(
        (net.name.as_str(), net.interface.as_str()),
        ("apps/data", "net1")
    );
    assert!(
        net.ips.first().is_some_and(|ip| ip.starts_with("10.91.0.")),
        "{net:?}"
    );
    assert!(p.fx.pod.has_link("net1"));
    assert_eq!(cni.leases("data"), net.ips);
    // Recorded under the sandbox's id, libcni's key, marked as nes's.
    let results = std::fs::read_dir(cni.opts.cache_dir.join("results"))
        .expect("results")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert_eq!(results, ["data-sb-atc-net1"]);

    // The pod is deleted: DEL gives the address back.
    api.delete_pod(&p.name);
    assert!(
        common::eventually(Duration::from_secs(20), || cni.leases("data").is_empty()).await,
        "the IP leaked: {:?}",
        cni.leases("data")
    );
    assert!(!p.fx.pod.has_link("net1"));
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
    agent.shutdown().await;
}

#[tokio::test]
async fn a_nad_of_another_namespace_is_refused_unless_the_policy_lists_it() {
    let Some((api, resolver, mut agent, cni)) = cluster("atn") else {
        return;
    };
    api.put_nad(
        "shared",
        "lan",
        &bridge_config(&cni, "nescb1", "10.92.0.0/24"),
    );
    let p = ServedPod::new("atnp", "demo-0", "uid-atn");
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(&p.name, json!({"attachments": [{"name": "shared/lan"}]}));
    resolver.set(&p.uid, "sb-atn", &p.fx.pod.path());
    let started = agent.start();
    let refused = api
        .wait_patch(&p.name, started, |s| {
            s.condition("Degraded")
                .is_some_and(|(_, reason, _)| reason == "PolicyDenied")
        })
        .await;
    let message = &refused
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("degraded")
        .message;
    assert!(message.contains("namespace \"shared\""), "{message}");
    assert!(cni.leases("lan").is_empty(), "a plugin ran");

    // The admin lists the namespace: it attaches.
    let listed = Instant::now();
    api.put_policy(
        "cni",
        json!({"host": {"cniAttachments": true}, "attachments": {"namespaces": ["shared"]}}),
    );
    let done = api.wait_patch(&p.name, listed, attached).await;
    let ifname = api::attach::default_ifname("shared", "lan");
    assert_eq!(
        attachment(&done).map(|a| a.interface.clone()),
        Some(ifname.clone())
    );
    assert!(p.fx.pod.has_link(&ifname));
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
    agent.shutdown().await;
}

#[tokio::test]
async fn without_the_nad_crd_attachments_say_so_and_attach_once_it_is_installed() {
    let Some((api, resolver, mut agent, cni)) = cluster("atm") else {
        return;
    };
    api.nads_missing(true);
    let p = ServedPod::new("atmp", "demo-0", "uid-atm");
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(
        &p.name,
        json!({"attachments": [{"name": "data", "interface": "net1"}]}),
    );
    resolver.set(&p.uid, "sb-atm", &p.fx.pod.path());
    let started = agent.start();
    let unavailable = api
        .wait_patch(&p.name, started, |s| {
            applied_reason(s).is_some_and(|(_, r)| r == api::attach::NADS_UNAVAILABLE_REASON)
        })
        .await;
    assert_eq!(
        applied_reason(&unavailable).map(|(s, _)| s),
        Some("False".to_string())
    );
    let error = attachment(&unavailable)
        .and_then(|a| a.error.clone())
        .unwrap_or_default();
    assert!(error.contains("CRD"), "{error}");
    assert!(!p.fx.pod.has_link("net1"));

    // The admin installs the CRD and a NAD: the watch lists on its next try, the keeper's
    // retry attaches.
    let installed = Instant::now();
    api.put_nad(NS, "data", &bridge_config(&cni, "nescb2", "10.93.0.0/24"));
    api.nads_missing(false);
    api.wait_patch(&p.name, installed, |s| s.applied(1) && attached(s))
        .await;
    assert!(p.fx.pod.has_link("net1"));
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
    agent.shutdown().await;
}

fn annotations(api: &ApiServer, name: &str) -> serde_json::Map<String, Value> {
    api.pod_object(name)
        .and_then(|p| p["metadata"]["annotations"].as_object().cloned())
        .unwrap_or_default()
}

fn network_status(api: &ApiServer, name: &str) -> Vec<Value> {
    annotations(api, name)
        .get(api::attach::NETWORK_STATUS_ANNOTATION)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

fn interfaces(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["interface"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn the_pods_networks_annotation_attaches_beside_what_multus_made_and_network_status_keeps_its_entries(
) {
    let Some((api, resolver, mut agent, cni)) = cluster("ata") else {
        return;
    };
    api.put_nad(NS, "data", &bridge_config(&cni, "nescb3", "10.94.0.0/24"));
    let p = ServedPod::new("atap", "demo-0", "uid-ata");
    // Multus made net1 at creation (its NAD is not even readable here: nes must not try it).
    let multus = json!([
        {"name": "cbr0", "interface": "eth0", "ips": ["10.244.0.5"], "default": true},
        {"name": "apps/made", "interface": "net1", "ips": ["10.5.0.2"], "default": false,
         "device-info": {"type": "pci", "version": "1.1.0"}},
    ]);
    let mut object = pod(&p.name, &p.uid, &["10.244.0.5"]);
    object["metadata"]["annotations"] = json!({
        "k8s.v1.cni.cncf.io/networks": "made@net1,data@net2",
        "k8s.v1.cni.cncf.io/network-status": multus.to_string(),
    });
    api.put_pod(object.clone());
    resolver.set(&p.uid, "sb-ata", &p.fx.pod.path());
    let started = agent.start();
    assert!(
        common::eventually(Duration::from_secs(20), || interfaces(&network_status(
            &api, &p.name
        )) == ["eth0", "net1", "net2"])
        .await,
        "network-status: {:?}",
        network_status(&api, &p.name)
    );
    let reported = started.elapsed();
    let entries = network_status(&api, &p.name);
    assert_eq!(entries[1], multus[1], "the CNI's entry is kept as it was");
    assert_eq!(entries[2]["name"], "apps/data");
    assert_eq!(entries[2]["default"], false);
    let ip = entries[2]["ips"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ip.starts_with("10.94.0."), "{entries:?}");
    assert_eq!(cni.leases("data"), [ip]);
    assert!(p.fx.pod.has_link("net2"));
    assert_eq!(
        annotations(&api, &p.name)["nes.network-config.io/network-status-interfaces"],
        "[\"net2\"]"
    );
    api.wait_event(&p.name, "Attached").await;
    eprintln!("LATENCY cluster attach 1 pod (annotation to network-status written): {reported:?}");

    // The application drops data from its annotation: nes detaches it, and only it.
    let mut now = api.pod_object(&p.name).expect("pod");
    now["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = json!("made@net1");
    let asked = Instant::now();
    api.put_pod(now);
    assert!(
        common::eventually(Duration::from_secs(20), || interfaces(&network_status(
            &api, &p.name
        )) == ["eth0", "net1"])
        .await,
        "network-status: {:?}",
        network_status(&api, &p.name)
    );
    eprintln!(
        "LATENCY cluster detach 1 pod (annotation to network-status written): {:?}",
        asked.elapsed()
    );
    assert!(cni.leases("data").is_empty(), "the IP leaked");
    assert!(!p.fx.pod.has_link("net2"));
    assert_eq!(network_status(&api, &p.name)[1], multus[1]);
    api.wait_event(&p.name, "Detached").await;
    assert!(
        api.pod_patches(&p.name)
            .iter()
            .all(|patch| patch["metadata"]["resourceVersion"].is_string()),
        "every pod patch is conditional on the pod's resourceVersion"
    );
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
    agent.shutdown().await;
}

#[tokio::test]
async fn fifty_pods_annotated_at_once_attach_and_report_network_status() {
    // 50 on the host (the latency figure); fewer under the VM lane's emulation.
    let pods_n = common::scale_pods(50);
    let Some((api, resolver, mut agent, cni)) = cluster("at50") else {
        return;
    };
    api.put_nad(NS, "data", &bridge_config(&cni, "nescb5", "10.96.0.0/22"));
    let pods: Vec<ServedPod> = (0..pods_n)
        .map(|i| ServedPod::new("at50p", &format!("demo-{i}"), &format!("uid-at50-{i}")))
        .collect();
    for p in &pods {
        api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
        resolver.set(&p.uid, &format!("sb-{}", p.uid), &p.fx.pod.path());
    }
    agent.start();
    for p in &pods {
        p.client().call_retrying("GET", "/v1/self/config", "").await;
    }
    let asked = Instant::now();
    for p in &pods {
        let mut object = api.pod_object(&p.name).expect("pod");
        object["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/networks": "data@net1"});
        api.put_pod(object);
    }
    let bound = common::scaled(Duration::from_secs(90));
    assert!(
        common::eventually(bound, || pods.iter().all(|p| p.fx.pod.has_link("net1"))).await,
        "not every pod got net1"
    );
    let up = asked.elapsed();
    assert!(
        common::eventually(bound, || pods
            .iter()
            .all(|p| interfaces(&network_status(&api, &p.name)) == ["net1"]))
        .await,
        "not every pod's network-status was written"
    );
    let reported = asked.elapsed();
    assert_eq!(cni.leases("data").len(), pods_n);
    eprintln!("LATENCY cluster attach {pods_n} pods: all interfaces up {up:?}, all network-status written {reported:?}");

    let asked = Instant::now();
    for p in &pods {
        let mut object = api.pod_object(&p.name).expect("pod");
        object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = json!("");
        api.put_pod(object);
    }
    assert!(
        common::eventually(bound, || cni.leases("data").is_empty()).await,
        "IPs leaked: {}",
        cni.leases("data").len()
    );
    let released = asked.elapsed();
    assert!(
        common::eventually(bound, || pods
            .iter()
            .all(|p| network_status(&api, &p.name).is_empty()))
        .await,
        "not every network-status was cleared"
    );
    eprintln!(
        "LATENCY cluster detach {pods_n} pods: all IPs released {released:?}, all network-status written {:?}",
        asked.elapsed()
    );
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
    agent.shutdown().await;
}
