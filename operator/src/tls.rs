//! HTTPS serving with a certificate that can be replaced while serving.
//! CONTRACT STUB: the webhook/TLS work replaces the bodies, keeping these signatures.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// The serving certificate chain and key; swapped in place on renewal.
#[derive(Debug, Default)]
pub struct CertStore {}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether a certificate has been loaded (readiness).
    pub fn is_ready(&self) -> bool {
        false
    }
}

/// Serves `app` over TLS on `listener` with the certificate in `certs` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    certs: Arc<CertStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let _ = (listener, app, certs, shutdown);
    Err(Error::Tls("not implemented yet".into()))
}
