//! Root tests: typed netlink events and drift healing.

use nes_tests::common;

use std::sync::Arc;
use std::time::Duration;

use agent::owned::Owned;
use agent::watch::{spawn_keeper, Events, KeeperOptions, NetEvent};
use common::{eventually, process_holds_netns, require_root, spec, PodFixture};

async fn next_matching(rx: &mut Events, want: impl Fn(&NetEvent) -> bool) -> Option<NetEvent> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Ok(ev) if want(&ev) => return Some(ev),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn events_report_link_down_mtu_change_and_address_removal() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("events");
    let net = fx.open().await;
    let mut rx = net.events().await.expect("subscribe");
    fx.pod.ip(&["link", "set", "eth0", "mtu", "1300"]);
    let ev = next_matching(&mut rx, |e| matches!(e, NetEvent::MtuChanged { .. })).await;
    assert_eq!(
        ev,
        Some(NetEvent::MtuChanged {
            ifname: "eth0".into(),
            index: ev_index(&ev),
            old: 1500,
            new: 1300
        })
    );
    fx.pod.ip(&["link", "set", "eth0", "down"]);
    let ev = next_matching(&mut rx, |e| matches!(e, NetEvent::LinkDown { .. })).await;
    assert!(
        matches!(ev, Some(NetEvent::LinkDown { ref ifname, .. }) if ifname == "eth0"),
        "{ev:?}"
    );
    fx.pod
        .ip(&["addr", "add", "10.9.9.9/24", "dev", "cni-peer"]);
    fx.pod
        .ip(&["addr", "del", "10.9.9.9/24", "dev", "cni-peer"]);
    let ev = next_matching(
        &mut rx,
        |e| matches!(e, NetEvent::AddressRemoved { address, .. } if address == "10.9.9.9/24"),
    )
    .await;
    assert_eq!(
        ev.map(|e| match e {
            NetEvent::AddressRemoved {
                ifname, address, ..
            } => (ifname, address),
            _ => unreachable!(),
        }),
        Some(("cni-peer".to_string(), "10.9.9.9/24".to_string()))
    );
}

fn ev_index(ev: &Option<NetEvent>) -> u32 {
    match ev {
        Some(NetEvent::MtuChanged { index, .. }) => *index,
        _ => 0,
    }
}

#[tokio::test]
async fn an_owned_address_deleted_behind_nes_back_comes_back() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("drift");
    let net = Arc::new(fx.open().await);
    let desired = spec(
        "interfaces:\n  - name: eth0\n    addresses: [\"10.10.0.5/24\"]\nroutes:\n  - dst: 10.20.0.0/16\n    via: 10.10.0.1\n",
    );
    let (_spec_tx, spec_rx) = tokio::sync::watch::channel(desired);
    let opts = KeeperOptions {
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(3600),
    };
    let mut reports = spawn_keeper(net.clone(), spec_rx, Owned::default(), opts.clone());
    tokio::time::timeout(
        Duration::from_secs(5),
        reports.wait_for(|r| r.as_ref().is_some_and(|r| r.is_converged())),
    )
    .await
    .expect("first pass in time")
    .expect("keeper alive");
    assert!(fx
        .pod
        .addresses("eth0")
        .contains(&"10.10.0.5/24".to_string()));

    // Deleting the address also flushes the route through it; both must come back, in one
    // pass (addresses before routes).
    reports.mark_unchanged();
    fx.pod.ip(&["addr", "del", "10.10.0.5/24", "dev", "eth0"]);
    tokio::time::timeout(Duration::from_secs(5), reports.changed())
        .await
        .expect("the drift gets a pass")
        .expect("keeper alive");
    let healed = eventually(Duration::from_secs(5), || {
        fx.pod
            .addresses("eth0")
            .contains(&"10.10.0.5/24".to_string())
            && fx.pod.routes().contains("10.20.0.0/16 via 10.10.0.1")
    })
    .await;
    assert!(
        healed,
        "address and route restored; routes:\n{}",
        fx.pod.routes()
    );

    // A foreign change (the CNI's address is not ours) is not drift: no keeper pass runs for
    // it. A pass would come one debounce after the event; ten debounces of nothing, then a
    // real drift whose pass does come, show that the keeper was listening all along.
    reports.mark_unchanged();
    let writes = net.writes();
    fx.pod
        .ip(&["addr", "add", "10.244.1.5/24", "dev", "cni-peer"]);
    fx.pod
        .ip(&["addr", "del", "10.244.1.5/24", "dev", "cni-peer"]);
    let pass = tokio::time::timeout(opts.debounce * 10, reports.changed()).await;
    assert!(
        pass.is_err(),
        "a keeper pass ran for a foreign change: {:?}",
        reports.borrow().as_deref().map(|r| r.writes)
    );
    assert_eq!(net.writes(), writes, "foreign changes are not drift");
    fx.pod.ip(&["addr", "del", "10.10.0.5/24", "dev", "eth0"]);
    tokio::time::timeout(Duration::from_secs(5), reports.changed())
        .await
        .expect("a real drift gets a pass")
        .expect("keeper alive");
}

