//! The operator's own CA and serving certificate, kept in a Secret, published to the
//! webhook's `caBundle` and a CA ConfigMap, renewed before expiry.
//!
//! Every replica runs this loop. The Secret is the one source of truth: the first replica
//! to create it wins (the other reads the winner on 409), renewals replace it with a
//! resourceVersion precondition (the loser of a race reads the winner again), and every
//! replica watches it, so a certificate renewed by one is served by all. What to do with
//! the Secret's material is decided by [`bundle::plan`], without I/O.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio_util::sync::CancellationToken;

use crate::tls::CertStore;
use crate::{Error, Result, FIELD_MANAGER};

pub mod bundle;

use bundle::{Bundle, Plan};

/// Where the certificate material lives and who it is for.
#[derive(Clone, Debug)]
pub struct CertConfig {
    /// Namespace of the operator, its Secret, Service and CA ConfigMap.
    pub namespace: String,
    /// Secret holding `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
    pub secret_name: String,
    /// Service whose DNS names the serving certificate covers.
    pub service_name: String,
    /// Mutating- and ValidatingWebhookConfiguration whose `caBundle` is kept current.
    pub webhook_name: String,
    /// ConfigMap (key `ca.crt`) agents and nescli mount to trust the cliserver.
    pub ca_configmap_name: String,
    /// Lifetime of a serving certificate.
    pub validity: Duration,
    /// Renew when less than this is left.
    pub renew_before: Duration,
}

impl CertConfig {
    /// A serving certificate lasts 90 days...
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
    /// ...and is replaced a month before it ends.
    pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

    /// The names the serving certificate must carry.
    pub fn dns_names(&self) -> Vec<String> {
        bundle::dns_names(&self.service_name, &self.namespace)
    }

    fn check(&self) -> Result<()> {
        if self.renew_before >= self.validity || self.renew_before >= bundle::CA_VALIDITY {
            return Err(Error::CertConfig(format!(
                "renew_before ({:?}) must be shorter than the certificate validity ({:?})",
                self.renew_before, self.validity
            )));
        }
        Ok(())
    }
}

/// The label on what the operator creates.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", FIELD_MANAGER);
/// Look again at least this often: re-asserts the caBundle and ConfigMap if someone
/// reset them, and catches a renewal whose watch event was missed.
const RESYNC: Duration = Duration::from_secs(10 * 60);
/// Never loop faster than this, whatever the certificate dates say.
const MIN_WAIT: Duration = Duration::from_secs(1);
/// Write conflicts tolerated in one pass before giving up until the next.
const CONFLICT_ATTEMPTS: usize = 3;

/// Keeps the Secret, the caBundle and the CA ConfigMap current and loads the serving
/// certificate into `store`, until `shutdown`.
pub async fn run(
    client: kube::Client,
    cfg: CertConfig,
    store: Arc<CertStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    cfg.check()?;
    let keeper = Keeper::new(client, cfg, store);
    // The bounds of kube's watcher backoff, which the certificate watch also uses.
    let mut backoff =
        common::backoff::Backoff::new(Duration::from_millis(800), Duration::from_secs(30));
    // Started after the first pass, so that pass's calls come first and alone.
    let mut changes = None;
    let mut seen: Option<String> = None;
    loop {
        let pass = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            pass = keeper.pass(&mut seen) => pass,
        };
        let wait = match pass {
            Ok(wait) => {
                backoff.reset();
                wait
            }
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?wait, "keeping the operator's certificates current failed");
                wait
            }
        };
        let changes = changes.get_or_insert_with(|| keeper.secret_changes());
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
            () = next_change(changes, seen.as_deref()) => {}
        }
    }
}

struct Keeper {
    cfg: CertConfig,
    store: Arc<CertStore>,
    secrets: Api<Secret>,
    configmaps: Api<ConfigMap>,
    webhooks: Api<MutatingWebhookConfiguration>,
    validating: Api<ValidatingWebhookConfiguration>,
}

