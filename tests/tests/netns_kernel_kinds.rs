//! Link kinds the build machine's kernel may lack (vlan, QinQ, ipvlan, dummy and bond as
//! parents), driven through the engine's public API ([`PodNetwork::converge`]) in throw-away
//! network namespaces.
//!
//! Each test asks [`common::require_kind`] first: on a kernel without the kind it prints a
//! `SKIP` line and returns (or panics when `NES_REQUIRE_KINDS` lists the kind, as in the
//! real-kernel VM lane, `scripts/test-kernel.sh`, where none of these may skip).
//!
//! Fixtures (the namespaces, the dummy and bond parents) are made with iproute2, specs go
//! through the one validator (`common::spec`), and what the engine built is checked with
//! `ip -d -j link show`: an oracle independent of the engine's own netlink reading.

use nes_tests::common;

use agent::apply::ApplyReport;
use agent::engine::PodNetwork;
use agent::owned::Owned;
use agent::plan::ObjectRef;
use api::NetworkConfigurationSpec;
use common::{spec, Netns};
use serde_json::Value;

// --- fixtures ---------------------------------------------------------------------------

/// The link as `ip -d -j link show dev NAME` reports it, or None if there is none.
fn link(ns: &Netns, name: &str) -> Option<Value> {
    if !ns.has_link(name) {
        return None;
    }
    ns.ip_json(&["-d", "link", "show", "dev", name])
        .as_array()
        .and_then(|a| a.first())
        .cloned()
}

fn must_link(ns: &Netns, name: &str) -> Value {
    link(ns, name).unwrap_or_else(|| {
        panic!(
            "link {name} is missing in {}; links:\n{}",
            ns.name,
            ns.ip(&["-br", "link"])
        )
    })
}

/// Global-scope addresses of a link (no fe80::), as CIDR strings, sorted.
fn addresses(ns: &Netns, name: &str) -> Vec<String> {
    let v = ns.ip_json(&["addr", "show", "dev", name]);
    let mut out: Vec<String> = v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"] == "global")
        .map(|a| {
            format!(
                "{}/{}",
                a["local"].as_str().unwrap_or_default(),
                a["prefixlen"]
            )
        })
        .collect();
    out.sort();
    out
}

/// A pod namespace and a separate, empty "host" namespace, both throw-away, and the engine
/// on them.
struct Pod {
    ns: Netns,
    _host: Netns,
    net: PodNetwork,
    owned: Owned,
}

impl Pod {
    async fn new(tag: &str) -> Pod {
        let ns = Netns::new(tag);
        let host = Netns::new(&format!("{tag}h"));
        let net = PodNetwork::open(ns.path(), host.path())
            .await
            .expect("open the pod namespace");
        Pod {
            ns,
            _host: host,
            net,
            owned: Owned::default(),
        }
    }

    /// One converge pass; keeps the ownership record for the next one.
    async fn converge(&mut self, spec: &NetworkConfigurationSpec) -> ApplyReport {
        let report = self
            .net
            .converge(spec, &self.owned)
            .await
            .expect("converge");
        self.owned = report.owned.clone();
        report
    }

    /// Converges and asserts success, then asserts a second pass writes nothing.
    async fn converge_ok(&mut self, spec: &NetworkConfigurationSpec) {
        let report = self.converge(spec).await;
        assert!(report.is_converged(), "not converged: {report:#?}");
        let again = self.converge(spec).await;
        assert!(
            again.is_converged(),
            "second pass not converged: {again:#?}"
        );
        assert_eq!(again.writes, 0, "second pass wrote: {again:#?}");
    }

    /// `ip link add NAME type dummy` + up: a parent the engine sees as an existing interface.
    fn dummy(&self, name: &str) {
        self.ns.ip(&["link", "add", name, "type", "dummy"]);
        self.ns.ip(&["link", "set", name, "up"]);
    }
}

