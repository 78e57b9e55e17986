//! nes-operator: the cliserver REST API, ownership and cleanup of nes's custom resources,
//! and the mutating admission webhook that injects `nes-shim` into labelled pods.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admission;
pub mod certs;
pub mod error;
pub mod tls;

pub use error::{Error, Result};
