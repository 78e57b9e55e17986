//! nes-operator: the cliserver REST API, ownership and cleanup of nes's custom resources,
//! and the mutating admission webhook that injects `nes-shim` into labelled pods.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admission;
pub mod args;
pub mod auth;
pub mod certs;
pub mod cliserver;
pub mod controllers;
pub mod delivery;
pub mod error;
pub mod install;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod probes;
pub mod run;
pub mod tls;
pub mod validating;

#[cfg(test)]
pub mod fixtures;

pub use error::{Error, Result};

/// Who the operator writes as: its server-side apply field manager and Events controller.
pub const FIELD_MANAGER: &str = "nes-operator";
