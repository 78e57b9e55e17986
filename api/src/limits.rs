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
/// Longest canonical CIDR (`ffff:...:ffff/128`) and IP address.
pub const MAX_CIDR_LEN: u32 = 43;
pub const MAX_IP_LEN: u32 = 39;
/// Interface names: printable ASCII without `/` and `:` (the schema's form of `check_ifname`).
pub const IFNAME_PATTERN: &str = r"^[!-.0-9;-~]+$";
