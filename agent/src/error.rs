//! The agent's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used across the agent library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the agent, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or entering a network namespace failed.
    #[error("netns {netns}: {what}: {source}")]
    Netns {
        netns: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A pod's netns is the agent's own or the host's: serving it would hand the node to
    /// whoever can reach it.
    #[error("netns {netns} is the host's own network namespace: it is never served or configured as a pod")]
    HostNetns { netns: String },

    /// The executor thread of a netns is gone (it died or was shut down).
    #[error("netns {netns}: executor thread is gone")]
    ExecutorGone { netns: PathBuf },

    /// A closure run on a netns executor panicked.
    #[error("netns {netns}: closure panicked: {message}")]
    ExecutorPanic { netns: PathBuf, message: String },

    /// Opening a netlink socket failed.
    #[error("netns {netns}: opening netlink socket: {source}")]
    Socket {
        netns: String,
        #[source]
        source: std::io::Error,
    },

    /// The kernel refused a netlink request.
    #[error("{object}: {op} failed: {}", errno_text(*.errno))]
    Kernel {
        /// The object the request was about, e.g. `link eth1` or `route 10.0.0.0/8 table 254 metric 0`.
        object: String,
        /// The verb, e.g. `add address`.
        op: &'static str,
        /// Positive errno (EEXIST = 17, ENODEV = 19, ...).
        errno: i32,
    },

    /// The netlink connection failed (socket closed, request could not be sent, bad reply).
    #[error("{object}: {op}: netlink: {message}")]
    Netlink {
        object: String,
        op: &'static str,
        message: String,
    },

    /// A desired object is in a state nes may not change (e.g. the name is taken by a link
    /// nes did not create) or refers to something missing.
    #[error("{object}: {reason}")]
    Conflict { object: String, reason: String },

    /// The desired state being applied could not be saved: its pass wrote nothing.
    #[error("the desired state of this pass could not be saved; nothing was written")]
    NotSaved,

    /// The desired configuration is invalid (from `api::validate`).
    #[error(transparent)]
    Invalid(#[from] api::validate::Invalid),

    /// Reading or writing a file (config, owned record).
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Another agent holds the state directory.
    #[error("state directory {dir} is in use by another nes-agent (pid {holder}); one agent per state directory")]
    StateLocked { dir: PathBuf, holder: String },

    /// Parsing a file (config, owned record).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },

    /// A Kubernetes watch could not start or ended.
    #[error("watch: {what}")]
    Watch { what: String },

    // === the cliserver, asked by the cluster agent (not its answer: that is relayed as is) ===
    /// The cliserver URL cannot be used.
    #[error("cliserver URL {url:?}: {reason}")]
    CliserverUrl { url: String, reason: String },

    /// The cliserver's CA file cannot be read.
    #[error("{path}: {source}")]
    CliserverCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The cliserver's CA file holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    CliserverCa { path: PathBuf, reason: String },

    /// The cliserver cannot be reached.
    #[error("cliserver {addr}: {source}")]
    CliserverConnect {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// The HTTP exchange with the cliserver failed.
    #[error("cliserver {addr}: {message}")]
    CliserverHttp { addr: String, message: String },

    /// The cliserver did not answer in time.
    #[error("cliserver {addr}: no answer within {after:?}")]
    CliserverTimeout { addr: String, after: Duration },

    // === the CRI netns resolver (see `cri::ResolveError`) ===
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

    // === a pod's `@nes` socket ===
    /// Another nes agent holds it (two agents overlapping during an upgrade): wait for it.
    #[error("@{name} is held by another nes agent (pid {pid})")]
    SocketHeldByAgent { name: String, pid: i32 },

    /// Something else in the pod holds it: the pod cannot be served.
    #[error(
        "@{name} is already bound in this network namespace by uid {uid} pid {pid}, not by nes"
    )]
    SocketSquatted { name: String, uid: u32, pid: i32 },

    /// Binding or connecting to it failed otherwise.
    #[error("@{name}: {source}")]
    PodSocket {
        name: String,
        #[source]
        source: std::io::Error,
    },

    /// The probe port cannot be served.
    #[error("probe port {addr}: {source}")]
    Probe {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short stable label for CR condition reasons: the CRI resolver's own for its
    /// failures, the metric label for any other.
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
            other => other.metric_label(),
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

    /// The errno of a kernel refusal, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Netns { .. } => "netns",
            Error::HostNetns { .. } => "host_netns",
            Error::ExecutorGone { .. } => "executor_gone",
            Error::ExecutorPanic { .. } => "executor_panic",
            Error::Socket { .. } => "socket",
            Error::Kernel { .. } => "kernel",
            Error::Netlink { .. } => "netlink",
            Error::NotSaved => "not_saved",
            Error::Conflict { .. } => "conflict",
            Error::Invalid(_) => "invalid",
            Error::File { .. } => "file",
            Error::Parse { .. } => "parse",
            Error::StateLocked { .. } => "state_locked",
            Error::Watch { .. } => "watch",
            Error::CliserverUrl { .. }
            | Error::CliserverCaFile { .. }
            | Error::CliserverCa { .. }
            | Error::CliserverConnect { .. }
            | Error::CliserverHttp { .. }
            | Error::CliserverTimeout { .. } => "forward",
            Error::SocketHeldByAgent { .. } => "socket_held",
            Error::SocketSquatted { .. } => "socket_squatted",
            Error::PodSocket { .. } => "pod_socket",
            Error::SocketMissing { .. }
            | Error::PermissionDenied { .. }
            | Error::RuntimeUnavailable { .. }
            | Error::NotCriSocket { .. }
            | Error::PodNotFound { .. }
            | Error::NoReadySandbox { .. }
            | Error::SeveralReadySandboxes { .. }
            | Error::RuntimeRestarted { .. }
            | Error::DeadlineExceeded { .. }
            | Error::Rpc { .. }
            | Error::HostNetwork { .. }
            | Error::NoNetnsInfo { .. }
            | Error::NetnsUnreadable { .. } => "cri",
            Error::Probe { .. } => "probe",
        }
    }
}

/// `EEXIST (17): File exists`-style text for an errno.
pub fn errno_text(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    format!("{e:?} ({errno}): {}", e.desc())
}
