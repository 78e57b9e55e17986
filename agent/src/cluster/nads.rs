//! NetworkAttachmentDefinitions (NPWG, `k8s.cni.cncf.io/v1`) as the cluster agent reads
//! them: one watch of every namespace's NADs per node, started the first time a pod of the
//! node runs an attachment, and lookups in its memory. A cluster has few NADs and many pods,
//! so a pass never asks the API server; a cluster without the CRD is told apart (404 on the
//! list) and reported with [`api::attach::NADS_UNAVAILABLE_REASON`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sync::lock;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::cni::attacher::NetworkSource;
use crate::cni::conf::ConfList;
use crate::cni::keep::{self, PodRef, Want};
use crate::cni::CniError;

/// The NPWG resource.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: "k8s.cni.cncf.io".into(),
        version: "v1".into(),
        api_version: "k8s.cni.cncf.io/v1".into(),
        kind: "NetworkAttachmentDefinition".into(),
        plural: "network-attachment-definitions".into(),
    }
}

/// Whether the NADs can be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// The watch has not listed yet.
    Starting,
    Listed,
    /// The list failed: the CRD is missing (404) or the agent may not list (403).
    Unavailable(String),
}

/// Why a list failed, as the per-attachment status says it.
pub fn unavailable_reason(error: &watcher::Error) -> String {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => Some(s),
        _ => None,
    };
    match status {
        Some(s) if s.code == 404 => "the NetworkAttachmentDefinition CRD (k8s.cni.cncf.io/v1) is not installed in this cluster; install Multus or manifests/optional/network-attachment-definition-crd.yaml".into(),
        Some(s) if s.code == 403 => format!("the agent may not list NetworkAttachmentDefinitions: {}", s.message),
        _ => format!("listing NetworkAttachmentDefinitions failed: {error}"),
    }
}

/// The node's view of every NAD.
pub struct Nads {
    client: Client,
    store: Store<DynamicObject>,
    writer: Mutex<Option<reflector::store::Writer<DynamicObject>>>,
    state: tokio::sync::watch::Sender<Availability>,
    /// How long a pass waits for the first list.
    list_timeout: Duration,
    stop: CancellationToken,
}

impl std::fmt::Debug for Nads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nads")
            .field("state", &*self.state.borrow())
            .field("count", &self.store.state().len())
            .finish()
    }
}

impl Nads {
    pub fn new(client: Client, list_timeout: Duration, stop: CancellationToken) -> Self {
        let writer = reflector::store::Writer::new(api_resource());
        Self {
            client,
            store: writer.as_reader(),
            writer: Mutex::new(Some(writer)),
            state: tokio::sync::watch::channel(Availability::Starting).0,
            list_timeout,
            stop,
        }
    }

    /// Starts the watch (once).
    fn start(&self) {
        let Some(writer) = lock(&self.writer).take() else {
            return;
        };
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &api_resource());
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()));
        let (state, stop) = (self.state.clone(), self.stop.clone());
        tokio::spawn(follow(stream, state, stop).instrument(tracing::info_span!(
            "watch",
            kind = "NetworkAttachmentDefinition"
        )));
    }

    /// The state after waiting (at most the list timeout) for the first list.
    async fn availability(&self) -> Availability {
        self.start();
        let mut rx = self.state.subscribe();
        let waited = tokio::time::timeout(
            self.list_timeout,
            rx.wait_for(|s| *s != Availability::Starting),
        )
        .await;
        match waited {
            Ok(Ok(state)) => state.clone(),
            _ => Availability::Unavailable(format!(
                "NetworkAttachmentDefinitions not listed within {:?}",
                self.list_timeout
            )),
        }
    }

    /// The network of NAD `namespace/name`.
    pub fn lookup(&self, namespace: &str, name: &str) -> Result<ConfList, CniError> {
        let key = ObjectRef::new_with(name, api_resource()).within(namespace);
        let Some(nad) = self.store.get(&key) else {
            return Err(CniError::NoNad {
                namespace: namespace.into(),
                name: name.into(),
            });
        };
        let config = nad.data["spec"]["config"].as_str().unwrap_or_default();
        network_of(namespace, name, config)
    }
}

