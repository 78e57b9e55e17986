//! Who may call the cliserver: the bearer token is checked with a TokenReview; direct
//! callers need RBAC (SubjectAccessReview); a node agent forwarding a pod's own request
//! (`X-Nes-Pod-Uid`, plus `X-Nes-Pod-Name` for a subscription, whose path names no pod) is
//! accepted only for a pod on its node. The decisions are pure functions over the review
//! results; [`Authorizer`] does the calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;

pub use crate::error::Denied;
use crate::{Error, Result};
use cache::TtlCache;

/// Header naming the pod a node agent forwards a request for.
pub const FORWARDED_POD_UID: &str = "x-nes-pod-uid";
/// Header naming the subscriber pod of a forwarded `networkcares` request, whose path names
/// no pod; sent with [`FORWARDED_POD_UID`].
pub const FORWARDED_POD_NAME: &str = "x-nes-pod-name";
/// TokenReview extra: the node of the pod a ServiceAccount token is bound to.
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// TokenReview extra: the pod a ServiceAccount token is bound to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// TokenReview extra: the UID of the pod a ServiceAccount token is bound to.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// What a request wants to do, in RBAC terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub verb: &'static str,
    pub resource: &'static str,
    pub namespace: String,
    pub name: Option<String>,
}

pub const NETWORKCONFIGURATIONS: &str = "networkconfigurations";
pub const NETWORKCARES: &str = "networkcares";

/// What a node agent says about the pod it forwards a request for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// `X-Nes-Pod-Uid`.
    pub uid: &'a str,
    /// `X-Nes-Pod-Name`: the subscriber pod, for `networkcares` requests.
    pub name: Option<&'a str>,
}

/// A caller allowed to go on.
#[derive(Debug, Clone, PartialEq)]
pub enum Authorized {
    /// A caller with RBAC on the resource.
    Direct { user: UserInfo },
    /// A node agent acting for `pod`, which runs on that agent's node.
    Forwarded { agent: UserInfo, pod: Box<Pod> },
}

impl Authorized {
    pub fn user(&self) -> &UserInfo {
        match self {
            Self::Direct { user } => user,
            Self::Forwarded { agent, .. } => agent,
        }
    }
}

// === pure decisions ===

/// The bearer token of an `Authorization` header.
pub fn bearer_token(header: Option<&str>) -> Result<&str, Denied> {
    let header =
        header.ok_or_else(|| Denied::Unauthenticated("missing Authorization header".into()))?;
    match header.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Denied::Unauthenticated(
            "Authorization must be 'Bearer <token>'".into(),
        )),
    }
}

/// The audience of tokens sent to the operator (the agent's and the shim's projected token
/// volumes ask for it): such a token is useless against the API server, so the operator, or
/// anything that sees it on the way, cannot replay it there.
pub const TOKEN_AUDIENCE: &str = "nes-operator";

/// The TokenReview sent for `token`, valid only for one of `audiences` (none: the API
/// server's own).
pub fn token_review(token: &str, audiences: &[String]) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
        },
        ..Default::default()
    }
}

/// The user a TokenReview vouches for.
pub fn reviewed_user(review: &TokenReview) -> Result<UserInfo, Denied> {
    let status = review.status.as_ref();
    match status {
        Some(s) if s.authenticated == Some(true) => s
            .user
            .clone()
            .filter(|u| u.username.as_deref().is_some_and(|n| !n.is_empty()))
            .ok_or_else(|| Denied::Unauthenticated("token review named no user".into())),
        _ => Err(Denied::Unauthenticated(format!(
            "token rejected{}",
            status
                .and_then(|s| s.error.as_deref())
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ))),
    }
}

/// The SubjectAccessReview asking whether `user` may do `access`.
pub fn access_review(user: &UserInfo, access: &Access) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(api::GROUP.to_string()),
                version: None,
                resource: Some(access.resource.to_string()),
                verb: Some(access.verb.to_string()),
                namespace: Some(access.namespace.clone()),
                name: access.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Whether a SubjectAccessReview allowed the access.
pub fn review_allows(
    review: &SubjectAccessReview,
    user: &UserInfo,
    access: &Access,
) -> Result<(), Denied> {
    match &review.status {
        Some(s) if s.allowed && s.denied != Some(true) => Ok(()),
        status => Err(Denied::Forbidden(format!(
            "{} may not {} {} in namespace {}{}",
            user.username.as_deref().unwrap_or("caller"),
            access.verb,
            access.resource,
            access.namespace,
            status
                .as_ref()
                .and_then(|s| s.reason.as_deref())
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ))),
    }
}

