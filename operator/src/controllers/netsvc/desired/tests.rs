use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use super::*;
use crate::fixtures::{applied_config, network_service, sts_pod};

/// One published endpoint: slice, address, pod, ready, serving, terminating, hostname.
type Row = (String, String, String, bool, bool, bool, Option<String>);

fn rows(d: &Desired) -> Vec<Row> {
    d.slices
        .iter()
        .flat_map(|s| {
            s.endpoints.iter().map(move |ep| {
                let c = ep.conditions.clone().unwrap_or_default();
                (
                    s.name_any(),
                    ep.addresses.join(","),
                    ep.target_ref
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .unwrap_or_default(),
                    c.ready == Some(true),
                    c.serving == Some(true),
                    c.terminating == Some(true),
                    ep.hostname.clone(),
                )
            })
        })
        .collect()
}

fn row(slice: &str, ip: &str, pod: &str, flags: (bool, bool, bool), host: bool) -> Row {
    (
        slice.into(),
        ip.into(),
        pod.into(),
        flags.0,
        flags.1,
        flags.2,
        host.then(|| pod.to_string()),
    )
}

const READY: (bool, bool, bool) = (true, true, false);
const NOT_READY: (bool, bool, bool) = (false, false, false);
const TERMINATING: (bool, bool, bool) = (false, true, true);

fn on_net1(families: Value) -> NetworkService {
    let mut spec = json!({"network": "net1", "selector": {"matchLabels": {"app": "web"}},
                          "ports": [{"name": "sip", "port": 5060, "protocol": "UDP"}]});
    if !families.is_null() {
        spec["ipFamilies"] = families;
    }
    network_service("app", "web", spec)
}

fn not_ready(mut pod: Pod) -> Pod {
    pod.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(
        json!({"type": "Ready", "status": "False"}),
    )
    .unwrap()]);
    pod
}

fn terminating(mut pod: Pod) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    pod
}

fn with_network_status(mut pod: Pod, status: Value) -> Pod {
    pod.annotations_mut()
        .insert(NETWORK_STATUS_ANNOTATION.into(), status.to_string());
    pod
}

struct Case {
    name: &'static str,
    svc: NetworkService,
    pods: Vec<(Pod, Option<NetworkConfiguration>)>,
    want: Vec<Row>,
    missing: Vec<&'static str>,
}

fn dual(name: &str, v4: &[&str], v6: &[&str]) -> (Pod, Option<NetworkConfiguration>) {
    let addrs: Vec<&str> = v4.iter().chain(v6).copied().collect();
    (
        sts_pod("app", name),
        Some(applied_config(
            "app",
            name,
            &[("eth0", &["10.244.0.9/24"]), ("net1", &addrs)],
        )),
    )
}

