//! One level-triggered pass over a pod's attachments: what is declared against what is
//! attached (nes's cache entries for the sandbox, confirmed with CHECK). Removals first,
//! newest first; then adds in declared order. An add is recorded before its status is
//! reported, and undone with DEL when it cannot be recorded. A failed attachment never
//! stops the others, and the next pass tries it again.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::attach::{AttachmentSpec, AttachmentStatus, NetworkRef};
use api::ObjectState;
use serde_json::Value;
use tracing::{info, warn};

use super::cache::{Cache, CachedInfo, CACHE_KIND, MANAGED_BY};
use super::chain::{self, Extras};
use super::conf::{self, ConfList};
use super::exec::RuntimeConf;
use super::types::CniResult;
use super::{CniError, CniOptions};
use crate::saved::Saved;

/// The pod an attachment pass is for.
#[derive(Clone, Debug, Default)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The sandbox id (`CNI_CONTAINERID`, the cache key).
    pub sandbox: String,
    pub netns: PathBuf,
}

/// One declared attachment with its network resolved.
#[derive(Clone, Debug)]
pub struct Want {
    pub spec: AttachmentSpec,
    pub ifname: String,
    /// `namespace/name`, the status name.
    pub network: String,
    /// The network list, or why it cannot be had (reported, and nothing attached under it).
    pub list: Result<ConfList, CniError>,
}

/// What one pass does.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Detach a recorded attachment (gone, or its network changed).
    Del(usize),
    /// Confirm the recorded attachment `.1` still is what want `.0` asks.
    Check(usize, usize),
    /// Attach want `.0`.
    Add(usize),
}

/// Whether a recorded attachment is what `want` asks, to the byte.
fn same(want: &Want, rec: &CachedInfo) -> bool {
    let Ok(list) = &want.list else {
        return false;
    };
    let extras = Extras::of(&want.spec);
    rec.if_name == want.ifname
        && rec.network_name == list.name
        && rec.config == list.bytes
        && rec.capability_args == extras.capabilities
        && rec.nes_reference.as_deref() == Some(want.spec.name.as_str())
}

/// The steps of a pass (pure): recorded entries nothing declares the same way are
/// removed newest first; then each want in order is checked when recorded, else added.
/// A want whose network cannot be had keeps an unchanged recorded attachment (a NAD
/// briefly unreadable is not a detach) and is otherwise left for the next pass.
pub fn plan(wants: &[Want], recorded: &[CachedInfo]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut kept = vec![None; wants.len()];
    for (r, rec) in recorded.iter().enumerate().rev() {
        let owner = wants.iter().position(|w| w.ifname == rec.if_name);
        match owner {
            Some(w) if same(&wants[w], rec) => kept[w] = Some(r),
            Some(w) if wants[w].list.is_err() => kept[w] = Some(r),
            _ => steps.push(Step::Del(r)),
        }
    }
    for (w, want) in wants.iter().enumerate() {
        match kept[w] {
            Some(r) if want.list.is_ok() => steps.push(Step::Check(w, r)),
            Some(_) => {}
            None if want.list.is_ok() => steps.push(Step::Add(w)),
            None => {}
        }
    }
    steps
}

/// Resolves declared attachments with `lookup(namespace, name)`, the network a reference
/// names (the pod's namespace filled in); an unparsable reference is never looked up.
pub fn resolve_with(
    pod: &PodRef,
    specs: &[AttachmentSpec],
    lookup: impl Fn(&str, &str) -> Result<ConfList, CniError>,
) -> Vec<Want> {
    specs
        .iter()
        .map(|spec| {
            let parsed = NetworkRef::parse(&spec.name);
            let list = match &parsed {
                Err(why) => Err(CniError::Args(why.clone())),
                Ok(r) => lookup(r.namespace_or(&pod.namespace), &r.name),
            };
            Want {
                ifname: spec.ifname(&pod.namespace),
                network: parsed
                    .map(|r| r.qualified(&pod.namespace))
                    .unwrap_or_else(|_| spec.name.clone()),
                spec: spec.clone(),
                list,
            }
        })
        .collect()
}

