//! The admin policy as the operator sees it: every `NetworkConfigurationPolicy` and every
//! namespace's labels, kept by kube reflectors, and the one evaluation of `api::policy`
//! run against the policies that govern a namespace.
//!
//! Fail closed: until both lists have completed once (and for a namespace the reflector
//! has not seen yet), [`PolicyView::evaluate`] answers [`Refusal::Unavailable`], which the
//! entrances turn into 503 + Retry-After (cliserver) or a denial (admission).

use std::collections::BTreeMap;
use std::sync::Arc;

use api::policy::{self, Denied, NetworkConfigurationPolicy, Origin, Subject};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Seconds a caller refused for want of the policy view is told to wait.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// Why a request was not admitted by policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The governing policies refused it: every violation.
    #[error("{0}")]
    Denied(Denied),
    /// The operator cannot tell yet which policies govern the namespace.
    #[error("{0}")]
    Unavailable(String),
}

/// The policies and namespace labels, read from reflector stores.
#[derive(Clone)]
pub struct PolicyView {
    policies: Store<NetworkConfigurationPolicy>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// The policies of `all` that govern a namespace with `labels`, sorted by name (empty: the
/// built-in default governs). Pure: the decision the view makes over its stores.
pub fn governing(
    all: &[Arc<NetworkConfigurationPolicy>],
    labels: &BTreeMap<String, String>,
) -> Vec<NetworkConfigurationPolicy> {
    policy::selecting(all.iter().map(AsRef::as_ref), labels)
        .into_iter()
        .cloned()
        .collect()
}

fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

impl PolicyView {
    /// The view over two reflector stores.
    pub fn new(
        policies: Store<NetworkConfigurationPolicy>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
    ) -> Self {
        Self {
            policies,
            namespaces,
        }
    }

    /// Starts the reflectors on `client`; they run until `shutdown`.
    pub fn start(client: kube::Client, shutdown: CancellationToken) -> Self {
        let (policies, policy_writer) = reflector::store();
        let (namespaces, ns_writer) = reflector::store();
        let policy_stream = reflector::reflector(
            policy_writer,
            watcher(
                Api::<NetworkConfigurationPolicy>::all(client.clone()),
                Default::default(),
            )
            .default_backoff(),
        );
        let ns_stream = reflector::reflector(
            ns_writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client),
                Default::default(),
            )
            .default_backoff(),
        );
        tokio::spawn(drain(
            "NetworkConfigurationPolicy",
            policy_stream,
            shutdown.clone(),
        ));
        tokio::spawn(drain("Namespace", ns_stream, shutdown));
        Self::new(policies, namespaces)
    }

    /// The policies governing `namespace`, or why they are not known.
    pub fn governing(&self, namespace: &str) -> Result<Vec<NetworkConfigurationPolicy>, Refusal> {
        if !synced(&self.policies) || !synced(&self.namespaces) {
            return Err(Refusal::Unavailable(
                "the operator has not loaded the NetworkConfigurationPolicies and namespaces yet"
                    .into(),
            ));
        }
        let ns = self
            .namespaces
            .get(&ObjectRef::new(namespace))
            .ok_or_else(|| {
                Refusal::Unavailable(format!(
                    "namespace {namespace:?} is not known to the operator yet"
                ))
            })?;
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        Ok(governing(&self.policies.state(), &labels))
    }

    /// `api::policy::evaluate` for `subject` of `namespace`, asked by `origin`.
    pub fn evaluate(
        &self,
        namespace: &str,
        subject: Subject<'_>,
        origin: Origin,
    ) -> Result<(), Refusal> {
        let governing = self.governing(namespace)?;
        let refs: Vec<&NetworkConfigurationPolicy> = governing.iter().collect();
        policy::evaluate(subject, origin, &refs).map_err(Refusal::Denied)
    }

    /// A view that has listed exactly these objects (tests).
    pub fn fixed(
        policies: Vec<NetworkConfigurationPolicy>,
        namespaces: &[(&str, BTreeMap<String, String>)],
    ) -> Self {
        let (policy_store, mut pw) = reflector::store();
        let (ns_store, mut nw) = reflector::store();
        pw.apply_watcher_event(&watcher::Event::Init);
        for p in policies {
            pw.apply_watcher_event(&watcher::Event::InitApply(p));
        }
        pw.apply_watcher_event(&watcher::Event::InitDone);
        nw.apply_watcher_event(&watcher::Event::Init);
        for (name, labels) in namespaces {
            let mut ns = PartialObjectMeta::<Namespace>::default();
            ns.metadata.name = Some(name.to_string());
            ns.metadata.labels = Some(labels.clone());
            nw.apply_watcher_event(&watcher::Event::InitApply(ns));
        }
        nw.apply_watcher_event(&watcher::Event::InitDone);
        // The stores stay readable and ready once their writers are gone.
        Self::new(policy_store, ns_store)
    }

    /// A view whose lists never complete: every evaluation is `Unavailable`.
    /// (Its writers are dropped before any list completed, so the stores never get ready.)
    pub fn unsynced() -> Self {
        let (policies, _) = reflector::store();
        let (namespaces, _) = reflector::store();
        Self::new(policies, namespaces)
    }
}

async fn drain<S, T>(what: &'static str, stream: S, shutdown: CancellationToken)
where
    S: futures::Stream<Item = Result<watcher::Event<T>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => match next {
                Some(Ok(_)) => {}
                Some(Err(error)) => warn!(resource = what, %error, "policy view watch failed; retrying"),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests;
