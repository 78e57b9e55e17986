//! nes node agent as a library: everything the `nes-agent` binary does lives here.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

// Module list: each helper adds its own line below its own marker, nothing else.
// -- engine (netns executor, netlink, plan, apply, watch)
pub mod apply;
pub mod atomic_file;
pub mod backoff;
pub mod cli;
pub mod engine;
pub mod error;
pub mod host;
pub mod mirror;
pub mod netlink;
pub mod netns;
pub mod observe;
pub mod owned;
pub mod plan;
pub mod saved;
pub mod statelock;
pub mod status;
pub mod watch;
// -- cri resolver
pub mod cri;
// -- standalone agent, socket API
pub mod standalone;
// -- pod socket API shared by standalone and cluster agents
pub mod podapi;
// -- admin policy at the agent's entrances
pub mod policy;
// -- CNI attachments (own invoker, libcni-compatible cache)
pub mod cni;
// -- in-cluster agent
pub mod cluster;
