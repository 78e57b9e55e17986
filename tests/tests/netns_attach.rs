//! CNI attachments through nes's own invoker with the real plugins of Debian's
//! `containernetworking-plugins`, in throwaway namespaces. The plugins run in a host-like
//! namespace of the test (a wrapper per plugin enters it), so the machine's own links are
//! never touched; host-local keeps its leases in a temp dir the tests read.

use std::time::{Duration, Instant};

use agent::cni::keep::{self, PodRef};
use api::{AttachmentSpec, ObjectState};
use nes_tests::cni::{script, Cni};
use nes_tests::common::{scaled, Netns};

fn pod_ref(ns: &Netns) -> PodRef {
    PodRef {
        namespace: ns.name.clone(),
        name: ns.name.clone(),
        uid: "uid-1".into(),
        sandbox: format!("sb-{}", ns.name),
        netns: ns.path(),
    }
}

fn attach(name: &str, interface: Option<&str>, ips: &[&str]) -> AttachmentSpec {
    AttachmentSpec {
        name: name.into(),
        interface: interface.map(str::to_string),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn assert_applied(status: &api::AttachmentStatus) {
    assert_eq!(status.state, ObjectState::Applied, "{status:?}");
}

#[tokio::test]
async fn bridge_with_host_local_attaches_reports_npwg_status_and_detach_releases_the_ip() {
    let Some(cni) = Cni::new("atbr") else { return };
    let pod = Netns::new("atbrp");
    cni.bridge_net("data", "nesbr0", "10.77.0.0/24");
    let p = pod_ref(&pod);
    let started = Instant::now();
    let status = cni.pass(&p, &[attach("data", Some("net1"), &[])]).await;
    let took = started.elapsed();
    assert_applied(&status[0]);
    let net = status[0].network.as_ref().expect("npwg status");
    assert_eq!(net.name, format!("{}/data", pod.name));
    assert_eq!(net.interface, "net1");
    assert!(!net.default);
    assert_eq!(net.ips.len(), 1, "{net:?}");
    assert!(net.ips[0].starts_with("10.77.0."), "{net:?}");
    assert!(net.mac.is_some());
    assert!(
        pod.addresses("net1")
            .iter()
            .any(|a| a.starts_with(&net.ips[0])),
        "{:?}",
        pod.addresses("net1")
    );
    assert!(
        cni.host.has_link("nesbr0"),
        "the bridge is in the test's host namespace"
    );
    assert_eq!(cni.leases("data"), [net.ips[0].clone()]);
    eprintln!("attach (bridge+host-local) took {took:?}");

    // Unchanged: CHECK only, the same address.
    let again = cni.pass(&p, &[attach("data", Some("net1"), &[])]).await;
    assert_eq!(
        again[0].network.as_ref().map(|n| n.ips.clone()),
        Some(net.ips.clone())
    );

    let started = Instant::now();
    let none = cni.pass(&p, &[]).await;
    eprintln!("detach (bridge+host-local) took {:?}", started.elapsed());
    assert!(none.is_empty());
    assert!(!pod.has_link("net1"));
    assert_eq!(
        cni.leases("data"),
        Vec::<String>::new(),
        "DEL released the address"
    );
    // DEL is idempotent: nothing recorded, nothing to do, no error.
    assert!(cni.pass(&p, &[]).await.is_empty());
}

#[tokio::test]
async fn macvlan_with_static_gets_the_asked_address_and_a_derived_name() {
    let Some(cni) = Cni::new("atmv") else { return };
    let pod = Netns::new("atmvp");
    cni.host.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p",
    ]);
    cni.host.ip(&["link", "set", "uplink0", "up"]);
    cni.macvlan_net("fast", "uplink0");
    let p = pod_ref(&pod);
    let status = cni
        .pass(&p, &[attach("fast", None, &["10.78.0.5/24"])])
        .await;
    assert_applied(&status[0]);
    let ifname = api::attach::default_ifname(&pod.name, "fast");
    assert_eq!(status[0].interface, ifname);
    assert!(
        pod.addresses(&ifname).contains(&"10.78.0.5/24".to_string()),
        "{:?}",
        pod.addresses(&ifname)
    );
    assert_eq!(
        status[0].network.as_ref().map(|n| n.ips.clone()),
        Some(vec!["10.78.0.5".to_string()])
    );
}

