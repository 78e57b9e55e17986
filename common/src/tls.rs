//! The TLS settings of every nes HTTPS client (nescli `--url`, webhook delivery, the agent's
//! forwarding to the cliserver): rustls with ring, safe default versions, no client
//! certificate, and the roots the caller trusts.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tracing::warn;

/// Why a client's TLS settings cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("is not PEM: {0}")]
    NotPem(String),
    #[error("holds no certificate")]
    NoCertificate,
    #[error("holds a certificate rustls refuses: {0}")]
    BadCertificate(rustls::Error),
    #[error("no TLS version to offer: {0}")]
    Versions(rustls::Error),
}

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The system's roots, plus the CA certificates of a PEM bundle when given.
    System { extra_pem: Option<&'a [u8]> },
    /// Only the CA certificates of a PEM bundle (a private CA, e.g. the operator's).
    Only { pem: &'a [u8] },
}

/// A client config trusting `trust`.
pub fn client_config(trust: Trust<'_>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let extra = match trust {
        Trust::System { extra_pem } => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                warn!(%error, "cannot load some system CA certificates");
            }
            roots.add_parsable_certificates(native.certs);
            extra_pem
        }
        Trust::Only { pem } => Some(pem),
    };
    if let Some(pem) = extra {
        add_pem(&mut roots, pem)?;
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

fn add_pem(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    for cert in certs {
        roots.add(cert).map_err(TlsError::BadCertificate)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_that_is_not_pem_or_holds_nothing_is_refused() {
        let only = |pem: &'static [u8]| client_config(Trust::Only { pem }).map(|_| ());
        assert!(matches!(only(b""), Err(TlsError::NoCertificate)));
        assert!(matches!(
            only(b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n"),
            Err(TlsError::NotPem(_) | TlsError::BadCertificate(_))
        ));
        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(only(junk), Err(TlsError::BadCertificate(_))));
    }

    #[test]
    fn the_system_roots_alone_are_enough() {
        assert!(client_config(Trust::System { extra_pem: None }).is_ok());
        assert!(matches!(
            client_config(Trust::System {
                extra_pem: Some(b"not a certificate")
            }),
            Err(TlsError::NoCertificate)
        ));
    }
}
