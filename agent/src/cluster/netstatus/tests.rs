use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::*;

fn entry(name: &str, interface: &str, ip: &str) -> NetworkStatus {
    NetworkStatus {
        name: name.into(),
        interface: interface.into(),
        ips: vec![ip.into()],
        ..Default::default()
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const CNI: &str = r#"[{"name":"cbr0","interface":"eth0","ips":["10.244.0.5"],"default":true,"dns":{}},{"name":"apps/multus-made","interface":"net1","ips":["10.1.0.2"],"device-info":{"type":"pci"}}]"#;

struct Case {
    name: &'static str,
    existing: Option<&'static str>,
    owned_before: &'static [&'static str],
    ours: Vec<NetworkStatus>,
    /// Interfaces of the result in order, and nes's list; None: unchanged.
    want: Option<(Vec<&'static str>, Vec<&'static str>)>,
}

#[test]
fn network_status_keeps_every_cni_entry_and_replaces_only_nes_entries() {
    let cases = vec![
        Case {
            name: "first attachment: appended after the CNI's, their fields kept",
            existing: Some(CNI),
            owned_before: &[],
            ours: vec![entry("apps/data", "net2", "10.9.0.2")],
            want: Some((vec!["eth0", "net1", "net2"], vec!["net2"])),
        },
        Case {
            name: "no annotation yet",
            existing: None,
            owned_before: &[],
            ours: vec![entry("apps/data", "net2", "10.9.0.2")],
            want: Some((vec!["net2"], vec!["net2"])),
        },
        Case {
            name: "unchanged: no patch",
            existing: Some(
                r#"[{"name":"cbr0","interface":"eth0","default":true},{"name":"apps/data","interface":"net2","ips":["10.9.0.2"],"default":false}]"#,
            ),
            owned_before: &["net2"],
            ours: vec![entry("apps/data", "net2", "10.9.0.2")],
            want: None,
        },
        Case {
            name: "detached: nes's entry goes, the CNI's stay",
            existing: Some(
                r#"[{"name":"cbr0","interface":"eth0","default":true},{"name":"apps/data","interface":"net2","ips":["10.9.0.2"],"default":false}]"#,
            ),
            owned_before: &["net2"],
            ours: vec![],
            want: Some((vec!["eth0"], vec![])),
        },
        Case {
            name: "another network behind the same interface: replaced",
            existing: Some(
                r#"[{"name":"apps/old","interface":"net2","ips":["10.9.0.2"],"default":false}]"#,
            ),
            owned_before: &["net2"],
            ours: vec![entry("apps/new", "net2", "10.8.0.2")],
            want: Some((vec!["net2"], vec!["net2"])),
        },
        Case {
            name: "nothing of nes's and nothing before: no patch",
            existing: Some(CNI),
            owned_before: &[],
            ours: vec![],
            want: None,
        },
    ];
    for c in cases {
        let got = merge_network_status(c.existing, &set(c.owned_before), &c.ours)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let got = got.map(|(status, owned)| {
            let entries: Vec<Value> = serde_json::from_str(&status).expect("json");
            if let Some(cni) = entries.iter().find(|e| e["interface"] == "net1") {
                assert_eq!(cni["device-info"], json!({"type": "pci"}), "{}", c.name);
            }
            let interfaces: Vec<String> = entries
                .iter()
                .map(|e| e["interface"].as_str().unwrap_or_default().to_string())
                .collect();
            let owned: Vec<String> = serde_json::from_str(&owned).expect("owned");
            (interfaces, owned)
        });
        let want = c.want.map(|(i, o)| {
            (
                i.into_iter().map(String::from).collect::<Vec<_>>(),
                o.into_iter().map(String::from).collect::<Vec<_>>(),
            )
        });
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn an_unreadable_network_status_is_never_overwritten() {
    let got = merge_network_status(
        Some("{not a list"),
        &set(&[]),
        &[entry("a/b", "net1", "10.0.0.1")],
    );
    assert!(got.is_err(), "{got:?}");
}

fn pod(annotations: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("demo-0".into()),
            namespace: Some("apps".into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn annotated_attachments_leave_out_what_the_cni_made_and_keep_what_nes_made() {
    let made_by_multus = r#"[{"name":"cbr0","interface":"eth0","default":true},{"name":"apps/a","interface":"net1"}]"#;
    let with_nes = r#"[{"name":"apps/a","interface":"net1"},{"name":"apps/b","interface":"net2"}]"#;
    let names = |got: Option<Result<Vec<AttachmentSpec>, String>>| {
        got.map(|r| r.map(|v| v.into_iter().map(|s| s.name).collect::<Vec<_>>()))
    };
    type Row<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a [&'a str],
        Option<Result<Vec<String>, ()>>,
    );
    let rows: Vec<Row<'_>> = vec![
        ("no annotation", vec![], &[], None),
        (
            "nothing made yet: all declared",
            vec![(NETWORKS_ANNOTATION, "a@net1,b@net2")],
            &[],
            Some(Ok(vec!["a".into(), "b".into()])),
        ),
        (
            "Multus made net1 at creation: only b is nes's",
            vec![
                (NETWORKS_ANNOTATION, "a@net1,b@net2"),
                (NETWORK_STATUS_ANNOTATION, made_by_multus),
            ],
            &[],
            Some(Ok(vec!["b".into()])),
        ),
        (
            "nes made net2 (its list says so): still nes's",
            vec![
                (NETWORKS_ANNOTATION, "a@net1,b@net2"),
                (NETWORK_STATUS_ANNOTATION, with_nes),
                (OWNED_ANNOTATION, r#"["net2"]"#),
            ],
            &[],
            Some(Ok(vec!["b".into()])),
        ),
        (
            "nes made net2 (its cache says so)",
            vec![
                (NETWORKS_ANNOTATION, "a@net1,b@net2"),
                (NETWORK_STATUS_ANNOTATION, with_nes),
            ],
            &["net2"],
            Some(Ok(vec!["b".into()])),
        ),
        (
            "unreadable annotation",
            vec![(NETWORKS_ANNOTATION, "[{\"nme\": \"a\"}]")],
            &[],
            Some(Err(())),
        ),
    ];
    for (name, annotations, ours, want) in rows {
        let got = names(annotated(&pod(&annotations), &set(ours)));
        assert_eq!(got.map(|r| r.map_err(|_| ())), want, "{name}");
    }
}
