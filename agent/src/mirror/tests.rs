use super::*;
use crate::observe::{ObservedAddress, ObservedLink, ObservedRoute};

fn link(index: u32, up: bool) -> ObservedLink {
    ObservedLink {
        index,
        name: format!("eth{index}"),
        mtu: 1500,
        admin_up: up,
        oper_state: if up { "up" } else { "down" }.into(),
        ..Default::default()
    }
}

fn addr(index: u32, a: &str) -> ObservedAddress {
    ObservedAddress {
        index,
        addr: a.parse().expect("cidr"),
    }
}

fn route(dst: &str, gateway: Option<&str>) -> ObservedRoute {
    ObservedRoute {
        dst: dst.parse().expect("cidr"),
        table: 254,
        metric: 0,
        protocol: 78,
        gateway: gateway.map(|g| g.parse().expect("ip")),
        oif: Some(2),
        prefsrc: None,
    }
}

fn base() -> Observed {
    Observed {
        links: vec![link(2, true)],
        addresses: vec![addr(2, "10.0.0.5/24")],
        routes: vec![route("10.1.0.0/16", Some("10.0.0.1"))],
        host_links: vec![],
    }
}

#[test]
fn additions_are_followed_and_repeats_change_nothing() {
    let mut o = base();
    let cases = [
        Change::NewAddress(addr(2, "10.0.0.6/24")),
        Change::NewAddress(addr(2, "10.0.0.6/24")),
        Change::NewRoute(route("10.2.0.0/16", Some("10.0.0.1"))),
        Change::NewRoute(route("10.2.0.0/16", Some("10.0.0.1"))),
        Change::NewLink(link(3, false)),
        Change::NewLink(ObservedLink {
            mtu: 9000,
            ..link(2, true)
        }),
        Change::DelRoute(route("10.2.0.0/16", Some("10.0.0.1"))),
    ];
    let mut keys = Keys::of(&o);
    for c in &cases {
        assert_eq!(apply(&mut o, &mut keys, c), Applied::Followed, "{c:?}");
    }
    assert_eq!(o.addresses.len(), 2);
    assert_eq!(o.routes, vec![route("10.1.0.0/16", Some("10.0.0.1"))]);
    assert_eq!(o.links.len(), 2);
    assert_eq!(o.link_by_index(2).map(|l| l.mtu), Some(9000));
}

#[test]
fn changes_with_unannounced_effects_are_doubts() {
    let cases = [
        Change::DelLink(link(2, true)),
        Change::NewLink(link(2, false)),
        Change::DelAddress(addr(2, "10.0.0.5/24")),
        // A route by the same key through another gateway: a replace, or a second path.
        Change::NewRoute(route("10.1.0.0/16", Some("10.0.0.2"))),
        // Removing a route the mirror does not hold: it missed something.
        Change::DelRoute(route("10.9.0.0/16", None)),
    ];
    for c in &cases {
        let mut o = base();
        let mut keys = Keys::of(&o);
        assert_eq!(apply(&mut o, &mut keys, c), Applied::Doubt, "{c:?}");
    }
}

/// An address removed is followed when the kernel announces all it takes with it; not when
/// routes prefer it as their source or it is its link's last IPv4 address.
#[test]
fn address_removals_are_followed_unless_they_take_routes_unannounced() {
    let with = |extra: Vec<ObservedAddress>, routes: Vec<ObservedRoute>| {
        let mut o = base();
        o.addresses.extend(extra);
        o.routes.extend(routes);
        o
    };
    let vip = addr(2, "10.0.0.9/32");
    let v6 = addr(2, "fd00::5/64");
    let preferring = |src: &str| ObservedRoute {
        prefsrc: Some(src.parse().expect("ip")),
        ..route("10.3.0.0/16", None)
    };
    let cases = [
        // Another IPv4 address stays on the link, no route prefers this one.
        (
            with(vec![vip.clone()], vec![]),
            vip.clone(),
            Applied::Followed,
        ),
        (
            with(vec![v6.clone()], vec![]),
            v6.clone(),
            Applied::Followed,
        ),
        // Routes preferring it go (IPv4) or lose their src (IPv6), unannounced.
        (
            with(vec![vip.clone()], vec![preferring("10.0.0.9")]),
            vip.clone(),
            Applied::Doubt,
        ),
        (
            with(vec![v6.clone()], vec![preferring("fd00::5")]),
            v6.clone(),
            Applied::Doubt,
        ),
        // The link's last IPv4 address: the kernel turns IPv4 off there.
        (
            with(vec![v6.clone()], vec![]),
            addr(2, "10.0.0.5/24"),
            Applied::Doubt,
        ),
        // Not held: the mirror missed something.
        (base(), vip.clone(), Applied::Doubt),
    ];
    // The preferring route removed first, the address goes unannounced-free.
    let mut o = with(vec![vip.clone()], vec![preferring("10.0.0.9")]);
    let mut keys = Keys::of(&o);
    let gone = Change::DelRoute(preferring("10.0.0.9"));
    assert_eq!(apply(&mut o, &mut keys, &gone), Applied::Followed);
    let gone = Change::DelAddress(vip.clone());
    assert_eq!(apply(&mut o, &mut keys, &gone), Applied::Followed);

    for (mut o, gone, expected) in cases {
        let mut keys = Keys::of(&o);
        let held = o.addresses.len();
        let applied = apply(&mut o, &mut keys, &Change::DelAddress(gone.clone()));
        assert_eq!(applied, expected, "{gone:?} from {o:?}");
        if applied == Applied::Followed {
            assert_eq!(o.addresses.len(), held - 1);
            assert!(!o.addresses.contains(&gone));
            // Its keys went with it: removed again, it is one the mirror does not hold.
            assert_eq!(
                apply(&mut o, &mut keys, &Change::DelAddress(gone)),
                Applied::Doubt
            );
        }
    }
}

#[test]
fn a_mirror_is_trusted_only_while_fed_and_undoubted() {
    let m = Mirror::default();
    let asked = Instant::now();
    assert_eq!(m.current(asked, MAX_AGE), None);
    // Not fed: the dump is shared with readers that asked before it, never trusted.
    let t = m.begin_dump();
    m.land(t, Some(base()));
    assert!(!m.is_trusted());
    assert_eq!(m.current(asked, MAX_AGE).as_deref(), Some(&base()));
    assert_eq!(m.current(Instant::now(), MAX_AGE), None);

    m.set_fed(true);
    let t = m.begin_dump();
    // A change announced while the dump is in flight is applied on top of it.
    m.change(Change::NewAddress(addr(2, "10.0.0.7/24")));
    m.land(t, Some(base()));
    assert!(m.is_trusted());
    m.change(Change::NewAddress(addr(2, "10.0.0.8/24")));
    let now = m.current(Instant::now(), MAX_AGE).expect("trusted");
    assert_eq!(now.addresses.len(), 3);
    assert_eq!(m.dumps(), 2);

    // Too old: not answered from the mirror.
    assert_eq!(m.current(Instant::now(), Duration::ZERO), None);

    m.change(Change::DelLink(link(2, true)));
    assert!(!m.is_trusted(), "a link removed is a doubt");

    // A doubt while a dump is in flight: that dump is not trusted.
    let t = m.begin_dump();
    m.doubt();
    m.land(t, Some(base()));
    assert!(!m.is_trusted());

    // The listener gone: nothing is trusted any more.
    let t = m.begin_dump();
    m.land(t, Some(base()));
    assert!(m.is_trusted());
    m.set_fed(false);
    assert!(!m.is_trusted());
}
