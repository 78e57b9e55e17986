//! The validating admission webhook: `NetworkConfiguration` and `NetworkCare` create and
//! update are evaluated against the admin policies (`Origin::Cluster`), and a
//! `NetworkConfigurationPolicy` must pass `api::policy::validate_policy` and a
//! `NetworkService` `api::validate_network_service`. A denial answers
//! code 403 with the `Display` of the denial as message, which `kubectl apply` prints.
//!
//! An update that leaves the spec as it was (metadata: owner references, finalizers, the
//! node label) and an object being deleted are admitted: a policy written after a
//! configuration reports it Degraded, it must not block its cleanup.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::{DynamicObject, Status};
use serde::de::DeserializeOwned;

use crate::admission::{self, Answer, Outcome, Reviewed};
use crate::policy::{PolicyView, Refusal};
use api::policy::{self, Origin, Subject};

/// Path the ValidatingWebhookConfiguration calls.
pub const VALIDATE_PATH: &str = "/validate-nes";

/// The webhook's name in `manifests/41-validating-webhook.yaml`.
pub const WEBHOOK_NAME: &str = "policy.nes.network-config.io";

/// Whether an API server message is this webhook's denial.
pub fn is_denial(message: &str) -> bool {
    message.starts_with(&format!("admission webhook \"{WEBHOOK_NAME}\" denied"))
}

/// Reads an AdmissionReview v1 body and answers it (malformed bodies as the mutating
/// webhook answers them).
pub fn review(body: &[u8], view: &PolicyView) -> Reviewed {
    let req = match admission::read_request(body) {
        Ok(req) => req,
        Err(malformed) => return *malformed,
    };
    let (outcome, resp) = decide(&req, view);
    Reviewed {
        outcome,
        namespace: req.namespace.clone().unwrap_or_default(),
        pod: req.name.clone(),
        answer: Answer::Review(Box::new(resp.into_review())),
    }
}

/// The decision for one request.
pub fn decide(
    req: &AdmissionRequest<DynamicObject>,
    view: &PolicyView,
) -> (Outcome, AdmissionResponse) {
    let resp = AdmissionResponse::from(req);
    let ours = req.kind.group == api::GROUP;
    let writes = matches!(req.operation, Operation::Create | Operation::Update);
    if !ours || !writes || req.sub_resource.is_some() {
        return (Outcome::Ignored, resp);
    }
    let Some(object) = &req.object else {
        return admission::refuse(resp, "the request has no object".into());
    };
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let verdict = match req.kind.kind.as_str() {
        "NetworkConfigurationPolicy" => parse::<api::NetworkConfigurationPolicy>(object)
            .and_then(|p| policy::validate_policy(&p.spec).map_err(|e| invalid(&e.to_string()))),
        _ if unchanged_or_deleting(req) => Ok(()),
        "NetworkConfiguration" => parse::<api::NetworkConfiguration>(object).and_then(|cr| {
            api::validate(&cr.spec).map_err(|e| invalid(&e.to_string()))?;
            evaluate(view, namespace, Subject::Configuration(&cr.spec))
        }),
        "NetworkCare" => parse::<api::NetworkCare>(object).and_then(|care| {
            api::validate_care(&care.spec).map_err(|e| invalid(&e.to_string()))?;
            evaluate(view, namespace, Subject::Care(&care.spec))
        }),
        // Not a policy subject: it configures no pod, it publishes what pods have.
        "NetworkService" => parse::<api::NetworkService>(object).and_then(|svc| {
            let name = object.metadata.name.as_deref().unwrap_or_default();
            api::validate_network_service(name, &svc.spec).map_err(|e| invalid(&e.to_string()))
        }),
        _ => return (Outcome::Ignored, resp),
    };
    match verdict {
        Ok(()) => (Outcome::PolicyAllowed, resp),
        Err(no) => {
            let mut resp = resp.deny(&no.message);
            let outcome = if no.code == 403 {
                Outcome::PolicyDenied
            } else {
                Outcome::Invalid
            };
            resp.result = Status::failure(&no.message, no.reason).with_code(no.code);
            (outcome, resp)
        }
    }
}

/// Why a request is refused: the `Status` the answer will carry.
struct No {
    code: u16,
    reason: &'static str,
    message: String,
}

fn evaluate(view: &PolicyView, namespace: &str, subject: Subject<'_>) -> Result<(), No> {
    view.evaluate(namespace, subject, Origin::Cluster)
        .map_err(|refusal| match refusal {
            denied @ Refusal::Denied { .. } => No {
                code: 403,
                reason: "Forbidden",
                message: denied.to_string(),
            },
            Refusal::Unavailable(why) => No {
                code: 503,
                reason: "ServiceUnavailable",
                message: format!("{why}; retry shortly"),
            },
        })
}

fn invalid(message: &str) -> No {
    No {
        code: 422,
        reason: "Invalid",
        message: message.to_string(),
    }
}

fn parse<K>(object: &DynamicObject) -> Result<K, No>
where
    K: DeserializeOwned + kube::Resource<DynamicType = ()>,
{
    object.clone().try_parse::<K>().map_err(|error| No {
        code: 400,
        reason: "BadRequest",
        message: format!(
            "the request's object is not a valid {}: {error}",
            K::kind(&())
        ),
    })
}

/// An update that keeps the spec, or any write to an object being deleted.
fn unchanged_or_deleting(req: &AdmissionRequest<DynamicObject>) -> bool {
    let deleting = req
        .object
        .as_ref()
        .is_some_and(|o| o.metadata.deletion_timestamp.is_some());
    let same_spec = req.operation == Operation::Update
        && match (&req.object, &req.old_object) {
            (Some(new), Some(old)) => new.data.get("spec") == old.data.get("spec"),
            _ => false,
        };
    deleting || same_spec
}

/// `POST /validate-nes`: AdmissionReview v1 in, AdmissionReview v1 out.
pub fn router(view: PolicyView) -> Router {
    Router::new()
        .route(VALIDATE_PATH, post(handle))
        .with_state(view)
}

async fn handle(State(view): State<PolicyView>, body: Body) -> Response {
    match admission::read_review(body).await {
        Ok(body) => admission::respond(review(&body, &view)),
        Err(refused) => refused,
    }
}

#[cfg(test)]
mod tests;
