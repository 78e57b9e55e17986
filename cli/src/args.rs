//! The command line (clap derive) and the glue that keeps `configure`'s interface flags in
//! command-line order.

use std::path::PathBuf;
use std::time::Duration;

use api::care::EventKind;
use api::wire::POD_SOCKET_NAME;
use api::{InterfaceType, LinkMode, LinkState, NetworkConfigurationSpec, RouteSpec};
use clap::error::ErrorKind;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::fragment::{self, IfaceFlag};
use crate::output::Format;

/// nescli: declare, inspect and watch this pod's network configuration.
///
/// nescli talks to the nes node agent over the abstract unix socket @nes of the network
/// namespace it runs in, so from inside a pod it always addresses that pod. The host admin
/// uses a filesystem socket instead (--socket PATH, with --pod NAME). With --url it talks to
/// the operator's cliserver REST API instead (bearer token, --namespace, --pod NAME).
/// Subscriptions (`subscribe`, `watch --subscription`) belong to a namespace: over the socket
/// the pod's own, over --url the one --namespace names.
///
/// Exit codes: 0 ok; 1 rejected by the server (its problem is printed); 2 usage error;
/// 3 the agent is unreachable, not root, or did not answer in time.
#[derive(Parser, Debug)]
#[command(name = "nescli", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Filesystem unix socket to use instead of the pod's abstract socket @nes (e.g. the
    /// host admin socket).
    #[arg(long, global = true, env = "NES_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Pod to address (needs --socket, the admin socket, or --url).
    #[arg(long, global = true, value_name = "NAME")]
    pub pod: Option<String>,

    /// The operator's cliserver REST API, e.g. https://nes-operator.nes-system.svc, instead
    /// of the pod socket.
    #[arg(
        long,
        global = true,
        env = "NES_URL",
        value_name = "URL",
        conflicts_with = "socket"
    )]
    pub url: Option<String>,

    /// Namespace addressed over --url. Default: the pod's own (its ServiceAccount's
    /// namespace file), else `default`.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "NES_NAMESPACE",
        value_name = "NS"
    )]
    pub namespace: Option<String>,

    /// Bearer token file for --url (read when it exists).
    #[arg(
        long,
        global = true,
        env = "NES_TOKEN_FILE",
        value_name = "PATH",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub token_file: PathBuf,

    /// PEM CA certificates to trust for --url besides the system roots (e.g. the operator's
    /// CA from the nes-ca ConfigMap).
    #[arg(long, global = true, env = "NES_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// How long to keep trying: connecting (the agent may be restarting: a refused or absent
    /// socket is retried with backoff), waiting for answers, and `wait`. E.g. 500ms, 30s, 2m.
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Abstract socket name to use instead of `nes` (tests and debugging).
    #[arg(long, global = true, hide = true, env = "NES_ABSTRACT_NAME", default_value = POD_SOCKET_NAME)]
    pub abstract_name: String,

    /// Accept a server running as this uid instead of root (tests run unprivileged).
    #[arg(
        long,
        global = true,
        hide = true,
        env = "NES_ALLOW_SERVER_UID",
        default_value_t = 0
    )]
    pub allow_server_uid: u32,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Declare this manager's configuration fragment (replaces its previous fragment)
    ///
    /// From a file: `-f FILE` (YAML or JSON; `-` is stdin) holding a fragment
    /// (`interfaces:` / `routes:`) or a whole NetworkConfiguration (its spec is used).
    ///
    /// From flags: `--interface NAME` starts an interface; the interface flags after it
    /// (--type, --parent, --vlan-id, --mode, --vni, --peer, --mtu, --state, --address) apply to
    /// it, until the next --interface. `--route` is repeatable.
    ///
    /// The agent merges every manager's fragment and validates the result; entries another
    /// manager declared (e.g. the interface a route's dev names) need not be repeated.
    #[command(verbatim_doc_comment)]
    Configure(Box<ConfigureArgs>),

    /// Withdraw this manager's fragment (what it alone declared is removed).
    Unconfigure(ManagerArgs),

    /// Hot-plug a whole CNI network (a NetworkAttachmentDefinition; on a standalone host a
    /// conflist by name) into this pod, as its own fragment (manager `attach:NETWORK`).
    Attach(AttachArgs),

    /// Remove an attachment made with `nescli attach` (its plugin's DEL releases its IP).
    Detach(DetachArgs),

    /// Print the merged desired configuration and which manager owns each entry.
    Get,

    /// Print the live status: interfaces, routes and conditions, read from the kernel.
    Status,

    /// Follow events (link, address, route, config), one per line; reconnects on its own.
    Watch(WatchArgs),

    /// Wait until the configuration is applied (exit 0) or --timeout passes (exit 3).
    Wait(WaitArgs),

    /// Subscribe to the network events of pods: create a NetworkCare
    ///
    /// The NetworkCare is created in the pod's own namespace over the pod socket, or in
    /// --namespace over --url. Read its events with `nescli watch --subscription NAME`, or
    /// have them POSTed to --webhook. When nescli runs in a pod, the subscription is owned by
    /// the pod's workload and disappears with it.
    #[command(verbatim_doc_comment)]
    Subscribe(SubscribeArgs),

    /// Print a shell completion script, e.g. `nescli completions bash > /etc/bash_completion.d/nescli`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug, Clone)]