/// Resolves declared attachments against the conflists in `opts.conf_dir` (standalone):
/// a reference names a list; one naming another namespace than the pod's is refused.
pub fn resolve_standalone(opts: &CniOptions, pod: &PodRef, specs: &[AttachmentSpec]) -> Vec<Want> {
    resolve_with(pod, specs, |namespace, name| {
        if namespace != pod.namespace {
            return Err(CniError::Args(format!(
                "\"{namespace}/{name}\": a standalone host has networks of the pod's own namespace only"
            )));
        }
        conf::find(&opts.conf_dir, name)
    })
}

/// Runs one pass and returns every want's status, in declared order.
///
/// Plugins write as they run: the first one runs only once `saved` (the desired state the
/// pass serves) is saved, and none does if it never is (`None`); a pass that runs none
/// does not wait.
pub async fn converge(
    opts: &CniOptions,
    pod: &PodRef,
    wants: &[Want],
    saved: &Saved,
    waited: &mut Duration,
) -> Option<Vec<AttachmentStatus>> {
    let cache = Cache::new(&opts.cache_dir);
    let recorded = cache.attached(&pod.sandbox);
    let mut status: Vec<AttachmentStatus> = wants.iter().map(pending).collect();
    for (w, want) in wants.iter().enumerate() {
        if let Err(e) = &want.list {
            status[w].state = ObjectState::Failed;
            status[w].error = Some(e.to_string());
        }
    }
    let steps = plan(wants, &recorded);
    if !steps.is_empty() && !saved.wait_counting(waited).await {
        return None;
    }
    for step in steps {
        match step {
            Step::Del(r) => {
                if let Err(error) = detach(opts, &cache, pod, &recorded[r]).await {
                    warn!(ifname = %recorded[r].if_name, %error, "CNI DEL failed; retried next pass");
                    if let Some(w) = wants.iter().position(|w| w.ifname == recorded[r].if_name) {
                        status[w].state = ObjectState::Failed;
                        status[w].error = Some(format!("detaching the previous network: {error}"));
                    }
                }
            }
            Step::Check(w, r) => {
                status[w] = check_or_repair(opts, &cache, pod, &wants[w], &recorded[r]).await
            }
            Step::Add(w) if status[w].error.is_none() => {
                status[w] = attach(opts, &cache, pod, &wants[w]).await
            }
            Step::Add(_) => {}
        }
    }
    Some(status)
}

fn pending(want: &Want) -> AttachmentStatus {
    AttachmentStatus {
        name: want.spec.name.clone(),
        interface: want.ifname.clone(),
        state: ObjectState::Pending,
        error: None,
        network: None,
    }
}

fn runtime(pod: &PodRef, ifname: &str) -> RuntimeConf {
    RuntimeConf {
        container_id: pod.sandbox.clone(),
        netns: pod.netns.clone(),
        ifname: ifname.to_string(),
        args: RuntimeConf::pod_args(&pod.namespace, &pod.name, &pod.sandbox, &pod.uid),
    }
}

/// ADD, then record; a result that cannot be recorded is undone.
async fn attach(opts: &CniOptions, cache: &Cache, pod: &PodRef, want: &Want) -> AttachmentStatus {
    let mut out = pending(want);
    let Ok(list) = &want.list else { return out };
    let rt = runtime(pod, &want.ifname);
    let extras = Extras::of(&want.spec);
    let added = chain::add(opts, list, &rt, &extras).await;
    let result = match added {
        Ok(result) => result,
        Err(error) => {
            // A chain that failed half-way may hold an address: release it now.
            let _ = chain::del(opts, list, &rt, &extras, None).await;
            warn!(ifname = %want.ifname, network = %want.network, %error, "CNI ADD failed");
            out.state = ObjectState::Failed;
            out.error = Some(error.to_string());
            return out;
        }
    };
    let info = record(pod, want, list, &rt, &extras, result.clone());
    if let Err(error) = cache.save(&info) {
        let _ = chain::del(opts, list, &rt, &extras, Some(&result)).await;
        out.state = ObjectState::Failed;
        out.error = Some(error.to_string());
        return out;
    }
    info!(ifname = %want.ifname, network = %want.network, "attached");
    applied(want, &result, &pod.netns)
}

