//! Root tests: converge real network namespaces created by each test.

use nes_tests::common;

use std::collections::BTreeSet;
use std::time::Duration;

use agent::apply::Outcome;
use agent::engine::Checked;
use agent::owned::Owned;
use common::{require_root, spec, NetlinkWitness, PodFixture};

/// Whether the pod's eth0 has `cidr`.
fn has_address(fx: &PodFixture, cidr: &str) -> bool {
    fx.pod.addresses("eth0").iter().any(|a| a == cidr)
}

const BASIC: &str = r#"
interfaces:
  - name: eth0
    mtu: 1400
    addresses: ["10.10.0.5/24", "10.10.1.5/24"]
routes:
  - dst: 10.20.0.0/16
    via: 10.10.0.1
  - dst: 10.30.0.0/16
    dev: eth0
    table: 100
    metric: 7
"#;

#[tokio::test]
async fn apply_configures_an_existing_interface_and_reapply_writes_nothing() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("apply");
    let net = fx.open().await;
    let desired = spec(BASIC);

    let first = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    assert_eq!(first.writes, 5, "mtu + 2 addresses + 2 routes");
    let addrs = fx.pod.addresses("eth0");
    assert!(
        addrs.contains(&"10.10.0.5/24".to_string()) && addrs.contains(&"10.10.1.5/24".to_string()),
        "{addrs:?}"
    );
    assert!(
        addrs.contains(&"10.244.0.5/24".to_string()),
        "the CNI address stays: {addrs:?}"
    );
    let routes = fx.pod.routes();
    assert!(
        routes.contains("10.20.0.0/16 via 10.10.0.1 dev eth0 proto 78"),
        "{routes}"
    );
    assert!(
        routes.contains("10.30.0.0/16 dev eth0 table 100 proto 78 scope link metric 7"),
        "{routes}"
    );
    assert!(fx.pod.ip(&["link", "show", "eth0"]).contains("mtu 1400"));

    let witness = NetlinkWitness::start(&fx.pod).await;
    let again = net
        .converge(&desired, &first.owned)
        .await
        .expect("re-converge");
    assert_eq!(
        again.writes, 0,
        "re-applying an unchanged spec writes nothing: {again:#?}"
    );
    assert_eq!(again.owned, first.owned);
    assert_eq!(
        witness.stop().await,
        Vec::<String>::new(),
        "ip monitor saw a write"
    );
}

#[tokio::test]
async fn a_restarted_engine_adopts_the_converged_state_with_zero_writes() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("adopt");
    let desired = spec(BASIC);
    let owned = {
        let net = fx.open().await;
        net.converge(&desired, &Owned::default())
            .await
            .expect("converge")
            .owned
    };
    // A new engine (as after an agent restart) with the persisted record.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("owned.json");
    owned.save(&path).expect("persist");
    let witness = NetlinkWitness::start(&fx.pod).await;
    let net = fx.open().await;
    let report = net
        .converge(&desired, &Owned::load(&path).expect("load"))
        .await
        .expect("converge");
    assert_eq!(report.writes, 0, "{report:#?}");
    assert_eq!(report.owned, owned);
    assert_eq!(
        witness.stop().await,
        Vec::<String>::new(),
        "ip monitor saw a write"
    );
}

#[tokio::test]
async fn removing_objects_from_the_spec_removes_only_what_nes_added() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("remove");
    let net = fx.open().await;
    let full = spec(
        r#"
interfaces:
  - name: eth0
    addresses: ["10.10.0.5/24", "10.244.0.5/24"]
  - name: br0
    type: bridge
    addresses: ["192.168.50.1/24"]
routes:
  - dst: 10.20.0.0/16
    via: 10.10.0.1
"#,
    );
    let first = net
        .converge(&full, &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    assert!(fx.pod.has_link("br0"));
    // Someone else's static route must survive.
    fx.pod.ip(&[
        "route",
        "add",
        "10.99.0.0/16",
        "via",
        "10.244.0.1",
        "proto",
        "static",
    ]);

    let reduced = spec("interfaces:\n  - name: eth0\n");
    let report = net
        .converge(&reduced, &first.owned)
        .await
        .expect("converge");
    assert!(report.is_converged(), "{report:#?}");
    assert!(!fx.pod.has_link("br0"), "the bridge nes created is gone");
    let addrs = fx.pod.addresses("eth0");
    assert!(
        !addrs.contains(&"10.10.0.5/24".to_string()),
        "nes's address is gone: {addrs:?}"
    );
    assert!(
        addrs.contains(&"10.244.0.5/24".to_string()),
        "the CNI's address (declared, never added) stays: {addrs:?}"
    );
    let routes = fx.pod.routes();
    assert!(!routes.contains("proto 78"), "{routes}");
    assert!(
        routes.contains("10.99.0.0/16 via 10.244.0.1"),
        "foreign route stays: {routes}"
    );
    assert!(
        routes.contains("default via 10.244.0.1"),
        "CNI default route stays: {routes}"
    );
    assert!(
        report.owned.addresses.is_empty() && report.owned.links.is_empty(),
        "{:?}",
        report.owned
    );
}

