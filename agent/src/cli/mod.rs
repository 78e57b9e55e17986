//! `nes-agent` command line. Each subcommand is a module with an `Args` struct and a `run`;
//! adding one is one variant in [`Command`] plus its module. No subcommand is the
//! in-cluster agent ([`cluster`]).

use clap::{Parser, Subcommand};

pub mod apply;
pub mod cluster;
pub mod cni;
pub mod standalone;

use tokio_util::sync::CancellationToken;

/// nes node agent.
#[derive(Parser, Debug)]
#[command(
    name = "nes-agent",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand: the in-cluster agent of this node.
    #[command(flatten)]
    pub cluster: cluster::Args,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply a network configuration to one network namespace once, then exit.
    Apply(apply::Args),
    /// Serve every named network namespace of this host as a pod, on @nes inside it.
    Standalone(standalone::Args),
}

impl Cli {
    /// Whether the command does one thing and exits (no daemon).
    pub fn is_one_shot(&self) -> bool {
        matches!(self.command, Some(Command::Apply(_)))
    }

    /// Runs the chosen subcommand; returns the process exit code.
    pub async fn run(self) -> anyhow::Result<i32> {
        match self.command {
            None => cluster::run(self.cluster).await,
            Some(Command::Apply(args)) => apply::run(args).await,
            Some(Command::Standalone(args)) => standalone::run(args).await,
        }
    }
}

/// What pods may do in the host's network namespace: nothing unless named here.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HostAccessArgs {
    /// Let pods create veth pairs whose peer end lives in the host namespace.
    #[arg(long, env = "NES_ALLOW_HOST_VETH")]
    pub allow_host_veth: bool,
    /// A host bridge veth peers may join (repeat, or separate with commas).
    #[arg(
        long = "allow-host-bridge",
        value_name = "NAME",
        value_delimiter = ',',
        env = "NES_ALLOW_HOST_BRIDGES"
    )]
    pub bridges: Vec<String>,
    /// A host link macvlan/ipvlan interfaces may use as parent (repeat, or separate with
    /// commas).
    #[arg(
        long = "allow-host-parent",
        value_name = "NAME",
        value_delimiter = ',',
        env = "NES_ALLOW_HOST_PARENTS"
    )]
    pub parents: Vec<String>,
    /// Allow macvlan passthru on an allowed host parent (it takes the parent over).
    #[arg(long, env = "NES_ALLOW_HOST_PASSTHRU")]
    pub allow_host_passthru: bool,
}

impl HostAccessArgs {
    /// The allowlist; a name that cannot be an interface name is refused.
    pub fn access(&self) -> anyhow::Result<api::host::HostAccess> {
        for name in self.bridges.iter().chain(&self.parents) {
            api::validate::check_ifname(name)
                .map_err(|why| anyhow::anyhow!("--allow-host-bridge/--allow-host-parent: {why}"))?;
        }
        Ok(api::host::HostAccess {
            veth: self.allow_host_veth,
            bridges: self.bridges.iter().cloned().collect(),
            parents: self.parents.iter().cloned().collect(),
            passthru: self.allow_host_passthru,
        })
    }
}

/// Cancels `stop` on SIGTERM or Ctrl-C.
pub async fn cancel_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
}

/// Reads `--policy FILE`: every document must be a valid NetworkConfigurationPolicy, or the
/// agent does not start (running with fewer restrictions than the admin wrote is worse).
pub fn read_policy_file(
    path: &std::path::Path,
) -> anyhow::Result<Vec<std::sync::Arc<api::policy::NetworkConfigurationPolicy>>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--policy {}: cannot read it", path.display()))?;
    // The error's own text names its cause: as a context chain it would print it twice.
    let policies = api::policy::parse_policy_file(&text)
        .map_err(|e| anyhow::anyhow!("--policy {}: {e}", path.display()))?;
    tracing::info!(file = %path.display(), policies = policies.len(), "admin policy loaded");
    Ok(policies.into_iter().map(std::sync::Arc::new).collect())
}
