//! Types that cross the wire of the REST APIs (pod socket and cliserver).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::{Deserialize, Serialize};

use crate::care::EventKind;
use crate::merge::{Conflict, Owners};
use crate::netconf::{NetworkConfigurationSpec, NetworkConfigurationStatus};
use crate::validate::{Invalid, Problem};

mod wait;
pub use wait::{parse_wait_query, WaitQuery, MAX_WAIT, WAIT_HEADER, WAIT_SETTLED, WAIT_TIMEOUT};

/// The abstract unix socket name (without the leading NUL) an agent binds in each pod's netns.
pub const POD_SOCKET_NAME: &str = "nes";
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest request target (path and query) served; longer is 414.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Largest header block served (names, values and separators); larger is 431. Both are
/// checked by nes so that the answer is problem+json; the HTTP layer's own, larger limits
/// stay as the backstop.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// `GET /v1/self/config`: the merged desired spec and who owns each entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    pub pod: String,
    /// Grows by one on every accepted change of the desired spec.
    pub generation: i64,
    // Shared with the desired state it shows: an answer copies no entry.
    pub spec: Arc<NetworkConfigurationSpec>,
    pub owners: Arc<Owners>,
}

/// `GET /v1/self/status`: live state read from the kernel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub pod: String,
    pub generation: i64,
    #[serde(flatten)]
    pub status: NetworkConfigurationStatus,
}

impl StatusView {
    /// Whether the `Applied` condition is `True` for the current generation.
    pub fn is_applied(&self) -> bool {
        applied(self.generation, &self.status.conditions)
    }
}

/// Whether `conditions` hold `Applied=True` observed at `generation`.
pub fn applied(generation: i64, conditions: &[Condition]) -> bool {
    conditions.iter().any(|c| {
        c.type_ == "Applied" && c.status == "True" && c.observed_generation == Some(generation)
    })
}

/// One line of the `GET /v1/self/events` NDJSON stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Per-pod sequence number; only grows, starts at 1.
    pub seq: u64,
    /// RFC 3339 timestamp.
    pub time: String,
    pub pod: String,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened. `type` names it; old and new state are carried where they exist.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "PascalCase")]
pub enum EventBody {
    #[serde(rename_all = "camelCase")]
    LinkUp { ifname: String },
    #[serde(rename_all = "camelCase")]
    LinkDown { ifname: String },
    #[serde(rename_all = "camelCase")]
    LinkAdded { ifname: String },
    #[serde(rename_all = "camelCase")]
    LinkRemoved { ifname: String },
    #[serde(rename_all = "camelCase")]
    MtuChanged {
        ifname: String,
        old: Option<u32>,
        new: u32,
    },
    #[serde(rename_all = "camelCase")]
    AddressAdded { ifname: String, address: String },
    #[serde(rename_all = "camelCase")]
    AddressRemoved { ifname: String, address: String },
    #[serde(rename_all = "camelCase")]
    RouteAdded {
        dst: String,
        table: u32,
        metric: u32,
    },
    #[serde(rename_all = "camelCase")]
    RouteRemoved {
        dst: String,
        table: u32,
        metric: u32,
    },
    /// The desired spec of `generation` is in the kernel; `writes` netlink writes got it there.
    #[serde(rename_all = "camelCase")]
    ConfigApplied { generation: i64, writes: u64 },
    #[serde(rename_all = "camelCase")]
    ConfigFailed { generation: i64, error: String },
    /// The pod cannot be served as it should (e.g. `@nes` squatted).
    #[serde(rename_all = "camelCase")]
    Degraded { reason: String, message: String },
}

impl EventBody {
    /// The subscription kind this event belongs to.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::LinkUp { .. }
            | Self::LinkDown { .. }
            | Self::LinkAdded { .. }
            | Self::LinkRemoved { .. }
            | Self::MtuChanged { .. } => EventKind::Link,
            Self::AddressAdded { .. } | Self::AddressRemoved { .. } => EventKind::Address,
            Self::RouteAdded { .. } | Self::RouteRemoved { .. } => EventKind::Route,
            Self::ConfigApplied { .. } | Self::ConfigFailed { .. } | Self::Degraded { .. } => {
                EventKind::Config
            }
        }
    }
}

