//! One module per subcommand.

use std::time::Duration;

use tokio::time::Instant;

use crate::args::GlobalArgs;
use crate::client::{self, Client, Endpoint, Rest};
use crate::error::{Error, Result};
use crate::output::Format;

pub mod attach;
pub mod completions;
pub mod configure;
pub mod get;
pub mod status;
pub mod subscribe;
pub mod unconfigure;
pub mod wait;
pub mod watch;

/// What every command needs: the client, the output format and the time budget.
#[derive(Debug, Clone)]
pub struct Context {
    pub client: Client,
    pub output: Format,
    pub timeout: Duration,
}

/// Where a pod's ServiceAccount namespace is mounted.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl Context {
    pub fn new(g: &GlobalArgs) -> Result<Self> {
        let client = match (&g.url, &g.socket) {
            (Some(url), _) => Client::rest(url, g.pod.clone(), rest(g)?)?,
            (None, Some(path)) => Client::new(
                Endpoint::Path(path.clone()),
                g.pod.clone(),
                g.allow_server_uid,
            ),
            (None, None) => Client::new(
                Endpoint::Abstract(g.abstract_name.clone()),
                g.pod.clone(),
                g.allow_server_uid,
            ),
        };
        Ok(Self {
            client,
            output: g.output,
            timeout: g.timeout,
        })
    }

    /// The deadline of an operation starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }
}

/// REST settings from the flags: namespace, token (when its file exists), extra CA.
fn rest(g: &GlobalArgs) -> Result<Rest> {
    let namespace = g
        .namespace
        .clone()
        .or_else(|| {
            std::fs::read_to_string(NAMESPACE_FILE)
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let token = match std::fs::read_to_string(&g.token_file) {
        Ok(t) => Some(t.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(Error::ReadFile {
                path: g.token_file.clone(),
                source,
            })
        }
    };
    let ca = match &g.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    Ok(Rest {
        namespace,
        token,
        tls: client::tls_config(ca.as_deref())?,
    })
}

/// The field manager: `--manager`/`NES_MANAGER`, else the caller's program name (the parent
/// process's `comm`), else `nescli`.
pub fn manager_name(explicit: Option<String>) -> String {
    if let Some(m) = explicit {
        return m;
    }
    let ppid = std::os::unix::process::parent_id();
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok();
    manager_from_comm(comm.as_deref())
}

/// `comm` trimmed, with characters a manager name cannot hold (see
/// `api::validate::check_manager`) replaced by `-`; `nescli` when it is missing or blank.
pub fn manager_from_comm(comm: Option<&str>) -> String {
    let name: String = comm
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:/".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.trim_matches('-').is_empty() {
        "nescli".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_is_the_parents_comm_or_nescli() {
        for (comm, want) in [
            (Some("myapp\n"), "myapp"),
            (Some("my app (x)\n"), "my-app--x-"),
            (Some("kworker/0:1"), "kworker/0:1"),
            (Some("()"), "nescli"),
            (Some("  \n"), "nescli"),
            (None, "nescli"),
        ] {
            assert_eq!(manager_from_comm(comm), want, "{comm:?}");
        }
        assert_eq!(manager_name(Some("explicit".into())), "explicit");
    }
}
