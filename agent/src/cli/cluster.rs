//! `nes-agent` with no subcommand: the in-cluster agent of one node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cluster::forward::ForwardOptions;
use crate::cluster::upgrade::OwnPod;
use crate::cluster::{run as serve, Options};
use crate::cri::{CriConfig, CriResolver};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's name: pods with spec.nodeName equal to it are served.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The agent's own pod (downward API), on which it writes its upgrade report.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The namespace of the agent's own pod.
    #[arg(long, env = "POD_NAMESPACE", default_value = "nes-system")]
    pub pod_namespace: String,
    /// The container runtime's CRI socket (containerd or CRI-O).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub cri_socket: PathBuf,
    /// The operator's cliserver, to which pod socket writes are forwarded.
    #[arg(long, default_value = "https://nes-operator.nes-system.svc:443")]
    pub cliserver_url: String,
    /// CA certificate (PEM) the cliserver's certificate must chain to.
    #[arg(long, default_value = "/etc/nes/ca/ca.crt")]
    pub cliserver_ca: PathBuf,
    /// The agent's ServiceAccount token for the operator's audience (`nes-operator`, a
    /// projected token volume), re-read for every forwarded request.
    #[arg(long, default_value = "/var/run/secrets/nes/token")]
    pub token_file: PathBuf,
    /// Directory where what nes created in each pod's netns is recorded.
    #[arg(long, default_value = "/var/lib/nes")]
    pub state_dir: PathBuf,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub probe_addr: SocketAddr,
    /// The node's network namespace (veth peers and host parents live there).
    #[arg(long, default_value = "/proc/self/ns/net")]
    pub host_netns: PathBuf,
    #[command(flatten)]
    pub host_access: super::HostAccessArgs,
    /// CNI attachments (networks are the cluster's NetworkAttachmentDefinitions; the
    /// conflist directory is not read in cluster mode).
    #[command(flatten)]
    pub cni: super::cni::CniArgs,
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let Some(node) = args.node_name else {
        anyhow::bail!("--node-name (or env NODE_NAME) is required in cluster mode");
    };
    let forward = ForwardOptions {
        url: args.cliserver_url,
        ca_file: args.cliserver_ca,
        token_file: args.token_file,
        timeout: Duration::from_secs(10),
    };
    let opts = Options {
        host_netns: args.host_netns,
        host_access: args.host_access.access()?,
        state_dir: args.state_dir,
        probe_addr: Some(args.probe_addr),
        cni: args.cni.options(),
        allow_host_cni: args.cni.allow_host_cni,
        own_pod: args.pod_name.map(|name| OwnPod {
            namespace: args.pod_namespace,
            name,
        }),
        ..Options::new(node, forward)
    };
    // One TLS provider for the process (kube's client and the cliserver forwarder).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API server")?;
    let resolver = Arc::new(CriResolver::new(CriConfig::with_socket(args.cri_socket)));
    let stop = CancellationToken::new();
    tokio::spawn(super::cancel_on_signal(stop.clone()));
    serve(opts, client, resolver, stop)
        .await
        .context("cluster agent")?;
    Ok(0)
}
