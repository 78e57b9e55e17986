//! HTTPS serving with a certificate that can be replaced while serving: every new TLS
//! handshake asks the [`CertStore`] for the current certificate, so a renewal takes
//! effect for the next connection without restarting the listener.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// A client must finish its TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send a request's headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, requests in flight get this long to finish before they are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// After an accept error (e.g. out of file descriptors), wait this long before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The serving certificate chain and key; swapped in place on renewal.
#[derive(Default)]
pub struct CertStore {
    current: RwLock<Option<Loaded>>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The PEM it was loaded from, to tell a renewal from a reload of the same thing.
    cert_pem: String,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether a certificate has been loaded (readiness).
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    /// The certificate new connections are served.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.as_ref().map(|l| l.key.clone())
    }

    /// Makes `cert_pem` (the chain, leaf first) and `key_pem` the certificate for new
    /// connections. Returns whether it differs from the one served so far. On error the
    /// current certificate stays.
    pub fn load_pem(&self, cert_pem: &str, key_pem: &str) -> Result<bool> {
        let unchanged = {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            current.as_ref().is_some_and(|l| l.cert_pem == cert_pem)
        };
        if unchanged {
            return Ok(false);
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Error::Tls(format!("tls.crt is not PEM: {error}")))?;
        if chain.is_empty() {
            return Err(Error::Tls("tls.crt holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|error| Error::Tls(format!("tls.key is not a PEM private key: {error}")))?;
        let key =
            CertifiedKey::from_der(chain, key, &provider()).map_err(|source| Error::Rustls {
                context: "load the serving certificate".into(),
                source,
            })?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Some(Loaded {
            key: Arc::new(key),
            cert_pem: cert_pem.to_owned(),
        });
        Ok(true)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// TLS settings: current TLS versions, HTTP/1.1, the certificate from `certs`.
pub fn server_config(certs: Arc<CertStore>) -> Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Rustls {
            context: "choose TLS versions".into(),
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` over TLS on `listener` with the certificate in `certs` until `shutdown`.
///
/// On shutdown it stops accepting, lets requests in flight finish (closing idle
/// keep-alive connections at once) for up to 20 s, then returns.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    certs: Arc<CertStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(certs)?));
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving HTTPS");
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        connections.spawn(connection(
            acceptor.clone(),
            tcp,
            peer,
            app.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections still open after the drain timeout; dropping them"
        );
        connections.abort_all();
    }
    tracing::info!(addr = ?addr, "stopped serving HTTPS");
    Ok(())
}

async fn connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTPS connection ended with an error");
    }
}

#[cfg(test)]
mod tests;
