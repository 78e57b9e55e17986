//! `nescli wait --for=applied`: wait until the pass for the current generation has run.
//!
//! This is a long-poll (`GET /v1/self/status?wait=`, on a pod socket and on the cliserver
//! alike): the server answers the moment the pass is done (the cliserver: the moment the
//! agent's report reaches it), so nothing here sleeps. Only a server that predates the
//! long-poll (it refuses `wait=`, or answers without `Nes-Wait`) is polled.

use std::time::Duration;

use api::wire::{StatusView, MAX_WAIT, WAIT_HEADER, WAIT_SETTLED};
use http::Method;
use hyper::body::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Deserialize;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::debug;

use super::Context;
use crate::args::{WaitArgs, WaitFor};
use crate::error::{Error, Result};
use crate::output::{self, Format};

/// How often the status is read from a server that does not long-poll.
const POLL: Duration = Duration::from_millis(200);
/// A long-poll ends this much before our deadline, so its answer (the state it ends on)
/// arrives in time to be reported.
const MARGIN: Duration = Duration::from_millis(100);

pub async fn run(ctx: &Context, args: WaitArgs) -> Result<()> {
    let view = match args.condition {
        WaitFor::Applied => until_applied(ctx, None, ctx.deadline()).await?,
    };
    print_applied(ctx, &view)
}

/// Reports an applied status as `wait` does.
pub fn print_applied(ctx: &Context, status: &Status) -> Result<()> {
    match ctx.output {
        Format::Table => {
            println!("applied (generation {})", status.generation);
            Ok(())
        }
        format => {
            let view: StatusView = ctx.client.decode(&status.body)?;
            output::status(&mut std::io::stdout().lock(), format, &view)
        }
    }
}

/// A status as waiting reads it: its generation and conditions. The rest (a pod may
/// declare thousands of objects) stays text, parsed only if it is printed.
pub struct Status {
    pub generation: i64,
    conditions: Vec<Condition>,
    body: Bytes,
}

/// The part of a [`StatusView`] that waiting reads.
#[derive(Deserialize)]
struct Head {
    generation: i64,
    #[serde(default)]
    conditions: Vec<Condition>,
}

impl Status {
    fn is_applied(&self) -> bool {
        api::wire::applied(self.generation, &self.conditions)
    }
}

/// One status reading, and whether the server said the awaited pass has run.
pub struct Reading {
    pub status: Status,
    /// `Some(settled)` from a long-poll; `None` when the server does not long-poll.
    pub settled: Option<bool>,
}

impl Reading {
    /// A status answer, from its body and its `Nes-Wait` header (a long-poll's; `None`
    /// from a server that does not long-poll).
    pub fn from_answer(ctx: &Context, marker: Option<String>, body: Bytes) -> Result<Self> {
        let head: Head = ctx.client.decode(&body)?;
        Ok(Self {
            settled: marker.map(|m| m == WAIT_SETTLED),
            status: Status {
                generation: head.generation,
                conditions: head.conditions,
                body,
            },
        })
    }
}

/// Waits until `generation` (the current one when `None`) is applied.
pub async fn until_applied(
    ctx: &Context,
    generation: Option<i64>,
    deadline: Instant,
) -> Result<Status> {
    follow(ctx, generation, None, deadline).await
}

/// [`until_applied`] starting from a reading already in hand.
pub async fn follow(
    ctx: &Context,
    mut generation: Option<i64>,
    mut first: Option<Reading>,
    deadline: Instant,
) -> Result<Status> {
    let start = Instant::now();
    let mut long_poll = true;
    let mut last: Option<Status> = None;
    let mut next_ask = start;
    loop {
        let reading = match first.take() {
            Some(r) => Ok(r),
            None if long_poll => {
                // A long-poll lasts its wait; one answered early again and again (a
                // server misbehaving) is asked no more often than a poll would be.
                sleep_until(next_ask).await;
                next_ask = Instant::now() + POLL;
                read_long(ctx, generation, deadline).await
            }
            None => read(ctx, &[], deadline).await,
        };
        let reading = match reading {
            Ok(r) => r,
            // An agent that predates the long-poll refuses the parameter: poll it.
            Err(Error::Rejected(p)) if long_poll && refuses_wait(&p) => {
                long_poll = false;
                continue;
            }
            // The last read ran into the deadline: report what the status last said.
            Err(Error::Timeout { .. } | Error::Unreachable { .. } | Error::Http { .. })
                if Instant::now() >= deadline && last.is_some() =>
            {
                return Err(timed_out(last.as_ref(), start));
            }
            Err(e) => return Err(e),
        };
        let view = reading.status;
        if view.is_applied() {
            return Ok(view);
        }
        match reading.settled {
            // The awaited pass ran and did not apply it; unless the generation moved on
            // meanwhile (then that one is awaited), that is the answer.
            Some(true) if generation == Some(view.generation) => {
                return Err(Error::NotApplied(why_not(&view)))
            }
            Some(true) => generation = Some(view.generation),
            Some(false) => {}
            None => long_poll = false,
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out(Some(&view), start));
        }
        debug!(generation = view.generation, "not applied yet");
        last = Some(view);
        if !long_poll {
            sleep(POLL.min(deadline - now)).await;
        }
    }
}

/// One long-poll of the status: answered when the pass for `generation` has run, or when
/// the wait (what is left of the deadline) ends.
async fn read_long(ctx: &Context, generation: Option<i64>, deadline: Instant) -> Result<Reading> {
    let wait = format!("{}ms", wait_for(deadline).as_millis());
    let generation = generation.map(|g| g.to_string());
    let mut query = vec![("wait", wait.as_str())];
    if let Some(g) = &generation {
        query.push(("generation", g));
    }
    read(ctx, &query, deadline).await
}

/// One `GET /v1/self/status` with `query`.
async fn read(ctx: &Context, query: &[(&str, &str)], deadline: Instant) -> Result<Reading> {
    let uri = ctx.client.uri("/v1/self/status", query);
    let (marker, body) = ctx
        .client
        .answer(Method::GET, &uri, None, deadline, WAIT_HEADER)
        .await?;
    Reading::from_answer(ctx, marker, body)
}

/// How long the server may wait for us: what is left before `deadline`, less the margin,
/// at most what a server grants.
pub fn wait_for(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(MARGIN)
        .min(MAX_WAIT)
}

/// Whether a problem is a server refusing `wait=` as unknown (it predates the long-poll).
pub fn refuses_wait(p: &api::wire::ProblemDetails) -> bool {
    p.status == 400 && p.errors.iter().any(|e| e.field == "wait")
}

fn timed_out(last: Option<&Status>, start: Instant) -> Error {
    Error::Timeout {
        what: format!(
            "waiting for the configuration to be applied ({})",
            last.map(why_not).unwrap_or_else(|| "no status yet".into())
        ),
        after: start.elapsed(),
    }
}

/// Why the status is not applied, from its `Applied` condition.
fn why_not(view: &Status) -> String {
    match view.conditions.iter().find(|c| c.type_ == "Applied") {
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
