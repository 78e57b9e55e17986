//! The admin policies as a cluster entrance sees them: every `NetworkConfigurationPolicy`
//! and every namespace's labels, kept by kube reflectors. The node agent and the operator
//! read the same view; [`api::policy::Governing`] decides.
//!
//! Fail closed: until both lists have completed once, and for a namespace not seen yet,
//! [`PolicyView::governing`] is [`Governing::Unknown`]: nothing new is admitted.

use std::collections::BTreeMap;
use std::sync::Arc;

use api::policy::{Governing, NetworkConfigurationPolicy};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

/// The policies and namespace labels, read from reflector stores.
#[derive(Clone)]
pub struct PolicyView {
    policies: Store<NetworkConfigurationPolicy>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// The view's watches as one stream: `Ok` when what governs some namespace may have
/// changed (an object applied or deleted, a list completed), `Err` for a watch error (the
/// watches retry with backoff). The view is only current while the caller polls it.
pub type Changes = BoxStream<'static, Result<(), watcher::Error>>;

fn ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

fn changes<K>(
    stream: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
) -> Changes
where
    K: Send + 'static,
{
    stream
        .default_backoff()
        .filter_map(|event| async move {
            match event {
                Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                ) => Some(Ok(())),
                Ok(_) => None,
                Err(error) => Some(Err(error)),
            }
        })
        .boxed()
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

    /// The view fed by watches on `client` (get/list/watch on networkconfigurationpolicies
    /// and namespaces), and those watches, which the caller drives.
    pub fn watch(client: kube::Client) -> (Self, Changes) {
        let (policies, policy_writer) = reflector::store();
        let (namespaces, ns_writer) = reflector::store();
        let policy_stream = reflector::reflector(
            policy_writer,
            watcher(
                Api::<NetworkConfigurationPolicy>::all(client.clone()),
                Default::default(),
            ),
        );
        let ns_stream = reflector::reflector(
            ns_writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client),
                Default::default(),
            ),
        );
        let both = futures::stream::select(changes(policy_stream), changes(ns_stream)).boxed();
        (Self::new(policies, namespaces), both)
    }

    /// Whether both lists have completed once.
    pub fn is_listed(&self) -> bool {
        ready(&self.policies) && ready(&self.namespaces)
    }

    /// Resolves once both lists have completed (never, if their watches are dropped first).
    pub async fn listed(&self) {
        let both = futures::future::try_join(
            self.policies.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        );
        if both.await.is_err() {
            futures::future::pending::<()>().await;
        }
    }

    /// How many policies are known.
    pub fn policy_count(&self) -> usize {
        self.policies.state().len()
    }

    /// The policies governing `namespace` now, or why they are not known.
    pub fn governing(&self, namespace: &str) -> Governing {
        if !self.is_listed() {
            return Governing::Unknown(
                "the NetworkConfigurationPolicy and Namespace watches have not listed yet (they need get/list/watch on networkconfigurationpolicies and namespaces); nothing new is admitted until they do"
                    .into(),
            );
        }
        let Some(ns) = self.namespaces.get(&ObjectRef::new(namespace)) else {
            return Governing::Unknown(format!(
                "namespace {namespace:?} is not in the policy view yet; nothing new is admitted until it is"
            ));
        };
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let all: Vec<Arc<NetworkConfigurationPolicy>> = self.policies.state();
        Governing::of(&all, &labels)
    }

    /// [`Governing::evaluate`] for `subject` of `namespace`, asked by `origin`.
    pub fn evaluate(
        &self,
        namespace: &str,
        subject: api::policy::Subject<'_>,
        origin: api::policy::Origin,
    ) -> Result<(), api::policy::Refusal> {
        self.governing(namespace)
            .evaluate_in(namespace, subject, origin)
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

    /// A view whose lists never complete: every namespace is `Unknown` (tests).
    pub fn unsynced() -> Self {
        let (policies, _) = reflector::store();
        let (namespaces, _) = reflector::store();
        Self::new(policies, namespaces)
    }
}

#[cfg(test)]
mod tests;