fn cases() -> Vec<Case> {
    let unapplied = {
        let (pod, config) = dual("web-1", &["10.1.0.11/24"], &[]);
        let mut config = config.unwrap();
        config.metadata.generation = Some(3); // spec changed, not yet applied
        (pod, Some(config))
    };
    let mut other_app = dual("db-0", &["10.1.0.50/24"], &[]);
    other_app.0.labels_mut().insert("app".into(), "db".into());
    let mut finished = dual("web-8", &["10.1.0.58/24"], &[]);
    finished.0.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut unscheduled = (sts_pod("app", "web-9"), None);
    unscheduled.0.spec.as_mut().unwrap().node_name = None;
    let mut bare = dual("solo", &["10.1.0.70/24"], &[]);
    bare.0.spec.as_mut().unwrap().subdomain = Some("other".into());
    vec![
        Case {
            name: "dual-stack pods with several addresses per family, link-local left out",
            svc: on_net1(json!(null)),
            pods: vec![
                dual("web-1", &["10.1.0.11/24"], &["fd00::11/64", "fe80::11/64"]),
                dual("web-0", &["10.1.0.10/24", "10.1.0.100/24"], &["fd00::10/64", "fd00::a/64"]),
            ],
            want: vec![
                row("web-ipv4-0", "10.1.0.10", "web-0", READY, true),
                row("web-ipv4-0", "10.1.0.100", "web-0", READY, true),
                row("web-ipv4-0", "10.1.0.11", "web-1", READY, true),
                row("web-ipv6-0", "fd00::a", "web-0", READY, true),
                row("web-ipv6-0", "fd00::10", "web-0", READY, true),
                row("web-ipv6-0", "fd00::11", "web-1", READY, true),
            ],
            missing: vec![],
        },
        Case {
            name: "ipFamilies keeps one family",
            svc: on_net1(json!(["IPv6"])),
            pods: vec![dual("web-0", &["10.1.0.10/24"], &["fd00::10/64"])],
            want: vec![row("web-ipv6-0", "fd00::10", "web-0", READY, true)],
            missing: vec![],
        },
        Case {
            name: "pods without the network, without a status, or without the wanted family",
            svc: on_net1(json!(["IPv4"])),
            pods: vec![
                (sts_pod("app", "web-0"), Some(applied_config("app", "web-0", &[("eth0", &["10.244.0.9/24"])]))),
                (sts_pod("app", "web-1"), None),
                dual("web-2", &[], &["fd00::12/64"]),
                dual("web-3", &["10.1.0.13/24"], &[]),
            ],
            want: vec![row("web-ipv4-0", "10.1.0.13", "web-3", READY, true)],
            missing: vec!["web-0", "web-1", "web-2"],
        },
        Case {
            name: "not-ready, not-applied and terminating pods are published, not ready",
            svc: on_net1(json!(null)),
            pods: vec![
                {
                    let (pod, config) = dual("web-0", &["10.1.0.10/24"], &[]);
                    (not_ready(pod), config)
                },
                unapplied,
                {
                    let (pod, config) = dual("web-2", &["10.1.0.12/24"], &[]);
                    (terminating(pod), config)
                },
            ],
            want: vec![
                row("web-ipv4-0", "10.1.0.10", "web-0", NOT_READY, true),
                row("web-ipv4-0", "10.1.0.11", "web-1", NOT_READY, true),
                row("web-ipv4-0", "10.1.0.12", "web-2", TERMINATING, true),
            ],
            missing: vec![],
        },
        Case {
            name: "unselected, finished and unscheduled pods are left out; hostname only with the Service's subdomain",
            svc: on_net1(json!(null)),
            pods: vec![other_app, finished, unscheduled, bare],
            want: vec![row("web-ipv4-0", "10.1.0.70", "solo", READY, false)],
            missing: vec![],
        },
        Case {
            name: "an attachment's addresses come from network-status, whatever the NetworkConfiguration says",
            svc: network_service(
                "app",
                "web",
                json!({"network": "core/sig", "selector": {"matchLabels": {"app": "web"}}}),
            ),
            pods: vec![
                (
                    with_network_status(
                        sts_pod("app", "web-0"),
                        json!([
                            {"name": "cbr0", "interface": "eth0", "ips": ["10.244.0.9"], "default": true},
                            {"name": "core/sig", "interface": "net1", "ips": ["192.168.5.10", "2001:db8::10"]},
                            {"name": "core/media", "interface": "net2", "ips": ["192.168.6.10"]}
                        ]),
                    ),
                    Some(applied_config("app", "web-0", &[("net1", &["192.168.99.1/24"])])),
                ),
                (with_network_status(sts_pod("app", "web-1"), json!({"not": "a list"})), None),
                (sts_pod("app", "web-2"), None),
            ],
            want: vec![
                row("web-ipv4-0", "192.168.5.10", "web-0", READY, true),
                row("web-ipv6-0", "2001:db8::10", "web-0", READY, true),
            ],
            missing: vec!["web-1", "web-2"],
        },
    ]
}

#[test]
fn desired_endpoints_are_every_observed_address_of_each_selected_pod() {
    for c in cases() {
        let members: Vec<Member<'_>> = c
            .pods
            .iter()
            .map(|(pod, config)| Member {
                pod,
                config: config.as_ref(),
            })
            .collect();
        let d = desired(&c.svc, &members);
        assert_eq!(rows(&d), c.want, "{}", c.name);
        let missing: Vec<&str> = d.missing.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(missing, c.missing, "{}", c.name);
        let ready = c.want.iter().filter(|r| r.3).count() as u32;
        assert_eq!(
            (d.ready, d.total),
            (ready, c.want.len() as u32),
            "{}",
            c.name
        );
    }
}

#[test]
fn the_service_is_headless_without_a_selector_and_owned_by_the_network_service() {
    let d = desired(&on_net1(json!(null)), &[]);
    assert_eq!(
        serde_json::to_value(&d.service).unwrap(),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "app",
                "labels": {"app.kubernetes.io/managed-by": "nes.network-config.io"},
                "ownerReferences": [{"apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkService",
                    "name": "web", "uid": "svc-uid", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"clusterIP": "None",
                     "ports": [{"name": "sip", "port": 5060, "protocol": "UDP", "targetPort": 5060}]},
        })
    );
    assert!(d.slices.is_empty());
}