/// An RFC 7807 `application/problem+json` error body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Every field that was wrong, for validation failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
    /// For 410 Gone on an event stream: the oldest sequence still available.
    #[serde(
        default,
        rename = "oldestSequence",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_sequence: Option<u64>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl ProblemDetails {
    pub fn new(status: u16, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: title.into(),
            status,
            detail: Some(detail.into()),
            oldest_sequence: None,
            errors: vec![],
        }
    }

    /// 422 for a configuration the validator rejected.
    pub fn invalid(invalid: &Invalid) -> Self {
        Self {
            kind: "https://nes.network-config.io/problems/invalid".into(),
            title: "invalid network configuration".into(),
            status: 422,
            detail: Some(invalid.to_string()),
            errors: invalid.0.clone(),
            oldest_sequence: None,
        }
    }

    /// 403 for host-side fields this node does not allow.
    pub fn host_refused(refused: &crate::host::Refused) -> Self {
        Self {
            kind: "https://nes.network-config.io/problems/host-access".into(),
            title: "host-side access refused".into(),
            status: 403,
            detail: Some(refused.to_string()),
            errors: refused.0.clone(),
            oldest_sequence: None,
        }
    }

    /// 403 for a request the admin policy refuses: `detail` says which policies, `errors`
    /// every violation's field. One shape for the agent and the cliserver.
    pub fn policy_denied(detail: impl Into<String>, errors: Vec<Problem>) -> Self {
        Self {
            kind: POLICY_DENIED.into(),
            errors,
            ..Self::new(403, "denied by policy", detail)
        }
    }

    /// 503 while the policies that govern a request are not known yet: refused, never
    /// let through.
    pub fn policy_unavailable(detail: impl Into<String>) -> Self {
        Self::new(503, "admin policy unavailable", detail)
    }

    /// 409 for a field another manager owns.
    pub fn conflict(conflict: &Conflict) -> Self {
        Self {
            kind: "https://nes.network-config.io/problems/conflict".into(),
            title: "conflict with another manager".into(),
            status: 409,
            detail: Some(conflict.to_string()),
            errors: vec![Problem {
                field: conflict.field.clone(),
                message: conflict.to_string(),
            }],
            oldest_sequence: None,
        }
    }

    /// 410 for an event stream resumed from a sequence no longer buffered.
    pub fn gone(since: u64, oldest: u64) -> Self {
        Self {
            oldest_sequence: Some(oldest),
            ..Self::new(
                410,
                "events are gone",
                format!("sequence {since} is no longer buffered; the oldest is {oldest}"),
            )
        }
    }
}

/// `POST /v1/namespaces/{ns}/networkcares` (cliserver): a new subscription.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCare {
    /// The subscriber's name, the `NetworkCare`'s `metadata.name`.
    pub name: String,
    pub spec: crate::care::NetworkCareSpec,
}

/// A `NetworkCare` as the cliserver shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CareView {
    pub name: String,
    pub namespace: String,
    pub spec: crate::care::NetworkCareSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::care::NetworkCareStatus>,
}

// === request checks shared by every REST entrance (pod socket, admin socket, cliserver) ===

/// Problem type of a body that is not the JSON it should be (400).
pub const POLICY_DENIED: &str = "https://nes.network-config.io/problems/policy-denied";
pub const MALFORMED: &str = "https://nes.network-config.io/problems/malformed";
/// Problem type of a request the HTTP layer refuses (bad query, media type, method).
pub const BAD_REQUEST: &str = "https://nes.network-config.io/problems/bad-request";

impl ProblemDetails {
    /// 400 for a body that does not parse, naming the field when there is one.
    pub fn malformed(detail: impl Into<String>, errors: Vec<Problem>) -> Self {
        Self {
            kind: MALFORMED.into(),
            errors,
            ..Self::new(400, "malformed request body", detail)
        }
    }
}

