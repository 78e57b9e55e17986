//! The agent's retries (converge passes, socket binding, runtime reconnects) use the one
//! backoff every nes binary shares.

pub use common::backoff::Backoff;
