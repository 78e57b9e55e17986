use pretty_assertions::assert_eq;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A whole-second "now": certificates keep seconds only.
fn now() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn names() -> Vec<String> {
    dns_names("nes-operator", "nes-system")
}

#[test]
fn dns_names_cover_every_form_of_the_service_name() {
    assert_eq!(
        names(),
        [
            "nes-operator",
            "nes-operator.nes-system",
            "nes-operator.nes-system.svc",
            "nes-operator.nes-system.svc.cluster.local",
        ]
    );
}

#[test]
fn serving_certificate_carries_the_service_names_and_the_requested_validity() {
    let now = now();
    let bundle = Bundle::generate(&names(), now, 30 * DAY).unwrap();
    let serving = cert_info(&bundle.tls_crt).unwrap();
    assert_eq!(
        serving,
        CertInfo {
            not_before: now - BACKDATE,
            not_after: now + 30 * DAY,
            dns_names: names(),
            is_ca: false,
        }
    );
}

#[test]
fn ca_is_a_ca_valid_for_ten_years() {
    let now = now();
    let bundle = Bundle::generate(&names(), now, DAY).unwrap();
    let ca = cert_info(&bundle.ca_crt).unwrap();
    assert!(ca.is_ca);
    assert_eq!(ca.not_before, now - BACKDATE);
    assert_eq!(ca.not_after, now + CA_VALIDITY);
    assert_eq!(ca.dns_names, Vec::<String>::new());
}

#[test]
fn ca_signs_the_serving_certificate_and_no_other_ca_does() {
    let bundle = Bundle::generate(&names(), now(), DAY).unwrap();
    let other = Bundle::generate(&names(), now(), DAY).unwrap();
    assert_eq!(signed_by(&bundle.tls_crt, &bundle.ca_crt), Ok(()));
    assert!(signed_by(&bundle.tls_crt, &other.ca_crt).is_err());
    assert_eq!(key_matches(&bundle.tls_crt, &bundle.tls_key), Ok(()));
    assert_eq!(key_matches(&bundle.ca_crt, &bundle.ca_key), Ok(()));
    assert!(key_matches(&bundle.tls_crt, &other.tls_key).is_err());
}

#[test]
fn renewing_the_serving_certificate_keeps_the_ca() {
    let now = now();
    let bundle = Bundle::generate(&names(), now, DAY).unwrap();
    let renewed = bundle.renew_serving(&names(), now + HOUR, DAY).unwrap();
    assert_eq!(
        (&renewed.ca_crt, &renewed.ca_key),
        (&bundle.ca_crt, &bundle.ca_key)
    );
    assert_ne!(renewed.tls_crt, bundle.tls_crt);
    assert_ne!(renewed.tls_key, bundle.tls_key);
    assert_eq!(signed_by(&renewed.tls_crt, &bundle.ca_crt), Ok(()));
    assert_eq!(
        cert_info(&renewed.tls_crt).unwrap().not_after,
        now + HOUR + DAY
    );
}

#[test]
fn needs_renewal_when_less_than_renew_before_is_left() {
    let t = now();
    let cases = [
        // (now, not_after, renew_before, expected)
        (t, t + 10 * DAY, DAY, false),
        (t, t + DAY + Duration::from_secs(1), DAY, false),
        (t, t + DAY, DAY, true),
        (t, t + HOUR, DAY, true),
        (t, t - HOUR, DAY, true),
        (t, t + DAY, Duration::ZERO, false),
        (t, t + DAY, Duration::MAX, true),
    ];
    for (now, not_after, renew_before, expected) in cases {
        assert_eq!(
            needs_renewal(now, not_after, renew_before),
            expected,
            "not_after {:?} after now, renew_before {renew_before:?}",
            not_after.duration_since(now).ok()
        );
    }
}

