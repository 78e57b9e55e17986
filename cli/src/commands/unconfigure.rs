//! `nescli unconfigure`: DELETE this manager's fragment.

use api::wire::ConfigView;
use http::Method;

use super::{manager_name, Context};
use crate::args::ManagerArgs;
use crate::error::Result;
use crate::output;

pub async fn run(ctx: &Context, args: ManagerArgs) -> Result<()> {
    remove(ctx, &manager_name(args.manager)).await
}

/// Removes `manager`'s fragment (and so what only it declared) and prints the result.
pub async fn remove(ctx: &Context, manager: &str) -> Result<()> {
    let uri = ctx.client.uri("/v1/self/config", &[("manager", manager)]);
    let view: ConfigView = ctx
        .client
        .json(Method::DELETE, &uri, None, ctx.deadline())
        .await?;
    output::config(&mut std::io::stdout().lock(), ctx.output, &view)
}
