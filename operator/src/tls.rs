//! HTTPS serving with a certificate that can be replaced while serving: every new TLS
//! handshake asks the [`CertStore`] for the current certificate, so a renewal takes
//! effect for the next connection without restarting the listener.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::serve::{Caps, Drain};
use common::sync::{read, write};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// A client must finish its TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send a request's headers within this (and may stay idle this long).
const HEADER_TIMEOUT: Duration = common::serve::HEADER_TIMEOUT;
/// Connections served at once. Each holds TLS buffers (tens of KiB) and at most one request
/// body; cliserver bodies are read only after authentication and webhook bodies within a
/// budget of their own (`admission::BodyBudget`), so this bounds the rest.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections from one client IP address: half of them, so that a flood from one source
/// (a pod sending bodies to the webhook) leaves room for the API server's webhook calls, the
/// agents and nescli. Enough for one node's agent, which holds a connection per followed
/// subscription.
pub const MAX_CONNECTIONS_PER_PEER: usize = MAX_CONNECTIONS / 2;
/// A refused connection is answered over TLS only if its handshake is this quick.
const LINGER_HANDSHAKE: Duration = Duration::from_secs(2);
/// On shutdown, requests in flight get this long to finish before they are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

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
        let current = read(&self.current);
        current.as_ref().map(|l| l.key.clone())
    }

    /// Makes `cert_pem` (the chain, leaf first) and `key_pem` the certificate for new
    /// connections. Returns whether it differs from the one served so far. On error the
    /// current certificate stays.
    pub fn load_pem(&self, cert_pem: &str, key_pem: &str) -> Result<bool> {
        let unchanged = {
            let current = read(&self.current);
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
        let mut current = write(&self.current);
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

/// Serves `app` over TLS on `listener` with the certificate in `certs` until `shutdown`,
/// with the accept loop of every nes server ([`common::serve::accept`]): at most
/// [`MAX_CONNECTIONS`] at once, [`MAX_CONNECTIONS_PER_PEER`] of them from one address (past it a 503 with `Retry-After`, over TLS so the client can
/// read it), a request head within [`HEADER_TIMEOUT`] (and the same idle timeout).
///
/// On shutdown it stops accepting, lets requests in flight finish (closing idle
/// keep-alive connections at once) for up to 20 s, then returns.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    certs: Arc<CertStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    serve_with(listener, app, certs, shutdown, caps()).await
}

/// The connection caps of [`serve`]: [`MAX_CONNECTIONS`], [`MAX_CONNECTIONS_PER_PEER`] from
/// any one address.
pub fn caps() -> Caps {
    Caps::new(MAX_CONNECTIONS).per_peer(MAX_CONNECTIONS_PER_PEER)
}

/// [`serve`] with its connection caps given (tests use a small one).
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    certs: Arc<CertStore>,
    shutdown: CancellationToken,
    caps: Caps,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(certs)?));
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving HTTPS");
    let busy = common::serve::busy_response(None);
    let refuse_acceptor = acceptor.clone();
    let conn_stop = shutdown.clone();
    common::serve::accept(
        listener,
        caps,
        Drain::Graceful(DRAIN_TIMEOUT),
        shutdown,
        move |tcp, peer| connection(acceptor.clone(), tcp, peer, app.clone(), conn_stop.clone()),
        move |tcp| {
            let (acceptor, busy) = (refuse_acceptor.clone(), busy.clone());
            async move {
                if let Ok(Ok(tls)) =
                    tokio::time::timeout(LINGER_HANDSHAKE, acceptor.accept(tcp)).await
                {
                    common::serve::linger_close(tls, &busy).await;
                }
            }
        },
    )
    .await;
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
    common::serve::http1(tls, app, HEADER_TIMEOUT, shutdown).await;
}

#[cfg(test)]
mod tests;