pub struct AttachArgs {
    /// The network: `name` (the pod's namespace) or `namespace/name`.
    pub network: String,
    /// Interface name in the pod (default: `net` + 12 hex digits derived from the network).
    #[arg(long)]
    pub interface: Option<String>,
    /// Address asked of the plugin (CIDR; repeatable), for plugins with the `ips` capability.
    #[arg(long)]
    pub ip: Vec<String>,
    /// MAC address asked of the plugin, for plugins with the `mac` capability.
    #[arg(long)]
    pub mac: Option<String>,
    /// Field manager of the attachment's fragment (default `attach:NETWORK`).
    #[arg(long, value_parser = parse_manager)]
    pub manager: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DetachArgs {
    /// The network, as given to `nescli attach`.
    pub network: String,
    /// Field manager the attachment was made with (default `attach:NETWORK`).
    #[arg(long, value_parser = parse_manager)]
    pub manager: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ManagerArgs {
    /// Field manager: whose fragment this is. Default: the caller's program name (the parent
    /// process's comm, /proc/PPID/comm), or `nescli` when it cannot be read.
    #[arg(long, env = "NES_MANAGER", value_name = "NAME", value_parser = parse_manager)]
    pub manager: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigureArgs {
    #[command(flatten)]
    pub manager: ManagerArgs,

    /// Then wait, on the same connection, until the pass for this change ran: exit 0 when
    /// applied, 1 when it failed, 3 when --timeout passes first (as `wait --for=applied`).
    #[arg(long)]
    pub wait: bool,

    /// Fragment file, YAML or JSON (`-` reads stdin).
    #[arg(short = 'f', long = "file", visible_alias = "filename", value_name = "FILE",
          conflicts_with_all = ["interface", "route"])]
    pub file: Option<PathBuf>,

    /// Start an interface block; the interface flags after it apply to this interface.
    #[arg(long, value_name = "NAME", value_parser = fragment::parse_ifname, help_heading = "Flag form")]
    pub interface: Vec<String>,

    /// Interface type: existing (default), vlan, macvlan, ipvlan, bridge, veth, vxlan.
    #[arg(long = "type", id = "type", value_name = "TYPE", value_parser = fragment::parse_wire_enum::<InterfaceType>, help_heading = "Flag form")]
    pub kind: Vec<InterfaceType>,

    /// Parent link (vlan, macvlan, ipvlan, vxlan).
    #[arg(long, value_name = "IF", value_parser = fragment::parse_ifname, help_heading = "Flag form")]
    pub parent: Vec<String>,

    /// VLAN id, 1-4094.
    #[arg(long, value_name = "ID", help_heading = "Flag form")]
    pub vlan_id: Vec<u16>,

    /// macvlan mode (private, vepa, bridge, passthru) or ipvlan mode (l2, l3, l3s).
    #[arg(long, value_name = "MODE", value_parser = fragment::parse_wire_enum::<LinkMode>, help_heading = "Flag form")]
    pub mode: Vec<LinkMode>,

    /// VXLAN network identifier.
    #[arg(long, value_name = "VNI", help_heading = "Flag form")]
    pub vni: Vec<u32>,

    /// veth: name of the host-side end.
    #[arg(long, value_name = "NAME", value_parser = fragment::parse_ifname, help_heading = "Flag form")]
    pub peer: Vec<String>,

    /// MTU.
    #[arg(long, value_name = "BYTES", help_heading = "Flag form")]
    pub mtu: Vec<u32>,

    /// Administrative state: up or down.
    #[arg(long, value_name = "STATE", value_parser = fragment::parse_wire_enum::<LinkState>, help_heading = "Flag form")]
    pub state: Vec<LinkState>,

    /// Address in CIDR form, e.g. 10.0.0.5/24 or fd00::5/64 (repeatable).
    #[arg(long, value_name = "CIDR", value_parser = fragment::parse_address, help_heading = "Flag form")]
    pub address: Vec<String>,

    /// Route DST[,via=GW][,dev=IF][,metric=N][,table=N] (repeatable). DST may be `default`.
    #[arg(long, value_name = "ROUTE", value_parser = fragment::parse_route, help_heading = "Flag form")]
    pub route: Vec<RouteSpec>,

    /// The fragment the flags describe (filled from the flags in command-line order).
    #[arg(skip)]
    pub fragment: Option<NetworkConfigurationSpec>,
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Resume after this sequence number (the last one you saw).
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,

    /// Follow this subscription (NetworkCare, in the pod's namespace or --namespace) instead
    /// of this pod.
    #[arg(long, value_name = "NAME")]
    pub subscription: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct SubscribeArgs {
    /// The subscription's (NetworkCare's) name: the subscriber's name.
    pub name: String,

    /// Pods to follow by label, e.g. `app=web`, `tier in (edge,core)`, `!canary`.
    #[arg(long, value_name = "SELECTOR", value_parser = crate::selector::parse)]
    pub selector: Option<LabelSelector>,

    /// Pods to follow by name (repeatable, or comma-separated).
    #[arg(long = "pod-name", value_name = "NAME", value_delimiter = ',')]
    pub pod_names: Vec<String>,

    /// Event kinds to deliver: link, address, route, config (default: all).
    #[arg(long, value_name = "KINDS", value_delimiter = ',',
          value_parser = fragment::parse_wire_enum::<EventKind>)]
    pub events: Vec<EventKind>,

