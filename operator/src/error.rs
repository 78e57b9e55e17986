//! The operator's one error type.

/// Everything that can go wrong in the operator, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),

    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("leader election on Lease {lease}: {source}")]
    Lease {
        lease: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },

    #[error("{namespace}/{name} has no {field}")]
    MissingField {
        namespace: String,
        name: String,
        field: &'static str,
    },

    #[error("cannot render the NesInstallation: {0}")]
    Render(String),

    #[error("cannot serialise {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    // === TLS, certificates, admission ===
    #[error("TLS: {0}")]
    Tls(String),

    #[error("TLS setup failed: {context}: {source}")]
    Rustls {
        context: String,
        #[source]
        source: rustls::Error,
    },

    #[error("cannot {context}: {source}")]
    Certificate {
        context: String,
        #[source]
        source: rcgen::Error,
    },

    #[error("invalid certificate settings: {0}")]
    CertConfig(String),

    /// A request the cliserver refuses (401/403), decided by `auth`'s pure checks.
    #[error(transparent)]
    Denied(#[from] Denied),

    #[error(
        "Secret {namespace}/{name} changed under every attempt to write it ({attempts} conflicts)"
    )]
    SecretConflict {
        namespace: String,
        name: String,
        attempts: usize,
    },
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: no usable token.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: the caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Client(_) => "client",
            Self::Listen { .. } | Self::Serve { .. } => "serve",
            Self::Lease { .. } => "lease",
            Self::MissingField { .. } => "missing_field",
            Self::Json { .. } => "json",
            Self::Render(_) => "render",
            Self::Tls(_) | Self::Rustls { .. } => "tls",
            Self::Certificate { .. } | Self::CertConfig(_) => "certificate",
            Self::SecretConflict { .. } => "conflict",
            Self::Denied(_) => "denied",
        }
    }

    /// Wraps a kube error with what was being done.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Self::Kube { context, source }
    }
}
