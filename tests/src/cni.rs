//! CNI attachment fixtures: the real plugins of Debian's `containernetworking-plugins`,
//! each wrapped to run in a host-like namespace of the test (so the machine's own links are
//! never touched), with conflists, libcni's cache and host-local's store in a temp dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::cni::keep::{self, PodRef};

use agent::cni::CniOptions;
use api::AttachmentSpec;

use crate::common::{require_root, skip, Netns};

const PLUGINS: &str = "/usr/lib/cni";
const REAL: [&str; 5] = ["bridge", "macvlan", "host-local", "static", "tuning"];

/// Plugins (wrapped to run in `host`), conflists, a cache and host-local's store, all temp.
pub struct Cni {
    pub host: Netns,
    pub dir: tempfile::TempDir,
    pub opts: CniOptions,
}

impl Cni {
    /// None (after a visible SKIP) when not root or the plugins are missing.
    pub fn new(tag: &str) -> Option<Self> {
        Self::in_host(tag, None)
    }

    /// Plugins run in `host` (a standalone agent's host namespace) or a new one.
    pub fn in_host(tag: &str, plugin_host: Option<&str>) -> Option<Self> {
        if !require_root() {
            return None;
        }
        if let Some(missing) = REAL.iter().find(|p| !Path::new(PLUGINS).join(p).exists()) {
            skip(&format!(
                "{PLUGINS}/{missing} missing (apt-get install containernetworking-plugins)"
            ));
            return None;
        }
        let host = Netns::new(&format!("{tag}h"));
        let host_name = host.name.clone();
        let host_name = plugin_host.map_or(host_name, str::to_string);
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["bin", "conf", "cache", "ipam"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        for p in REAL {
            script(
                &dir.path().join("bin"),
                p,
                &format!("exec ip netns exec {host_name} {PLUGINS}/{p}"),
            );
        }
        let opts = CniOptions {
            bin_dirs: vec![dir.path().join("bin")],
            conf_dir: dir.path().join("conf"),
            cache_dir: dir.path().join("cache"),
            timeout: Duration::from_secs(20),
        };
        Some(Self { host, dir, opts })
    }

    pub fn conflist(&self, name: &str, plugins: serde_json::Value) {
        let doc = serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::write(
            self.opts.conf_dir.join(format!("{name}.conflist")),
            doc.to_string(),
        )
        .expect("write conflist");
    }

    pub fn bridge_net(&self, name: &str, bridge: &str, subnet: &str) {
        let ipam =
            serde_json::json!({"type": "host-local", "subnet": subnet, "dataDir": self.ipam_dir()});
        self.conflist(
            name,
            serde_json::json!([{"type": "bridge", "bridge": bridge, "ipam": ipam}]),
        );
    }

    pub fn macvlan_net(&self, name: &str, master: &str) {
        self.conflist(
            name,
            serde_json::json!([{"type": "macvlan", "master": master, "mode": "bridge",
                "capabilities": {"ips": true}, "ipam": {"type": "static"}}]),
        );
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// Addresses host-local holds for network `name`.
    pub fn leases(&self, name: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir().join(name)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        out.sort();
        out
    }

    pub async fn pass(&self, pod: &PodRef, specs: &[AttachmentSpec]) -> Vec<api::AttachmentStatus> {
        let wants = keep::resolve_standalone(&self.opts, pod, specs);
        let saved = agent::saved::Saved::default();
        keep::converge(&self.opts, pod, &wants, &saved, &mut Default::default())
            .await
            .expect("a saved state is never refused")
    }
}

pub fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
