//! `nescli get`: the merged desired configuration and its owners.

use api::wire::ConfigView;
use http::Method;

use super::Context;
use crate::error::Result;
use crate::output;

pub async fn run(ctx: &Context) -> Result<()> {
    let uri = ctx.client.uri("/v1/self/config", &[]);
    let view: ConfigView = ctx
        .client
        .json(Method::GET, &uri, None, ctx.deadline())
        .await?;
    output::config(&mut std::io::stdout().lock(), ctx.output, &view)
}
