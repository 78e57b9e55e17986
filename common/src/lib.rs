//! What every nes binary needs once: the retry backoff, the TLS settings of an HTTPS
//! client, and the logging setup. `api` stays free of these (no I/O, no crypto there).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod backoff;
pub mod logging;
pub mod tls;
