//! The mutating admission webhook (nescontroller): injects `nes-shim` into labelled pods.
//!
//! [`mutate`] is the whole decision, pure; [`review`] turns an AdmissionReview body into
//! the answer for the API server; [`router`] serves it. Every answer carries its
//! [`Outcome`] in the response extensions, so a metrics layer can count decisions without
//! this module knowing about metrics.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ExecAction, Pod, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};

/// What the injected shim container looks like.
#[derive(Clone, Debug)]
pub struct ShimConfig {
    /// Image holding `/usr/local/bin/nes-shim` (the agent image by default).
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
}

/// Path the MutatingWebhookConfiguration calls.
pub const MUTATE_PATH: &str = "/mutate-pods";

/// Name of the injected container; its presence marks a pod as already injected.
pub const SHIM_CONTAINER: &str = "nes-shim";
/// The shim binary inside the shim image.
pub const SHIM_COMMAND: &str = "/usr/local/bin/nes-shim";
/// The unprivileged user the shim runs as (the distroless "nonroot" uid).
pub const SHIM_UID: i64 = 65532;

/// The largest AdmissionReview either webhook reads: [`api::limits::MAX_ADMISSION_REVIEW_BYTES`].
pub(crate) const MAX_REVIEW_BYTES: usize = api::limits::MAX_ADMISSION_REVIEW_BYTES;
/// Review bodies read at once by both webhooks together. The webhooks cannot authenticate
/// their caller (the API server presents no client certificate), so anything that reaches
/// the port may send bodies: this bounds what they hold to 16 × 1 MiB. The API server sends
/// a review at once, so a permit is held for milliseconds by a real caller.
pub(crate) const MAX_REVIEWS_READING: usize = 16;
/// How long a review waits for a reading permit before it is answered 503.
const READING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

static READING: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(MAX_REVIEWS_READING));

/// The webhook's decision for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    /// The pod does not carry the selection label: admitted unchanged.
    NotSelected,
    /// The pod already has a container named `nes-shim`: admitted unchanged.
    AlreadyInjected,
    /// A `hostNetwork` pod: admitted unchanged, with a warning for whoever created it.
    HostNetwork { warning: String },
    /// Admitted with the shim container appended by this patch.
    Inject { patch: Patch },
    /// The pod cannot be mutated as sent (it has no spec).
    Invalid { reason: String },
}

/// What the webhook did with one request, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    NotSelected,
    AlreadyInjected,
    HostNetwork,
    /// Not a Pod CREATE: nothing for nes to do (the webhook's rules should not send these).
    Ignored,
    /// The request could not be read; it was refused with a message.
    Invalid,
    /// A nes resource the admin policies allow (validating webhook).
    PolicyAllowed,
    /// A nes resource the admin policies refuse (validating webhook).
    PolicyDenied,
}

impl Outcome {
    /// A short, bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::NotSelected => "not_selected",
            Self::AlreadyInjected => "already_injected",
            Self::HostNetwork => "host_network",
            Self::Ignored => "ignored",
            Self::Invalid => "invalid",
            Self::PolicyAllowed => "policy_allowed",
            Self::PolicyDenied => "policy_denied",
        }
    }
}

/// The webhook's decision for `pod`: inject the shim, or admit it unchanged and say why.
pub fn mutate(pod: &Pod, cfg: &ShimConfig) -> Mutation {
    let labels = pod.metadata.labels.as_ref();
    let selected = labels
        .and_then(|l| l.get(api::SELECTION_LABEL))
        .is_some_and(|v| v == "true");
    if !selected {
        return Mutation::NotSelected;
    }
    let Some(spec) = &pod.spec else {
        return Mutation::Invalid {
            reason: "the pod has no spec".into(),
        };
    };
    if spec.host_network == Some(true) {
        return Mutation::HostNetwork {
            warning: format!(
                "nes cannot configure this pod: it uses hostNetwork, so its network namespace \
                 is the node's; remove the {} label or hostNetwork",
                api::SELECTION_LABEL
            ),
        };
    }
    // Container names are unique across init and app containers, so either one blocks.
    let has_shim = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SHIM_CONTAINER);
    if has_shim {
        return Mutation::AlreadyInjected;
    }
    let readiness = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(api::READINESS_ANNOTATION))
        .is_none_or(|v| v != "false");
    match serde_json::to_value(shim_container(cfg, readiness)) {
        Ok(value) => Mutation::Inject {
            patch: Patch(vec![PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["spec", "containers", "-"]),
                value,
            })]),
        },
        Err(error) => Mutation::Invalid {
            reason: format!("cannot serialise the shim container: {error}"),
        },
    }
}

