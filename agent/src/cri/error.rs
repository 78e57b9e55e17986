//! The CRI netns resolver's failures: the CRI variants of the agent's one [`Error`], each
//! carrying the pod, the runtime socket and the source, so a log line or a CR condition says
//! what failed where.

/// Why a pod's network namespace could not be resolved through the container runtime (the
/// `SocketMissing` ... `NetnsUnreadable` variants of the agent's error).
pub type ResolveError = crate::error::Error;
