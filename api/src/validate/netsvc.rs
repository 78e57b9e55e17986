//! `NetworkService`: its name becomes a Service's, its network one nes can read addresses of.

use std::collections::HashSet;

use super::{check_dns_label, check_ifname, check_selector, Invalid, Problems};
use crate::limits::{MAX_SERVICE_NAME_LEN, MAX_SERVICE_PORTS};
use crate::netsvc::{Network, NetworkServiceSpec};

/// Validates a `NetworkService` named `name` (the Service it publishes has that name too).
pub fn validate_network_service(name: &str, spec: &NetworkServiceSpec) -> Result<(), Invalid> {
    let mut p = Problems::default();
    if let Err(why) = check_service_name(name) {
        p.add("metadata.name", why);
    }
    match spec.network() {
        Network::Attachment { namespace, name } => {
            if !is_rfc1123_label(namespace) {
                p.add(
                    "spec.network",
                    format!("{namespace:?} is not a namespace name (an RFC 1123 label)"),
                );
            }
            if let Err(why) = check_dns_label(name) {
                p.add("spec.network", format!("attachment name: {why}"));
            }
        }
        Network::Interface(ifname) => {
            if let Err(why) = check_ifname(ifname) {
                p.add("spec.network", why);
            }
        }
    }
    check_selector(&spec.selector, "spec.selector", &mut p);
    check_ports(spec, &mut p);
    let families: HashSet<_> = spec.ip_families.iter().collect();
    if families.len() != spec.ip_families.len() {
        p.add("spec.ipFamilies", "each family may appear once");
    }
    p.into_result()
}

fn check_ports(spec: &NetworkServiceSpec, p: &mut Problems) {
    if spec.ports.len() > MAX_SERVICE_PORTS as usize {
        p.add(
            "spec.ports",
            format!(
                "at most {MAX_SERVICE_PORTS} ports, got {}",
                spec.ports.len()
            ),
        );
    }
    let mut names = HashSet::new();
    let mut ports = HashSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match &port.name {
            None if spec.ports.len() > 1 => p.add(
                format!("{at}.name"),
                "with more than one port every port needs a name",
            ),
            Some(name) if !is_rfc1123_label(name) => p.add(
                format!("{at}.name"),
                format!("{name:?} is not a port name (an RFC 1123 label)"),
            ),
            Some(name) if !names.insert(name) => {
                p.add(format!("{at}.name"), format!("{name:?} is used twice"))
            }
            _ => {}
        }
        if port.port == 0 {
            p.add(format!("{at}.port"), "must be 1-65535");
        }
        if !ports.insert((port.port, port.protocol.unwrap_or_default())) {
            p.add(
                format!("{at}.port"),
                format!(
                    "{} {} is listed twice",
                    port.port,
                    port.protocol.unwrap_or_default().as_str()
                ),
            );
        }
        if let Some(app) = &port.app_protocol {
            if let Err(why) = check_app_protocol(app) {
                p.add(format!("{at}.appProtocol"), why);
            }
        }
    }
}

/// A Service name: an RFC 1035 label (a letter first), since it is a DNS name.
fn check_service_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_SERVICE_NAME_LEN
        && is_rfc1123_label(name)
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} cannot name a Service: 1-{MAX_SERVICE_NAME_LEN} of a-z, 0-9, '-', starting with a letter"
        ))
    }
}

fn is_rfc1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes qualified name: an optional DNS-subdomain prefix and `/`, then 1-63 of
/// alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
fn check_app_protocol(text: &str) -> Result<(), String> {
    let (prefix, name) = match text.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, text),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| check_dns_label(p).is_ok());
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not an application protocol (a qualified name such as http or kubernetes.io/h2c)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netsvc::{IpFamily, NetworkServicePort, Protocol};

    fn spec(network: &str) -> NetworkServiceSpec {
        NetworkServiceSpec {
            network: network.into(),
            ports: vec![NetworkServicePort {
                name: Some("sip".into()),
                port: 5060,
                protocol: Some(Protocol::Udp),
                app_protocol: Some("sip".into()),
            }],
            ..Default::default()
        }
    }

    fn fields(name: &str, spec: &NetworkServiceSpec) -> Vec<String> {
        match validate_network_service(name, spec) {
            Ok(()) => vec![],
            Err(Invalid(problems)) => problems.into_iter().map(|p| p.field).collect(),
        }
    }

    #[test]
    fn a_network_service_is_checked_field_by_field() {
        let unnamed_pair = NetworkServiceSpec {
            ports: vec![
                NetworkServicePort {
                    port: 80,
                    ..Default::default()
                },
                NetworkServicePort {
                    port: 80,
                    ..Default::default()
                },
            ],
            ..spec("net1")
        };
        let long = "s".repeat(64);
        let cases: Vec<(&str, &str, NetworkServiceSpec, Vec<&str>)> = vec![
            ("an interface", "sip", spec("net1"), vec![]),
            ("an attachment", "sip", spec("core/sig-net"), vec![]),
            (
                "a name starting with a digit",
                "1sip",
                spec("net1"),
                vec!["metadata.name"],
            ),
            (
                "a dotted name",
                "sip.a",
                spec("net1"),
                vec!["metadata.name"],
            ),
            ("a 64-byte name", &long, spec("net1"), vec!["metadata.name"]),
            (
                "a long interface",
                "sip",
                spec("net1234567890123"),
                vec!["spec.network"],
            ),
            (
                "an interface with ':'",
                "sip",
                spec("net1:0"),
                vec!["spec.network"],
            ),
            (
                "an upper-case namespace",
                "sip",
                spec("Core/sig"),
                vec!["spec.network"],
            ),
            (
                "an empty attachment",
                "sip",
                spec("core/"),
                vec!["spec.network"],
            ),
            (
                "two attachments",
                "sip",
                spec("a/b/c"),
                vec!["spec.network"],
            ),
            (
                "two unnamed ports, the same port twice",
                "sip",
                unnamed_pair,
                vec![
                    "spec.ports[0].name",
                    "spec.ports[1].name",
                    "spec.ports[1].port",
                ],
            ),
            (
                "a family twice",
                "sip",
                NetworkServiceSpec {
                    ip_families: vec![IpFamily::IPv6, IpFamily::IPv6],
                    ..spec("net1")
                },
                vec!["spec.ipFamilies"],
            ),
        ];
        for (what, name, spec, want) in cases {
            assert_eq!(fields(name, &spec), want, "{what}");
        }
    }

    #[test]
    fn app_protocols_are_qualified_names() {
        for ok in ["http", "kubernetes.io/h2c", "diameter", "k8s.io/ws_s"] {
            assert_eq!(check_app_protocol(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-x", "a/", "UPPER.io/x", "x y", &"a".repeat(64)] {
            assert!(check_app_protocol(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_selector_operator_is_refused() {
        let mut s = spec("net1");
        s.selector.match_expressions = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "app".into(),
                operator: "Like".into(),
                values: None,
            },
        ]);
        assert_eq!(
            fields("sip", &s),
            vec!["spec.selector.matchExpressions[0].operator"]
        );
    }
}
