//! The notification socket's kernel-side filter. Each address nes writes echoes a route in
//! the `local` table (and an IPv4 broadcast one), which the mirror never keeps; dropped in the
//! kernel, they are not queued, decoded and parsed only to be thrown away, and the listener
//! catches up with a pass sooner.

use std::os::fd::AsFd;

use libc::{
    BPF_ABS, BPF_B, BPF_H, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, RTM_DELROUTE, RTM_NEWROUTE,
    RTN_UNICAST, RT_TABLE_LOCAL,
};
use socket2::{SockFilter, SockRef};

/// Where the fields sit in a route notification: a 16-byte `nlmsghdr` (its type at 4), then
/// `rtmsg` (its table at 4, its type at 7). One notification is one datagram.
const NLMSG_TYPE: u32 = 4;
const RTM_TABLE: u32 = 16 + 4;
const RTM_TYPE: u32 = 16 + 7;

/// Classic BPF loads a half-word in network order; `nlmsg_type` is in the host's.
const fn loaded_u16(host: u16) -> u32 {
    u16::from_be_bytes(host.to_ne_bytes()) as u32
}

const fn op(code: u32) -> u16 {
    code as u16
}

/// Keeps every message but a route that is in the `local` table or not unicast, which is
/// what [`super::convert::route`] drops.
fn program() -> [SockFilter; 9] {
    let ld_h = op(BPF_LD | BPF_H | BPF_ABS);
    let ld_b = op(BPF_LD | BPF_B | BPF_ABS);
    let jeq = op(BPF_JMP | BPF_JEQ | BPF_K);
    let ret = op(BPF_RET | BPF_K);
    // Jump offsets count from the next instruction.
    [
        /* 0 */ SockFilter::new(ld_h, 0, 0, NLMSG_TYPE),
        /* 1 */ SockFilter::new(jeq, 1, 0, loaded_u16(RTM_NEWROUTE)),
        /* 2 */ SockFilter::new(jeq, 0, 4, loaded_u16(RTM_DELROUTE)),
        /* 3 */ SockFilter::new(ld_b, 0, 0, RTM_TABLE),
        /* 4 */ SockFilter::new(jeq, 3, 0, u32::from(RT_TABLE_LOCAL)),
        /* 5 */ SockFilter::new(ld_b, 0, 0, RTM_TYPE),
        /* 6 */ SockFilter::new(jeq, 0, 1, u32::from(RTN_UNICAST)),
        /* 7: keep */ SockFilter::new(ret, 0, 0, u32::MAX),
        /* 8: drop */ SockFilter::new(ret, 0, 0, 0),
    ]
}

/// Attaches the filter to a route-netlink socket that joins the route groups.
pub fn drop_routes_nes_never_reads(socket: &impl AsFd) -> std::io::Result<()> {
    SockRef::from(socket).attach_filter(&program())
}
