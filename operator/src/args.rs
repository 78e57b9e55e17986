//! Command-line flags of `nes-operator` (names and defaults fixed by the integration contract).

use std::net::SocketAddr;

use clap::Parser;

/// nes-operator: the cliserver REST API, ownership and cleanup of nes's custom resources,
/// and the mutating admission webhook that injects `nes-shim` into labelled pods.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(name = "nes-operator", version, about, long_about = None)]
pub struct Args {
    /// Namespace the operator runs in: its Lease, TLS Secret, CA ConfigMap and the agent's
    /// ServiceAccount live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "nes-system")]
    pub namespace: String,

    /// This replica's pod name: the holder identity in the leader-election Lease and the
    /// reporting instance of Kubernetes Events.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: String,

    /// Address of the HTTPS server (cliserver REST API and the admission webhook).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen_addr: SocketAddr,

    /// Address of the plain-HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub probe_addr: SocketAddr,

    /// Service in front of the operator; the serving certificate covers its DNS names.
    #[arg(long, default_value = "nes-operator")]
    pub service_name: String,

    /// MutatingWebhookConfiguration and ValidatingWebhookConfiguration (both of this name)
    /// whose caBundle the operator keeps current.
    #[arg(long, default_value = "nes-operator")]
    pub webhook_config_name: String,

    /// Secret (in --namespace) holding the operator's CA and serving certificate.
    #[arg(long, default_value = "nes-operator-tls")]
    pub tls_secret_name: String,

    /// ConfigMap (in --namespace, key ca.crt) where the operator publishes its CA for agents.
    #[arg(long, default_value = "nes-ca")]
    pub ca_configmap_name: String,

    /// Image of the injected nes-shim container (the agent image).
    #[arg(long, env = "NES_SHIM_IMAGE")]
    pub shim_image: String,

    /// imagePullPolicy of the injected nes-shim container (Always, IfNotPresent or Never).
    #[arg(long, default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub shim_image_pull_policy: String,

    /// ServiceAccount (in --namespace) of the node agents; only its tokens may forward
    /// requests on behalf of a pod (header X-Nes-Pod-Uid, with X-Nes-Pod-Name for the pod's
    /// subscriptions).
    #[arg(long, default_value = "nes-agent")]
    pub agent_service_account: String,

    /// coordination.k8s.io Lease (in --namespace) electing the replica that runs the controllers.
    #[arg(long, default_value = "nes-operator")]
    pub lease_name: String,

    /// PEM file of extra CA certificates to trust for NetworkCare webhook receivers, besides
    /// the system roots (e.g. a private CA).
    #[arg(long, env = "NES_WEBHOOK_CA_BUNDLE", value_name = "PATH")]
    pub webhook_ca_bundle: Option<std::path::PathBuf>,

    /// A cluster address range (service or pod CIDR) NetworkCare webhooks may not reach
    /// unless a NetworkConfigurationPolicy's webhookDestinations.allowCidrs lists it;
    /// repeatable. Give the cluster's service and pod CIDRs (e.g. --cluster-cidr
    /// 10.96.0.0/12 --cluster-cidr 10.244.0.0/16); private, loopback and link-local ranges
    /// are refused in any case.
    #[arg(
        long = "cluster-cidr",
        value_name = "CIDR",
        default_value = "10.96.0.0/12"
    )]
    pub cluster_cidrs: Vec<ipnet::IpNet>,

    /// Audience a bearer token sent to the cliserver must be minted for (TokenReview
    /// spec.audiences); repeatable. The agents' projected token volume asks for it; a
    /// direct caller mints one with `kubectl create token SA --audience nes-operator`.
    /// A token for the API server's own audience is refused, so that one sent here could
    /// not be replayed against the API server.
    #[arg(long = "token-audience", value_name = "AUDIENCE", default_value = crate::auth::TOKEN_AUDIENCE)]
    pub token_audiences: Vec<String>,
}

impl Args {
    /// The Kubernetes user name of the agents' ServiceAccount tokens.
    pub fn agent_username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.agent_service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Args;

    const FLAGS: &[&str] = &[
        "--namespace",
        "--pod-name",
        "--listen-addr",
        "--probe-addr",
        "--service-name",
        "--webhook-config-name",
        "--tls-secret-name",
        "--ca-configmap-name",
        "--shim-image",
        "--shim-image-pull-policy",
        "--agent-service-account",
        "--lease-name",
        "--cluster-cidr",
        "--token-audience",
    ];

    #[test]
    fn help_documents_every_contract_flag() {
        let help = Args::command().render_long_help().to_string();
        for flag in FLAGS {
            let line = help
                .lines()
                .skip_while(|l| !l.trim_start().starts_with(flag))
                .nth(1)
                .unwrap_or_default();
            assert!(
                help.contains(flag) && !line.trim().is_empty(),
                "--help lacks {flag} or its description:\n{help}"
            );
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let a = Args::try_parse_from([
            "nes-operator",
            "--shim-image",
            "nes-agent:1",
            "--pod-name",
            "op-0",
        ])
        .unwrap();
        assert_eq!(a.listen_addr.to_string(), "0.0.0.0:8443");
        assert_eq!(a.probe_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(a.tls_secret_name, "nes-operator-tls");
        assert_eq!(a.ca_configmap_name, "nes-ca");
        assert_eq!(a.shim_image_pull_policy, "IfNotPresent");
        assert_eq!(a.lease_name, "nes-operator");
        assert_eq!(a.token_audiences, ["nes-operator"]);
        assert_eq!(
            a.agent_username(),
            "system:serviceaccount:nes-system:nes-agent"
        );
    }

    #[test]
    fn shim_image_and_pod_name_are_required() {
        // Their env fallbacks are not set by the test harness.
        if std::env::var_os("NES_SHIM_IMAGE").is_none() && std::env::var_os("POD_NAME").is_none() {
            assert!(Args::try_parse_from(["nes-operator", "--pod-name", "p"]).is_err());
            assert!(Args::try_parse_from(["nes-operator", "--shim-image", "i"]).is_err());
        }
    }
}
