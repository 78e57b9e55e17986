//! `nes-agent apply --netns PATH -f config.yaml [--dry-run]`: one-shot apply for scripting
//! and benchmarks.
//!
//! With `--policy FILE` the configuration is first checked as the standalone agent checks
//! it (the policies selecting the netns by name, within the `--allow-host-*` ceiling); a
//! refusal writes nothing.
//!
//! Exit codes: 0 converged (or dry run), 1 error (a policy refusal included), 3 applied
//! with failed or blocked objects.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::host::HostAccess;
use api::policy::{Governing, Origin};
use api::NetworkConfigurationSpec;

use crate::engine::PodNetwork;
use crate::owned::Owned;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network namespace to configure: /var/run/netns/NAME or /proc/PID/ns/net.
    #[arg(long, value_name = "PATH")]
    pub netns: PathBuf,
    /// Host network namespace (for veth peers and host parents).
    #[arg(long, value_name = "PATH", default_value = "/proc/self/ns/net")]
    pub host_netns: PathBuf,
    /// Configuration: a NetworkConfiguration spec (or a whole object with `spec:`) in YAML or JSON; `-` for stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Ownership record to read and update (what nes added, so later runs may remove it).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Keep retrying failed writes (with backoff) for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub retry_for: u64,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub host_access: super::HostAccessArgs,
    /// Admin policy: a YAML stream of NetworkConfigurationPolicy objects. The configuration
    /// must be allowed by those selecting this netns (as the standalone agent's `--policy`).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The name the policies' `namespaceSelector` sees (`kubernetes.io/metadata.name`);
    /// default: the file name of `--netns`.
    #[arg(long, value_name = "NAME", requires = "policy")]
    pub namespace: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let spec = read_spec(&args.file)?;
    let access = args.host_access.access()?;
    check_policy(&args, &spec, &access)?;
    let owned = match &args.state {
        Some(p) => Owned::load(p)?,
        None => Owned::default(),
    };
    let net = PodNetwork::open(&args.netns, &args.host_netns)
        .await?
        .with_host_access(access);
    if args.dry_run {
        let (_, plan) = net.plan(&spec, &owned).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            for op in &plan.ops {
                println!("{op}");
            }
            for b in &plan.blocked {
                println!("# {:?} {}: {}", b.state, b.object, b.reason);
            }
            println!("# {} operations", plan.ops.len());
        }
        return Ok(0);
    }
    let started = Instant::now();
    let report = net
        .converge_until(&spec, &owned, Duration::from_secs(args.retry_for))
        .await?;
    let elapsed = started.elapsed();
    // An unchanged record is not rewritten: a converged re-apply touches neither the
    // kernel nor the disk (the save fsyncs, which costs more than the whole pass).
    if let Some(p) = args.state.as_ref().filter(|_| report.owned != owned) {
        report.owned.save(p)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in report.failures() {
            if let crate::apply::Outcome::Failed { message, .. } = &r.outcome {
                eprintln!("FAILED {}: {message}", r.op);
            }
        }
        for b in &report.blocked {
            eprintln!("{:?} {}: {}", b.state, b.object, b.reason);
        }
        println!(
            "{} ops, {} writes, {} failed, {} blocked in {:.1} ms",
            report.results.len(),
            report.writes,
            report.failures().count(),
            report.blocked.len(),
            elapsed.as_secs_f64() * 1000.0
        );
    }
    Ok(if report.is_converged() { 0 } else { 3 })
}

/// With `--policy`: the policies selecting the netns (by `--namespace` or the netns file's
/// name) must allow `spec`, and its host-side fields must be within them and `access`.
fn check_policy(
    args: &Args,
    spec: &NetworkConfigurationSpec,
    access: &HostAccess,
) -> anyhow::Result<()> {
    let Some(file) = &args.policy else {
        return Ok(());
    };
    // Evaluation reads well-formed values only; the engine would refuse the rest anyway.
    api::validate(spec).map_err(|invalid| anyhow::anyhow!("{}: {invalid}", args.file.display()))?;
    let policies = super::read_policy_file(file)?;
    let name = match &args.namespace {
        Some(name) => name.clone(),
        None => args
            .netns
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("--netns has no file name to select policies by: give --namespace")?,
    };
    Governing::of(&policies, &api::policy::netns_labels(&name))
        .check(spec, Origin::Cluster, access)
        .map_err(|refusal| anyhow::anyhow!("refused by the admin policy ({name}): {refusal}"))
}

/// Reads a spec from YAML/JSON; accepts a bare spec or an object with a `spec` field.
pub fn read_spec(path: &PathBuf) -> anyhow::Result<NetworkConfigurationSpec> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let doc: SpecDocument = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not a NetworkConfiguration spec", path.display()))?;
    doc.into_spec()
        .with_context(|| format!("{}: not a NetworkConfiguration spec", path.display()))
}

/// Either form of a spec file, parsed in one pass (through a generic YAML value it took
/// longer than a converged pass). Unknown keys are refused, as in the spec itself.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecDocument {
    // A whole object: `spec` plus what identifies it.
    #[serde(rename = "apiVersion")]
    _api_version: Option<serde::de::IgnoredAny>,
    #[serde(rename = "kind")]
    _kind: Option<serde::de::IgnoredAny>,
    #[serde(rename = "metadata")]
    _metadata: Option<serde::de::IgnoredAny>,
    #[serde(rename = "status")]
    _status: Option<serde::de::IgnoredAny>,
    spec: Option<NetworkConfigurationSpec>,
    // A bare spec.
    interfaces: Option<Vec<api::InterfaceSpec>>,
    routes: Option<Vec<api::RouteSpec>>,
}

impl SpecDocument {
    fn into_spec(self) -> anyhow::Result<NetworkConfigurationSpec> {
        match (self.spec, self.interfaces, self.routes) {
            (Some(spec), None, None) => Ok(spec),
            (Some(_), _, _) => anyhow::bail!(
                "both `spec` and top-level interfaces/routes: give a bare spec or an object with `spec`"
            ),
            (None, interfaces, routes) => Ok(NetworkConfigurationSpec {
                interfaces: interfaces.unwrap_or_default(),
                routes: routes.unwrap_or_default(),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<NetworkConfigurationSpec> {
        serde_yaml::from_str::<SpecDocument>(text)
            .map_err(anyhow::Error::from)
            .and_then(SpecDocument::into_spec)
    }

    #[test]
    fn a_spec_file_may_be_bare_or_a_whole_object() {
        let bare = parse(
            "interfaces: [{name: eth0, mtu: 1400}]\nroutes: [{dst: 10.0.0.0/8, dev: eth0}]\n",
        )
        .expect("bare");
        let whole = parse(
            "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfiguration\nmetadata: {name: demo-0}\nspec:\n  interfaces: [{name: eth0, mtu: 1400}]\n  routes: [{dst: 10.0.0.0/8, dev: eth0}]\n",
        )
        .expect("whole");
        assert_eq!(bare, whole);
        assert_eq!(bare.interfaces[0].mtu, Some(1400));
        assert_eq!(
            parse("{}\n").expect("empty"),
            NetworkConfigurationSpec::default()
        );
    }

    #[test]
    fn a_spec_file_with_an_unknown_or_ambiguous_key_is_refused() {
        let typo = parse("interface: [{name: eth0}]\n").expect_err("typo");
        assert!(
            typo.to_string().contains("unknown field `interface`"),
            "{typo}"
        );
        let both = parse("spec: {}\nroutes: []\n").expect_err("both");
        assert!(both.to_string().contains("both `spec`"), "{both}");
    }
}
