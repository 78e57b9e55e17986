//! The shared harness of nes's end-to-end tests (`tests/tests/*.rs`): throwaway namespaces
//! and a netlink witness (`common`), the in-cluster agent against a mock API server
//! (`cluster_support`), a stub of the agent's socket API and of the operator's cliserver with
//! a runner for the real `nescli` (`support`), and where the workspace's binaries are (`bins`).

pub mod bins;
pub mod client;
pub mod cluster_support;
pub mod cni;
pub mod common;
pub mod standalone;
pub mod support;
