//! A standalone pod: a [`PodServer`] whose configuration lives in the local file store.
//! Managers' fragments merge here (server-side-apply semantics), are validated, persisted,
//! then handed to the engine. Requests for a pod are serialised by its record lock.

use std::path::Path;
use std::sync::Arc;

use api::merge::{merge, merge_applying};
use api::wire::{ConfigView, ProblemDetails};
use api::NetworkConfigurationSpec;
use axum::http::StatusCode;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;
use tracing::{info, warn};

use super::cares::Cares;
use super::store::{DesiredStore, PodRecord};
use crate::engine::PodNetwork;
use crate::owned::Owned;
use crate::podapi::feed::Feed;
use crate::podapi::http::ApiError;
use crate::podapi::{ConfigBackend, Desired, PodServer, ServerOptions, StateProblem};
use crate::policy::{Governing, PolicySource};
use crate::watch::KeeperOptions;
use api::policy::{Origin, POLICY_DENIED_REASON};
use api::wire::{CareView, NewCare};
use tokio_util::sync::CancellationToken;

/// Opens the pod's netns, adopts what is already applied (a record for another netns
/// means the pod restarted: nothing in the new one is owned yet), starts keeping the
/// desired state applied and binds `@nes` there.
/// The host namespace and what pods may do there.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: std::path::PathBuf,
    pub access: api::host::HostAccess,
    /// Every admin policy; the ones selecting the netns's name govern it.
    pub policies: Vec<Arc<api::policy::NetworkConfigurationPolicy>>,
    /// Timeouts and caps of each pod's `@nes`.
    pub limits: crate::podapi::serve::Limits,
    /// CNI attachments (none: refused).
    pub cni: Option<crate::cni::CniOptions>,
    /// The node allows CNI attachments; the governing policies must too.
    pub allow_host_cni: bool,
}

pub async fn start(
    name: &str,
    netns: &Path,
    host: &Host,
    store: Arc<dyn DesiredStore>,
    cares: Arc<Cares>,
    keeper: KeeperOptions,
) -> crate::error::Result<Arc<PodServer>> {
    let mut net = PodNetwork::open(netns, &host.netns)
        .await?
        .with_host_access(host.access.clone());
    if let Some(cni) = &host.cni {
        let attacher = attacher(name, netns, &net, cni, host);
        net = net.with_attacher(attacher);
    }
    let net = Arc::new(net);
    // A record that cannot be read is never replaced by an empty one: the pod is served,
    // Degraded, and nothing is written to its netns until the record is fixed.
    let (mut record, unreadable) = match store.load(name) {
        Ok(record) => (record.unwrap_or_default(), None),
        Err(error) => {
            warn!(pod = name, %error, "unreadable state file: keeping the kernel as it is");
            (PodRecord::default(), Some(error.to_string()))
        }
    };
    if unreadable.is_none() && record.netns.as_ref() != Some(net.identity()) {
        if record.netns.is_some() {
            info!(
                pod = name,
                "new network namespace: re-applying the whole configuration"
            );
        }
        record.owned = Default::default();
        record.netns = Some(net.identity().clone());
    }
    let owned = record.owned.clone();
    let gate = Gate {
        governing: Governing::of(&host.policies, &api::policy::netns_labels(name)),
        node: host.access.clone(),
    };
    let desired = match &unreadable {
        Some(message) => Desired {
            generation: record.generation,
            spec: NetworkConfigurationSpec::default(),
            problem: Some(StateProblem {
                reason: "StateUnreadable".into(),
                message: message.clone(),
                hold: true,
            }),
        },
        None => gate.before_apply(desired_of(name, &store, &record), None),
    };
    let (desired, desired_rx) = watch::channel(desired);
    let backend = Arc::new(FileBackend {
        name: name.to_string(),
        store,
        record: tokio::sync::Mutex::new(record),
        desired,
        cares,
        unreadable,
        problem: Default::default(),
        policy: gate.clone(),
        allow_host_cni: host.allow_host_cni && host.cni.is_some(),
    });
    let opts = ServerOptions {
        keeper,
        policy: PolicySource::fixed(gate.governing),
        limits: host.limits,
        ..Default::default()
    };
    Ok(PodServer::start(
        name, net, desired_rx, owned, backend, opts,
    ))
}