/// A big change of the keeper's own making echoes as more events than the channel holds
/// (500 addresses + 1000 routes); the keeper keeps up with them while its pass runs, so
/// they cost no second pass.
#[tokio::test]
async fn a_big_change_of_the_keepers_own_making_runs_one_pass() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("bigk");
    let net = Arc::new(fx.open().await);
    let addresses: Vec<String> = (0..500)
        .map(|i| format!("10.1.{}.{}/16", i / 250, i % 250 + 1))
        .collect();
    let routes: Vec<serde_json::Value> = (0..1000)
        .map(|i| serde_json::json!({"dst": format!("172.{}.{}.0/24", 16 + i / 256, i % 256), "via": "10.244.0.1"}))
        .collect();
    let desired: api::NetworkConfigurationSpec = serde_json::from_value(serde_json::json!({
        "interfaces": [{"name": "eth0", "addresses": addresses}],
        "routes": routes,
    }))
    .expect("spec");
    let (_spec_tx, spec_rx) = tokio::sync::watch::channel(desired);
    let opts = KeeperOptions {
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(3600),
    };
    let mut reports = spawn_keeper(net.clone(), spec_rx, Owned::default(), opts.clone());
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        reports.wait_for(|r| r.as_ref().is_some_and(|r| r.is_converged())),
    )
    .await
    .expect("first pass in time")
    .expect("keeper alive")
    .clone();
    assert_eq!(first.as_ref().map(|r| r.writes), Some(1500));
    reports.mark_unchanged();
    // A second pass would follow at once (a lagged channel) or one debounce after the
    // echo; twenty debounces of nothing show there is none.
    let pass = tokio::time::timeout(opts.debounce * 20, reports.changed()).await;
    assert!(
        pass.is_err(),
        "a second pass ran: {:?} writes",
        reports.borrow().as_deref().map(|r| r.writes)
    );
}

/// A spec of one address on eth0.
fn one_address(address: &str) -> api::NetworkConfigurationSpec {
    spec(&format!(
        "interfaces:\n  - name: eth0\n    addresses: [\"{address}\"]\n"
    ))
}

/// Waits (with a deadline) for the keeper's report of a converged pass owning `address`.
async fn until_owned(
    reports: &mut tokio::sync::watch::Receiver<Option<Arc<agent::apply::ApplyReport>>>,
    address: &str,
) {
    tokio::time::timeout(
        common::scaled(Duration::from_secs(5)),
        reports.wait_for(|r| {
            r.as_ref()
                .is_some_and(|r| r.is_converged() && r.owned.owns_address("eth0", address))
        }),
    )
    .await
    .expect("the pass in time")
    .expect("keeper alive");
}

/// Replacing one address (one removal, one addition) is the commonest request. The pass's
/// own removal of an address nobody wants any more is no drift, so no change costs a
/// second pass a debounce later (which the next request used to wait behind).
#[tokio::test]
async fn replacing_an_address_runs_exactly_one_pass_per_change() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("onepass");
    let net = Arc::new(fx.open().await);
    let address = |n: u32| format!("10.2.0.{n}/32");
    let (spec_tx, spec_rx) = tokio::sync::watch::channel(one_address(&address(1)));
    let opts = KeeperOptions {
        debounce: Duration::from_millis(20),
        resync: Duration::from_secs(3600),
    };
    let mut reports = spawn_keeper(net.clone(), spec_rx, Owned::default(), opts.clone());
    until_owned(&mut reports, &address(1)).await;
    let mut extra = Vec::new();
    for n in 2..=12 {
        reports.mark_unchanged();
        spec_tx.send_replace(one_address(&address(n)));
        until_owned(&mut reports, &address(n)).await;
        reports.mark_unchanged();
        // A drift pass would come one debounce after the echo; five debounces of nothing
        // show there is none.
        if tokio::time::timeout(opts.debounce * 5, reports.changed())
            .await
            .is_ok()
        {
            extra.push(n);
        }
    }
    assert!(
        extra.is_empty(),
        "changes followed by a second pass: {extra:?}"
    );
}