/// The `nes-shim` container as CONTRACT.md fixes it: tiny, unprivileged, read-only, and
/// valid under Pod Security `restricted`.
pub fn shim_container(cfg: &ShimConfig, readiness: bool) -> Container {
    let quantities = |cpu: &str, memory: &str| {
        [
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ]
        .into()
    };
    Container {
        name: SHIM_CONTAINER.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        command: Some(vec![SHIM_COMMAND.into()]),
        readiness_probe: readiness.then(|| Probe {
            exec: Some(ExecAction {
                command: Some(vec![SHIM_COMMAND.into(), "probe".into()]),
            }),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("5m", "8Mi")),
            limits: Some(quantities("50m", "16Mi")),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SHIM_UID),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            read_only_root_filesystem: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The answer to one AdmissionReview body.
#[derive(Debug)]
pub struct Reviewed {
    pub outcome: Outcome,
    /// The request's namespace and pod name, empty when unknown (for logs).
    pub namespace: String,
    pub pod: String,
    pub answer: Answer,
}

/// What goes back to the API server.
#[derive(Debug)]
pub enum Answer {
    /// HTTP 200 with this AdmissionReview (which may still refuse the pod).
    Review(Box<AdmissionReview<DynamicObject>>),
    /// HTTP 400: the body is not an AdmissionReview with a request uid, so no
    /// AdmissionReview the API server would accept can be written back.
    BadRequest(String),
}

/// Reads an AdmissionReview v1 body and answers it.
///
/// A malformed request is answered with an AdmissionReview that refuses it (allowed false,
/// code 400, the reason as message) whenever its `request.uid` can be read, because that is
/// the only answer the API server can match to its call and show to the user. Without a
/// uid, it gets HTTP 400 with a problem+json body; the API server then applies the
/// webhook's failurePolicy and logs the message.
pub fn review(body: &[u8], cfg: &ShimConfig) -> Reviewed {
    let req = match read_request(body) {
        Ok(req) => req,
        Err(malformed) => return *malformed,
    };
    let (outcome, resp) = decide(&req, cfg);
    Reviewed {
        outcome,
        namespace: req.namespace.unwrap_or_default(),
        pod: req.name,
        answer: Answer::Review(Box::new(resp.into_review())),
    }
}

/// The request of an AdmissionReview body, or the answer refusing a malformed one.
pub(crate) fn read_request(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Box<Reviewed>> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|error| {
        Box::new(malformed(
            body,
            format!("the body is not an AdmissionReview: {error}"),
        ))
    })?;
    review
        .try_into()
        .map_err(|_| Box::new(malformed(body, "the AdmissionReview has no request".into())))
}

fn decide(req: &AdmissionRequest<DynamicObject>, cfg: &ShimConfig) -> (Outcome, AdmissionResponse) {
    let resp = AdmissionResponse::from(req);
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !is_pod || req.operation != Operation::Create || req.sub_resource.is_some() {
        return (Outcome::Ignored, resp);
    }
    let pod = match req.object.as_ref().map(|o| o.clone().try_parse::<Pod>()) {
        Some(Ok(pod)) => pod,
        Some(Err(error)) => {
            return refuse(
                resp,
                format!("the request's object is not a valid Pod: {error}"),
            )
        }
        None => return refuse(resp, "the Pod CREATE request has no object".into()),
    };
    match mutate(&pod, cfg) {
        Mutation::NotSelected => (Outcome::NotSelected, resp),
        Mutation::AlreadyInjected => (Outcome::AlreadyInjected, resp),
        Mutation::HostNetwork { warning } => {
            let mut resp = resp;
            resp.warnings = Some(vec![warning]);
            (Outcome::HostNetwork, resp)
        }
        Mutation::Inject { patch } => match resp.clone().with_patch(patch) {
            Ok(resp) => (Outcome::Injected, resp),
            Err(error) => refuse(resp, format!("cannot serialise the shim patch: {error}")),
        },
        Mutation::Invalid { reason } => refuse(resp, reason),
    }
}

/// Refuses a request the webhook could identify but not read.
pub(crate) fn refuse(resp: AdmissionResponse, reason: String) -> (Outcome, AdmissionResponse) {
    let mut resp = resp.deny(&reason);
    resp.result = Status::failure(&reason, "BadRequest").with_code(400);
    (Outcome::Invalid, resp)
}

/// A body that did not parse: refuse it by uid if one can be found, else HTTP 400.
fn malformed(body: &[u8], reason: String) -> Reviewed {
    let request = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("request").cloned());
    let field = |name: &str| {
        request
            .as_ref()
            .and_then(|r| r.get(name)?.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (namespace, pod, uid) = (field("namespace"), field("name"), field("uid"));
    let answer = if uid.is_empty() {
        Answer::BadRequest(reason)
    } else {
        let mut resp = AdmissionResponse::invalid(&reason);
        resp.uid = uid;
        Answer::Review(Box::new(refuse(resp, reason).1.into_review()))
    };
    Reviewed {
        outcome: Outcome::Invalid,
        namespace,
        pod,
        answer,
    }
}

/// `POST /mutate-pods`: AdmissionReview v1 in, AdmissionReview v1 out.
pub fn router(cfg: Arc<ShimConfig>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(handle))
        .with_state(cfg)
}

async fn handle(State(cfg): State<Arc<ShimConfig>>, body: Body) -> Response {
    match read_review(body).await {
        Ok(body) => respond(review(&body, &cfg)),
        Err(refused) => refused,
    }
}

/// An AdmissionReview body: at most [`MAX_REVIEW_BYTES`] (413 from its declared length,
/// unread), within [`common::http::BODY_TIMEOUT`] (408), and read only while one of
/// [`MAX_REVIEWS_READING`] permits is free (503 with `Retry-After` after a short wait).
pub(crate) async fn read_review(body: Body) -> Result<Bytes, Response> {
    let permit = match tokio::time::timeout(READING_WAIT, READING.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            let problem = api::wire::ProblemDetails::new(
                503,
                "too many admission reviews",
                "too many admission reviews are being read; retry shortly",
            );
            let mut response = common::http::problem_response(&problem);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(common::serve::RETRY_AFTER_SECS),
            );
            return Err(response);
        }
    };
    let read = common::http::read_body(body, MAX_REVIEW_BYTES, common::http::BODY_TIMEOUT).await;
    drop(permit);
    read.map_err(|problem| common::http::problem_response(&problem))
}

