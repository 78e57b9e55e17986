//! The `NesInstallation`: what it renders ([`render`]), the status it reports ([`status`]) and
//! the gated agent rollout ([`rollout`]). All three are pure; the controller applying them is
//! I/O at the edge.

pub mod render;
pub mod rollout;
pub mod status;