#[tokio::test]
async fn the_same_interface_with_another_network_is_detached_then_attached() {
    let Some(cni) = Cni::new("atre") else { return };
    let pod = Netns::new("atrep");
    cni.bridge_net("one", "nesbr1", "10.79.1.0/24");
    cni.bridge_net("two", "nesbr2", "10.79.2.0/24");
    let p = pod_ref(&pod);
    assert_applied(&cni.pass(&p, &[attach("one", Some("net1"), &[])]).await[0]);
    assert_eq!(cni.leases("one").len(), 1);
    let status = cni.pass(&p, &[attach("two", Some("net1"), &[])]).await;
    assert_applied(&status[0]);
    assert_eq!(
        cni.leases("one"),
        Vec::<String>::new(),
        "the old network's address is released"
    );
    assert_eq!(cni.leases("two").len(), 1);
    assert!(
        pod.addresses("net1")
            .iter()
            .any(|a| a.starts_with("10.79.2.")),
        "{:?}",
        pod.addresses("net1")
    );
}

/// A plugin writes as it runs: a detach (or attach) waits for the save of the desired state
/// it serves, and does not run at all when that save fails.
#[tokio::test]
async fn plugins_run_only_once_the_desired_state_is_saved() {
    let Some(cni) = Cni::new("atsv") else { return };
    let pod = Netns::new("atsvp");
    cni.bridge_net("data", "nesbr9", "10.79.9.0/24");
    let p = pod_ref(&pod);
    assert_applied(&cni.pass(&p, &[attach("data", Some("net1"), &[])]).await[0]);
    let wants = keep::resolve_standalone(&cni.opts, &p, &[]);

    let (saving, saved) = agent::saved::Saved::pending();
    let mut waited = Duration::ZERO;
    let pass = keep::converge(&cni.opts, &p, &wants, &saved, &mut waited);
    tokio::pin!(pass);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut pass)
            .await
            .is_err(),
        "the detach ran before its desired state was saved"
    );
    assert!(pod.has_link("net1"));
    saving.finish(false);
    assert_eq!(
        pass.await,
        None,
        "a state that was not saved runs no plugin"
    );
    assert!(pod.has_link("net1"), "detached though not saved");
    assert_eq!(cni.leases("data").len(), 1);

    let (saving, saved) = agent::saved::Saved::pending();
    let mut waited = Duration::ZERO;
    let pass = keep::converge(&cni.opts, &p, &wants, &saved, &mut waited);
    saving.finish(true);
    assert_eq!(pass.await, Some(Vec::new()));
    assert!(!pod.has_link("net1"));
    assert_eq!(cni.leases("data"), Vec::<String>::new());
}

#[tokio::test]
async fn when_the_second_attachment_fails_the_first_stays_and_both_are_reported() {
    let Some(cni) = Cni::new("at2f") else { return };
    let pod = Netns::new("at2fp");
    cni.bridge_net("good", "nesbr3", "10.80.0.0/24");
    cni.macvlan_net("bad", "no-such-link");
    let p = pod_ref(&pod);
    let status = cni
        .pass(
            &p,
            &[
                attach("good", Some("net1"), &[]),
                attach("bad", Some("net2"), &["10.80.9.5/24"]),
            ],
        )
        .await;
    assert_applied(&status[0]);
    assert_eq!(status[1].state, ObjectState::Failed);
    let msg = status[1].error.clone().unwrap_or_default();
    assert_eq!(
        msg, "CNI plugin macvlan failed: Link not found",
        "the plugin's own message"
    );
    assert!(pod.has_link("net1"));
    assert!(!pod.has_link("net2"));
    // The next pass keeps the first (CHECK) and tries the second again.
    let again = cni
        .pass(
            &p,
            &[
                attach("good", Some("net1"), &[]),
                attach("bad", Some("net2"), &["10.80.9.5/24"]),
            ],
        )
        .await;
    assert_applied(&again[0]);
    assert_eq!(again[1].state, ObjectState::Failed);
    assert_eq!(
        cni.leases("good").len(),
        1,
        "no second lease for the kept attachment"
    );
}

