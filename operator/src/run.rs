//! Wires the operator: the kube client, certificates, the HTTPS server (cliserver and
//! webhook) on every replica, the probe server, and the leader-elected controllers; stops
//! everything on SIGTERM or SIGINT.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::admission::{self, ShimConfig};
use crate::args::Args;
use crate::auth::Authorizer;
use crate::certs::{self, CertConfig};
use crate::cliserver::{self, events::Hub};
use crate::controllers::{self, cares::Subscriptions, Context};
use crate::delivery::{guard, DeliveryConfig, Guard, WebhookClient};
use crate::leader::{self, LeaseConfig};
use crate::metrics::{self, Metrics};
use crate::policy::PolicyView;
use crate::tls::{self, CertStore};
use crate::{probes, Error, Result};

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Runs `task`; its failure stops every other task too.
async fn essential(
    name: &'static str,
    shutdown: CancellationToken,
    task: impl Future<Output = Result<()>>,
) -> Result<()> {
    let result = task.await;
    if let Err(error) = &result {
        error!(task = name, %error, "stopping the operator");
        shutdown.cancel();
    }
    result
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

/// Deadline of each API call made while answering a REST request (watches use the client's
/// own longer timeouts).
pub const REQUEST_API_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for watches and controllers, and one with short deadlines for REST requests, so
/// a slow API server fails a request instead of holding it.
async fn clients() -> Result<(kube::Client, kube::Client)> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Client(kube::Error::InferConfig(e)))?;
    let mut rest = config.clone();
    rest.read_timeout = Some(REQUEST_API_TIMEOUT);
    rest.write_timeout = Some(REQUEST_API_TIMEOUT);
    Ok((
        kube::Client::try_from(config).map_err(Error::Client)?,
        kube::Client::try_from(rest).map_err(Error::Client)?,
    ))
}

/// The HTTPS server's routes: the cliserver and the admission webhook, with metrics.
fn https_app(
    args: &Args,
    rest_client: kube::Client,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    policy: PolicyView,
) -> axum::Router {
    let state = Arc::new(cliserver::State {
        client: rest_client.clone(),
        auth: Authorizer::new(
            rest_client,
            args.agent_username(),
            args.namespace.clone(),
            args.token_audiences.clone(),
        ),
        events: hub,
        policy: policy.clone(),
    });
    let validating = crate::validating::router(policy);
    let shim = Arc::new(ShimConfig {
        image: args.shim_image.clone(),
        image_pull_policy: args.shim_image_pull_policy.clone(),
    });
    cliserver::router(state)
        .merge(admission::router(shim))
        .merge(validating)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

fn cert_config(args: &Args) -> CertConfig {
    CertConfig {
        namespace: args.namespace.clone(),
        secret_name: args.tls_secret_name.clone(),
        service_name: args.service_name.clone(),
        webhook_name: args.webhook_config_name.clone(),
        ca_configmap_name: args.ca_configmap_name.clone(),
        validity: CertConfig::DEFAULT_VALIDITY,
        renew_before: CertConfig::DEFAULT_RENEW_BEFORE,
    }
}

/// Webhook delivery of subscriptions, trusting the extra CA bundle when one is given.
fn subscriptions(args: &Args, hub: Arc<Hub>, policy: PolicyView) -> Result<Arc<Subscriptions>> {
    let extra_ca = match &args.webhook_ca_bundle {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Error::Tls(format!(
                "cannot read the webhook CA bundle {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    Ok(Subscriptions::new(
        hub,
        WebhookClient::new(
            extra_ca.as_deref(),
            Guard {
                policy,
                cluster_cidrs: args.cluster_cidrs.clone(),
                resolve: guard::system_resolver(),
            },
        )?,
        DeliveryConfig::default(),
    ))
}

pub async fn run(args: Args) -> Result<()> {
    let (client, rest_client) = clients().await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));

    let metrics = Arc::new(Metrics::default());
    let certs = CertStore::new();
    let hub = Arc::new(Hub::default());
    let policy = crate::policy::start(client.clone(), shutdown.clone());
    let app = https_app(
        &args,
        rest_client,
        hub.clone(),
        metrics.clone(),
        policy.clone(),
    );
    let cert_cfg = cert_config(&args);
    let https = bind(args.listen_addr).await?;
    let probe = bind(args.probe_addr).await?;
    info!(listen = %args.listen_addr, probes = %args.probe_addr, pod = %args.pod_name, "nes-operator starting");

    let probe_app = probes::router(metrics.clone(), certs.clone(), policy.clone());
    let probe_shutdown = shutdown.clone();
    let ctx = Context::new(
        client.clone(),
        &args.pod_name,
        metrics.clone(),
        subscriptions(&args, hub.clone(), policy)?,
        crate::install::render::RenderContext {
            namespace: args.namespace.clone(),
            operator_service: args.service_name.clone(),
        },
    );
    let lease = LeaseConfig {
        namespace: args.namespace.clone(),
        name: args.lease_name.clone(),
        identity: args.pod_name.clone(),
    };
    let leader_metrics = metrics.clone();

    let results = tokio::join!(
        essential(
            "certificates",
            shutdown.clone(),
            certs::run(client.clone(), cert_cfg, certs.clone(), shutdown.clone())
        ),
        essential(
            "https",
            shutdown.clone(),
            tls::serve(https, app, certs, shutdown.clone())
        ),
        async move {
            use common::serve::Drain;
            common::serve::serve(
                probe,
                probe_app,
                probes::LIMITS,
                probe_shutdown,
                Drain::Abort,
            )
            .await;
            Ok::<_, Error>(())
        },
        async {
            hub.run(client.clone(), shutdown.clone()).await;
            Ok(())
        },
        essential(
            "leader election",
            shutdown.clone(),
            leader::run(
                client.clone(),
                lease,
                move |token| controllers::run(ctx.clone(), token),
                move |leading| {
                    leader_metrics.leader.set(i64::from(leading));
                },
                shutdown.clone(),
            )
        ),
    );
    info!("nes-operator stopped");
    let (a, b, c, d, e) = results;
    a.and(b).and(c).and(d).and(e)
}
