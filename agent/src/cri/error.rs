//! Errors of the CRI netns resolver. One enum, each variant carrying the pod, the runtime
//! socket and the source, so a log line or a CR condition says what failed where.

use std::path::PathBuf;
use std::time::Duration;

/// Why a pod's network namespace could not be resolved through the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Nothing exists at the runtime socket path (runtime not installed or not started yet).
    #[error("pod {pod}: runtime socket {} does not exist", socket.display())]
    SocketMissing {
        pod: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The socket exists but this process may not connect to it.
    #[error("pod {pod}: permission denied connecting to runtime socket {}", socket.display())]
    PermissionDenied {
        pod: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The socket exists but nobody accepts connections (runtime stopped or restarting).
    #[error("pod {pod}: runtime at {} is not accepting connections", socket.display())]
    RuntimeUnavailable {
        pod: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Something answers on the socket, but it does not serve CRI v1 `RuntimeService`.
    #[error("pod {pod}: {} is not a CRI v1 runtime socket: {detail}", socket.display())]
    NotCriSocket {
        pod: String,
        socket: PathBuf,
        detail: String,
    },

    /// The runtime has no sandbox at all for this pod UID.
    #[error("pod {pod}: the runtime at {} has no sandbox for this pod", socket.display())]
    PodNotFound { pod: String, socket: PathBuf },

    /// The pod has sandboxes, but none is ready (being created, or stopped and not yet removed).
    #[error("pod {pod}: no ready sandbox (not ready: {not_ready:?})")]
    NoReadySandbox {
        pod: String,
        socket: PathBuf,
        not_ready: Vec<String>,
    },

    /// More than one ready sandbox claims this pod: refusing to guess which netns is the pod's.
    #[error("pod {pod}: {} ready sandboxes, refusing to choose: {sandboxes:?}", sandboxes.len())]
    SeveralReadySandboxes {
        pod: String,
        socket: PathBuf,
        sandboxes: Vec<String>,
    },

    /// The connection to the runtime broke while a call was in flight (runtime restarted).
    #[error("pod {pod}: runtime at {} went away during {rpc}", socket.display())]
    RuntimeRestarted {
        pod: String,
        socket: PathBuf,
        rpc: &'static str,
        #[source]
        source: tonic::Status,
    },

    /// The runtime did not answer within the deadline.
    #[error("pod {pod}: {rpc} on {} exceeded its {after:?} deadline", socket.display())]
    DeadlineExceeded {
        pod: String,
        socket: PathBuf,
        rpc: &'static str,
        after: Duration,
    },

    /// The runtime answered with an error status not covered above.
    #[error("pod {pod}: {rpc} on {} failed", socket.display())]
    Rpc {
        pod: String,
        socket: PathBuf,
        rpc: &'static str,
        #[source]
        source: tonic::Status,
    },

    /// The sandbox runs in the node's network namespace: nes never configures the host.
    #[error("pod {pod}: sandbox {sandbox} uses the host network namespace")]
    HostNetwork { pod: String, sandbox: String },

    /// The verbose sandbox status carries neither a netns path nor a pid.
    #[error("pod {pod}: sandbox {sandbox} status has no network namespace: {reason}")]
    NoNetnsInfo {
        pod: String,
        sandbox: String,
        reason: String,
    },

    /// The netns file named by the runtime cannot be read (sandbox torn down meanwhile).
    #[error("pod {pod}: netns {} of sandbox {sandbox} is not readable", path.display())]
    NetnsUnreadable {
        pod: String,
        sandbox: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ResolveError {
    /// A short stable label for metrics and CR condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SocketMissing { .. } => "SocketMissing",
            Self::PermissionDenied { .. } => "PermissionDenied",
            Self::RuntimeUnavailable { .. } => "RuntimeUnavailable",
            Self::NotCriSocket { .. } => "NotCriSocket",
            Self::PodNotFound { .. } => "PodNotFound",
            Self::NoReadySandbox { .. } => "NoReadySandbox",
            Self::SeveralReadySandboxes { .. } => "SeveralReadySandboxes",
            Self::RuntimeRestarted { .. } => "RuntimeRestarted",
            Self::DeadlineExceeded { .. } => "DeadlineExceeded",
            Self::Rpc { .. } => "RuntimeError",
            Self::HostNetwork { .. } => "HostNetwork",
            Self::NoNetnsInfo { .. } => "NoNetnsInfo",
            Self::NetnsUnreadable { .. } => "NetnsUnreadable",
        }
    }

    /// Whether retrying later can succeed without anything else changing on the node
    /// (the caller's level-triggered loop backs off and tries again either way).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Self::NotCriSocket { .. } | Self::HostNetwork { .. } | Self::PermissionDenied { .. }
        )
    }
}