#[tokio::test]
async fn ipv6_addresses_and_routes_converge_and_reapply_writes_nothing() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("v6");
    let net = fx.open().await;
    let desired = spec(
        r#"
interfaces:
  - name: eth0
    addresses: ["fd00:10::5/64"]
routes:
  - dst: fd00:20::/64
    via: fd00:10::1
    dev: eth0
  - dst: fd00:30::/64
    dev: eth0
    metric: 300
    table: 200
"#,
    );
    let first = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    assert!(has_address(&fx, "fd00:10::5/64"));
    let routes = fx.pod.routes();
    assert!(
        routes.contains("fd00:20::/64 via fd00:10::1 dev eth0 proto 78 metric 1024"),
        "{routes}"
    );
    assert!(
        routes.contains("fd00:30::/64 dev eth0 table 200 proto 78 metric 300"),
        "{routes}"
    );
    let witness = NetlinkWitness::start(&fx.pod).await;
    let again = net
        .converge(&desired, &first.owned)
        .await
        .expect("converge");
    assert_eq!(again.writes, 0, "{again:#?}");
    assert_eq!(
        witness.stop().await,
        Vec::<String>::new(),
        "ip monitor saw a write"
    );
}

#[tokio::test]
async fn a_refused_write_names_the_object_and_the_errno() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("errno");
    let net = fx.open().await;
    // The gateway is on no connected network: the kernel answers ENETUNREACH.
    let desired = spec(
        "interfaces:\n  - name: eth0\nroutes:\n  - dst: 10.20.0.0/16\n    via: 172.31.255.1\n",
    );
    let report = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    let failed: Vec<_> = report.failures().collect();
    assert_eq!(failed.len(), 1, "{report:#?}");
    let Outcome::Failed { errno, message } = &failed[0].outcome else {
        unreachable!()
    };
    assert_eq!(*errno, Some(nix::errno::Errno::ENETUNREACH as i32));
    assert!(
        message.contains("route 10.20.0.0/16 table 254 metric 0"),
        "{message}"
    );
    assert!(message.contains("ENETUNREACH"), "{message}");
    assert!(!report.is_converged());
    assert!(
        !report.owned.routes.contains(&desired.routes[0].key()),
        "a failed route is not owned"
    );

    // Retrying with backoff stops at the deadline and reports the same failure.
    let started = std::time::Instant::now();
    let last = net
        .converge_until(&desired, &Owned::default(), Duration::from_millis(700))
        .await
        .expect("retry");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(last.failures().count(), 1);
    assert!(last.writes >= 2, "retried at least once: {}", last.writes);
}

/// A spec of eth0 (10.0.0.2/24) and `n` routes, each via eth0's own subnet or, when
/// `refused(i)`, via a gateway on no connected network (ENETUNREACH); and the objects the
/// refused ones are reported as.
fn routes_some_unreachable(
    n: u32,
    refused: impl Fn(u32) -> bool,
) -> (api::NetworkConfigurationSpec, BTreeSet<String>) {
    let mut yaml =
        String::from("interfaces:\n  - name: eth0\n    addresses: [10.0.0.2/24]\nroutes:\n");
    let mut objects = BTreeSet::new();
    for i in 0..n {
        let dst = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
        let via = match refused(i) {
            true => {
                objects.insert(format!("route {dst} table 254 metric 0"));
                "172.31.255.1"
            }
            false => "10.0.0.1",
        };
        yaml.push_str(&format!("  - dst: {dst}\n    via: {via}\n"));
    }
    (spec(&yaml), objects)
}

