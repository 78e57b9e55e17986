//! `nescli status`: live state read from the kernel.

use api::wire::StatusView;
use http::Method;
use tokio::time::Instant;

use super::Context;
use crate::error::Result;
use crate::output;

pub async fn run(ctx: &Context) -> Result<()> {
    let view = fetch(ctx, ctx.deadline()).await?;
    output::status(&mut std::io::stdout().lock(), ctx.output, &view)
}

/// One `GET /v1/self/status`.
pub async fn fetch(ctx: &Context, deadline: Instant) -> Result<StatusView> {
    let uri = ctx.client.uri("/v1/self/status", &[]);
    ctx.client.json(Method::GET, &uri, None, deadline).await
}
