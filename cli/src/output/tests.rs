use super::*;
use api::wire::{ConfigView, StatusView};

fn status_view() -> StatusView {
    let json = serde_json::json!({
        "pod": "web-0",
        "generation": 3,
        "observedGeneration": 3,
        "node": "node-a",
        "conditions": [{
            "type": "Applied", "status": "True", "reason": "Applied", "message": "all applied",
            "observedGeneration": 3, "lastTransitionTime": "2025-01-01T00:00:00Z"
        }],
        "interfaces": [{
            "name": "eth0.100", "state": "Applied", "index": 7, "mac": "02:00:00:00:00:01",
            "mtu": 1400, "operState": "up", "addresses": ["192.168.100.5/24", "fd00::5/64"]
        }],
        "routes": [{"dst": "10.20.0.0/16", "table": 254, "metric": 100, "state": "Pending"}]
    });
    serde_json::from_value(json).unwrap_or_else(|e| panic!("fixture: {e}"))
}

fn render(f: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> String {
    let mut out = Vec::new();
    if let Err(e) = f(&mut out) {
        panic!("{e}");
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_status_table_shows_interfaces_routes_and_conditions() {
    let text = render(|w| status(w, Format::Table, &status_view()));
    let want = "\
POD web-0  GENERATION 3  APPLIED yes  NODE node-a

INTERFACE  STATE    INDEX  MAC                MTU   OPER  ADDRESSES                    ERROR
eth0.100   Applied  7      02:00:00:00:00:01  1400  up    192.168.100.5/24,fd00::5/64  -

ROUTE         TABLE  METRIC  STATE    ERROR
10.20.0.0/16  254    100     Pending  -

CONDITION  STATUS  REASON   GENERATION  MESSAGE
Applied    True    Applied  3           all applied
";
    assert_eq!(text, want);
}

#[test]
fn json_and_yaml_output_parse_back_into_the_wire_type() {
    let view = status_view();
    let json = render(|w| status(w, Format::Json, &view));
    assert_eq!(
        serde_json::from_str::<StatusView>(&json).ok(),
        Some(view.clone())
    );
    let yaml = render(|w| status(w, Format::Yaml, &view));
    assert_eq!(serde_yaml::from_str::<StatusView>(&yaml).ok(), Some(view));
}

#[test]
fn the_config_table_names_each_entrys_managers() {
    let view: ConfigView = serde_json::from_value(serde_json::json!({
        "pod": "web-0", "generation": 2,
        "spec": {
            "interfaces": [{"name": "eth0.100", "type": "vlan", "parent": "eth0", "vlanId": 100}],
            "routes": [{"dst": "10.20.0.0/16", "dev": "eth0.100"}]
        },
        "owners": {
            "interfaces": {"eth0.100": ["app", "sidecar"]},
            "routes": [{"dst": "10.20.0.0/16", "table": 254, "metric": 0, "managers": ["app"]}]
        }
    }))
    .unwrap_or_else(|e| panic!("fixture: {e}"));
    let text = render(|w| config(w, Format::Table, &view));
    assert!(
        text.contains("eth0.100   vlan (vlan 100)  eth0    -    -      -          app,sidecar"),
        "{text}"
    );
    assert!(
        text.contains("10.20.0.0/16  -    eth0.100  0       254    app"),
        "{text}"
    );
}

#[test]
fn events_print_one_line_each_and_unknown_types_are_kept() {
    let known = serde_json::json!({"seq": 4, "time": "2025-01-01T00:00:00Z", "pod": "web-0",
        "type": "AddressAdded", "ifname": "eth0", "address": "10.0.0.5/24"});
    assert_eq!(
        event_line(&known),
        "4  2025-01-01T00:00:00Z  AddressAdded  ifname=eth0 address=10.0.0.5/24"
    );
    let unknown = serde_json::json!({"seq": 5, "time": "t", "pod": "web-0", "type": "NeighbourAdded", "ip": "10.0.0.9"});
    assert_eq!(
        event_line(&unknown),
        "5  t  NeighbourAdded  ip=\"10.0.0.9\""
    );
    let json = render(|w| event(w, Format::Json, &known));
    assert_eq!(json.lines().count(), 1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).ok(),
        Some(known)
    );
}

#[test]
fn a_created_subscription_is_named_with_its_namespace_when_it_has_one() {
    let view = |ns: &str| api::wire::CareView {
        name: "mon".into(),
        namespace: ns.into(),
        spec: Default::default(),
        status: None,
    };
    for (ns, line) in [
        ("team", "networkcare team/mon created (stream)\n"),
        ("", "networkcare mon created (stream)\n"),
    ] {
        let mut out = Vec::new();
        care(&mut out, Format::Table, &view(ns)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), line);
    }
}
