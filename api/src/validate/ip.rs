//! IP values: one spelling per value, and only values that mean what they say where they
//! are used. Kubernetes refuses IPv4 with leading zeros (read as octal by inet_aton, as
//! decimal by others) and new fields require the canonical form; nes does the same, so the
//! text of a value is its identity (server-side apply merges list-map entries on text).

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;

/// Parses an IP address written canonically (`10.0.0.1`, `fd00::1`).
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text.parse().map_err(|_| {
        refuse_leading_zeros(text).unwrap_or(format!("{text:?} is not an IP address"))
    })?;
    mapped(text, ip)?;
    canonical(text, ip, None)
}

/// Parses a CIDR, with the result of ipnet's `FromStr`. The address is read by std's parser
/// first: ipnet's allocates as it goes, and a request of 1,500 objects parses each several
/// times (validation, merge, the plan and the status). What std refuses and ipnet reads
/// (zero-led IPv4 octets) is left to ipnet.
pub fn net(text: &str) -> Option<IpNet> {
    let fast = text.split_once('/').and_then(|(addr, len)| {
        // A prefix length as ipnet reads one: digits, not zero-led.
        let digits = matches!(len.as_bytes(), [b'0'] | [b'1'..=b'9', ..])
            && len.len() <= 3
            && len.bytes().all(|b| b.is_ascii_digit());
        let addr: IpAddr = addr.parse().ok().filter(|_| digits)?;
        IpNet::new(addr, len.parse().ok()?).ok()
    });
    fast.or_else(|| text.parse().ok())
}

/// Parses a CIDR written canonically (`10.0.0.5/24`, `fd00::/64`); `what` names the form
/// in the message of a value that is not a CIDR at all.
pub fn parse_cidr(text: &str, what: &str) -> Result<IpNet, String> {
    let net = net(text)
        .ok_or_else(|| refuse_leading_zeros(text).unwrap_or(format!("{text:?} is not {what}")))?;
    // A canonical spelling has no zero-led octet: that check (and its message) is needed
    // only for a value about to be refused anyway.
    let canonical = canonical(text, net.addr(), Some(net.prefix_len()));
    if canonical.is_err() {
        if let Some(why) = refuse_leading_zeros(text) {
            return Err(why);
        }
    }
    mapped(text, net.addr())?;
    canonical.map(|_| net)
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is refused, as Kubernetes does: it is an IPv4 value
/// in IPv6 clothing, and the two families are configured apart.
fn mapped(text: &str, ip: IpAddr) -> Result<(), String> {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Err(format!(
                "{text:?} is an IPv4-mapped IPv6 address; write the IPv4 address {v4}"
            )),
            None => Ok(()),
        },
        IpAddr::V4(_) => Ok(()),
    }
}

/// The canonical spelling of a CIDR; `text` itself when it is one already (as everything
/// validated is: then nothing is formatted) or is not a CIDR at all.
pub fn canonical_cidr(text: &str) -> Cow<'_, str> {
    match net(text) {
        Some(net) if !is_canonical(text, net.addr(), Some(net.prefix_len())) => {
            Cow::Owned(net.to_string())
        }
        _ => Cow::Borrowed(text),
    }
}

/// `ip` when `text` is it (with `/prefix`) as written canonically; else what to write.
fn canonical(text: &str, ip: IpAddr, prefix: Option<u8>) -> Result<IpAddr, String> {
    if is_canonical(text, ip, prefix) {
        Ok(ip)
    } else {
        Err(format!(
            "{text:?} is not written canonically; write {}",
            written(ip, prefix)
        ))
    }
}

/// Whether `text` is `ip` (with `/prefix`) as it is written canonically. IPv4 is compared to
/// its digits written into a stack buffer: `fmt` would cost more than the rest of a
/// request's validation, which sees up to 1,500 values.
fn is_canonical(text: &str, ip: IpAddr, prefix: Option<u8>) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = Digits::default();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                buf.number(octet);
            }
            if let Some(len) = prefix {
                buf.push(b'/');
                buf.number(len);
            }
            buf.as_bytes() == text.as_bytes()
        }
        IpAddr::V6(_) => written(ip, prefix) == text,
    }
}

fn written(ip: IpAddr, prefix: Option<u8>) -> String {
    match prefix {
        Some(len) => format!("{ip}/{len}"),
        None => ip.to_string(),
    }
}

/// Room for four three-digit octets, their dots and a three-digit prefix (an IPv4 prefix
/// has two; the room spares a check).
#[derive(Default)]
struct Digits {
    buf: [u8; 19],
    len: usize,
}

impl Digits {
    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn number(&mut self, n: u8) {
        if n >= 100 {
            self.push(b'0' + n / 100);
        }
        if n >= 10 {
            self.push(b'0' + n / 10 % 10);
        }
        self.push(b'0' + n % 10);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// An IPv4 value with a zero-led octet (`010.1.0.5`), which parsers disagree on.
fn refuse_leading_zeros(text: &str) -> Option<String> {
    let addr = text.split('/').next().unwrap_or_default();
    let octets = || addr.split('.');
    let zero_led = octets().count() == 4
        && octets().all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
        && octets().any(|o| o.len() > 1 && o.starts_with('0'));
    zero_led.then(|| {
        format!("{text:?} has an octet with a leading zero, which some parsers read as octal; write it without leading zeros")
    })
}

/// An interface address: a host address in CIDR form (host bits are the address).
pub fn check_address(text: &str) -> Result<IpNet, String> {
    let net = parse_cidr(
        text,
        "an IPv4 or IPv6 address in CIDR form, e.g. 10.0.0.5/24",
    )?;
    let ip = net.addr();
    if ip.is_unspecified() {
        return Err(format!(
            "{ip} is the unspecified address, not an interface address"
        ));
    }
    if ip.is_multicast() {
        return Err(format!(
            "{ip} is a multicast address; an interface address is unicast"
        ));
    }
    if ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(format!(
            "{ip} is the limited broadcast address, not an interface address"
        ));
    }
    // /31 and /127 are point-to-point links (RFC 3021, RFC 6164): both addresses are hosts.
    let point_to_point = net.prefix_len() + 1 >= net.max_prefix_len();
    if !point_to_point && ip == net.network() {
        return Err(format!(
            "{ip} is the identifier of network {}, not a host address",
            net.trunc()
        ));
    }
    if !point_to_point && ip.is_ipv4() && ip == net.broadcast() {
        return Err(format!(
            "{ip} is the broadcast address of network {}, not a host address",
            net.trunc()
        ));
    }
    Ok(net)
}

/// A route destination: a network without host bits; the unspecified address only as the
/// default route (`/0`).
pub fn check_route_dst(text: &str) -> Result<IpNet, String> {
    let net = parse_cidr(text, "a network in CIDR form, e.g. 10.1.0.0/16 or ::/0")?;
    if net.trunc() != net {
        return Err(format!(
            "{text} has host bits set; the network is {}",
            net.trunc()
        ));
    }
    if net.addr().is_unspecified() && net.prefix_len() != 0 {
        return Err(format!(
            "{text} is within the unspecified network; the default route is {}/0",
            net.addr()
        ));
    }
    Ok(net)
}

/// A gateway: a unicast address.
pub fn check_gateway(text: &str) -> Result<IpAddr, String> {
    let ip = parse_ip(text)?;
    if ip.is_unspecified() {
        return Err(format!(
            "{ip} is the unspecified address; a gateway is a neighbour's address"
        ));
    }
    if ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(format!(
            "{ip} is not a unicast address; a gateway is a neighbour's address"
        ));
    }
    Ok(ip)
}
