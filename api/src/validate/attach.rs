//! Attachments: each entry's own values, no network or interface twice, and no interface
//! that `spec.interfaces` creates (declaring it there with type `existing` is how addresses
//! and routes are added on top of an attachment).

use foldhash::{HashMap, HashMapExt};

use super::{check_ifname, first_at, ip, Problems};
use crate::attach::{
    AttachmentSpec, NetworkRef, MAX_ATTACHMENT_IPS, MAX_CNI_ARGS, MAX_CNI_ARG_LEN, RESERVED_IFNAMES,
};
use crate::netconf::{InterfaceSpec, InterfaceType, NetworkConfigurationSpec};

/// The namespace interface names are derived with when the pod's is not known: every
/// unqualified reference is in the one pod namespace, so distinct ones stay distinct.
const ANY_NAMESPACE: &str = "";

pub(super) fn check_attachments(list: &[AttachmentSpec], p: &mut Problems) {
    let mut names = HashMap::new();
    let mut ifnames = HashMap::new();
    for (i, a) in list.iter().enumerate() {
        let at = format!("spec.attachments[{i}]");
        check_values(a, &at, p);
        if let Some(first) = first_at(&mut names, a.name.as_str(), i) {
            p.add(
                format!("{at}.name"),
                format!(
                    "network {:?} is attached twice (first at spec.attachments[{first}])",
                    a.name
                ),
            );
        }
        if let Some(first) = first_at(&mut ifnames, a.ifname(ANY_NAMESPACE), i) {
            p.add(
                format!("{at}.interface"),
                format!(
                    "interface {:?} is used by two attachments (first at spec.attachments[{first}])",
                    a.ifname(ANY_NAMESPACE)
                ),
            );
        }
    }
}

fn check_values(a: &AttachmentSpec, at: &str, p: &mut Problems) {
    if let Err(why) = NetworkRef::parse(&a.name) {
        p.add(format!("{at}.name"), why);
    }
    if let Some(name) = &a.interface {
        match check_ifname(name) {
            Err(why) => p.add(format!("{at}.interface"), why),
            Ok(()) if RESERVED_IFNAMES.contains(&name.as_str()) => p.add(
                format!("{at}.interface"),
                format!("{name:?} is the pod's own (the CNI's or loopback); choose another name"),
            ),
            Ok(()) => {}
        }
    }
    if a.ips.len() > MAX_ATTACHMENT_IPS as usize {
        p.add(
            format!("{at}.ips"),
            format!(
                "at most {MAX_ATTACHMENT_IPS} addresses, got {}",
                a.ips.len()
            ),
        );
    }
    let mut seen = HashMap::new();
    for (j, text) in a.ips.iter().enumerate() {
        let field = format!("{at}.ips[{j}]");
        match ip::check_address(text) {
            Ok(net) => {
                if let Some(first) = first_at(&mut seen, net.addr(), j) {
                    p.add(
                        field,
                        format!("{} is asked twice (first at ips[{first}])", net.addr()),
                    );
                }
            }
            Err(why) => p.add(field, why),
        }
    }
    if let Some(Err(why)) = a.mac.as_deref().map(check_mac) {
        p.add(format!("{at}.mac"), why);
    }
    check_cni_args(a, at, p);
}

fn check_cni_args(a: &AttachmentSpec, at: &str, p: &mut Problems) {
    if a.cni_args.len() > MAX_CNI_ARGS as usize {
        p.add(
            format!("{at}.cniArgs"),
            format!("at most {MAX_CNI_ARGS} entries, got {}", a.cni_args.len()),
        );
    }
    let max = MAX_CNI_ARG_LEN as usize;
    for (key, value) in &a.cni_args {
        let key_ok =
            !key.is_empty() && key.len() <= max && key.bytes().all(|b| b.is_ascii_graphic());
        if !key_ok {
            p.add(
                format!("{at}.cniArgs"),
                format!("{key:?} is not a key: 1-{max} bytes of printable ASCII"),
            );
        }
        if value.len() > max {
            p.add(
                format!("{at}.cniArgs.{key}"),
                format!("at most {max} bytes, got {}", value.len()),
            );
        }
    }
}

/// A unicast MAC in lowercase colon form (`02:00:00:00:00:01`): the text is its identity.
pub fn check_mac(text: &str) -> Result<(), String> {
    let octets: Vec<&str> = text.split(':').collect();
    let well_formed = octets.len() == 6
        && octets.iter().all(|o| {
            o.len() == 2
                && o.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if !well_formed {
        return Err(format!(
            "{text:?} is not a MAC address in lowercase colon form, e.g. 02:00:00:00:00:01"
        ));
    }
    let first = u8::from_str_radix(octets[0], 16).unwrap_or(1);
    if first & 1 == 1 {
        return Err(format!("{text:?} is a multicast MAC address"));
    }
    if octets.iter().all(|o| *o == "00") {
        return Err(format!("{text:?} is the all-zero MAC address"));
    }
    Ok(())
}

/// An attachment's interface is the plugin's: `spec.interfaces` may only name it `existing`.
pub(super) fn check_against_interfaces(
    spec: &NetworkConfigurationSpec,
    declared: &HashMap<&str, &InterfaceSpec>,
    p: &mut Problems,
) {
    for (i, a) in spec.attachments.iter().enumerate() {
        let ifname = a.ifname(ANY_NAMESPACE);
        if let Some(iface) = declared.get(ifname.as_str()) {
            if iface.kind != InterfaceType::Existing {
                p.add(
                    format!("spec.attachments[{i}].interface"),
                    format!(
                        "interface {ifname:?} is also declared in spec.interfaces with type {}; the attachment's plugin creates it, so declare it there with type existing (or not at all)",
                        iface.kind.as_str()
                    ),
                );
            }
        }
    }
}