/// Where to learn the node of a forwarding agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentNode {
    /// The token says it (bound token extra `node-name`).
    Named(String),
    /// The agent pod the token is bound to; its `spec.nodeName` tells.
    OfPod { name: String, uid: Option<String> },
}

fn extra<'a>(user: &'a UserInfo, key: &str) -> Option<&'a str> {
    user.extra
        .as_ref()
        .and_then(|e: &BTreeMap<String, Vec<String>>| e.get(key))
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Whether `user` may forward requests for pods: only the agent ServiceAccount, and only
/// with a token that tells its node (directly or through its pod).
pub fn forwarding_agent(user: &UserInfo, agent_username: &str) -> Result<AgentNode, Denied> {
    let name = user.username.as_deref().unwrap_or_default();
    if name != agent_username {
        return Err(Denied::Forbidden(format!(
            "only {agent_username} may forward requests on behalf of a pod, not {name}"
        )));
    }
    if let Some(node) = extra(user, EXTRA_NODE_NAME) {
        return Ok(AgentNode::Named(node.to_string()));
    }
    match extra(user, EXTRA_POD_NAME) {
        Some(pod) => Ok(AgentNode::OfPod {
            name: pod.to_string(),
            uid: extra(user, EXTRA_POD_UID).map(str::to_string),
        }),
        None => Err(Denied::Forbidden(
            "the agent's token is not bound to a pod or node, so its node is unknown".into(),
        )),
    }
}

