//! Size and range limits, shared by the validator and the CRD schema.

pub const MAX_INTERFACES: u32 = 64;
/// Per pod, over all interfaces.
pub const MAX_ADDRESSES: usize = 512;
/// Per interface: the CRD schema can only bound one list, so it bounds each one by the pod limit.
pub const MAX_ADDRESSES_PER_INTERFACE: u32 = 512;
pub const MAX_ROUTES: u32 = 1024;
pub const MIN_VLAN_ID: u16 = 1;
pub const MAX_VLAN_ID: u16 = 4094;
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65535;
/// IPv6 needs at least this MTU (RFC 8200).
pub const MIN_MTU_IPV6: u32 = 1280;
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Table ids above this are reserved by the kernel (local=255, 0=unspec) or by convention.
pub const MAX_TABLE: u32 = 0xFFFF_FFFE;
/// Kernel's IFNAMSIZ minus the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;
/// `NetworkCare`: pods named in `podNames`.
pub const MAX_POD_NAMES: u32 = 256;
/// `NetworkCare`: length of a webhook URL.
pub const MAX_URL_LEN: u32 = 2048;
/// `NetworkService`: ports (an EndpointSlice holds at most 100).
pub const MAX_SERVICE_PORTS: u32 = 100;
/// `NetworkService`: `network`, the longest attachment `namespace/name` (63 + 1 + 253).
pub const MAX_SERVICE_NETWORK_LEN: u32 = 317;
/// `NetworkService`: its name is the Service's, an RFC 1035 label.
pub const MAX_SERVICE_NAME_LEN: usize = 63;
/// Longest canonical CIDR (`ffff:...:ffff/128`) and IP address.
pub const MAX_CIDR_LEN: u32 = 43;
pub const MAX_IP_LEN: u32 = 39;
/// Interface names: printable ASCII without `/` and `:` (the schema's form of `check_ifname`).
pub const IFNAME_PATTERN: &str = r"^[!-.0-9;-~]+$";
/// Request bodies the node agent's sockets accept. The biggest legal spec written compactly
/// (MAX_ROUTES routes with the longest CIDRs and gateways, MAX_INTERFACES interfaces,
/// MAX_ADDRESSES addresses) is about 200 KiB (see the test); this leaves room for pretty
/// printing. A body over it is refused from its `Content-Length` without being read.
pub const MAX_REQUEST_BODY_BYTES: usize = 512 * 1024;
/// AdmissionReviews the operator's webhooks read. A Pod CREATE review carries one pod (no
/// old object) and the user info; annotations are capped at 256 KiB by the API server and
/// real pods are a few KiB, so 1 MiB is far above any pod a labelled workload creates while
/// a third of the API server's 3 MiB request limit that the old cap allowed, per connection,
/// unauthenticated. A nes object in a validating UPDATE review (object and old object) is
/// bounded by the limits above to well under half of it each. A bigger review is refused
/// (413) from its `Content-Length`, unread; the webhook's `failurePolicy` then decides.
pub const MAX_ADMISSION_REVIEW_BYTES: usize = 1024 * 1024;
/// Messages kept in events and conditions: an error text grows with what a client sent
/// (one line per failed object), and every reader and every stored event copies it.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] bytes on a character boundary, ending in `…`
/// when cut.
pub fn bounded_message(text: String) -> String {
    bounded_to(text, MAX_MESSAGE_BYTES)
}

fn bounded_to(mut text: String, max: usize) -> String {
    const ELLIPSIS: char = '…';
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(ELLIPSIS.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push(ELLIPSIS);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary_with_an_ellipsis() {
        assert_eq!(bounded_to("short".into(), 10), "short");
        assert_eq!(bounded_to("0123456789".into(), 10), "0123456789");
        let cut = bounded_to("ééééééé".into(), 8); // 2 bytes each
        assert_eq!(cut, "éé…");
        assert!(cut.len() <= 8);
        let long = bounded_message("x".repeat(1 << 20));
        assert!(long.len() <= MAX_MESSAGE_BYTES && long.ends_with('…'));
    }

    /// The body limit is sized from the spec limits: the biggest legal spec fits twice.
    #[test]
    fn the_biggest_legal_spec_fits_the_request_body_limit_with_room() {
        let cidr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/128";
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let ifname = "x".repeat(MAX_IFNAME_LEN);
        let per_if = MAX_ADDRESSES / MAX_INTERFACES as usize;
        let interfaces: Vec<_> = (0..MAX_INTERFACES)
            .map(|_| {
                serde_json::json!({
                    "name": ifname, "type": "vxlan", "parent": ifname, "parentInHost": true,
                    "vlanId": MAX_VLAN_ID, "vni": MAX_VNI, "remote": ip, "local": ip,
                    "group": ip, "port": 65535, "peer": ifname, "peerBridge": ifname,
                    "master": ifname, "mtu": MAX_MTU, "state": "down",
                    "addresses": vec![cidr; per_if],
                })
            })
            .collect();
        let routes: Vec<_> = (0..MAX_ROUTES)
            .map(|_| {
                serde_json::json!({
                    "dst": cidr, "via": ip, "dev": ifname,
                    "metric": u32::MAX, "table": MAX_TABLE,
                })
            })
            .collect();
        let spec = serde_json::json!({"interfaces": interfaces, "routes": routes});
        let size = serde_json::to_vec(&spec).expect("serialise").len();
        assert!(2 * size <= MAX_REQUEST_BODY_BYTES, "{size} bytes");
    }
}
