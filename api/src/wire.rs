//! Types that cross the wire of the REST APIs (pod socket and cliserver).

use serde::{Deserialize, Serialize};

use crate::validate::{Invalid, Problem};

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
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl ProblemDetails {
    pub fn new(status: u16, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: title.into(),
            status,
            detail: Some(detail.into()),
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
        }
    }
}
