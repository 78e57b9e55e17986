//! The leader-only controllers: ownership of nes's custom resources, orphan cleanup, and
//! NetworkCare subscriptions (webhook delivery and status), NetworkService publishing, and the
//! NesInstallation (rendered objects, gated agent rollout, status).

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

pub mod cares;
pub mod install;
pub mod netsvc;
pub mod orphans;
pub mod ownership;

/// What every reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub subscriptions: Arc<cares::Subscriptions>,
    /// Where the NesInstallation's objects go.
    pub install: crate::install::render::RenderContext,
}

impl Context {
    pub fn new(
        client: kube::Client,
        instance: &str,
        metrics: Arc<Metrics>,
        subscriptions: Arc<cares::Subscriptions>,
        install: crate::install::render::RenderContext,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: ownership::FIELD_MANAGER.into(),
            instance: Some(instance.into()),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            subscriptions,
            install,
        })
    }
}

/// Runs every controller until `shutdown` (i.e. while this replica leads).
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    tokio::join!(
        ownership::run(ctx.clone(), shutdown.clone()),
        orphans::run(ctx.clone(), shutdown.clone()),
        cares::run(ctx.clone(), shutdown.clone()),
        netsvc::run(ctx.clone(), shutdown.clone()),
        install::run(
            Arc::new(install::State {
                render: ctx.install.clone(),
                operator_version: env!("CARGO_PKG_VERSION").into(),
                ctx,
            }),
            shutdown
        ),
    );
}