/// Asserts what the kernel says about a VLAN link: kind, id, protocol, parent, up.
fn assert_vlan(ns: &Netns, name: &str, parent: &str, id: u64, proto: &str) -> Value {
    let l = must_link(ns, name);
    assert_eq!(l["linkinfo"]["info_kind"], "vlan", "{name}: {l:#}");
    assert_eq!(l["linkinfo"]["info_data"]["id"], id, "{name}: {l:#}");
    assert_eq!(
        l["linkinfo"]["info_data"]["protocol"], proto,
        "{name}: {l:#}"
    );
    assert_eq!(l["link"], parent, "{name}'s parent: {l:#}");
    let up = l["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| f == "UP");
    assert!(up, "{name} is not up: {l:#}");
    l
}

fn assert_ipvlan(ns: &Netns, name: &str, parent: &str, mode: &str) {
    let l = must_link(ns, name);
    assert_eq!(l["linkinfo"]["info_kind"], "ipvlan", "{name}: {l:#}");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], mode, "{name}: {l:#}");
    assert_eq!(l["link"], parent, "{name}'s parent: {l:#}");
}

/// What the report says went wrong with interface `name`: the error of its last failed
/// write and the reasons it is blocked. Panics when there is nothing.
fn rejection(report: &ApplyReport, name: &str) -> String {
    let object = ObjectRef::Interface(name.to_string());
    let texts: Vec<String> = report
        .error_for(&object)
        .into_iter()
        .chain(
            report
                .blocked
                .iter()
                .filter(|b| b.object == object)
                .map(|b| b.reason.clone()),
        )
        .collect();
    assert!(
        !texts.is_empty(),
        "nothing reported for interface {name}: {report:#?}"
    );
    texts.join("\n")
}

/// Skips (or, under NES_REQUIRE_KINDS, fails) unless root and every kind is there.
macro_rules! require {
    ($($kind:literal),+) => {
        if !common::require_root() {
            return;
        }
        $(
            if !common::require_kind($kind) {
                return;
            }
        )+
    };
}

// --- VLAN ---------------------------------------------------------------------------------

#[tokio::test]
async fn vlan_on_an_existing_dummy_parent_with_addresses() {
    require!("dummy", "vlan");
    let mut pod = Pod::new("kk-vlan").await;
    pod.dummy("eth1");
    let s = spec(
        r#"
interfaces:
  - name: eth1
  - name: eth1.100
    type: vlan
    parent: eth1
    vlanId: 100
    addresses: ["192.0.2.10/24", "2001:db8::10/64"]
"#,
    );
    pod.converge_ok(&s).await;
    let l = assert_vlan(&pod.ns, "eth1.100", "eth1", 100, "802.1Q");
    assert_eq!(l["mtu"], 1500, "a VLAN takes its parent's MTU: {l:#}");
    assert_eq!(
        addresses(&pod.ns, "eth1.100"),
        vec!["192.0.2.10/24", "2001:db8::10/64"]
    );
}

#[tokio::test]
async fn vlan_on_a_macvlan() {
    require!("dummy", "vlan");
    let mut pod = Pod::new("kk-mvvlan").await;
    pod.dummy("eth1");
    let s = spec(
        r#"
interfaces:
  - name: eth1
  - name: mv0
    type: macvlan
    parent: eth1
    mode: bridge
  - name: mv0.7
    type: vlan
    parent: mv0
    vlanId: 7
    addresses: ["198.51.100.7/24"]
"#,
    );
    pod.converge_ok(&s).await;
    assert_eq!(
        must_link(&pod.ns, "mv0")["linkinfo"]["info_kind"],
        "macvlan"
    );
    assert_vlan(&pod.ns, "mv0.7", "mv0", 7, "802.1Q");
    assert_eq!(addresses(&pod.ns, "mv0.7"), vec!["198.51.100.7/24"]);
}

#[tokio::test]
async fn vlan_on_a_bond_parent() {
    require!("bond", "vlan");
    let mut pod = Pod::new("kk-bond").await;
    pod.ns.ip(&[
        "link",
        "add",
        "bond0",
        "type",
        "bond",
        "mode",
        "active-backup",
    ]);
    pod.ns.ip(&["link", "set", "bond0", "up"]);
    let s = spec(
        r#"
interfaces:
  - name: bond0
  - name: bond0.30
    type: vlan
    parent: bond0
    vlanId: 30
    addresses: ["203.0.113.30/24"]
"#,
    );
    pod.converge_ok(&s).await;
    assert_vlan(&pod.ns, "bond0.30", "bond0", 30, "802.1Q");
    assert_eq!(addresses(&pod.ns, "bond0.30"), vec!["203.0.113.30/24"]);
}