/// The object of each failed write, in the report's order; each must be ENETUNREACH.
fn unreachable_failures(report: &agent::apply::ApplyReport) -> Vec<String> {
    report
        .failures()
        .map(|r| match &r.outcome {
            Outcome::Failed { errno, message } => {
                assert_eq!(
                    *errno,
                    Some(nix::errno::Errno::ENETUNREACH as i32),
                    "{message}"
                );
                message.split(':').next().unwrap_or_default().to_string()
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Writes go to the kernel many to a datagram, and answers are matched to writes by
/// sequence number: a refusal in the middle of a batch, or in a later datagram, must be
/// reported against its own route and no other.
#[tokio::test]
async fn refusals_inside_batched_writes_are_each_reported_against_their_own_object() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("batch");
    let net = fx.open().await;
    // 900 routes (several datagrams, more than one window); every 7th refused.
    let (desired, refused) = routes_some_unreachable(900, |i| i % 7 == 3);
    let report = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert_eq!(report.writes, 901, "one address and 900 routes");
    let failed: BTreeSet<String> = unreachable_failures(&report).into_iter().collect();
    assert_eq!(failed, refused, "each refusal is its own route's");
    // The kernel agrees: every other route is there, none of the refused ones.
    let routes = fx.pod.ip(&["route", "show", "proto", "78"]);
    assert_eq!(routes.lines().count(), 900 - refused.len(), "{routes}");
    assert!(!routes.contains("172.31.255.1"), "{routes}");
}

/// Only the last write of a datagram asks for an acknowledgement; the kernel answers the
/// others only to refuse them. When every write is refused (the last of each datagram too),
/// each refusal is still its own route's, and nothing waits for an answer that never comes.
#[tokio::test]
async fn a_batch_refused_throughout_reports_every_write_once() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("allref");
    let net = fx.open().await;
    let (desired, refused) = routes_some_unreachable(600, |_| true);
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        net.converge(&desired, &Owned::default()),
    )
    .await
    .expect("every write answered")
    .expect("converge");
    assert_eq!(report.writes, 601, "one address and 600 routes");
    let failed = unreachable_failures(&report);
    assert_eq!(failed.len(), 600, "each refused route reported once");
    assert_eq!(failed.into_iter().collect::<BTreeSet<_>>(), refused);
    assert!(
        fx.pod.ip(&["addr", "show", "eth0"]).contains("10.0.0.2/24"),
        "the address before them applied"
    );
}

#[tokio::test]
async fn a_link_name_taken_by_someone_else_is_reported_not_taken_over() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("foreign");
    fx.pod.ip(&["link", "add", "br0", "type", "bridge"]);
    let net = fx.open().await;
    let desired = spec("interfaces:\n  - name: br0\n    type: bridge\n    mtu: 1400\n");
    let report = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert_eq!(report.writes, 0);
    assert_eq!(report.blocked.len(), 1, "{report:#?}");
    assert!(report.blocked[0].reason.contains("not created by nes"));
    assert!(!fx.pod.ip(&["link", "show", "br0"]).contains("mtu 1400"));

    let (ifs, _) = agent::status::status(
        &desired,
        &net.observe().await.expect("observe"),
        Some(&report),
        net.host_access(),
    );
    assert_eq!(ifs[0].state, api::ObjectState::Failed);
}

#[tokio::test]
async fn an_existing_link_gets_its_own_mtu_and_state_back_when_it_leaves_the_spec() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("restore");
    let net = fx.open().await;
    let before = fx.pod.ip(&["link", "show", "eth0"]);
    assert!(
        before.contains("mtu 1500") && before.contains(",UP"),
        "{before}"
    );

    let managed = net
        .converge(
            &spec("interfaces:\n  - name: eth0\n    mtu: 1400\n    state: down\n"),
            &Owned::default(),
        )
        .await
        .expect("converge");
    assert!(managed.is_converged(), "{managed:#?}");
    let during = fx.pod.ip(&["link", "show", "eth0"]);
    assert!(
        during.contains("mtu 1400") && !during.contains(",UP"),
        "{during}"
    );

    let released = net
        .converge(&spec("interfaces: []\n"), &managed.owned)
        .await
        .expect("converge");
    assert!(released.is_converged(), "{released:#?}");
    let after = fx.pod.ip(&["link", "show", "eth0"]);
    assert!(
        after.contains("mtu 1500") && after.contains(",UP"),
        "{after}"
    );

    let again = net
        .converge(&spec("interfaces: []\n"), &released.owned)
        .await
        .expect("converge");
    assert_eq!(again.writes, 0, "{again:#?}");
    assert_eq!(again.owned, Owned::default(), "nothing left to put back");
}

/// The kernel flushes IPv6 addresses when a link goes down; nes adds them after setting the
/// link down, so they stay and a re-apply writes nothing.
#[tokio::test]
async fn a_down_link_keeps_its_ipv6_addresses_and_reapply_writes_nothing() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("down6");
    let net = fx.open().await;
    let desired =
        spec("interfaces:\n  - name: eth0\n    state: down\n    addresses: [\"fd00:6::5/64\"]\n");
    let first = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    assert!(has_address(&fx, "fd00:6::5/64"));
    let witness = NetlinkWitness::start(&fx.pod).await;
    for _ in 0..3 {
        let again = net
            .converge(&desired, &first.owned)
            .await
            .expect("converge");
        assert_eq!(again.writes, 0, "{again:#?}");
    }
    assert_eq!(
        witness.stop().await,
        Vec::<String>::new(),
        "ip monitor saw a write"
    );
}

