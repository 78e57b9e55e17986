//! Webhook destinations: where a `NetworkCare` may make the operator connect. Checked on
//! the addresses a name resolves to, at connect time, so a name that re-resolves to an
//! internal address (DNS rebinding) is refused too. What a failed delivery stores in
//! status is only a [`FailureClass`]: the details stay in the operator's log, so reading
//! NetworkCares does not turn delivery into a port scanner.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use kube::ResourceExt;

use super::evaluate::{default_policy, or_default};
use super::resource::WebhookDestinations;
use super::rules::list;
use super::verdict::{verdict, Denied, Found, Rule};
use super::NetworkConfigurationPolicy;

/// Ranges a webhook never reaches unless `allowCidrs` lists them, with what they are.
const REFUSED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "an unspecified (this-network) address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    (
        "169.254.0.0/16",
        "a link-local address (cloud metadata lives here)",
    ),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/96", "an IPv4-compatible address"),
    (
        "64:ff9b::/96",
        "a NAT64 address (it reaches an IPv4 address)",
    ),
    (
        "64:ff9b:1::/48",
        "a NAT64 address (it reaches an IPv4 address)",
    ),
    ("2002::/16", "a 6to4 address (it reaches an IPv4 address)"),
    ("fc00::/7", "a private (unique local) address"),
    ("fe80::/10", "a link-local address"),
    ("ff00::/8", "a multicast address"),
];

/// Whether a delivery may connect to `url_host`, which resolved to `resolved`: every
/// address must be public and outside `cluster_cidrs` (pod and service ranges), or inside
/// an `allowCidrs` network, and the host must match `hosts` when a policy lists them; for
/// each governing policy (none: the built-in default). Call it with the addresses the
/// connection will actually use.
pub fn check_destination(
    policies: &[&NetworkConfigurationPolicy],
    url_host: &str,
    resolved: &[IpAddr],
    cluster_cidrs: &[IpNet],
) -> Result<(), Denied> {
    let default = default_policy();
    let field = "spec.delivery.url";
    let mut all = Vec::new();
    for policy in or_default(policies, &default) {
        let name = policy.name_any();
        let mut found = Found::new(&name);
        let rules = policy.spec.webhook_destinations.clone().unwrap_or_default();
        if let Some(why) = host_refusal(&rules, url_host) {
            found.deny(Rule::WebhookDestinations, field, why);
        }
        if resolved.is_empty() {
            found.deny(
                Rule::WebhookDestinations,
                field,
                format!("{url_host:?} resolved to no address"),
            );
        }
        for &ip in resolved {
            if let Some(why) = ip_refusal(&rules, ip, cluster_cidrs) {
                found.deny(Rule::WebhookDestinations, field, why);
            }
        }
        all.extend(found.out);
    }
    verdict(all)
}

/// Why `ip` is not a destination under `rules`, if it is not.
pub(crate) fn ip_refusal(
    rules: &WebhookDestinations,
    ip: IpAddr,
    cluster: &[IpNet],
) -> Option<String> {
    // An IPv4-mapped IPv6 address reaches the IPv4 address.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    let allowed = rules
        .allow_cidrs
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .any(|net| net.contains(&ip));
    if allowed {
        return None;
    }
    let what = special_range(ip).or_else(|| {
        cluster
            .iter()
            .any(|net| net.contains(&ip))
            .then_some("a cluster address")
    })?;
    Some(format!(
        "{ip} is {what}; webhooks deliver to public addresses unless the policy's allowCidrs lists it"
    ))
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    if ip == IpAddr::from([255, 255, 255, 255]) {
        return Some("the broadcast address");
    }
    REFUSED.iter().find_map(|(net, what)| {
        let net: IpNet = net.parse().ok()?;
        net.contains(&ip).then_some(*what)
    })
}

/// Why `host` is not an allowed webhook host under `rules`, if it is not.
pub(crate) fn host_refusal(rules: &WebhookDestinations, host: &str) -> Option<String> {
    let patterns = rules.hosts.as_ref()?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let matches = |pattern: &String| {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => host == pattern,
        }
    };
    (!patterns.iter().any(matches)).then(|| {
        format!(
            "host {host:?} is not an allowed webhook destination (allowed: {})",
            list(patterns)
        )
    })
}

/// The host of an `https://` URL (without port, brackets or user info), lowercased; `None`
/// for a host nes will not judge by its text: anything but letters, digits, `-` and `.` (a
/// percent-encoded or otherwise decoded host), a bracketed IPv6 address with a zone, or a
/// name whose last label starts with a digit but is not a canonical IPv4 address (URL
/// parsers read `2130706433` and `0x7f.1` as 127.0.0.1). Such URLs are refused, so
/// what is checked is what a WHATWG URL parser connects to. `\` ends the authority as `/`
/// does for https in that parser.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '\\', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6.split(']').next()?;
            return v6
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(|ip| ip.to_string());
        }
        None => host_port.split(':').next()?.to_ascii_lowercase(),
    };
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let last = host
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or_default();
    let numeric = last.starts_with(|c: char| c.is_ascii_digit());
    let canonical_v4 = host.parse::<std::net::Ipv4Addr>().is_ok();
    (plain && !host.is_empty() && (!numeric || canonical_v4)).then_some(host)
}

/// Why a webhook delivery failed, as stored in NetworkCare status. Only the class: the
/// details (addresses, ports, TLS errors, bodies) go to the operator's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureClass {
    ConnectionRefused,
    Timeout,
    TlsFailure,
    Http5xx,
    Http4xx,
    DestinationDenied,
    Other,
}

impl FailureClass {
    /// The stable short string for status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection refused",
            Self::Timeout => "timeout",
            Self::TlsFailure => "TLS failure",
            Self::Http5xx => "HTTP 5xx",
            Self::Http4xx => "HTTP 4xx",
            Self::DestinationDenied => "destination denied by policy",
            Self::Other => "delivery failed",
        }
    }

    /// The class of an HTTP response status, if it is a failure.
    pub fn of_status(code: u16) -> Option<Self> {
        match code {
            400..=499 => Some(Self::Http4xx),
            500..=599 => Some(Self::Http5xx),
            _ => None,
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
