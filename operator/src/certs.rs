//! The operator's own CA and serving certificate, kept in a Secret, published to the
//! webhook's `caBundle` and a CA ConfigMap, renewed before expiry.
//! CONTRACT STUB: the webhook/TLS work replaces the bodies, keeping these signatures.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::tls::CertStore;

pub mod bundle;
use crate::{Error, Result};

/// Where the certificate material lives and who it is for.
#[derive(Clone, Debug)]
pub struct CertConfig {
    /// Namespace of the operator, its Secret, Service and CA ConfigMap.
    pub namespace: String,
    /// Secret holding `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
    pub secret_name: String,
    /// Service whose DNS names the serving certificate covers.
    pub service_name: String,
    /// MutatingWebhookConfiguration whose `caBundle` is kept current.
    pub webhook_name: String,
    /// ConfigMap (key `ca.crt`) agents and nescli mount to trust the cliserver.
    pub ca_configmap_name: String,
    /// Lifetime of a serving certificate.
    pub validity: Duration,
    /// Renew when less than this is left.
    pub renew_before: Duration,
}

/// Keeps the Secret, the caBundle and the CA ConfigMap current and loads the serving
/// certificate into `store`, until `shutdown`.
pub async fn run(
    client: kube::Client,
    cfg: CertConfig,
    store: Arc<CertStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let _ = (client, cfg, store, shutdown);
    Err(Error::Tls("not implemented yet".into()))
}
