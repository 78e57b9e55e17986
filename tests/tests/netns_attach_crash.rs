//! The `nes-agent standalone` process is SIGKILLed the moment its CNI result record appears
//! (the ADD ran and was recorded; its status may not be reported yet), with the real plugins
//! of Debian's `containernetworking-plugins`. The restarted agent adopts the record (CHECK):
//! the pod keeps one interface with the same address, host-local holds exactly that one
//! lease, nothing is added twice; detaching then releases it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::wire::StatusView;
use api::ObjectState;
use nes_tests::bins;
use nes_tests::client::PodClient;
use nes_tests::cni::Cni;
use nes_tests::common::{eventually, Netns};
use nes_tests::standalone::Standalone;

const POLICY: &str = "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfigurationPolicy\nmetadata:\n  name: cni\nspec:\n  host:\n    cniAttachments: true\n";

/// Runs `nes-agent standalone` on `a`'s directories with `cni`'s plugins and cache.
fn spawn(a: &Standalone, cni: &Cni) -> Child {
    let d = a.dir.path();
    let policy = d.join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let bin_dirs: Vec<String> = cni
        .opts
        .bin_dirs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Command::new(bins::nes_agent())
        .arg("standalone")
        .args(["--state-dir", &path(&d.join("state"))])
        .args(["--netns-dir", &path(&d.join("netns"))])
        .args(["--admin-socket", &path(&d.join("run/admin.sock"))])
        .args(["--host-netns", &path(&a.host.path())])
        .args(["--policy", &path(&policy)])
        .arg("--allow-host-cni")
        .args(["--cni-conf-dir", &path(&cni.opts.conf_dir)])
        .args(["--cni-bin-dir", &bin_dirs.join(",")])
        .args(["--cni-cache-dir", &path(&cni.opts.cache_dir)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nes-agent standalone")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// libcni's result records of network `data` (not a record's temp file, written before it
/// is renamed into place).
fn records(cni: &Cni) -> Vec<PathBuf> {
    std::fs::read_dir(cni.opts.cache_dir.join("results"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("data-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

async fn attachment(client: &PodClient) -> Option<api::AttachmentStatus> {
    let (_, body) = client.call_retrying("GET", "/v1/self/status", "").await;
    let view: StatusView = serde_json::from_str(&body).ok()?;
    view.status.attachments.into_iter().next()
}

fn links(pod: &Netns) -> Vec<String> {
    pod.ip_json(&["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn an_agent_killed_between_add_and_status_neither_leaks_the_ip_nor_adds_twice() {
    let mut a = Standalone::new("atkh");
    let Some(cni) = Cni::in_host("atk", Some(&a.host.name)) else {
        return;
    };
    cni.bridge_net("data", "nesbr9", "10.95.0.0/24");
    let pod = Netns::new("atkp");
    a.add("tenant", &pod.path());
    let mut agent = spawn(&a, &cni);
    let client = PodClient::new(&pod.path());
    client.call_retrying("GET", "/v1/self/config", "").await;

    let (code, answer) = client
        .call(
            "PUT",
            "/v1/self/config?manager=attach:data",
            r#"{"attachments": [{"name": "data", "interface": "net1"}]}"#,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    // Killed as soon as the record is seen: after ADD and its record, before (or at best
    // just after) the status it would report.
    let end = Instant::now() + Duration::from_secs(30);
    while records(&cni).is_empty() {
        assert!(Instant::now() < end, "no CNI result was recorded");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reaped");
    let leased = cni.leases("data");
    assert_eq!(leased.len(), 1, "{leased:?}");

    let mut agent = spawn(&a, &cni);
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match attachment(&client).await {
            Some(s) if s.state == ObjectState::Applied => break s,
            other => assert!(Instant::now() < end, "never reported again: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ips = status.network.map(|n| n.ips).unwrap_or_default();
    assert_eq!(
        ips, leased,
        "the restarted agent reports the address it had"
    );
    assert_eq!(
        cni.leases("data"),
        leased,
        "one lease, the same: no second ADD"
    );
    assert_eq!(records(&cni).len(), 1, "{:?}", records(&cni));
    let mut names = links(&pod);
    names.sort();
    assert_eq!(names, ["lo", "net1"], "one interface, no duplicate");
    assert!(
        pod.addresses("net1")
            .iter()
            .any(|a| a.starts_with(&format!("{}/", leased[0]))),
        "{:?}",
        pod.addresses("net1")
    );

    // Detaching after the restart releases the one address.
    let (code, answer) = client
        .call("DELETE", "/v1/self/config?manager=attach:data", "")
        .await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        eventually(Duration::from_secs(20), || cni.leases("data").is_empty()
            && records(&cni).is_empty())
        .await,
        "the IP leaked: {:?}, records {:?}",
        cni.leases("data"),
        records(&cni)
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
