//! The mutating admission webhook (nescontroller): injects `nes-shim` into labelled pods.
//! CONTRACT STUB: the webhook/TLS work replaces the bodies, keeping these signatures.

use std::sync::Arc;

/// What the injected shim container looks like.
#[derive(Clone, Debug)]
pub struct ShimConfig {
    /// Image holding `/usr/local/bin/nes-shim` (the agent image by default).
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
}

/// Path the MutatingWebhookConfiguration calls.
pub const MUTATE_PATH: &str = "/mutate-pods";

/// `POST /mutate-pods`: AdmissionReview v1 in, AdmissionReview v1 out.
pub fn router(cfg: Arc<ShimConfig>) -> axum::Router {
    let _ = cfg;
    axum::Router::new()
}