/// The node of the agent pod a token is bound to.
pub fn agent_pod_node(pod: Option<&Pod>, expected_uid: Option<&str>) -> Result<String, Denied> {
    let pod = pod.ok_or_else(|| Denied::Forbidden("the agent pod of this token is gone".into()))?;
    if let Some(uid) = expected_uid {
        if pod.metadata.uid.as_deref() != Some(uid) {
            return Err(Denied::Forbidden(
                "the agent pod of this token was replaced".into(),
            ));
        }
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .ok_or_else(|| Denied::Forbidden("the agent pod of this token has no node".into()))
}

/// The pod a forwarded request acts for, decided before any lookup from what it wants and
/// the `X-Nes-Pod-Name` it carries (`named`). A pod's configuration is addressed by the path
/// (a `named` pod must be that one); a subscription is created, or read with its events, for
/// the `named` pod. Nothing else is forwarded: listing and deleting subscriptions need RBAC.
pub fn forwarded_pod<'a>(access: &'a Access, named: Option<&'a str>) -> Result<&'a str, Denied> {
    let named = named.filter(|n| !n.is_empty());
    match (access.resource, access.verb, access.name.as_deref()) {
        (NETWORKCONFIGURATIONS, _, Some(pod)) => match named {
            Some(other) if other != pod => Err(Denied::Forbidden(format!(
                "X-Nes-Pod-Name {other} is not the pod {pod} the request is addressed to"
            ))),
            _ => Ok(pod),
        },
        (NETWORKCARES, "create", None) | (NETWORKCARES, "get", Some(_)) => {
            named.ok_or_else(|| {
                Denied::Forbidden(format!(
                    "a forwarded {} of networkcares must name its subscriber pod in X-Nes-Pod-Name",
                    access.verb
                ))
            })
        }
        (NETWORKCARES, verb, _) => Err(Denied::Forbidden(format!(
            "agents forward only create and get of networkcares, not {verb}: that needs a caller with RBAC"
        ))),
        (resource, verb, _) => Err(Denied::Forbidden(format!(
            "agents forward only requests addressed to a pod or its subscriptions, not {verb} {resource}"
        ))),
    }
}

/// Whether a forwarded request for `pod` (found or not) with `uid` may be served by an agent
/// on `agent_node`.
pub fn forwarded_pod_allowed(
    pod: Option<&Pod>,
    namespace: &str,
    name: &str,
    uid: &str,
    agent_node: &str,
) -> Result<(), Denied> {
    let Some(pod) = pod else {
        return Err(Denied::Forbidden(format!(
            "pod {namespace}/{name} does not exist"
        )));
    };
    if pod.metadata.uid.as_deref() != Some(uid) {
        return Err(Denied::Forbidden(format!(
            "pod {namespace}/{name} does not have UID {uid}"
        )));
    }
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if node != Some(agent_node) {
        return Err(Denied::Forbidden(format!(
            "pod {namespace}/{name} runs on {}, not on the forwarding agent's node {agent_node}",
            node.unwrap_or("no node")
        )));
    }
    Ok(())
}

// === I/O ===

/// Asks the API server who a caller is and what it may do, remembering its answers for a
/// few seconds ([`cache`]).
#[derive(Clone)]
pub struct Authorizer {
    pub client: kube::Client,
    /// `system:serviceaccount:<ns>:<agent sa>`.
    pub agent_username: String,
    /// Namespace of the agent pods.
    pub agent_namespace: String,
    /// Audiences a caller's token must be valid for (TokenReview `spec.audiences`).
    pub audiences: Vec<String>,
    reviews: Arc<Reviews>,
}

/// TokenReview answers by token, SubjectAccessReview answers by token and access, kept
/// `allowed` or `denied` long.
#[derive(Debug)]
struct Reviews {
    users: TtlCache<Result<UserInfo, Denied>>,
    accesses: TtlCache<Result<(), Denied>>,
    allowed: Duration,
    denied: Duration,
}

impl Reviews {
    fn ttl<T>(&self, answer: &Result<T, Denied>) -> Duration {
        if answer.is_ok() {
            self.allowed
        } else {
            self.denied
        }
    }
}

impl Authorizer {
    pub fn new(
        client: kube::Client,
        agent_username: String,
        agent_namespace: String,
        audiences: Vec<String>,
    ) -> Self {
        Self {
            client,
            agent_username,
            agent_namespace,
            audiences,
            reviews: Arc::new(Reviews {
                users: TtlCache::new(cache::MAX_ENTRIES),
                accesses: TtlCache::new(cache::MAX_ENTRIES),
                allowed: cache::ALLOWED_TTL,
                denied: cache::DENIED_TTL,
            }),
        }
    }

    /// The same, keeping answers `allowed` and `denied` long (zero: not at all).
    pub fn with_ttls(self, allowed: Duration, denied: Duration) -> Self {
        Self {
            reviews: Arc::new(Reviews {
                users: TtlCache::new(cache::MAX_ENTRIES),
                accesses: TtlCache::new(cache::MAX_ENTRIES),
                allowed,
                denied,
            }),
            ..self
        }
    }

    /// Who `token` is: a TokenReview, or its answer of the last few seconds.
    async fn user(&self, token: &str) -> Result<UserInfo> {
        let key = cache::key(&[token]);
        if let Some(answer) = self.reviews.users.get(&key) {
            return Ok(answer?);
        }
        let review = Api::<TokenReview>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &token_review(token, &self.audiences),
            )
            .await
            .map_err(Error::kube("TokenReview"))?;
        let answer = reviewed_user(&review);
        self.reviews
            .users
            .insert(key, answer.clone(), self.reviews.ttl(&answer));
        Ok(answer?)
    }

    /// Whether `user` (of `token`) may do `access`: a SubjectAccessReview, or its answer of
    /// the last few seconds.
    async fn allowed(&self, token: &str, user: &UserInfo, access: &Access) -> Result<()> {
        let name = access.name.as_deref().unwrap_or_default();
        let key = cache::key(&[token, access.verb, access.resource, &access.namespace, name]);
        if let Some(answer) = self.reviews.accesses.get(&key) {
            return Ok(answer?);
        }
        let review = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access_review(user, access))
            .await
            .map_err(Error::kube("SubjectAccessReview"))?;
        let answer = review_allows(&review, user, access);
        self.reviews
            .accesses
            .insert(key, answer.clone(), self.reviews.ttl(&answer));
        Ok(answer?)
    }

    /// Authenticates the request and authorises `access`: a `forwarded` one as a node
    /// agent's (no SAR), any other by SubjectAccessReview.
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        forwarded: Option<Forwarded<'_>>,
        access: &Access,
    ) -> Result<Authorized> {
        let token = bearer_token(authorization)?;
        let user = self.user(token).await?;

        if let Some(forwarded) = forwarded {
            let name = forwarded_pod(access, forwarded.name)?;
            let node = match forwarding_agent(&user, &self.agent_username)? {
                AgentNode::Named(node) => node,
                AgentNode::OfPod { name, uid } => {
                    let pods = Api::<Pod>::namespaced(self.client.clone(), &self.agent_namespace);
                    let pod = pods
                        .get_opt(&name)
                        .await
                        .map_err(Error::kube(format!("get agent pod {name}")))?;
                    agent_pod_node(pod.as_ref(), uid.as_deref())?
                }
            };
            let pod = Api::<Pod>::namespaced(self.client.clone(), &access.namespace)
                .get_opt(name)
                .await
                .map_err(Error::kube(format!("get pod {}/{name}", access.namespace)))?;
            forwarded_pod_allowed(pod.as_ref(), &access.namespace, name, forwarded.uid, &node)?;
            let pod = Box::new(pod.ok_or_else(|| Denied::Forbidden("pod is gone".into()))?);
            return Ok(Authorized::Forwarded { agent: user, pod });
        }

        self.allowed(token, &user, access).await?;
        Ok(Authorized::Direct { user })
    }
}

pub mod cache;
#[cfg(test)]
mod tests;