#[test]
fn slices_carry_the_service_labels_ports_and_owner() {
    let (pod, config) = dual("web-0", &["10.1.0.10/24"], &[]);
    let d = desired(
        &on_net1(json!(null)),
        &[Member {
            pod: &pod,
            config: config.as_ref(),
        }],
    );
    let slice = serde_json::to_value(&d.slices[0]).unwrap();
    assert_eq!(
        slice["metadata"]["labels"],
        json!({"kubernetes.io/service-name": "web",
               "endpointslice.kubernetes.io/managed-by": "nes.network-config.io",
               "service.kubernetes.io/headless": ""})
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["ports"],
        json!([{"name": "sip", "port": 5060, "protocol": "UDP"}])
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
    assert_eq!(
        slice["endpoints"][0],
        json!({"addresses": ["10.1.0.10"], "conditions": {"ready": true, "serving": true, "terminating": false},
               "hostname": "web-0", "nodeName": "n1",
               "targetRef": {"kind": "Pod", "namespace": "app", "name": "web-0", "uid": "uid-web-0"}})
    );
}

#[test]
fn two_hundred_and_fifty_pods_fill_three_slices_named_stably_whatever_the_input_order() {
    let pods: Vec<(Pod, Option<NetworkConfiguration>)> = (0..250)
        .map(|i| {
            dual(
                &format!("web-{i}"),
                &[&format!("10.1.{}.{}/16", i / 200, i % 200 + 1)],
                &[],
            )
        })
        .collect();
    let members: Vec<Member<'_>> = pods
        .iter()
        .map(|(pod, config)| Member {
            pod,
            config: config.as_ref(),
        })
        .collect();
    let svc = on_net1(json!(null));
    let d = desired(&svc, &members);
    let shape: Vec<(String, usize)> = d
        .slices
        .iter()
        .map(|s| (s.name_any(), s.endpoints.len()))
        .collect();
    assert_eq!(
        shape,
        [
            ("web-ipv4-0".into(), 100),
            ("web-ipv4-1".into(), 100),
            ("web-ipv4-2".into(), 50)
        ]
    );
    // Ordered by pod name: web-0, web-1, web-10, web-100, ...
    let first: Vec<_> = d.slices[0].endpoints[..3]
        .iter()
        .map(|e| e.target_ref.as_ref().unwrap().name.clone().unwrap())
        .collect();
    assert_eq!(first, ["web-0", "web-1", "web-10"]);
    // The same inputs in another order are the same objects: a re-run writes nothing.
    let reversed: Vec<Member<'_>> = members.iter().rev().copied().collect();
    assert_eq!(desired(&svc, &reversed), d);
}

/// `examples/rendered/networkservice-dual-stack.yaml` is what [`desired`] publishes for a
/// dual-stack StatefulSet of three pods (regenerate with `NES_BLESS=1`); the manifest check
/// validates it against the Kubernetes schemas.
#[test]
fn the_rendered_dual_stack_statefulset_example_is_what_desired_publishes() {
    let svc = network_service(
        "demo",
        "web",
        json!({"network": "net1", "selector": {"matchLabels": {"app": "web"}},
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]}),
    );
    let pods: Vec<(Pod, NetworkConfiguration)> = (0..3)
        .map(|i| {
            let name = format!("web-{i}");
            let mut pod = sts_pod("demo", &name);
            pod.spec.as_mut().unwrap().node_name = Some(format!("node-{}", i + 1));
            let (v4, v6) = (format!("192.168.50.1{i}/24"), format!("fd00:50::1{i}/64"));
            let ll = format!("fe80::a8c1:abff:fe00:1{i}/64");
            let mut addrs = vec![v4.as_str(), v6.as_str(), ll.as_str()];
            let extra = "192.168.50.100/24";
            if i == 0 {
                addrs.push(extra); // a second IPv4 address: every address is published
            }
            let eth0 = format!("10.244.{i}.5/24");
            let config = applied_config("demo", &name, &[("eth0", &[&eth0]), ("net1", &addrs)]);
            (pod, config)
        })
        .collect();
    let members: Vec<Member<'_>> = pods
        .iter()
        .map(|(pod, config)| Member {
            pod,
            config: Some(config),
        })
        .collect();
    let d = desired(&svc, &members);
    let mut text = String::from(
        "# What nes-operator publishes for NetworkService demo/web (network net1, selector\n\
         # app=web, port http 8080) over StatefulSet web (serviceName web): three dual-stack pods,\n\
         # web-0 with two IPv4 addresses; link-local and eth0 addresses are left out. Rendered by\n\
         # operator/src/controllers/netsvc/desired.rs; not for kubectl apply (the operator writes\n\
         # these). Regenerate: NES_BLESS=1 cargo nextest run -p nes-operator rendered_dual_stack\n",
    );
    for doc in std::iter::once(serde_json::to_value(&d.service).unwrap())
        .chain(d.slices.iter().map(|s| serde_json::to_value(s).unwrap()))
    {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(&doc).unwrap());
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/rendered/networkservice-dual-stack.yaml");
    if std::env::var_os("NES_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == text,
        "{} is stale; rerun with NES_BLESS=1",
        path.display()
    );
    assert_eq!((d.ready, d.total), (7, 7));
}