/// The network a NAD's `spec.config` declares. A NAD without one (Multus then reads a file
/// on the node named by its resource annotation) is not supported.
pub fn network_of(namespace: &str, name: &str, config: &str) -> Result<ConfList, CniError> {
    let bad = |message: String| CniError::BadConf {
        path: format!("NetworkAttachmentDefinition {namespace}/{name}"),
        message,
    };
    if config.trim().is_empty() {
        return Err(bad(
            "spec.config is empty (a configuration file on the node is not supported)".into(),
        ));
    }
    ConfList::from_nad(name, config).map_err(bad)
}

impl NetworkSource for Nads {
    fn resolve<'a>(
        &'a self,
        pod: &'a PodRef,
        specs: &'a [api::AttachmentSpec],
    ) -> BoxFuture<'a, Vec<Want>> {
        async move {
            let availability = if specs.is_empty() {
                Availability::Listed
            } else {
                self.availability().await
            };
            keep::resolve_with(pod, specs, |namespace, name| match &availability {
                Availability::Listed => self.lookup(namespace, name),
                Availability::Unavailable(why) => Err(CniError::NadsUnavailable(why.clone())),
                Availability::Starting => Err(CniError::NadsUnavailable("not listed yet".into())),
            })
        }
        .boxed()
    }
}

/// Drives the NAD watch, telling its state: listed, or why not (retried with backoff, so a
/// CRD installed later is found).
async fn follow<S>(
    stream: S,
    state: tokio::sync::watch::Sender<Availability>,
    stop: CancellationToken,
) where
    S: futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send,
{
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    while let Some(Some(next)) = stop.run_until_cancelled(stream.next()).await {
        match next {
            Ok(watcher::Event::InitDone) => {
                if *state.borrow() != Availability::Listed {
                    info!("NetworkAttachmentDefinitions listed");
                }
                state.send_replace(Availability::Listed);
            }
            Ok(_) => {}
            Err(error) => {
                let why = unavailable_reason(&error);
                warn!(%error, "NetworkAttachmentDefinition watch failed; retrying with backoff");
                // A list that worked once stays usable: the store keeps what it had.
                if *state.borrow() != Availability::Listed {
                    state.send_replace(Availability::Unavailable(why));
                }
            }
        }
    }
}

/// A shared handle, as the attacher takes it.
pub fn source(nads: &Arc<Nads>) -> crate::cni::attacher::Networks {
    crate::cni::attacher::Networks::Source(nads.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nad_network_needs_a_config_and_takes_the_nads_name_when_unnamed() {
        let cases: [(&str, Result<&str, &str>); 4] = [
            (
                r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth1"}"#,
                Ok("data"),
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"lan","plugins":[{"type":"bridge"}]}"#,
                Ok("lan"),
            ),
            ("", Err("spec.config is empty")),
            ("{not json", Err("not a JSON object")),
        ];
        for (config, want) in cases {
            let got = network_of("apps", "data", config);
            match (got, want) {
                (Ok(list), Ok(name)) => assert_eq!(list.name, name, "{config}"),
                (Err(e), Err(text)) => {
                    let e = e.to_string();
                    assert!(e.contains(text) && e.contains("apps/data"), "{e}");
                }
                (got, want) => panic!("{config}: {got:?} but wanted {want:?}"),
            }
        }
    }

    #[test]
    fn a_missing_crd_and_a_forbidden_list_say_which() {
        let api_error = |code: u16| {
            watcher::Error::InitialListFailed(kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "nope".into(),
                ..Default::default()
            })))
        };
        assert!(unavailable_reason(&api_error(404)).contains("CRD"));
        assert!(unavailable_reason(&api_error(403)).contains("may not list"));
        assert!(unavailable_reason(&api_error(500)).contains("failed"));
    }
}
