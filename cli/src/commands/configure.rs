//! `nescli configure`: PUT this manager's fragment (with `--wait`, and wait for its pass).

use api::wire::{ConfigView, WAIT_HEADER};
use http::Method;

use super::wait::{self, Reading};
use super::{manager_name, Context};
use crate::args::ConfigureArgs;
use crate::error::{Error, Result};
use crate::{fragment, output};

pub async fn run(ctx: &Context, args: ConfigureArgs) -> Result<()> {
    let spec = match (&args.file, args.fragment) {
        (Some(path), _) => fragment::load(path)?,
        (None, Some(spec)) => spec,
        (None, None) => {
            return Err(Error::Usage(
                "configure needs -f FILE, or --interface/--route flags".into(),
            ))
        }
    };
    // The fragment's own values and repeats are checked here with the one validator; the
    // server validates the merged spec of every manager (a fragment may rely on entries
    // another manager declared).
    api::validate_fragment(&spec).map_err(|invalid| Error::Usage(invalid.to_string()))?;
    let manager = manager_name(args.manager.manager);
    let body = serde_json::to_vec(&spec)
        .map_err(|e| Error::Usage(format!("cannot encode the fragment: {e}")))?;
    let deadline = ctx.deadline();
    if !args.wait {
        let view = put(ctx, &manager, body, deadline).await?;
        return output::config(&mut std::io::stdout().lock(), ctx.output, &view);
    }
    // One request on a pod socket: the agent answers after the pass (`PUT ?wait=`). The
    // cliserver, or an agent that predates it, gets the PUT and then a long-poll of the
    // status for the generation it stored.
    let first = match ctx.client.is_rest() {
        true => None,
        false => match put_and_wait(ctx, &manager, body.clone(), deadline).await {
            Ok(reading) => Some(reading),
            Err(Error::Rejected(p)) if wait::refuses_wait(&p) => None,
            Err(e) => return Err(e),
        },
    };
    let view = match first {
        Some(reading) => wait::follow(ctx, None, Some(reading), deadline).await?,
        None => {
            let stored = put(ctx, &manager, body, deadline).await?;
            wait::until_applied(ctx, Some(stored.generation), deadline).await?
        }
    };
    wait::print_applied(ctx, &view)
}

async fn put(
    ctx: &Context,
    manager: &str,
    body: Vec<u8>,
    deadline: tokio::time::Instant,
) -> Result<ConfigView> {
    let uri = ctx.client.uri("/v1/self/config", &[("manager", manager)]);
    ctx.client
        .json(Method::PUT, &uri, Some(body), deadline)
        .await
}

/// `PUT ?wait=`: the status after the pass for this change.
async fn put_and_wait(
    ctx: &Context,
    manager: &str,
    body: Vec<u8>,
    deadline: tokio::time::Instant,
) -> Result<Reading> {
    let wait = format!("{}ms", wait::wait_for(deadline).as_millis());
    let uri = ctx
        .client
        .uri("/v1/self/config", &[("manager", manager), ("wait", &wait)]);
    let (marker, answer) = ctx
        .client
        .answer(Method::PUT, &uri, Some(body), deadline, WAIT_HEADER)
        .await?;
    Reading::from_answer(ctx, marker, answer)
}