/// A standalone pod's attacher: its namespace is its netns name, its sandbox the netns's
/// identity (a re-created netns is a new sandbox).
fn attacher(
    name: &str,
    netns: &Path,
    net: &PodNetwork,
    cni: &crate::cni::CniOptions,
    host: &Host,
) -> crate::cni::attacher::Attacher {
    let id = net.identity();
    let governing: Vec<_> = host
        .policies
        .iter()
        .filter(|p| api::policy::governs(p, &api::policy::netns_labels(name)))
        .map(Arc::as_ref)
        .collect();
    crate::cni::attacher::Attacher {
        opts: cni.clone(),
        pod: crate::cni::keep::PodRef {
            namespace: name.to_string(),
            name: name.to_string(),
            uid: String::new(),
            sandbox: format!("nes-{:x}-{:x}", id.dev, id.inode),
            netns: netns.to_path_buf(),
        },
        allowed: api::policy::cni_allowed(host.allow_host_cni, &governing),
    }
}

/// The desired state a record declares; fragments that do not merge (a hand-edited
/// record) hold everything as it is rather than guess.
fn desired_of(name: &str, store: &Arc<dyn DesiredStore>, record: &PodRecord) -> Desired {
    match merge(record.fragments.iter().map(|(m, s)| (m.as_str(), s))) {
        Ok(m) => Desired {
            generation: record.generation,
            spec: m.spec,
            problem: None,
        },
        Err(conflict) => {
            warn!(pod = name, %conflict, "stored fragments conflict; keeping the kernel as it is");
            Desired {
                generation: record.generation,
                spec: NetworkConfigurationSpec::default(),
                problem: Some(StateProblem {
                    reason: "StateConflict".into(),
                    message: format!(
                        "{}: the stored fragments conflict: {conflict}; nothing is applied until a manager's fragment is replaced or removed",
                        store.location(name)
                    ),
                    hold: true,
                }),
            }
        }
    }
}

/// The admin policies governing one pod and the node's host-access ceiling.
#[derive(Clone)]
struct Gate {
    governing: Governing,
    node: api::host::HostAccess,
}

impl Gate {
    /// What the engine gets instead of `next` when the policies refuse it.
    fn before_apply(&self, next: Desired, current: Option<&Desired>) -> Desired {
        let gated = crate::policy::gate_apply(next, current, &self.governing, &self.node);
        if let Some(p) = gated
            .problem
            .as_ref()
            .filter(|p| p.reason == POLICY_DENIED_REASON)
        {
            warn!(reason = %p.reason, message = %p.message, "the stored configuration is refused by the admin policy; nothing new is applied");
        }
        gated
    }
}

/// Desired state kept in the file store.
struct FileBackend {
    name: String,
    store: Arc<dyn DesiredStore>,
    record: tokio::sync::Mutex<PodRecord>,
    desired: watch::Sender<Desired>,
    cares: Arc<Cares>,
    /// The record could not be read at start: writes are refused (they would replace it).
    unreadable: Option<String>,
    /// Why the record cannot be written, if it cannot.
    problem: std::sync::Mutex<Option<(String, String)>>,
    policy: Gate,
    /// `--allow-host-cni`: the node's half of the CNI attachment check.
    allow_host_cni: bool,
}

