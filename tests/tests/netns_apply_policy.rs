//! Root test: the one-shot `nes-agent apply --policy` refuses what the admin policy forbids
//! before it opens the netns (zero writes), and applies what it allows.

use std::process::Command;

use nes_tests::bins;
use nes_tests::common::{require_root, NetlinkWitness, PodFixture};

fn policy_file(dir: &std::path::Path, netns: &str) -> std::path::PathBuf {
    let path = dir.join("policy.yaml");
    let text = format!(
        "apiVersion: nes.network-config.io/v1alpha1\n\
         kind: NetworkConfigurationPolicy\n\
         metadata: {{name: tenants}}\n\
         spec:\n  \
           namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {netns}}}}}\n  \
           addresses: {{ipv4: [10.20.0.0/16]}}\n"
    );
    std::fs::write(&path, text).expect("write the policy");
    path
}

fn spec_file(dir: &std::path::Path, address: &str) -> std::path::PathBuf {
    let path = dir.join(format!("spec-{address}.yaml").replace('/', "_"));
    std::fs::write(
        &path,
        format!("interfaces:\n  - name: eth0\n    addresses: [\"{address}\"]\n"),
    )
    .expect("write the spec");
    path
}

fn apply(fx: &PodFixture, spec: &std::path::Path, policy: &std::path::Path) -> (i32, String) {
    let out = Command::new(bins::nes_agent())
        .arg("apply")
        .arg("--netns")
        .arg(fx.pod.path())
        .arg("--host-netns")
        .arg(fx.host.path())
        .arg("-f")
        .arg(spec)
        .arg("--policy")
        .arg(policy)
        .output()
        .expect("run nes-agent apply");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn apply_with_a_policy_refuses_an_address_outside_it_and_writes_nothing() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("applypol");
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_file(dir.path(), &fx.pod.name);

    let witness = NetlinkWitness::start(&fx.pod).await;
    let (code, stderr) = apply(&fx, &spec_file(dir.path(), "10.30.0.5/24"), &policy);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("denied by NetworkConfigurationPolicy \"tenants\"")
            && stderr.contains("spec.interfaces[0].addresses[0]"),
        "{stderr}"
    );
    assert_eq!(
        witness.stop().await,
        Vec::<String>::new(),
        "a refusal wrote"
    );
    assert!(!fx
        .pod
        .addresses("eth0")
        .contains(&"10.30.0.5/24".to_string()));

    let (code, stderr) = apply(&fx, &spec_file(dir.path(), "10.20.0.5/24"), &policy);
    assert_eq!(code, 0, "{stderr}");
    assert!(fx
        .pod
        .addresses("eth0")
        .contains(&"10.20.0.5/24".to_string()));
}