impl Keeper {
    fn new(client: kube::Client, cfg: CertConfig, store: Arc<CertStore>) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), &cfg.namespace),
            configmaps: Api::namespaced(client.clone(), &cfg.namespace),
            webhooks: Api::all(client.clone()),
            validating: Api::all(client),
            cfg,
            store,
        }
    }

    /// Makes sure the Secret holds current material, serves it, and publishes the CA.
    /// Records in `seen` the Secret's resourceVersion as read or written (so that its own
    /// watch event does not start another pass, even when publishing fails); returns when
    /// to look again if nothing changes before.
    async fn pass(&self, seen: &mut Option<String>) -> Result<Duration> {
        let now = SystemTime::now();
        let (bundle, resource_version, renew_at) = self.ensure_secret(now).await?;
        *seen = resource_version;
        if self.store.load_pem(&bundle.tls_crt, &bundle.tls_key)? {
            tracing::info!(secret = %self.cfg.secret_name, "serving certificate loaded");
        }
        // Both are attempted even if one fails: they serve different clients.
        let webhook = self.publish_ca_bundle(&bundle.ca_crt).await;
        let configmap = self.publish_ca_configmap(&bundle.ca_crt).await;
        webhook.and(configmap)?;
        Ok(renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .clamp(MIN_WAIT, RESYNC))
    }

    /// Reads the Secret and creates or renews it as needed; returns the material in it,
    /// its resourceVersion and when it next needs renewing.
    async fn ensure_secret(&self, now: SystemTime) -> Result<(Bundle, Option<String>, SystemTime)> {
        let (cfg, names) = (&self.cfg, self.cfg.dns_names());
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        for _ in 0..CONFLICT_ATTEMPTS {
            let existing = self
                .secrets
                .get_opt(&cfg.secret_name)
                .await
                .map_err(kube_error(format!("read Secret {}", cfg.secret_name)))?;
            let (bundle, written) = match existing {
                None => {
                    tracing::info!(secret = %cfg.secret_name, "creating the operator's CA and serving certificate");
                    let bundle = Bundle::generate(&names, now, cfg.validity)?;
                    let written = self
                        .secrets
                        .create(&params, &self.new_secret(&bundle))
                        .await;
                    (bundle, written)
                }
                Some(secret) => {
                    let bundle = match Bundle::from_data(secret.data.as_ref()) {
                        Ok(current) => {
                            match bundle::plan(&current, &names, now, cfg.renew_before) {
                                Plan::Keep { renew_at } => {
                                    return Ok((
                                        current,
                                        secret.metadata.resource_version,
                                        renew_at,
                                    ))
                                }
                                Plan::RenewServing { reason } => {
                                    tracing::info!(secret = %cfg.secret_name, %reason, "renewing the serving certificate");
                                    current.renew_serving(&names, now, cfg.validity)?
                                }
                                Plan::NewCa { reason } => new_ca(cfg, &names, now, &reason)?,
                            }
                        }
                        Err(reason) => new_ca(cfg, &names, now, &reason)?,
                    };
                    // The resourceVersion read above is the precondition: a replica that
                    // renewed in between makes this fail with 409.
                    let mut updated = secret;
                    updated.data = Some(bundle.to_data());
                    updated.string_data = None;
                    let written = self
                        .secrets
                        .replace(&cfg.secret_name, &params, &updated)
                        .await;
                    (bundle, written)
                }
            };
            match written {
                Ok(secret) => {
                    let renew_at = match bundle::plan(&bundle, &names, now, cfg.renew_before) {
                        Plan::Keep { renew_at } => renew_at,
                        _ => now,
                    };
                    return Ok((bundle, secret.metadata.resource_version, renew_at));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(secret = %cfg.secret_name, "another replica wrote the Secret first; reading theirs");
                }
                Err(source) => {
                    return Err(Error::Kube {
                        context: format!("write Secret {}", cfg.secret_name),
                        source,
                    })
                }
            }
        }
        Err(Error::SecretConflict {
            namespace: cfg.namespace.clone(),
            name: cfg.secret_name.clone(),
            attempts: CONFLICT_ATTEMPTS,
        })
    }

    fn new_secret(&self, bundle: &Bundle) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.cfg.secret_name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                labels: Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(bundle.to_data()),
            ..Secret::default()
        }
    }

    /// Sets `caBundle` on every webhook of the Mutating- and ValidatingWebhookConfiguration
    /// (both named `webhook_name`) that lacks it; both are attempted.
    async fn publish_ca_bundle(&self, ca_crt: &str) -> Result<()> {
        let mutating = publish_to(&self.webhooks, &self.cfg.webhook_name, |c| {
            ca_bundle_patch(c, ca_crt)
        })
        .await;
        let validating = publish_to(&self.validating, &self.cfg.webhook_name, |c| {
            validating_ca_bundle_patch(c, ca_crt)
        })
        .await;
        mutating.and(validating)
    }

    /// Applies the CA ConfigMap (server-side apply: unchanged content writes nothing).
    async fn publish_ca_configmap(&self, ca_crt: &str) -> Result<()> {
        let name = &self.cfg.ca_configmap_name;
        let configmap = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.cfg.namespace,
                "labels": {MANAGED_BY.0: MANAGED_BY.1},
            },
            "data": {bundle::CA_CRT: ca_crt},
        });
        self.configmaps
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(configmap),
            )
            .await
            .map_err(kube_error(format!("apply ConfigMap {name}")))?;
        Ok(())
    }

    /// Changes to the Secret, from a watch on that one object.
    fn secret_changes(&self) -> BoxStream<'static, Result<Event<Secret>, watcher::Error>> {
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.cfg.secret_name));
        watcher::watcher(self.secrets.clone(), config)
            .default_backoff()
            .boxed()
    }
}

