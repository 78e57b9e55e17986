//! Serves an axum router on a unix listener, keeping every connection in a set so that all
//! of them close at once when the pod goes: an open socket pins its network namespace.

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Accepts connections until `stop` is cancelled, then aborts every open connection.
pub async fn serve(listener: UnixListener, router: Router, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = TowerToHyperService::new(router.clone());
                    connections.spawn(async move {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(error) = conn.await {
                            debug!(%error, "connection ended");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    // EMFILE and friends: give other tasks a chance to free descriptors.
                    tokio::task::yield_now().await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    drop(listener);
}