/// The witness the zero-write tests rely on sees a write made in its window, and only that.
#[tokio::test]
async fn the_netlink_witness_reports_a_write_in_its_window() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("witness");
    fx.pod.ip(&["addr", "add", "10.77.0.1/24", "dev", "eth0"]);
    let witness = NetlinkWitness::start(&fx.pod).await;
    fx.pod.ip(&["link", "set", "eth0", "mtu", "1300"]);
    let seen = witness.stop().await;
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|e| e.contains("eth0") && e.contains("mtu 1300")),
        "{seen:#?}"
    );
}

/// A pass handed a desired state whose save is still running plans, then waits: nothing
/// reaches the kernel (nor the ownership record) before the record is written, and nothing
/// at all when the save fails first. Once the record is written the pass goes on while its
/// sync to disk runs.
#[tokio::test]
async fn a_pass_writes_nothing_until_its_desired_state_is_written() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("saved");
    let net = fx.open().await;
    let desired = spec("interfaces: [{name: eth0, addresses: [10.11.0.5/24]}]");
    let recorded = std::sync::Mutex::new(Vec::new());
    let record = |o: Owned| {
        recorded.lock().expect("lock").push(o);
        async { Ok(()) }
    };

    let witness = NetlinkWitness::start(&fx.pod).await;
    let (saving, saved) = agent::saved::Saved::pending();
    let owned = Owned::default();
    let pass = net.converge_checked(&desired, Checked::No, &saved, &owned, record);
    tokio::pin!(pass);
    // However long the save takes, the pass waits for it.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut pass)
            .await
            .is_err(),
        "the pass ended before its desired state was saved"
    );
    assert!(
        recorded.lock().expect("lock").is_empty(),
        "recorded before the save"
    );
    saving.finish(false);
    let refused = pass.await.expect_err("a pass whose state was not saved");
    assert!(
        matches!(refused, agent::error::Error::NotSaved),
        "{refused}"
    );
    assert!(recorded.lock().expect("lock").is_empty());
    assert_eq!(
        witness.stop().await,
        Vec::<String>::new(),
        "written though not saved"
    );
    assert!(!has_address(&fx, "10.11.0.5/24"));

    // Written, not yet synced: the pass records its intent and writes.
    let (saving, saved) = agent::saved::Saved::pending();
    let record = |o: Owned| {
        recorded.lock().expect("lock").push(o);
        async { Ok(()) }
    };
    let pass = net.converge_checked(&desired, Checked::No, &saved, &owned, record);
    tokio::pin!(pass);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut pass)
            .await
            .is_err(),
        "the pass ended before its record was written"
    );
    saving.written();
    let report = tokio::time::timeout(Duration::from_secs(10), pass)
        .await
        .expect("the pass waited for the sync")
        .expect("converge once written");
    assert!(report.is_converged(), "{report:#?}");
    assert!(has_address(&fx, "10.11.0.5/24"));
    assert_eq!(
        recorded.lock().expect("lock").len(),
        1,
        "the intent, recorded first"
    );
    saving.finish(true);
}

/// A pod whose agent runs CNI attachments, with none to run: the pass does not wait for the
/// save to plan (it reads the kernel meanwhile), only to write.
#[tokio::test]
async fn a_pass_with_no_plugin_to_run_plans_while_its_state_is_saved() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("savedp");
    let cni = tempfile::tempdir().expect("tempdir");
    let attacher = agent::cni::attacher::Attacher {
        opts: agent::cni::CniOptions {
            bin_dirs: vec![cni.path().join("bin")],
            conf_dir: cni.path().join("net.d"),
            cache_dir: cni.path().join("cache"),
            ..Default::default()
        },
        pod: agent::cni::keep::PodRef {
            namespace: "default".into(),
            name: "savedp".into(),
            uid: "uid-1".into(),
            sandbox: "sb-savedp".into(),
            netns: fx.pod.path(),
        },
        allowed: true,
        networks: Default::default(),
    };
    let net = fx.open().await.with_attacher(attacher);
    let desired = spec("interfaces: [{name: eth0, addresses: [10.11.0.6/24]}]");
    let (saving, saved) = agent::saved::Saved::pending();
    let owned = Owned::default();
    let record = |_: Owned| async { Ok(()) };
    let pass = net.converge_checked(&desired, Checked::No, &saved, &owned, record);
    tokio::pin!(pass);
    let planned = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            _ = &mut pass => false,
            _ = async {
                while net.mirror().dumps() == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            } => true,
        }
    })
    .await;
    assert_eq!(
        planned,
        Ok(true),
        "the pass did not read the kernel before its state was saved"
    );
    assert!(!has_address(&fx, "10.11.0.6/24"));
    saving.finish(true);
    let report = pass.await.expect("converge once saved");
    assert!(report.is_converged(), "{report:#?}");
    assert!(has_address(&fx, "10.11.0.6/24"));
}