fn tagged(id: u16) -> NetworkConfigurationSpec {
    spec(&format!(
        r#"
interfaces:
  - name: eth1
  - name: tagged
    type: vlan
    parent: eth1
    vlanId: {id}
    addresses: ["192.0.2.1/24"]
routes:
  - dst: 10.99.0.0/16
    via: 192.0.2.254
"#
    ))
}

#[tokio::test]
async fn vlan_id_change_replaces_the_link() {
    require!("dummy", "vlan");
    let mut pod = Pod::new("kk-vlanid").await;
    pod.dummy("eth1");
    pod.converge_ok(&tagged(100)).await;
    let before = assert_vlan(&pod.ns, "tagged", "eth1", 100, "802.1Q");

    // The kernel cannot change a VLAN's id in place: the engine must replace the link, and
    // put its address and the route through it back.
    pod.converge_ok(&tagged(200)).await;
    let after = assert_vlan(&pod.ns, "tagged", "eth1", 200, "802.1Q");
    assert_ne!(
        before["ifindex"], after["ifindex"],
        "the id change must give a new link"
    );
    assert_eq!(
        addresses(&pod.ns, "tagged"),
        vec!["192.0.2.1/24"],
        "the address follows the new link"
    );
    let routes = pod.ns.routes();
    assert!(
        routes.contains("10.99.0.0/16 via 192.0.2.254 dev tagged"),
        "the route follows: {routes}"
    );
    let vlans = pod.ns.ip(&["-br", "link", "show", "type", "vlan"]);
    assert_eq!(
        vlans.lines().count(),
        1,
        "exactly one VLAN remains: {vlans}"
    );
}

fn qinq(outer: &str) -> NetworkConfigurationSpec {
    spec(&format!(
        r#"
interfaces:
  - name: eth1
  - name: svc100
    type: vlan
    parent: eth1
    vlanId: 100
    vlanProtocol: "{outer}"
  - name: cust10
    type: vlan
    parent: svc100
    vlanId: 10
    vlanProtocol: "802.1Q"
    addresses: ["192.0.2.110/24"]
"#
    ))
}

#[tokio::test]
async fn qinq_802_1ad_service_vlan_carrying_a_customer_vlan() {
    require!("dummy", "vlan");
    let mut pod = Pod::new("kk-qinq").await;
    pod.dummy("eth1");
    pod.converge_ok(&qinq("802.1ad")).await;
    assert_vlan(&pod.ns, "svc100", "eth1", 100, "802.1ad");
    assert_vlan(&pod.ns, "cust10", "svc100", 10, "802.1Q");
    assert_eq!(addresses(&pod.ns, "cust10"), vec!["192.0.2.110/24"]);
}

/// Replacing a parent link takes its VLANs with it (the kernel deletes the uppers of a
/// deleted device): the same pass must rebuild them, not report success without them.
#[tokio::test]
async fn replacing_a_qinq_outer_vlan_rebuilds_the_inner_one_in_the_same_pass() {
    require!("dummy", "vlan");
    let mut pod = Pod::new("kk-qinq2").await;
    pod.dummy("eth1");
    pod.converge_ok(&qinq("802.1ad")).await;

    // Switching the outer tag's protocol cannot be done in place: a new svc100.
    let report = pod.converge(&qinq("802.1Q")).await;
    assert!(report.is_converged(), "{report:#?}");
    assert_vlan(&pod.ns, "svc100", "eth1", 100, "802.1Q");
    assert!(
        pod.ns.has_link("cust10"),
        "the pass reported success, yet cust10 (on the replaced svc100) is gone: {report:#?}"
    );
    assert_vlan(&pod.ns, "cust10", "svc100", 10, "802.1Q");
    assert_eq!(addresses(&pod.ns, "cust10"), vec!["192.0.2.110/24"]);
    let again = pod.converge(&qinq("802.1Q")).await;
    assert_eq!(again.writes, 0, "{again:#?}");
}

fn vlan_with_mtu(name: &str, id: u16, mtu: u32) -> NetworkConfigurationSpec {
    spec(&format!(
        r#"
interfaces:
  - name: eth1
  - name: {name}
    type: vlan
    parent: eth1
    vlanId: {id}
    mtu: {mtu}
"#
    ))
}