fn record(
    pod: &PodRef,
    want: &Want,
    list: &ConfList,
    rt: &RuntimeConf,
    extras: &Extras,
    result: Value,
) -> CachedInfo {
    CachedInfo {
        kind: CACHE_KIND.into(),
        container_id: pod.sandbox.clone(),
        config: list.bytes.clone(),
        if_name: want.ifname.clone(),
        network_name: list.name.clone(),
        netns: pod.netns.display().to_string(),
        cni_args: rt
            .args
            .iter()
            .map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        capability_args: extras.capabilities.clone(),
        result: Some(result),
        managed_by: Some(MANAGED_BY.into()),
        nes_reference: Some(want.spec.name.clone()),
        nes_seq: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    }
}

fn applied(want: &Want, result: &Value, netns: &Path) -> AttachmentStatus {
    let parsed: CniResult = serde_json::from_value(result.clone()).unwrap_or_default();
    AttachmentStatus {
        network: Some(parsed.network_status(
            &want.network,
            &want.ifname,
            &netns.display().to_string(),
        )),
        state: ObjectState::Applied,
        ..pending(want)
    }
}

/// CHECK a recorded attachment; one that fails it is detached and attached again.
async fn check_or_repair(
    opts: &CniOptions,
    cache: &Cache,
    pod: &PodRef,
    want: &Want,
    rec: &CachedInfo,
) -> AttachmentStatus {
    let Ok(list) = &want.list else {
        return pending(want);
    };
    let rt = runtime(pod, &want.ifname);
    let extras = Extras::of(&want.spec);
    let result = rec.result.clone().unwrap_or(Value::Null);
    match chain::check(opts, list, &rt, &extras, &result).await {
        Ok(()) => applied(want, &result, &pod.netns),
        Err(error) => {
            warn!(ifname = %want.ifname, %error, "CNI CHECK failed: attaching again");
            if let Err(error) = detach(opts, cache, pod, rec).await {
                let mut out = pending(want);
                out.state = ObjectState::Failed;
                out.error = Some(error.to_string());
                return out;
            }
            attach(opts, cache, pod, want).await
        }
    }
}

/// DEL with the recorded network and result, then forget it. DEL is idempotent: a
/// network whose list is gone is deleted with the recorded list.
pub async fn detach(
    opts: &CniOptions,
    cache: &Cache,
    pod: &PodRef,
    rec: &CachedInfo,
) -> Result<(), CniError> {
    let list = ConfList::parse(&rec.config).map_err(|message| CniError::BadConf {
        path: cache
            .path(&rec.network_name, &rec.container_id, &rec.if_name)
            .display()
            .to_string(),
        message,
    })?;
    let rt = RuntimeConf {
        args: rec
            .cni_args
            .iter()
            .map(|[k, v]| (k.clone(), v.clone()))
            .collect(),
        ..runtime(pod, &rec.if_name)
    };
    let extras = Extras {
        capabilities: rec.capability_args.clone(),
        cni_args: Default::default(),
    };
    chain::del(opts, &list, &rt, &extras, rec.result.as_ref()).await?;
    cache.remove(rec)?;
    info!(ifname = %rec.if_name, network = %rec.network_name, "detached");
    Ok(())
}

/// Detaches every attachment nes made in a sandbox (the pod is going): IPs released.
pub async fn detach_all(opts: &CniOptions, pod: &PodRef) -> Vec<CniError> {
    let cache = Cache::new(&opts.cache_dir);
    let mut errors = Vec::new();
    for rec in cache.attached(&pod.sandbox).iter().rev() {
        if let Err(e) = detach(opts, &cache, pod, rec).await {
            errors.push(e);
        }
    }
    errors
}

#[cfg(test)]
mod tests;
