//! Long-polls: `?wait=DURATION[&generation=N]` on `GET /v1/self/status` and
//! `PUT /v1/self/config` answer once the pass for generation N (or later) has run, or when
//! the wait ends first; the answer's [`WAIT_HEADER`] says which.

use std::time::Duration;

use super::{ProblemDetails, BAD_REQUEST};
use crate::validate::Problem;

/// Longest wait a request may ask for: a client wanting longer asks again.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Header of every long-poll answer: [`WAIT_SETTLED`] or [`WAIT_TIMEOUT`].
pub const WAIT_HEADER: &str = "nes-wait";
/// The pass for the awaited generation (or a later one) ran: the body is its outcome
/// (applied or failed). A desired state that cannot be applied (Degraded) settles at once.
pub const WAIT_SETTLED: &str = "settled";
/// The wait ended before that pass did: the body is the current state.
pub const WAIT_TIMEOUT: &str = "timeout";

/// A validated long-poll request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitQuery {
    /// How long to wait at most (`0s` answers at once, with the marker).
    pub wait: Duration,
    /// The generation whose pass is awaited; `None` is the one current when the request
    /// arrives.
    pub generation: Option<i64>,
}

/// The `wait` and `generation` query parameters: `None` without `wait`. `wait` is a
/// duration with its unit (`500ms`, `30s`, `1m`) of at most [`MAX_WAIT`]; `generation` is
/// a non-negative integer and only comes with `wait`.
pub fn parse_wait_query(
    wait: Option<&str>,
    generation: Option<&str>,
) -> Result<Option<WaitQuery>, ProblemDetails> {
    let generation = generation
        .map(|g| match g.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => Err(bad(
                "generation",
                format!("{g:?} is not a generation (a non-negative integer)"),
            )),
        })
        .transpose()?;
    let Some(wait) = wait else {
        return match generation {
            Some(_) => Err(bad(
                "generation",
                "generation names the pass a wait= waits for; give wait= too".into(),
            )),
            None => Ok(None),
        };
    };
    let parsed = parse_duration(wait).map_err(|why| bad("wait", why))?;
    Ok(Some(WaitQuery {
        wait: parsed,
        generation,
    }))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    // A bare number would be a guess between seconds and milliseconds.
    if s.is_empty()
        || !s.starts_with(|c: char| c.is_ascii_digit())
        || s.ends_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!(
            "{s:?} is not a duration with its unit, such as 500ms, 30s or 1m"
        ));
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration with its unit, such as 500ms, 30s or 1m: {e}")
    })?;
    if d > MAX_WAIT {
        return Err(format!(
            "{s} is longer than the longest wait served, {}s; ask again instead",
            MAX_WAIT.as_secs()
        ));
    }
    Ok(d)
}

fn bad(field: &str, message: String) -> ProblemDetails {
    ProblemDetails {
        kind: BAD_REQUEST.into(),
        errors: vec![Problem {
            field: field.into(),
            message: message.clone(),
        }],
        ..ProblemDetails::new(400, format!("invalid {field}"), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_query_reads_durations_with_units_up_to_the_cap() {
        let ok = |w: &str, g: Option<&str>| parse_wait_query(Some(w), g).unwrap().unwrap();
        assert_eq!(ok("30s", None).wait, Duration::from_secs(30));
        assert_eq!(ok("1500ms", None).wait, Duration::from_millis(1500));
        assert_eq!(ok("1m", Some("7")).generation, Some(7));
        assert_eq!(ok("0s", None).wait, Duration::ZERO);
        assert_eq!(parse_wait_query(None, None).unwrap(), None);
    }

    #[test]
    fn wait_query_refuses_bad_values_naming_the_parameter() {
        let cases = [
            (Some("30"), None, "wait"),
            (Some("61s"), None, "wait"),
            (Some("2h"), None, "wait"),
            (Some("-1s"), None, "wait"),
            (Some("soon"), None, "wait"),
            (Some(""), None, "wait"),
            (Some("99999999999999999999999s"), None, "wait"),
            (Some("1s"), Some("-1"), "generation"),
            (Some("1s"), Some("x"), "generation"),
            (None, Some("3"), "generation"),
        ];
        for (wait, generation, field) in cases {
            let p =
                parse_wait_query(wait, generation).expect_err(&format!("{wait:?} {generation:?}"));
            assert_eq!(p.status, 400);
            assert_eq!(p.errors[0].field, field, "{wait:?} {generation:?}: {p:?}");
        }
    }
}
