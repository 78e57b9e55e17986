//! A standalone pod: a [`PodServer`] whose configuration lives in the local file store.
//! Managers' fragments merge here (server-side-apply semantics), are validated, persisted,
//! then handed to the engine. Requests for a pod are serialised by its record lock.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use api::merge::{merge, merge_applying, Conflict, Merged};
use api::wire::{ConfigView, ProblemDetails};
use api::NetworkConfigurationSpec;
use axum::http::StatusCode;
// A lock whose holder panicked still guards a whole value: every write here is one
// assignment.
use common::sync::lock;
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
use crate::policy::PolicySource;
use crate::saved::{Saved, Saving};
use crate::watch::KeeperOptions;
use api::policy::{Governing, Origin, POLICY_DENIED_REASON};
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
    let gate = Gate {
        governing: Governing::of(&host.policies, &api::policy::netns_labels(name)),
        node: host.access.clone(),
    };
    if let Some(cni) = &host.cni {
        let attacher = attacher(name, netns, &net, cni, host.allow_host_cni, &gate.governing);
        net = net.with_attacher(attacher);
    }
    let net = Arc::new(net);
    // A record that cannot be read is never replaced by an empty one: the pod is served,
    // Degraded, and nothing is written to its netns until the record is fixed.
    let (mut record, unreadable) = match store.load(name) {
        Ok(Some(record)) => (record, None),
        Ok(None) => {
            prepare_first_save(&store, name);
            (PodRecord::default(), None)
        }
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
    let stored = Stored::new(record);
    let desired = match &unreadable {
        Some(message) => Desired {
            generation: stored.record.generation,
            spec: Default::default(),
            saved: Default::default(),
            problem: Some(StateProblem {
                reason: "StateUnreadable".into(),
                message: message.clone(),
                hold: true,
            }),
        },
        None => gate.before_apply(desired_of(name, &store, &stored), None),
    };
    let (desired, desired_rx) = watch::channel(desired);
    let backend = Arc::new(FileBackend {
        name: name.to_string(),
        store,
        record: tokio::sync::Mutex::new(stored),
        owned: Arc::new(std::sync::Mutex::new(owned.clone())),
        desired,
        cares,
        unreadable,
        problem: Default::default(),
        policy: gate.clone(),
        validated: AtomicI64::new(-1),
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

/// A merge's conflict named the way an apply names it: merged again with `manager` last,
/// the other manager owns the field.
fn conflict(
    stored: &BTreeMap<String, NetworkConfigurationSpec>,
    manager: &str,
    fragment: &NetworkConfigurationSpec,
) -> ApiError {
    match merge_applying(stored, manager, fragment) {
        Err(c) => ApiError(ProblemDetails::conflict(&c)),
        Ok(_) => ApiError::new(StatusCode::CONFLICT, "conflict", "the fragments conflict"),
    }
}

/// A pod without a record most often gets its first with its first request: what its
/// save can do ahead of it is done now, off that request's path.
fn prepare_first_save(store: &Arc<dyn DesiredStore>, name: &str) {
    let (store, name) = (store.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        if let Err(error) = store.prepare(&name) {
            warn!(pod = %name, %error, "cannot prepare the record's first save; it will do it");
        }
    });
}

/// A standalone pod's attacher: its namespace is its netns name, its sandbox the netns's
/// identity (a re-created netns is a new sandbox).
fn attacher(
    name: &str,
    netns: &Path,
    net: &PodNetwork,
    cni: &crate::cni::CniOptions,
    allow_host_cni: bool,
    governing: &Governing,
) -> crate::cni::attacher::Attacher {
    let id = net.identity();
    // Policies not known: fail closed (a standalone file is always known).
    let allowed = governing
        .policies()
        .is_ok_and(|p| api::policy::cni_allowed(allow_host_cni, &p));
    crate::cni::attacher::Attacher {
        opts: cni.clone(),
        pod: crate::cni::keep::PodRef {
            namespace: name.to_string(),
            name: name.to_string(),
            uid: String::new(),
            sandbox: format!("nes-{:x}-{:x}", id.dev, id.inode),
            netns: netns.to_path_buf(),
        },
        allowed,
        networks: Default::default(),
    }
}

/// The desired state of a record whose fragments merged to `merged`; fragments that do not
/// merge (a hand-edited record) hold everything as it is rather than guess.
fn desired_of(name: &str, store: &Arc<dyn DesiredStore>, stored: &Stored) -> Desired {
    match &stored.merged {
        Ok(m) => Desired {
            generation: stored.record.generation,
            spec: m.spec.clone(),
            saved: Default::default(),
            problem: None,
        },
        Err(conflict) => {
            warn!(pod = name, %conflict, "stored fragments conflict; keeping the kernel as it is");
            Desired {
                generation: stored.record.generation,
                spec: Default::default(),
                saved: Default::default(),
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

/// A pod's record with its fragments merged once, when they change: what `GET config`
/// answers and the keeper applies.
struct Stored {
    record: PodRecord,
    /// The record's fragments merged in manager order.
    merged: Result<Shared, Conflict>,
}

/// A merge whose spec is shared with the keeper (see [`Desired::spec`]).
struct Shared {
    spec: Arc<NetworkConfigurationSpec>,
    owners: Arc<api::merge::Owners>,
}

impl From<Merged> for Shared {
    fn from(m: Merged) -> Self {
        Self {
            spec: Arc::new(m.spec),
            owners: Arc::new(m.owners),
        }
    }
}

impl Stored {
    fn new(record: PodRecord) -> Self {
        let merged = merge(record.fragments.iter().map(|(m, s)| (m.as_str(), s)));
        Self {
            record,
            merged: merged.map(Shared::from),
        }
    }
}

/// The fragments of `stored` in manager order, `manager`'s being `fragment` (added when
/// it had none): the order [`Stored::new`] merges in, so a PUT's one merge is the one
/// kept.
fn with_fragment<'a>(
    stored: &'a BTreeMap<String, NetworkConfigurationSpec>,
    manager: &'a str,
    fragment: &'a NetworkConfigurationSpec,
) -> impl Iterator<Item = (&'a str, &'a NetworkConfigurationSpec)> {
    let entry = |(m, s): (&'a String, &'a NetworkConfigurationSpec)| (m.as_str(), s);
    let before = stored
        .range::<str, _>((Bound::Unbounded, Bound::Excluded(manager)))
        .map(entry);
    let after = stored
        .range::<str, _>((Bound::Excluded(manager), Bound::Unbounded))
        .map(entry);
    before
        .chain(std::iter::once((manager, fragment)))
        .chain(after)
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
    record: tokio::sync::Mutex<Stored>,
    /// The ownership record as `owned/` has it (the record's own copy may be older).
    owned: Arc<std::sync::Mutex<Owned>>,
    desired: watch::Sender<Desired>,
    cares: Arc<Cares>,
    /// The record could not be read at start: writes are refused (they would replace it).
    unreadable: Option<String>,
    /// Why the record cannot be written, if it cannot.
    problem: std::sync::Mutex<Option<(String, String)>>,
    policy: Gate,
    /// The generation whose merged spec was validated whole when it was accepted (see
    /// [`ConfigBackend::validated`]); -1 for none.
    validated: AtomicI64,
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

    /// Merges `manager`'s fragment with the others once, validates and checks the result
    /// once, stores it and hands that same merge to the keeper, already validated.
    async fn do_apply(
        &self,
        manager: &str,
        fragment: NetworkConfigurationSpec,
    ) -> Result<ConfigView, ApiError> {
        self.writable()?;
        let mut stored = self.record.lock().await;
        let fragments = &stored.record.fragments;
        let invalid = |invalid: api::validate::Invalid| ApiError(ProblemDetails::invalid(&invalid));
        // A fragment alone is the whole: validated once, its repeats named by its index, and
        // then its own merge. With other managers, the merge first, so two spellings of
        // another manager's entry are its conflict (409); then the fragment's own entries,
        // then the merged whole.
        let merged = match fragments.keys().all(|m| m == manager) {
            true => {
                api::validate(&fragment).map_err(invalid)?;
                api::merge::alone(manager, &fragment)
            }
            false => {
                let merged = merge(with_fragment(fragments, manager, &fragment))
                    .map_err(|_| conflict(fragments, manager, &fragment))?;
                api::validate_fragment(&fragment)
                    .and_then(|()| api::validate(&merged.spec))
                    .map_err(invalid)?;
                merged
            }
        };
        // The whole, as it would be applied (counts are of the whole): refused here with a
        // 403 rather than stored and held back.
        self.policy
            .governing
            .check(&merged.spec, Origin::Cluster, &self.policy.node)
            .map_err(|refusal| ApiError(refusal.problem()))?;
        if let Governing::Known(policies) = &self.policy.governing {
            crate::cni::attacher::gate(&merged.spec, &self.name, policies, self.allow_host_cni)
                .map_err(ApiError)?;
        }
        if stored.record.fragments.get(manager) == Some(&fragment) {
            return Ok(self.view(&stored));
        }
        let previous = stored
            .record
            .fragments
            .insert(manager.to_string(), fragment);
        stored.record.generation += 1;
        // Handed to the keeper before the record is on disk: its pass plans while the
        // record is saved (0.2-2 ms for 1,500 objects, most of it the sync) and writes nothing
        // until the record is written, nor at all if the save fails first (`crate::saved`).
        let (saving, saved) = Saved::pending();
        let merged = Shared::from(merged);
        let desired = Desired {
            generation: stored.record.generation,
            spec: merged.spec.clone(),
            saved,
            problem: None,
        };
        // Validated and checked against the policies above: the gate would pass it as is.
        let was_validated = self
            .validated
            .swap(stored.record.generation, Ordering::AcqRel);
        let before = self.desired.send_replace(desired);
        let saved = self
            .save_off_runtime(stored.record.clone(), Some(saving))
            .await;
        if let Err(e) = saved {
            stored.record.generation -= 1;
            match previous {
                Some(p) => stored.record.fragments.insert(manager.to_string(), p),
                None => stored.record.fragments.remove(manager),
            };
            self.validated.store(was_validated, Ordering::Release);
            // The keeper goes back to what is stored; it wrote nothing of the change.
            self.desired.send_replace(before);
            return Err(e);
        }
        stored.merged = Ok(merged);
        Ok(self.view(&stored))
    }

    /// Persists `record` on a blocking thread (a sync to disk takes 0.1-2 ms), so the
    /// keeper can plan meanwhile; `saving` learns when the record is written and how the
    /// save ended, even if the request that asked is gone by then. A failure is the pod's
    /// problem (`StateNotWritable`) and a 500.
    async fn save_off_runtime(
        &self,
        mut record: PodRecord,
        saving: Option<Saving>,
    ) -> Result<(), ApiError> {
        let store = self.store.clone();
        let name = self.name.clone();
        let owned = self.owned.clone();
        let write = tokio::task::spawn_blocking(move || {
            // The ownership record as it is now, written under its lock: a pass that ended
            // meanwhile may have written a newer one, which must not be replaced by the
            // record's older copy. This change's own pass records its intent only once the
            // record is written, after this.
            let result = {
                let current = lock(&owned);
                record.owned = current.clone();
                store.save_owned(&name, &current)
            }
            .and_then(|()| {
                let written = || {
                    if let Some(saving) = &saving {
                        saving.written();
                    }
                };
                store.save_record(&name, &record, &written)
            });
            if let Some(saving) = saving {
                saving.finish(result.is_ok());
            }
            result
        });
        let result = match write.await {
            Ok(result) => result,
            Err(joined) => Err(crate::error::Error::File {
                path: self.store.location(&self.name).into(),
                source: std::io::Error::other(format!("the save did not finish: {joined}")),
            }),
        };
        self.saved(result)
    }

    async fn do_remove(&self, manager: &str) -> Result<ConfigView, ApiError> {
        self.writable()?;
        let mut stored = self.record.lock().await;
        if !stored.record.fragments.contains_key(manager) {
            return Ok(self.view(&stored));
        }
        let mut next = stored.record.clone();
        next.fragments.remove(manager);
        next.generation += 1;
        self.save_off_runtime(next.clone(), None).await?;
        *stored = Stored::new(next);
        let next = desired_of(&self.name, &self.store, &stored);
        let gated = self.policy.before_apply(next, Some(&self.desired.borrow()));
        self.desired.send_replace(gated);
        Ok(self.view(&stored))
    }

    fn set_problem(&self, problem: Option<(String, String)>) {
        *lock(&self.problem) = problem;
    }

    /// How a save ended, as the pod's problem and the answer.
    fn saved(&self, result: crate::error::Result<()>) -> Result<(), ApiError> {
        if let Err(e) = result {
            self.set_problem(Some(("StateNotWritable".into(), e.to_string())));
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot persist the configuration",
                e.to_string(),
            ));
        }
        self.set_problem(None);
        Ok(())
    }

    fn view(&self, stored: &Stored) -> ConfigView {
        let merged = stored.merged.as_ref().ok();
        ConfigView {
            pod: self.name.clone(),
            generation: stored.record.generation,
            spec: merged.map(|m| m.spec.clone()).unwrap_or_default(),
            owners: merged.map(|m| m.owners.clone()).unwrap_or_default(),
        }
    }

    /// Keeps the ownership record, on its own lock: a pass records what it is about to
    /// add while its change's record is still being synced (under the record's lock).
    async fn save_owned(&self, owned: &Owned) -> Result<(), String> {
        if let Some(why) = &self.unreadable {
            return Err(why.clone());
        }
        let mut current = lock(&self.owned);
        if &*current == owned {
            return Ok(());
        }
        match self.store.save_owned(&self.name, owned) {
            Ok(()) => {
                *current = owned.clone();
                drop(current);
                self.set_problem(None);
                Ok(())
            }
            Err(error) => {
                drop(current);
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

    fn validated(&self) -> Option<i64> {
        Some(self.validated.load(Ordering::Acquire)).filter(|g| *g >= 0)
    }

    fn problem(&self) -> Option<(String, String)> {
        lock(&self.problem).clone()
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

#[cfg(test)]
mod tests;
