//! `nes-agent standalone`: serve every named network namespace of this host as a pod.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::standalone::{run as serve, Options};
use crate::watch::KeeperOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory where each pod's desired state is kept (survives restarts).
    #[arg(long, default_value = "/var/lib/nes")]
    pub state_dir: PathBuf,
    /// Directory of named network namespaces; each one is served as a pod.
    #[arg(long, default_value = "/var/run/netns")]
    pub netns_dir: PathBuf,
    /// Filesystem socket for root on the host: the same API with ?pod=NAME.
    #[arg(long, default_value = "/run/nes/admin.sock")]
    pub admin_socket: PathBuf,
    /// The host's network namespace.
    #[arg(long, default_value = "/proc/self/ns/net")]
    pub host_netns: PathBuf,
    /// Re-check every pod against its desired state at least this often (seconds).
    #[arg(long, default_value_t = 300)]
    pub resync_seconds: u64,
    #[command(flatten)]
    pub host_access: super::HostAccessArgs,
    /// Admin policy: a YAML stream of NetworkConfigurationPolicy objects (the cluster's
    /// schema); a netns is selected by its name as the label kubernetes.io/metadata.name.
    /// Without it the built-in default applies (no host-side field; --allow-host-* stays the
    /// node's ceiling either way).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub cni: super::cni::CniArgs,
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let opts = Options {
        state_dir: args.state_dir,
        netns_dir: args.netns_dir,
        admin_socket: args.admin_socket,
        host_netns: args.host_netns,
        host_access: args.host_access.access()?,
        policies: match &args.policy {
            Some(path) => super::read_policy_file(path)?,
            None => Vec::new(),
        },
        rescan: Duration::from_secs(5),
        keeper: KeeperOptions {
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            ..Default::default()
        },
        limits: Default::default(),
        cni: Some(args.cni.options()),
        allow_host_cni: args.cni.allow_host_cni,
    };
    let stop = CancellationToken::new();
    tokio::spawn(super::cancel_on_signal(stop.clone()));
    serve(opts, stop).await.context("standalone agent")?;
    Ok(0)
}
