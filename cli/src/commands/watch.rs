//! `nescli watch`: follow the event stream of this pod, or of a subscription
//! (`--subscription NAME`), reconnecting from the last seen sequence.

use std::io::Write;

use http::Method;
use tokio::time::sleep;
use tracing::warn;

use super::subscribe::CARES_PATH;
use super::Context;
use crate::args::WatchArgs;
use crate::client::{backoff, percent_encode, Lines};
use crate::error::{humanize, Error, Result};
use crate::output;

/// Runs until the stream is refused (410, another problem: exit 1), the agent stays
/// unreachable for `--timeout` (exit 3), or stdout closes (exit 0).
pub async fn run(ctx: &Context, args: WatchArgs) -> Result<()> {
    let path = events_path(args.subscription.as_deref());
    let mut since = args.since;
    let mut stdout = std::io::stdout();
    // Paces reconnects, so a server that keeps ending streams is not hammered.
    let mut backoff = backoff();
    loop {
        let since_text = since.map(|s| s.to_string());
        let query: Vec<(&str, &str)> = since_text.iter().map(|s| ("since", s.as_str())).collect();
        let uri = ctx.client.uri(&path, &query);
        let deadline = ctx.deadline();
        let resp = ctx.client.send(Method::GET, &uri, None, deadline).await?;
        if !resp.status().is_success() {
            return Err(Error::Rejected(Box::new(
                ctx.client.problem(resp, deadline).await,
            )));
        }
        let mut lines = Lines::new(resp.into_body());
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(error) => {
                    warn!(%error, "event stream broke");
                    break;
                }
            };
            let Some((seq, raw)) = parse_event(&line) else {
                return Err(Error::BadResponse {
                    endpoint: ctx.client.endpoint().to_string(),
                    message: format!(
                        "an event line is not a JSON object with a seq: {}",
                        String::from_utf8_lossy(&line)
                    ),
                });
            };
            if since.is_some_and(|s| seq <= s) {
                continue; // already printed before a reconnect
            }
            output::event(&mut stdout.lock(), ctx.output, &raw)?;
            since = Some(seq);
            backoff.reset();
        }
        stdout.flush().map_err(Error::Output)?;
        let delay = backoff.next_delay();
        warn!(
            since = since.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            retry_in = %humanize(delay),
            "event stream ended; reconnecting"
        );
        sleep(delay).await;
    }
}

/// The event stream of the pod itself, or of its namespace's subscription `subscription`, as
/// the pod socket names it (the client maps it to the cliserver's path over `--url`).
pub fn events_path(subscription: Option<&str>) -> String {
    match subscription {
        Some(name) => format!("{CARES_PATH}/{}/events", percent_encode(name)),
        None => "/v1/self/events".to_string(),
    }
}

/// An event line as JSON and its sequence number. Events of types this nescli does not
/// know (from a newer agent) are kept as they are.
pub fn parse_event(line: &[u8]) -> Option<(u64, serde_json::Value)> {
    let raw: serde_json::Value = serde_json::from_slice(line).ok()?;
    let seq = raw.get("seq")?.as_u64()?;
    Some((seq, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_of_a_subscription_are_under_its_name() {
        assert_eq!(events_path(None), "/v1/self/events");
        assert_eq!(events_path(Some("mon")), "/v1/self/networkcares/mon/events");
    }

    #[test]
    fn event_lines_need_a_numeric_seq() {
        let cases: &[(&str, Option<u64>)] = &[
            (
                r#"{"seq":7,"time":"t","pod":"p","type":"LinkUp","ifname":"eth0"}"#,
                Some(7),
            ),
            (r#"{"seq":8,"type":"SomethingNew","x":1}"#, Some(8)),
            (r#"{"seq":"8"}"#, None),
            (r#"{"type":"LinkUp"}"#, None),
            ("not json", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_event(line.as_bytes()).map(|(s, _)| s),
                *want,
                "{line}"
            );
        }
    }
}
