//! What every nes binary needs once: the retry backoff, the TLS settings of an HTTPS
//! client, the logging setup, the poison-tolerant locks, (feature `axum`) the HTTP servers'
//! error edge and (feature `kube`) the admin-policy view. `api` stays free of these (no I/O,
//! no crypto there).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod backoff;
#[cfg(feature = "axum")]
pub mod http;
pub mod logging;
#[cfg(feature = "kube")]
pub mod policy_view;
#[cfg(feature = "axum")]
pub mod serve;
pub mod sync;
pub mod tls;
