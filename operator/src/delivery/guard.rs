//! Where a webhook may connect, decided at connect time: the host is resolved here, the
//! addresses are checked with `api::policy::check_destination` against the policies that
//! govern the subscription's namespace (read at that moment), and the connection goes to
//! exactly the addresses checked, so a name that re-resolves to an internal address
//! between a check and a connect (DNS rebinding) cannot get through.
//!
//! A failure is reported as an [`api::policy::FailureClass`] only; the details are for
//! the operator's log.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use api::policy::{self, Denied, FailureClass};
use futures::future::BoxFuture;
use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::policy::{PolicyView, Refusal};

/// Resolves a host name to addresses (the system resolver in production, a fixed table
/// in tests).
pub type Resolve = Arc<dyn Fn(String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> + Send + Sync>;

/// The system resolver.
pub fn system_resolver() -> Resolve {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// What every delivery connection is checked with.
#[derive(Clone)]
pub struct Guard {
    pub policy: PolicyView,
    /// Pod and service ranges (`--cluster-cidr`): refused unless a policy's allowCidrs
    /// lists them.
    pub cluster_cidrs: Vec<IpNet>,
    pub resolve: Resolve,
}

/// A connect refused by the destination check (carried inside an `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("webhook destination refused: {0}")]
pub struct DestinationRefused(pub String);

impl Guard {
    /// Whether `host`, resolved to `ips`, is a destination for subscriptions of `namespace`.
    fn check(&self, namespace: &str, host: &str, ips: &[IpAddr]) -> Result<(), DestinationRefused> {
        let governing = self.policy.governing(namespace);
        let refs = governing
            .policies()
            .map_err(|r: Refusal| DestinationRefused(r.to_string()))?;
        policy::check_destination(&refs, host, ips, &self.cluster_cidrs)
            .map_err(|d: Denied| DestinationRefused(d.to_string()))
    }

    /// The connector for subscriptions of `namespace`.
    pub fn connector(&self, namespace: &str) -> GuardedConnector {
        GuardedConnector {
            guard: self.clone(),
            namespace: namespace.to_string(),
        }
    }
}

/// A TCP connector that resolves, checks, then connects to the checked addresses only.
#[derive(Clone)]
pub struct GuardedConnector {
    guard: Guard,
    namespace: String,
}

/// Hands HttpConnector exactly the addresses that were checked.
#[derive(Clone)]
struct Fixed(Vec<IpAddr>);

impl tower::Service<Name> for Fixed {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        let addrs: Vec<SocketAddr> = self.0.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
        std::future::ready(Ok(addrs.into_iter()))
    }
}

impl tower::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| DestinationRefused("the URL has no host".into()))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let ips = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => (this.guard.resolve)(host.clone()).await?,
            };
            this.guard.check(&this.namespace, &host, &ips)?;
            let mut http = HttpConnector::new_with_resolver(Fixed(ips));
            http.enforce_http(false);
            let stream = tower::Service::call(&mut http, uri).await?;
            Ok(stream)
        })
    }
}

/// The class of a failed POST, from its error chain (an `io::Error` is looked into: its
/// `source()` skips the error it wraps).
pub fn classify(error: &(dyn std::error::Error + 'static)) -> FailureClass {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<DestinationRefused>() {
            return FailureClass::DestinationDenied;
        }
        if e.is::<rustls::Error>() {
            return FailureClass::TlsFailure;
        }
        current = e.source();
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return FailureClass::ConnectionRefused,
                io::ErrorKind::TimedOut => return FailureClass::Timeout,
                _ => {}
            }
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
            }
        }
    }
    FailureClass::Other
}