fn new_ca(cfg: &CertConfig, names: &[String], now: SystemTime, reason: &str) -> Result<Bundle> {
    tracing::warn!(secret = %cfg.secret_name, %reason, "replacing the operator's CA and serving certificate");
    Bundle::generate(names, now, cfg.validity)
}

/// Waits for a change to the Secret other than the version last handled.
async fn next_change(
    changes: &mut BoxStream<'static, Result<Event<Secret>, watcher::Error>>,
    seen: Option<&str>,
) {
    while let Some(event) = changes.next().await {
        match event {
            Ok(Event::Apply(secret) | Event::InitApply(secret)) => {
                if secret.metadata.resource_version.as_deref() != seen {
                    return;
                }
            }
            Ok(Event::Delete(_)) => return,
            Ok(Event::Init | Event::InitDone) => {}
            Err(error) => {
                tracing::debug!(%error, "watching the certificate Secret failed; retrying")
            }
        }
    }
    // The watcher never ends; if it did, the periodic resync still runs.
    std::future::pending::<()>().await;
}

/// The strategic merge patch (webhooks merge by name) that puts `ca_crt` in the
/// `caBundle` of every webhook not already carrying it; `None` when all do.
pub fn ca_bundle_patch(
    config: &MutatingWebhookConfiguration,
    ca_crt: &str,
) -> Option<serde_json::Value> {
    let webhooks = config.webhooks.iter().flatten();
    patch_stale(webhooks.map(|w| (&w.name, &w.client_config)), ca_crt)
}

/// [`ca_bundle_patch`] for the ValidatingWebhookConfiguration.
pub fn validating_ca_bundle_patch(
    config: &ValidatingWebhookConfiguration,
    ca_crt: &str,
) -> Option<serde_json::Value> {
    let webhooks = config.webhooks.iter().flatten();
    patch_stale(webhooks.map(|w| (&w.name, &w.client_config)), ca_crt)
}

fn patch_stale<'a>(
    webhooks: impl Iterator<Item = (&'a String, &'a WebhookClientConfig)>,
    ca_crt: &str,
) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_crt);
    let stale: Vec<_> = webhooks
        .filter(|(_, c)| c.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_crt.as_bytes()))
        .map(|(name, _)| serde_json::json!({"name": name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    (!stale.is_empty()).then(|| serde_json::json!({ "webhooks": stale }))
}

/// Patches the webhook configuration `name` of `api` with `patch_of` (strategic merge),
/// when it exists and needs it.
async fn publish_to<K>(
    api: &Api<K>,
    name: &str,
    patch_of: impl FnOnce(&K) -> Option<serde_json::Value>,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let config = api
        .get_opt(name)
        .await
        .map_err(kube_error(format!("read {kind} {name}")))?;
    let Some(config) = config else {
        tracing::warn!(webhook = %name, %kind, "webhook configuration not found; its caBundle is set once it exists");
        return Ok(());
    };
    let Some(patch) = patch_of(&config) else {
        return Ok(());
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Strategic(patch))
        .await
        .map_err(kube_error(format!("set the caBundle of {kind} {name}")))?;
    tracing::info!(webhook = %name, %kind, "caBundle set");
    Ok(())
}

fn kube_error(context: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { context, source }
}

#[cfg(test)]
mod tests;