impl FileBackend {
    fn writable(&self) -> Result<(), ApiError> {
        match &self.unreadable {
            Some(why) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the pod's state file is unreadable",
                format!("{why}; fix or remove it, then restart the agent"),
            )),
            None => Ok(()),
        }
    }

    async fn do_apply(
        &self,
        manager: &str,
        fragment: NetworkConfigurationSpec,
    ) -> Result<ConfigView, ApiError> {
        self.writable()?;
        let mut record = self.record.lock().await;
        let merged = merge_applying(&record.fragments, manager, &fragment)
            .map_err(|c| ApiError(ProblemDetails::conflict(&c)))?;
        // After the merge, so two spellings of another manager's entry are its conflict (409);
        // before the merged check, so the fragment's own repeats are named by its index.
        api::validate_fragment(&fragment)
            .and_then(|()| api::validate(&merged.spec))
            .map_err(|invalid| ApiError(ProblemDetails::invalid(&invalid)))?;
        // The whole, as it would be applied (counts are of the whole): refused here with a
        // 403 rather than stored and held back.
        crate::policy::check(
            &merged.spec,
            Origin::Cluster,
            &self.policy.governing,
            &self.policy.node,
        )
        .map_err(|refusal| ApiError(refusal.problem()))?;
        if let Governing::Known(policies) = &self.policy.governing {
            crate::cni::attacher::gate(&merged.spec, &self.name, policies, self.allow_host_cni)
                .map_err(ApiError)?;
        }
        if record.fragments.get(manager) == Some(&fragment) {
            return Ok(self.view(&record));
        }
        let mut next = record.clone();
        next.fragments.insert(manager.to_string(), fragment);
        self.commit(&mut record, next, merged.spec)
    }

    async fn do_remove(&self, manager: &str) -> Result<ConfigView, ApiError> {
        self.writable()?;
        let mut record = self.record.lock().await;
        if !record.fragments.contains_key(manager) {
            return Ok(self.view(&record));
        }
        let mut next = record.clone();
        next.fragments.remove(manager);
        let spec = desired_of(&self.name, &self.store, &next);
        self.commit(&mut record, next, spec.spec)
    }

    fn set_problem(&self, problem: Option<(String, String)>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }

    fn commit(
        &self,
        record: &mut PodRecord,
        mut next: PodRecord,
        spec: NetworkConfigurationSpec,
    ) -> Result<ConfigView, ApiError> {
        next.generation += 1;
        if let Err(e) = self.store.save(&self.name, &next) {
            self.set_problem(Some(("StateNotWritable".into(), e.to_string())));
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot persist the configuration",
                e.to_string(),
            ));
        }
        self.set_problem(None);
        *record = next;
        let problem = desired_of(&self.name, &self.store, record).problem;
        let current = self.desired.borrow().clone();
        let next = Desired {
            generation: record.generation,
            spec,
            problem,
        };
        self.desired
            .send_replace(self.policy.before_apply(next, Some(&current)));
        Ok(self.view(record))
    }

    fn view(&self, record: &PodRecord) -> ConfigView {
        let merged =
            merge(record.fragments.iter().map(|(m, s)| (m.as_str(), s))).unwrap_or_default();
        ConfigView {
            pod: self.name.clone(),
            generation: record.generation,
            spec: merged.spec,
            owners: merged.owners,
        }
    }

    async fn save_owned(&self, owned: &Owned) -> Result<(), String> {
        if let Some(why) = &self.unreadable {
            return Err(why.clone());
        }
        let mut record = self.record.lock().await;
        if &record.owned == owned {
            return Ok(());
        }
        let mut next = record.clone();
        next.owned = owned.clone();
        match self.store.save(&self.name, &next) {
            Ok(()) => {
                *record = next;
                self.set_problem(None);
                Ok(())
            }
            Err(error) => {
                warn!(pod = %self.name, %error, "cannot persist the ownership record");
                self.set_problem(Some(("StateNotWritable".into(), error.to_string())));
                Err(error.to_string())
            }
        }
    }
}

impl ConfigBackend for FileBackend {
    fn config(&self) -> BoxFuture<'_, Result<ConfigView, ApiError>> {
        async move { Ok(self.view(&*self.record.lock().await)) }.boxed()
    }

    fn apply<'a>(
        &'a self,
        manager: &'a str,
        fragment: NetworkConfigurationSpec,
    ) -> BoxFuture<'a, Result<ConfigView, ApiError>> {
        self.do_apply(manager, fragment).boxed()
    }

    fn remove_manager<'a>(
        &'a self,
        manager: &'a str,
    ) -> BoxFuture<'a, Result<ConfigView, ApiError>> {
        self.do_remove(manager).boxed()
    }

    fn owned_changed<'a>(&'a self, owned: &'a Owned) -> BoxFuture<'a, Result<(), String>> {
        self.save_owned(owned).boxed()
    }

    fn problem(&self) -> Option<(String, String)> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn create_care(&self, new: NewCare) -> BoxFuture<'_, Result<CareView, ApiError>> {
        futures::future::ready(self.cares.create(&self.name, new)).boxed()
    }

    fn care_feed<'a>(
        &'a self,
        name: &'a str,
        _pod_stopped: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Feed, ApiError>> {
        // Shared by every reader on the host: it outlives the pod it was first read from.
        futures::future::ready(self.cares.feed(name)).boxed()
    }
}