    /// POST events to this HTTPS URL instead of keeping them for `watch --subscription`.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Condition to wait for.
    #[arg(long = "for", value_enum, value_name = "CONDITION")]
    pub condition: WaitFor,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// The Applied condition is True for the current generation.
    Applied,
}

impl Cli {
    /// Parses `std::env::args_os()`; on error prints clap's message and exits 2 (0 for
    /// `--help`/`--version`).
    pub fn parse_args() -> Cli {
        Self::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses an argument list, including the ordered `configure` flags.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        if cli.global.pod.is_some() && cli.global.socket.is_none() && cli.global.url.is_none() {
            return Err(cmd.error(
                ErrorKind::MissingRequiredArgument,
                "--pod needs --socket PATH (the admin socket) or --url URL; over @nes a pod addresses only itself",
            ));
        }
        let pod_scoped = match &cli.command {
            Command::Watch(w) => w.subscription.is_none(),
            Command::Subscribe(_) | Command::Completions { .. } => false,
            _ => true,
        };
        if pod_scoped && cli.global.url.is_some() && cli.global.pod.is_none() {
            return Err(cmd.error(
                ErrorKind::MissingRequiredArgument,
                "over --url, say which pod with --pod NAME (and --namespace NS)",
            ));
        }
        if let (Command::Configure(c), Some(("configure", sub))) =
            (&mut cli.command, matches.subcommand())
        {
            // The subcommand (copied) only to word an error: a copy is most of a parse.
            let error = |kind, message: &dyn std::fmt::Display| {
                let sub = cmd.find_subcommand("configure");
                let mut sub =
                    sub.map_or_else(Cli::command, |c| c.clone().bin_name("nescli configure"));
                sub.error(kind, message)
            };
            let flags = ordered_flags(sub);
            if c.file.is_none() {
                if c.interface.is_empty() && c.route.is_empty() && flags.is_empty() {
                    return Err(error(
                        ErrorKind::MissingRequiredArgument,
                        &"configure needs -f FILE, or --interface/--route flags",
                    ));
                }
                let fragment = fragment::build(&flags, &c.route)
                    .map_err(|e| error(ErrorKind::ArgumentConflict, &e))?;
                c.fragment = Some(fragment);
            } else if !flags.is_empty() {
                return Err(error(
                    ErrorKind::ArgumentConflict,
                    &"-f FILE cannot be combined with the interface flags",
                ));
            }
        }
        Ok(cli)
    }
}

/// The interface flags of `configure` in the order they were given.
fn ordered_flags(m: &ArgMatches) -> Vec<IfaceFlag> {
    let mut all: Vec<(usize, IfaceFlag)> = Vec::new();
    collect(m, "interface", IfaceFlag::Interface, &mut all);
    collect(m, "type", IfaceFlag::Type, &mut all);
    collect(m, "parent", IfaceFlag::Parent, &mut all);
    collect(m, "vlan_id", IfaceFlag::VlanId, &mut all);
    collect(m, "mode", IfaceFlag::Mode, &mut all);
    collect(m, "vni", IfaceFlag::Vni, &mut all);
    collect(m, "peer", IfaceFlag::Peer, &mut all);
    collect(m, "mtu", IfaceFlag::Mtu, &mut all);
    collect(m, "state", IfaceFlag::State, &mut all);
    collect(m, "address", IfaceFlag::Address, &mut all);
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, f)| f).collect()
}

fn collect<T: Clone + Send + Sync + 'static>(
    m: &ArgMatches,
    id: &str,
    wrap: fn(T) -> IfaceFlag,
    out: &mut Vec<(usize, IfaceFlag)>,
) {
    let (Some(indices), Some(values)) = (m.indices_of(id), m.get_many::<T>(id)) else {
        return;
    };
    out.extend(indices.zip(values.cloned().map(wrap)));
}

/// A field manager name (1-128 of letters, digits and `. _ - : /`).
pub fn parse_manager(s: &str) -> Result<String, String> {
    api::validate::check_manager(s).map(|()| s.to_string())
}

/// A duration as humantime reads it (`500ms`, `1.5s`, `2m`, `1h 30m`, `1d`), or a plain
/// number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let seconds = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if seconds {
        humantime::parse_duration(&format!("{s}s"))
    } else {
        humantime::parse_duration(s)
    };
    parsed.map_err(|e| format!("{s:?} is not a duration such as 500ms, 30s, 2m or 1h: {e}"))
}

#[cfg(test)]
mod tests;