/// A person reading the error must learn it is the MTU, and which parent limits it: a bare
/// `EINVAL (22): Invalid argument` / `ERANGE (34)` from the kernel does not say that.
fn assert_clear_mtu_error(err: &str) {
    let lower = err.to_lowercase();
    assert!(
        lower.contains("mtu") && err.contains("eth1") && err.contains("1500"),
        "the error must name the MTU, the parent eth1 and its MTU 1500, got: {err}"
    );
}

#[tokio::test]
async fn vlan_mtu_above_its_parent_is_rejected_with_a_clear_error() {
    require!("dummy", "vlan");
    let mut pod = Pod::new("kk-vlanmtu").await;
    pod.dummy("eth1");
    pod.ns.ip(&["link", "set", "eth1", "mtu", "1500"]);

    // Creating a VLAN with an MTU above its parent's.
    let report = pod.converge(&vlan_with_mtu("eth1.5", 5, 9000)).await;
    assert!(
        !report.is_converged(),
        "an MTU above the parent's must not converge: {report:#?}"
    );
    let err = rejection(&report, "eth1.5");
    assert_clear_mtu_error(&err);
    if let Some(l) = link(&pod.ns, "eth1.5") {
        assert_ne!(l["mtu"], 9000, "{l:#}");
    }
    assert_eq!(
        must_link(&pod.ns, "eth1")["mtu"],
        1500,
        "the parent is left alone"
    );

    // Raising the MTU of an existing VLAN above its parent's.
    pod.converge_ok(&vlan_with_mtu("eth1.6", 6, 1400)).await;
    let report = pod.converge(&vlan_with_mtu("eth1.6", 6, 9000)).await;
    assert!(
        !report.is_converged(),
        "an MTU above the parent's must not converge: {report:#?}"
    );
    let err = rejection(&report, "eth1.6");
    assert_clear_mtu_error(&err);
    assert_eq!(
        must_link(&pod.ns, "eth1.6")["mtu"],
        1400,
        "the VLAN keeps its MTU"
    );
    assert_eq!(
        must_link(&pod.ns, "eth1")["mtu"],
        1500,
        "the parent is left alone"
    );
}

#[tokio::test]
async fn vlan_drift_is_repaired() {
    require!("dummy", "vlan");
    let mut pod = Pod::new("kk-vdrift").await;
    pod.dummy("eth1");
    let s = spec(
        r#"
interfaces:
  - name: eth1
  - name: eth1.42
    type: vlan
    parent: eth1
    vlanId: 42
    mtu: 1400
    addresses: ["192.0.2.42/24"]
"#,
    );
    pod.converge_ok(&s).await;

    // Someone changes the MTU, downs the link and removes the address.
    pod.ns
        .ip(&["link", "set", "eth1.42", "mtu", "1300", "down"]);
    pod.ns
        .ip(&["addr", "flush", "dev", "eth1.42", "scope", "global"]);
    pod.converge_ok(&s).await;
    let l = assert_vlan(&pod.ns, "eth1.42", "eth1", 42, "802.1Q");
    assert_eq!(l["mtu"], 1400, "{l:#}");
    assert_eq!(addresses(&pod.ns, "eth1.42"), vec!["192.0.2.42/24"]);

    // Someone deletes it.
    pod.ns.ip(&["link", "del", "eth1.42"]);
    pod.converge_ok(&s).await;
    let l = assert_vlan(&pod.ns, "eth1.42", "eth1", 42, "802.1Q");
    assert_eq!(l["mtu"], 1400, "{l:#}");
    assert_eq!(addresses(&pod.ns, "eth1.42"), vec!["192.0.2.42/24"]);

    // Someone puts a VLAN of another id under the same name: it carries no nes marker, so
    // nes must report it, not take it over.
    pod.ns.ip(&["link", "del", "eth1.42"]);
    pod.ns.ip(&[
        "link", "add", "link", "eth1", "name", "eth1.42", "type", "vlan", "id", "43",
    ]);
    let report = pod.converge(&s).await;
    assert!(
        !report.is_converged(),
        "a foreign link under the name must be reported: {report:#?}"
    );
    assert_vlan_id(&pod.ns, "eth1.42", 43);
}

