//! CNI attachment flags, shared by the agent's modes.

use std::path::PathBuf;
use std::time::Duration;

use crate::cni::CniOptions;

#[derive(clap::Args, Debug, Clone)]
pub struct CniArgs {
    /// Directory of CNI network configuration lists; an attachment names one by its `name`.
    #[arg(long, default_value = "/etc/cni/net.d", env = "NES_CNI_CONF_DIR")]
    pub cni_conf_dir: PathBuf,
    /// Directories searched for CNI plugins, in order (repeat, or separate with commas).
    #[arg(
        long = "cni-bin-dir",
        value_delimiter = ',',
        default_values = ["/opt/cni/bin", "/usr/lib/cni"],
        env = "NES_CNI_BIN_DIRS"
    )]
    pub cni_bin_dirs: Vec<PathBuf>,
    /// libcni's cache directory: results are kept in its results/ as the runtime's are.
    #[arg(long, default_value = "/var/lib/cni", env = "NES_CNI_CACHE_DIR")]
    pub cni_cache_dir: PathBuf,
    /// Deadline of one CNI plugin call (seconds); the plugin is killed at it.
    #[arg(long, default_value_t = 30)]
    pub cni_timeout_seconds: u64,
    /// Allow CNI attachments: their plugins run as root on this node and may create host
    /// links (bridge) or use host parents (macvlan). The admin policy must allow them too
    /// (host.cniAttachments).
    #[arg(long, env = "NES_ALLOW_HOST_CNI")]
    pub allow_host_cni: bool,
}

impl CniArgs {
    pub fn options(&self) -> CniOptions {
        CniOptions {
            bin_dirs: self.cni_bin_dirs.clone(),
            conf_dir: self.cni_conf_dir.clone(),
            cache_dir: self.cni_cache_dir.clone(),
            timeout: Duration::from_secs(self.cni_timeout_seconds.max(1)),
        }
    }
}