/// A request must not wait behind a drift's debounce: the pass it gets heals the drift too.
/// With a debounce of an hour, the pass for a new desired state still runs at once.
#[tokio::test]
async fn a_new_desired_state_cuts_a_drift_debounce_short() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("cutdeb");
    let net = Arc::new(fx.open().await);
    let address = |n: u32| format!("10.3.0.{n}/24");
    let (spec_tx, spec_rx) = tokio::sync::watch::channel(one_address(&address(1)));
    let opts = KeeperOptions {
        debounce: Duration::from_secs(3600),
        resync: Duration::from_secs(3600),
    };
    let mut reports = spawn_keeper(net.clone(), spec_rx, Owned::default(), opts);
    let mut mine = net.events().await.expect("subscribe");
    for n in 1..=3 {
        let addr = address(n);
        until_owned(&mut reports, &addr).await;
        // Drift: the owned address goes behind nes's back; the keeper sees the same event.
        fx.pod.ip(&["addr", "del", &addr, "dev", "eth0"]);
        next_matching(
            &mut mine,
            |e| matches!(e, NetEvent::AddressRemoved { address, .. } if *address == addr),
        )
        .await
        .expect("the removal's event");
        spec_tx.send_replace(one_address(&address(n + 1)));
    }
    // Without the cut, this waits an hour.
    until_owned(&mut reports, &address(4)).await;
}

/// A namespace being removed must not stay pinned by nes's event socket until some event
/// happens to arrive in it: the listener closes as soon as its engine and every receiver
/// are gone.
#[tokio::test]
async fn dropping_the_last_event_receiver_closes_the_socket_without_waiting_for_an_event() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("unpin");
    // No IPv6 means no late kernel events (DAD, link-local addresses) that would end the
    // listener anyway and hide a listener that only notices at its next event.
    common::run(&[
        "ip",
        "netns",
        "exec",
        &fx.pod.name,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
        "net.ipv6.conf.eth0.disable_ipv6=1",
    ]);
    let inode = agent::netns::identity(fx.pod.path())
        .expect("identity")
        .inode;
    let net = fx.open().await;
    let rx = net.events().await.expect("subscribe");
    drop(rx);
    drop(net);
    assert!(
        eventually(Duration::from_secs(5), || !process_holds_netns(inode)).await,
        "the namespace is still held after its engine and event receiver were dropped"
    );
}

/// A subscriber that never reads holds a bounded number of events however many the
/// namespace announces: the listener's batches are capped and the channel keeps the newest
/// of them. 12,000 address events go by; the idle subscriber is told it lagged and then
/// holds at most `MAX_LAGGING_EVENTS`.
#[tokio::test]
async fn a_subscriber_that_never_reads_holds_a_bounded_number_of_events() {
    use futures::FutureExt;
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("evbound");
    let net = fx.open().await;
    let mut idle = net.events().await.expect("subscribe");
    let mut probe = net.events().await.expect("subscribe");
    const N: usize = 6000;
    let address = |i: usize| format!("10.{}.{}.{}/32", 100 + i / 65536, (i / 256) % 256, i % 256);
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = dir.path().join("batch");
    let mut lines = String::new();
    for verb in ["add", "del"] {
        for i in 0..N {
            lines.push_str(&format!("address {verb} {} dev eth0\n", address(i)));
        }
    }
    std::fs::write(&batch, lines).expect("write batch");
    fx.pod.ip(&["-batch", &batch.display().to_string()]);
    let last = address(N - 1);
    // The probe reads everything; once it has the last removal, the idle one has had its
    // chance to receive all of it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    loop {
        match tokio::time::timeout_at(deadline, probe.recv()).await {
            Ok(Ok(NetEvent::AddressRemoved { address, .. })) if address == last => break,
            Ok(Ok(_)) => seen += 1,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("the probe's events ended: {e}"),
            Err(_) => panic!("the last removal never came ({seen} events seen)"),
        }
    }
    let lagged = matches!(
        idle.recv().now_or_never(),
        Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_)))
    );
    let mut held = 0;
    while let Some(Ok(_)) = idle.recv().now_or_never() {
        held += 1;
    }
    assert!(
        held <= agent::watch::MAX_LAGGING_EVENTS,
        "the idle subscriber held {held} events, more than {}",
        agent::watch::MAX_LAGGING_EVENTS
    );
    assert!(
        lagged,
        "the idle subscriber did not lag after {} events",
        2 * N
    );
    assert!(held > 0, "the idle subscriber held nothing");
}
