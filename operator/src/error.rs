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

    #[error(
        "Secret {namespace}/{name} changed under every attempt to write it ({attempts} conflicts)"
    )]
    SecretConflict {
        namespace: String,
        name: String,
        attempts: usize,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Tls(_) | Self::Rustls { .. } => "tls",
            Self::Certificate { .. } | Self::CertConfig(_) => "certificate",
            Self::SecretConflict { .. } => "conflict",
        }
    }
}