/// The HTTP answer for `reviewed`, logged, with its outcome in the extensions.
pub(crate) fn respond(reviewed: Reviewed) -> Response {
    log(&reviewed);
    let mut response = match reviewed.answer {
        Answer::Review(review) => Json(review).into_response(),
        Answer::BadRequest(reason) => {
            let problem =
                api::wire::ProblemDetails::new(400, "malformed admission request", reason);
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, api::wire::PROBLEM_JSON)],
                Json(problem),
            )
                .into_response()
        }
    };
    response.extensions_mut().insert(reviewed.outcome);
    response
}

fn log(reviewed: &Reviewed) {
    let (namespace, pod, outcome) = (&reviewed.namespace, &reviewed.pod, reviewed.outcome.label());
    match &reviewed.answer {
        Answer::BadRequest(reason) => {
            tracing::warn!(outcome, %reason, "refused a malformed admission request")
        }
        Answer::Review(review) => {
            let Some(resp) = &review.response else { return };
            if matches!(reviewed.outcome, Outcome::Invalid | Outcome::PolicyDenied) {
                let reason = &resp.result.message;
                tracing::warn!(namespace, pod, uid = %resp.uid, outcome, %reason, "refused an admission request");
            } else {
                tracing::info!(namespace, pod, uid = %resp.uid, outcome, "admitted a pod");
            }
        }
    }
}

#[cfg(test)]
mod pss;
#[cfg(test)]
mod tests;