#[test]
fn plan_keeps_fresh_material_and_renews_what_is_stale_or_broken() {
    let t = now();
    let fresh = Bundle::generate(&names(), t, 30 * DAY).unwrap();
    let other = Bundle::generate(&names(), t, 30 * DAY).unwrap();
    let not_a_ca = Bundle {
        ca_crt: fresh.tls_crt.clone(),
        ca_key: fresh.tls_key.clone(),
        ..fresh.clone()
    };
    let short_lived_ca = {
        let (ca_crt, ca_key) =
            new_ca(&dns_names("nes-operator", "nes-system"), t, 2 * DAY).unwrap();
        let (tls_crt, tls_key) = issue_serving(&ca_crt, &ca_key, &names(), t, DAY).unwrap();
        Bundle {
            ca_crt,
            ca_key,
            tls_crt,
            tls_key,
        }
    };
    let renew_before = 7 * DAY;
    let new_ca = |reason: &str| Plan::NewCa {
        reason: reason.into(),
    };
    let renew = |reason: &str| Plan::RenewServing {
        reason: reason.into(),
    };
    let cases = [
        (
            "fresh",
            fresh.clone(),
            names(),
            t,
            Plan::Keep {
                renew_at: t + 23 * DAY,
            },
        ),
        (
            "serving cert near expiry",
            fresh.clone(),
            names(),
            t + 24 * DAY,
            renew("the serving certificate expires soon"),
        ),
        (
            "CA near expiry",
            short_lived_ca,
            names(),
            t,
            new_ca("the CA expires soon"),
        ),
        (
            "renamed service",
            fresh.clone(),
            dns_names("nes", "nes-system"),
            t,
            renew(&format!(
                "the serving certificate names {:?}, not {:?}",
                {
                    let mut n = names();
                    n.sort();
                    n
                },
                {
                    let mut n = dns_names("nes", "nes-system");
                    n.sort();
                    n
                },
            )),
        ),
        (
            "serving key of another cert",
            Bundle {
                tls_key: other.tls_key.clone(),
                ..fresh.clone()
            },
            names(),
            t,
            renew("tls.key: the key does not belong to the certificate"),
        ),
        (
            "serving cert of another CA",
            Bundle {
                tls_crt: other.tls_crt.clone(),
                tls_key: other.tls_key.clone(),
                ..fresh.clone()
            },
            names(),
            t,
            renew("tls.crt: it is not signed by the CA"),
        ),
        (
            "CA key of another CA",
            Bundle {
                ca_key: other.ca_key.clone(),
                ..fresh.clone()
            },
            names(),
            t,
            new_ca("ca.key: the key does not belong to the certificate"),
        ),
        (
            "leaf as CA",
            not_a_ca,
            names(),
            t,
            new_ca("ca.crt is not a CA certificate"),
        ),
    ];
    for (name, bundle, names, now, expected) in cases {
        assert_eq!(plan(&bundle, &names, now, renew_before), expected, "{name}");
    }
    let garbage = Bundle {
        ca_crt: "garbage".into(),
        ..fresh
    };
    assert!(matches!(
        plan(&garbage, &names(), t, renew_before),
        Plan::NewCa { reason } if reason.starts_with("ca.crt: not a PEM certificate")
    ));
}

#[test]
fn bundle_round_trips_through_secret_data_and_names_a_missing_key() {
    let bundle = Bundle::generate(&names(), now(), DAY).unwrap();
    let mut data = bundle.to_data();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    );
    assert_eq!(Bundle::from_data(Some(&data)), Ok(bundle));
    data.remove("tls.key");
    assert_eq!(
        Bundle::from_data(Some(&data)),
        Err("the Secret has no tls.key".into())
    );
    assert_eq!(
        Bundle::from_data(None),
        Err("the Secret has no ca.crt".into())
    );
    data.insert("tls.key".into(), ByteString(vec![0xff, 0xfe]));
    assert_eq!(
        Bundle::from_data(Some(&data)),
        Err("tls.key is not PEM text".into())
    );
}

#[test]
fn bundle_debug_never_shows_keys() {
    let bundle = Bundle::generate(&names(), now(), DAY).unwrap();
    let shown = format!("{bundle:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("BEGIN CERTIFICATE"));
}

#[test]
fn the_ca_may_sign_only_the_service_names_and_no_address() {
    let names = dns_names("nes-operator", "nes-system");
    let (ca_crt, _) = new_ca(&names, SystemTime::now(), DAY).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_crt.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let constraints = cert
        .name_constraints()
        .unwrap()
        .expect("the CA carries name constraints")
        .value;
    let permitted: Vec<String> = constraints
        .permitted_subtrees
        .iter()
        .flatten()
        .map(|s| match &s.base {
            x509_parser::extensions::GeneralName::DNSName(n) => n.to_string(),
            other => panic!("unexpected permitted name {other:?}"),
        })
        .collect();
    assert_eq!(permitted, names);
    let excluded = constraints.excluded_subtrees.iter().flatten().count();
    assert_eq!(excluded, 2, "every IPv4 and IPv6 address is excluded");
}
