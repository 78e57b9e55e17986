use super::*;

struct NameCase {
    namespace: &'static str,
    name: &'static str,
}

#[test]
fn default_ifnames_are_stable_fit_ifnamsiz_and_are_never_eth0() {
    let cases = [
        NameCase {
            namespace: "default",
            name: "data",
        },
        NameCase {
            namespace: "default",
            name: "data2",
        },
        NameCase {
            namespace: "other",
            name: "data",
        },
        NameCase {
            namespace: "a",
            name: "x",
        },
    ];
    let mut seen = std::collections::HashSet::new();
    for c in &cases {
        let n = default_ifname(c.namespace, c.name);
        assert_eq!(n.len(), 15, "{n}");
        assert!(n.starts_with("net"), "{n}");
        assert!(n[3..].bytes().all(|b| b.is_ascii_hexdigit()), "{n}");
        assert!(!RESERVED_IFNAMES.contains(&n.as_str()));
        assert!(crate::validate::check_ifname(&n).is_ok());
        assert_eq!(n, default_ifname(c.namespace, c.name), "stable");
        assert!(seen.insert(n), "distinct per network");
    }
}

#[test]
fn default_ifname_is_pinned_so_it_survives_upgrades() {
    // FNV-1a 64 of "default/data" (checked with an independent implementation); changing the scheme would re-attach every pod.
    assert_eq!(default_ifname("default", "data"), "netd9ff166a41f1");
}

#[test]
fn an_unqualified_reference_takes_the_pods_namespace_for_its_ifname() {
    let short = AttachmentSpec {
        name: "data".into(),
        ..Default::default()
    };
    let long = AttachmentSpec {
        name: "ns1/data".into(),
        ..Default::default()
    };
    assert_eq!(short.ifname("ns1"), long.ifname("ns1"));
    assert_ne!(short.ifname("ns2"), long.ifname("ns2"));
    let named = AttachmentSpec {
        interface: Some("data0".into()),
        ..long
    };
    assert_eq!(named.ifname("ns1"), "data0");
}

struct RefCase {
    text: &'static str,
    want: Option<(Option<&'static str>, &'static str)>,
}

#[test]
fn network_references_parse_as_name_or_namespace_slash_name() {
    let cases = [
        RefCase {
            text: "data",
            want: Some((None, "data")),
        },
        RefCase {
            text: "ns/data",
            want: Some((Some("ns"), "data")),
        },
        RefCase {
            text: "ns/data.v2",
            want: Some((Some("ns"), "data.v2")),
        },
        RefCase {
            text: "",
            want: None,
        },
        RefCase {
            text: "/data",
            want: None,
        },
        RefCase {
            text: "ns/",
            want: None,
        },
        RefCase {
            text: "a/b/c",
            want: None,
        },
        RefCase {
            text: "Data",
            want: None,
        },
        RefCase {
            text: "../etc",
            want: None,
        },
        RefCase {
            text: "ns/-x",
            want: None,
        },
    ];
    for c in &cases {
        let got = NetworkRef::parse(c.text).ok();
        let want = c.want.map(|(ns, name)| NetworkRef {
            namespace: ns.map(str::to_string),
            name: name.to_string(),
        });
        assert_eq!(got, want, "{:?}", c.text);
    }
}

struct AnnotationCase {
    text: &'static str,
    want: Result<Vec<(&'static str, Option<&'static str>)>, &'static str>,
}

#[test]
fn the_networks_annotation_parses_in_both_forms() {
    let cases = [
        AnnotationCase {
            text: "data",
            want: Ok(vec![("data", None)]),
        },
        AnnotationCase {
            text: "ns/a@net5, b ,c@x",
            want: Ok(vec![("ns/a", Some("net5")), ("b", None), ("c", Some("x"))]),
        },
        AnnotationCase {
            text: "",
            want: Ok(vec![]),
        },
        AnnotationCase {
            text: r#"[{"name":"a","namespace":"ns","interface":"n1"},{"name":"b"}]"#,
            want: Ok(vec![("ns/a", Some("n1")), ("b", None)]),
        },
        AnnotationCase {
            text: r#"[{"name":"a","default-route":["10.0.0.1"]}]"#,
            want: Ok(vec![("a", None)]),
        },
        AnnotationCase {
            text: r#"[{"nam":"a"}]"#,
            want: Err("not a list"),
        },
        AnnotationCase {
            text: r#"[{"name":"a""#,
            want: Err("not a list"),
        },
        AnnotationCase {
            text: r#"[{"name":"a","cni-args":{"k":1}}]"#,
            want: Err("string values only"),
        },
    ];
    for c in &cases {
        let got = parse_networks_annotation(c.text);
        match (&got, &c.want) {
            (Ok(list), Ok(want)) => {
                let got: Vec<_> = list
                    .iter()
                    .map(|a| (a.name.as_str(), a.interface.as_deref()))
                    .collect();
                assert_eq!(&got, want, "{:?}", c.text);
            }
            (Err(e), Err(want)) => assert!(e.contains(want), "{:?}: {e}", c.text),
            _ => panic!("{:?}: got {got:?}, want {:?}", c.text, c.want),
        }
    }
}

#[test]
fn the_json_annotation_keeps_ips_mac_and_cni_args() {
    let got = parse_networks_annotation(
        r#"[{"name":"a","ips":["10.1.0.5/24"],"mac":"02:00:00:00:00:01","cni-args":{"k":"v"}}]"#,
    )
    .unwrap();
    assert_eq!(got[0].ips, vec!["10.1.0.5/24"]);
    assert_eq!(got[0].mac.as_deref(), Some("02:00:00:00:00:01"));
    assert_eq!(got[0].cni_args.get("k").map(String::as_str), Some("v"));
}