/// Parses a JSON request body into `T`, reporting the field path of any error below
/// `root` (`spec` for a configuration body, so `spec.interfaces[2].mtu: invalid type...`).
/// The body must be one JSON object: an empty body, `[]` or `null` is not an empty
/// configuration (removing a manager's entries is DELETE, or an explicit `{}`).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    root: &str,
) -> Result<T, ProblemDetails> {
    let top = if root.is_empty() { "body" } else { root };
    let shape = |message: String| {
        ProblemDetails::malformed(
            format!("{top}: {message}"),
            vec![Problem {
                field: top.to_string(),
                message,
            }],
        )
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(shape(
            "the body is empty; send a JSON object ({} declares nothing, DELETE removes a manager's entries)".into(),
        ));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(shape("expected a JSON object".into()));
    }
    // Parsed plainly first: tracking the path of every value costs a large body a tenth of
    // its request time, and only a refusal needs it, so a refused body is parsed again.
    if let Ok(value) = T::deserialize(&mut serde_json::Deserializer::from_slice(body)) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(de);
    let value = parsed.map_err(|e| {
        let field = field_path(root, &e.path().to_string());
        let inner = e.inner().to_string();
        // serde_json's position goes to the detail; the field's message is the reason alone
        let message = inner
            .rsplit_once(" at line ")
            .map_or(inner.as_str(), |(m, _)| m)
            .to_string();
        ProblemDetails::malformed(
            format!("{field}: {inner}"),
            vec![Problem { field, message }],
        )
    })?;
    Ok(value)
}

/// `root` joined with a serde_path_to_error path (`.` for the top level).
fn field_path(root: &str, path: &str) -> String {
    match (root, path) {
        ("", ".") => "body".into(),
        (root, ".") => root.into(),
        ("", path) => path.into(),
        (root, path) if path.starts_with('[') => format!("{root}{path}"),
        (root, path) => format!("{root}.{path}"),
    }
}

/// 415 unless a request body is declared `application/json` (parameters such as
/// `charset` allowed), as the documented curl examples send it.
pub fn check_json_content_type(content_type: Option<&[u8]>) -> Result<(), ProblemDetails> {
    let essence = content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    match essence {
        Some(e) if e.eq_ignore_ascii_case("application/json") => Ok(()),
        other => Err(ProblemDetails {
            kind: BAD_REQUEST.into(),
            ..ProblemDetails::new(
                415,
                "unsupported media type",
                match other {
                    None => "send the body with Content-Type: application/json".to_string(),
                    Some(t) => format!("Content-Type {t:?} is not application/json"),
                },
            )
        }),
    }
}

/// 400 if a query parameter is given twice (`?manager=a&manager=b`): which one counts would
/// be the server's guess.
pub fn check_query_once(query: Option<&str>) -> Result<(), ProblemDetails> {
    let mut seen = std::collections::BTreeSet::new();
    let pairs = form_urlencoded_keys(query.unwrap_or_default());
    for key in pairs {
        if !seen.insert(key.clone()) {
            return Err(ProblemDetails {
                kind: BAD_REQUEST.into(),
                errors: vec![Problem {
                    field: key.clone(),
                    message: "given more than once".into(),
                }],
                ..ProblemDetails::new(
                    400,
                    "repeated query parameter",
                    format!("query parameter {key:?} is given more than once"),
                )
            });
        }
    }
    Ok(())
}

/// The checks every request passes before a handler runs: the request target and the
/// header block within their limits (414, 431), no query parameter given twice (400).
pub fn check_request_head<'a>(
    target: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<(), ProblemDetails> {
    if target.len() > MAX_URI_BYTES {
        return Err(ProblemDetails::new(
            414,
            "request target too long",
            format!(
                "the path and query are {} bytes; at most {MAX_URI_BYTES} are served",
                target.len()
            ),
        ));
    }
    // As on the wire: "name: value\r\n" per header.
    let header_bytes: usize = headers
        .into_iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ProblemDetails::new(
            431,
            "request headers too large",
            format!("the headers are {header_bytes} bytes; at most {MAX_HEADER_BYTES} are served"),
        ));
    }
    check_query_once(target.split_once('?').map(|(_, q)| q))
}

/// The decoded keys of a query string.
fn form_urlencoded_keys(query: &str) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map(|pairs| pairs.into_iter().map(|(k, _)| k).collect())
        .unwrap_or_else(|_| {
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split('=').next().unwrap_or_default().to_string())
                .collect()
        })
}

/// The problem+json for an error answer the framework produced as plain text (unknown
/// path, wrong method, bad query, body too large), so every error has one shape.
pub fn plain_error(status: u16, reason: &str, text: &[u8]) -> ProblemDetails {
    let detail = String::from_utf8_lossy(text).into_owned();
    let detail = if detail.is_empty() {
        reason.to_string()
    } else {
        detail
    };
    ProblemDetails::new(status, reason.to_lowercase(), detail)
}

#[cfg(test)]
mod tests;
