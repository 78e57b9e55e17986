//! One plugin call: the environment built for it alone (`env_clear`, then exactly the CNI
//! variables), the configuration on stdin, the result or error object on stdout (bounded),
//! and a deadline after which the plugin's whole process group is killed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::types::CniErrorObject;
use super::CniError;

/// Output read from a plugin at most (a result is a few KiB; more is refused, not buffered).
pub const MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
/// `PATH` given to plugins (some run `iptables` or `ip`); nothing from the agent's own.
pub const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CNI operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

/// Who and where a network is attached: the pod's sandbox and its interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConf {
    /// The pod's sandbox id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// Path of the pod's netns (`CNI_NETNS`).
    pub netns: PathBuf,
    /// Interface name inside it (`CNI_IFNAME`).
    pub ifname: String,
    /// `CNI_ARGS` pairs, e.g. `K8S_POD_NAMESPACE`.
    pub args: Vec<(String, String)>,
}

impl RuntimeConf {
    /// The Kubernetes `CNI_ARGS` of a pod, as the kubelet's runtime passes them.
    pub fn pod_args(
        namespace: &str,
        name: &str,
        sandbox: &str,
        uid: &str,
    ) -> Vec<(String, String)> {
        [
            ("IgnoreUnknown", "true"),
            ("K8S_POD_NAMESPACE", namespace),
            ("K8S_POD_NAME", name),
            ("K8S_POD_INFRA_CONTAINER_ID", sandbox),
            ("K8S_POD_UID", uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// The whole environment of one call (pure): the CNI variables and a fixed `PATH`. Values
/// that would change the meaning of `CNI_ARGS` (`;`, `=`) or of any variable (NUL) are
/// refused.
pub fn environment(
    command: Command,
    rt: &RuntimeConf,
    bin_dirs: &[PathBuf],
) -> Result<Vec<(String, String)>, CniError> {
    for (k, v) in &rt.args {
        let bad = |s: &str| s.contains([';', '=', '\0']);
        if k.is_empty() || bad(k) || bad(v) {
            return Err(CniError::Args(format!(
                "CNI_ARGS {k:?}={v:?}: keys and values may not contain ';', '=' or NUL"
            )));
        }
    }
    let args = rt
        .args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let path = bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let env = vec![
        ("CNI_COMMAND", command.as_str().to_string()),
        ("CNI_CONTAINERID", rt.container_id.clone()),
        ("CNI_NETNS", rt.netns.display().to_string()),
        ("CNI_IFNAME", rt.ifname.clone()),
        ("CNI_ARGS", args),
        ("CNI_PATH", path),
        ("PATH", PLUGIN_PATH.to_string()),
    ];
    if env.iter().any(|(_, v)| v.contains('\0')) {
        return Err(CniError::Args("a CNI variable contains NUL".into()));
    }
    Ok(env.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// The first executable file called `plugin` in `bin_dirs`.
pub fn find_plugin(bin_dirs: &[PathBuf], plugin: &str) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt;
    bin_dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| CniError::PluginMissing {
            plugin: plugin.to_string(),
            dirs: bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
}

/// Runs `plugin` for `command` with `stdin` as its configuration; the parsed stdout on
/// success (`None` when it printed nothing, as DEL and CHECK do).
pub async fn run(
    bin_dirs: &[PathBuf],
    plugin: &str,
    command: Command,
    rt: &RuntimeConf,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Option<Value>, CniError> {
    let path = find_plugin(bin_dirs, plugin)?;
    let env = environment(command, rt, bin_dirs)?;
    let io = |e: std::io::Error| CniError::Io {
        plugin: plugin.to_string(),
        message: e.to_string(),
    };
    let mut child = tokio::process::Command::new(&path)
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a deadline kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(io)?;
    let pgid = child.id();
    let talk = talk(&mut child, stdin);
    let (status, stdout, stderr) = match tokio::time::timeout(timeout, talk).await {
        Ok(done) => done.map_err(io)?,
        Err(_) => {
            kill_group(pgid);
            let _ = child.wait().await;
            return Err(CniError::Timeout {
                plugin: plugin.to_string(),
                after: timeout,
            });
        }
    };
    // A plugin that exits may leave children behind; they are not nes's to keep.
    kill_group(pgid);
    interpret(plugin, &path, status, &stdout, &stderr)
}

/// Writes the configuration, reads both outputs (bounded) and waits for the exit.
async fn talk(
    child: &mut tokio::process::Child,
    stdin: &[u8],
) -> std::io::Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>)> {
    let mut input = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let err = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("no stderr"))?;
    let write = async move {
        // A plugin that exits without reading its input is not an error of ours.
        let _ = input.write_all(stdin).await;
        drop(input);
    };
    let (_, stdout, stderr) = tokio::join!(write, read_bounded(out), read_bounded(err));
    let status = child.wait().await?;
    Ok((status, stdout?, stderr?))
}

/// Reads at most one byte more than [`MAX_OUTPUT_BYTES`] (so too much is noticed), then
/// drains the rest unbuffered so the plugin never blocks on a full pipe.
async fn read_bounded(r: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut r = r;
    let mut buf = Vec::new();
    (&mut r)
        .take(MAX_OUTPUT_BYTES + 1)
        .read_to_end(&mut buf)
        .await?;
    tokio::io::copy(&mut r, &mut tokio::io::sink()).await?;
    Ok(buf)
}

fn kill_group(pgid: Option<u32>) {
    if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        let _ =
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

fn interpret(
    plugin: &str,
    path: &Path,
    status: std::process::ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<Option<Value>, CniError> {
    if stdout.len() as u64 > MAX_OUTPUT_BYTES {
        return Err(CniError::BadOutput {
            plugin: plugin.to_string(),
            message: format!("more than {MAX_OUTPUT_BYTES} bytes on stdout"),
        });
    }
    if !status.success() {
        if let Ok(e) = serde_json::from_slice::<CniErrorObject>(stdout) {
            return Err(CniError::Plugin {
                plugin: plugin.to_string(),
                code: e.code,
                msg: api::limits::bounded_message(e.msg),
                details: api::limits::bounded_message(e.details),
            });
        }
        let output = if stderr.is_empty() { stdout } else { stderr };
        return Err(CniError::PluginCrashed {
            plugin: format!("{plugin} ({})", path.display()),
            status: status.to_string(),
            output: api::limits::bounded_message(
                String::from_utf8_lossy(output).trim().to_string(),
            ),
        });
    }
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(stdout)
        .map(Some)
        .map_err(|e| CniError::BadOutput {
            plugin: plugin.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests;