#[tokio::test]
async fn an_interface_removed_behind_nes_is_attached_again_without_leaking_its_ip() {
    let Some(cni) = Cni::new("atck") else { return };
    let pod = Netns::new("atckp");
    cni.bridge_net("data", "nesbr4", "10.81.0.0/24");
    let p = pod_ref(&pod);
    assert_applied(&cni.pass(&p, &[attach("data", Some("net1"), &[])]).await[0]);
    pod.ip(&["link", "del", "net1"]);
    let status = cni.pass(&p, &[attach("data", Some("net1"), &[])]).await;
    assert_applied(&status[0]);
    assert!(pod.has_link("net1"));
    assert_eq!(
        cni.leases("data").len(),
        1,
        "CHECK failed, DEL released, ADD leased once"
    );
}

#[tokio::test]
async fn a_deleted_pod_netns_still_releases_its_ip_on_detach() {
    let Some(cni) = Cni::new("atgo") else { return };
    let pod = Netns::new("atgop");
    cni.bridge_net("data", "nesbr5", "10.82.0.0/24");
    let p = pod_ref(&pod);
    assert_applied(&cni.pass(&p, &[attach("data", Some("net1"), &[])]).await[0]);
    drop(pod);
    let errors = keep::detach_all(&cni.opts, &p).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(cni.leases("data"), Vec::<String>::new());
}

#[tokio::test]
async fn a_hung_plugin_hits_its_deadline_and_other_pods_attach_meanwhile() {
    let Some(mut cni) = Cni::new("athg") else {
        return;
    };
    script(&cni.opts.bin_dirs[0], "hangs", "sleep 600");
    cni.conflist("stuck", serde_json::json!([{"type": "hangs"}]));
    cni.bridge_net("data", "nesbr6", "10.83.0.0/24");
    // Scaled: under the VM lane's software emulation the bridge plugin alone takes seconds.
    let deadline = scaled(Duration::from_secs(2));
    cni.opts.timeout = deadline;
    let (slow, fast) = (Netns::new("athgs"), Netns::new("athgf"));
    let (ps, pf) = (pod_ref(&slow), pod_ref(&fast));
    let started = Instant::now();
    let stuck = async {
        let s = cni.pass(&ps, &[attach("stuck", Some("net1"), &[])]).await;
        (s, started.elapsed())
    };
    let other = async {
        let s = cni.pass(&pf, &[attach("data", Some("net1"), &[])]).await;
        (s, started.elapsed())
    };
    let ((s, s_took), (f, f_took)) = tokio::join!(stuck, other);
    assert_applied(&f[0]);
    assert!(
        f_took < deadline,
        "the other pod waited for the hung one: {f_took:?}"
    );
    assert_eq!(s[0].state, ObjectState::Failed);
    assert!(
        s[0].error
            .clone()
            .unwrap_or_default()
            .contains("did not answer"),
        "{:?}",
        s[0].error
    );
    assert!(s_took < deadline * 5, "{s_took:?}");
}

#[tokio::test]
async fn a_plugins_cni_error_is_the_status_message() {
    let Some(cni) = Cni::new("ater") else { return };
    script(
        &cni.opts.bin_dirs[0],
        "refuses",
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0; echo '{"cniVersion":"1.0.0","code":7,"msg":"vlan 42 is not provisioned on this node"}'; exit 1"#,
    );
    cni.conflist("refused", serde_json::json!([{"type": "refuses"}]));
    let pod = Netns::new("aterp");
    let status = cni
        .pass(&pod_ref(&pod), &[attach("refused", Some("net1"), &[])])
        .await;
    assert_eq!(status[0].state, ObjectState::Failed);
    assert_eq!(
        status[0].error.as_deref(),
        Some("CNI plugin refuses failed: vlan 42 is not provisioned on this node")
    );
}