fn assert_vlan_id(ns: &Netns, name: &str, id: u64) {
    let l = must_link(ns, name);
    assert_eq!(l["linkinfo"]["info_data"]["id"], id, "{l:#}");
}

// --- ipvlan ---------------------------------------------------------------------------------

#[tokio::test]
async fn ipvlan_l2_and_l3_on_dummy_parents() {
    require!("dummy", "ipvlan");
    let mut pod = Pod::new("kk-ipvlan").await;
    // The mode belongs to the parent's ipvlan port: one parent per mode.
    pod.dummy("eth1");
    pod.dummy("eth2");
    let s = spec(
        r#"
interfaces:
  - name: eth1
  - name: eth2
  - name: ipv2
    type: ipvlan
    parent: eth1
    mode: l2
    addresses: ["192.0.2.20/24"]
  - name: ipv3
    type: ipvlan
    parent: eth2
    mode: l3
    addresses: ["198.51.100.30/24", "2001:db8:3::30/64"]
routes:
  - dst: 10.77.0.0/16
    dev: ipv3
"#,
    );
    pod.converge_ok(&s).await;
    assert_ipvlan(&pod.ns, "ipv2", "eth1", "l2");
    assert_ipvlan(&pod.ns, "ipv3", "eth2", "l3");
    assert_eq!(addresses(&pod.ns, "ipv2"), vec!["192.0.2.20/24"]);
    assert_eq!(
        addresses(&pod.ns, "ipv3"),
        vec!["198.51.100.30/24", "2001:db8:3::30/64"]
    );
    let routes = pod.ns.routes();
    assert!(routes.contains("10.77.0.0/16 dev ipv3"), "{routes}");
}

fn ipvlan_mode(mode: &str) -> NetworkConfigurationSpec {
    spec(&format!(
        r#"
interfaces:
  - name: eth1
  - name: ipv0
    type: ipvlan
    parent: eth1
    mode: {mode}
    addresses: ["192.0.2.50/24"]
"#
    ))
}

#[tokio::test]
async fn ipvlan_mode_change_replaces_the_link_and_drift_is_repaired() {
    require!("dummy", "ipvlan");
    let mut pod = Pod::new("kk-ipvmode").await;
    pod.dummy("eth1");
    pod.converge_ok(&ipvlan_mode("l2")).await;
    assert_ipvlan(&pod.ns, "ipv0", "eth1", "l2");

    pod.converge_ok(&ipvlan_mode("l3")).await;
    assert_ipvlan(&pod.ns, "ipv0", "eth1", "l3");
    assert_eq!(addresses(&pod.ns, "ipv0"), vec!["192.0.2.50/24"]);

    pod.ns.ip(&["link", "del", "ipv0"]);
    pod.converge_ok(&ipvlan_mode("l3")).await;
    assert_ipvlan(&pod.ns, "ipv0", "eth1", "l3");
    assert_eq!(addresses(&pod.ns, "ipv0"), vec!["192.0.2.50/24"]);
}

#[tokio::test]
async fn removing_vlan_and_ipvlan_from_the_spec_deletes_them_but_not_their_parents() {
    require!("dummy", "vlan", "ipvlan");
    let mut pod = Pod::new("kk-remove").await;
    pod.dummy("eth1");
    pod.dummy("eth2");
    pod.converge_ok(&spec(
        r#"
interfaces:
  - name: eth1
  - name: eth2
  - name: eth1.9
    type: vlan
    parent: eth1
    vlanId: 9
  - name: ipv9
    type: ipvlan
    parent: eth2
    mode: l2
"#,
    ))
    .await;
    assert!(pod.ns.has_link("eth1.9") && pod.ns.has_link("ipv9"));
    pod.converge_ok(&spec(
        r#"
interfaces:
  - name: eth1
  - name: eth2
"#,
    ))
    .await;
    assert!(
        !pod.ns.has_link("eth1.9"),
        "the VLAN nes created is removed"
    );
    assert!(
        !pod.ns.has_link("ipv9"),
        "the ipvlan nes created is removed"
    );
    assert!(
        pod.ns.has_link("eth1") && pod.ns.has_link("eth2"),
        "the parents stay"
    );
}
