//! nes's own CNI invoker (CNI spec 1.0): runs plugin binaries the way libcni does, without
//! touching the agent's process environment (each call builds its own with `env_clear`).
//!
//! - [`conf`]: network configuration lists found by name in a directory;
//! - [`exec`]: one plugin call (environment, deadline, bounded output, error objects);
//! - [`chain`]: a list's plugins in order for ADD (with `prevResult`), reverse for DEL;
//! - [`cache`]: results kept under `CACHE/results` in libcni's own format, so the runtime
//!   and Multus see what nes attached, marked as nes's so nes never removes theirs;
//! - [`keep`]: one level-triggered pass from declared attachments to attached ones.

pub mod attacher;
pub mod cache;
pub mod chain;
pub mod conf;
pub mod exec;
pub mod keep;
pub mod types;

use std::path::PathBuf;
use std::time::Duration;

/// Where plugins, configurations and results live, and how long a call may take.
#[derive(Clone, Debug)]
pub struct CniOptions {
    /// Directories searched for plugin binaries, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Directory of network configuration lists (`*.conflist`, `*.conf`, `*.json`).
    pub conf_dir: PathBuf,
    /// libcni's cache directory: results are kept in its `results/` subdirectory.
    pub cache_dir: PathBuf,
    /// Deadline of one plugin call; the plugin's process group is killed at it.
    pub timeout: Duration,
}

impl Default for CniOptions {
    fn default() -> Self {
        Self {
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            conf_dir: "/etc/cni/net.d".into(),
            cache_dir: "/var/lib/cni".into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// What can go wrong running a CNI network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CniError {
    /// No configuration list of that name in the directory.
    #[error("no CNI network {name:?} in {dir}")]
    NoNetwork { name: String, dir: String },
    /// No NetworkAttachmentDefinition of that name in that namespace.
    #[error("no NetworkAttachmentDefinition {namespace}/{name}")]
    NoNad { namespace: String, name: String },
    /// The cluster's NetworkAttachmentDefinitions cannot be read (the CRD is missing, the
    /// agent may not list them, or they are not listed yet); the message starts with
    /// [`api::attach::NADS_UNAVAILABLE_REASON`].
    #[error("{reason}: {0}", reason = api::attach::NADS_UNAVAILABLE_REASON)]
    NadsUnavailable(String),
    /// A configuration list that cannot be used.
    #[error("CNI configuration {path}: {message}")]
    BadConf { path: String, message: String },
    /// The plugin binary is in none of the bin dirs.
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginMissing { plugin: String, dirs: String },
    /// The plugin answered with a CNI error object: its message is the status message.
    #[error("CNI plugin {plugin} failed: {msg}{}", details_suffix(.details))]
    Plugin {
        plugin: String,
        code: u32,
        msg: String,
        details: String,
    },
    /// The plugin failed without an error object.
    #[error("CNI plugin {plugin} failed ({status}): {output}")]
    PluginCrashed {
        plugin: String,
        status: String,
        output: String,
    },
    /// The plugin did not finish in time and was killed.
    #[error("CNI plugin {plugin} did not answer within {after:?}; killed")]
    Timeout { plugin: String, after: Duration },
    /// The plugin's output is not a result nes can read.
    #[error("CNI plugin {plugin} printed no valid result: {message}")]
    BadOutput { plugin: String, message: String },
    /// Starting the plugin, or talking to it, failed.
    #[error("CNI plugin {plugin}: {message}")]
    Io { plugin: String, message: String },
    /// Recording a result failed (the attachment is undone).
    #[error("recording the CNI result in {path}: {message}")]
    Cache { path: String, message: String },
    /// Values that cannot be passed to a plugin.
    #[error("{0}")]
    Args(String),
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}
