//! `nescli wait --for=applied`: poll the live status until the condition holds.

use std::time::Duration;

use api::wire::StatusView;
use tokio::time::{sleep, Instant};
use tracing::debug;

use super::{status, Context};
use crate::args::{WaitArgs, WaitFor};
use crate::error::{Error, Result};
use crate::output::{self, Format};

/// How often the status is read.
const POLL: Duration = Duration::from_millis(200);

pub async fn run(ctx: &Context, args: WaitArgs) -> Result<()> {
    let start = Instant::now();
    let deadline = ctx.deadline();
    let mut last: Option<StatusView> = None;
    loop {
        let view = match status::fetch(ctx, deadline).await {
            Ok(view) => view,
            // The last poll ran into the deadline: report what the status last said.
            Err(Error::Timeout { .. } | Error::Unreachable { .. } | Error::Http { .. })
                if Instant::now() >= deadline && last.is_some() =>
            {
                return Err(timed_out(last.as_ref(), start));
            }
            Err(e) => return Err(e),
        };
        let done = match args.condition {
            WaitFor::Applied => view.is_applied(),
        };
        if done {
            return match ctx.output {
                Format::Table => {
                    println!("applied (generation {})", view.generation);
                    Ok(())
                }
                format => output::status(&mut std::io::stdout().lock(), format, &view),
            };
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out(Some(&view), start));
        }
        debug!(generation = view.generation, "not applied yet");
        last = Some(view);
        sleep(POLL.min(deadline - now)).await;
    }
}

fn timed_out(last: Option<&StatusView>, start: Instant) -> Error {
    Error::Timeout {
        what: format!(
            "waiting for the configuration to be applied ({})",
            last.map(why_not).unwrap_or_else(|| "no status yet".into())
        ),
        after: start.elapsed(),
    }
}

/// Why the status is not applied, from its `Applied` condition.
pub fn why_not(view: &StatusView) -> String {
    match view.status.conditions.iter().find(|c| c.type_ == "Applied") {
        None => format!("generation {}: no Applied condition yet", view.generation),
        Some(c) if c.observed_generation != Some(view.generation) => format!(
            "generation {}: the agent has not observed it yet (Applied is about generation {})",
            view.generation,
            c.observed_generation
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into())
        ),
        Some(c) => {
            let mut s = format!("generation {}: Applied={}", view.generation, c.status);
            if !c.reason.is_empty() {
                s.push_str(&format!(" {}", c.reason));
            }
            if !c.message.is_empty() {
                s.push_str(&format!(": {}", c.message));
            }
            s
        }
    }
}
