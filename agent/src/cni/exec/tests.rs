use super::*;

fn rt() -> RuntimeConf {
    RuntimeConf {
        container_id: "sandbox1".into(),
        netns: "/var/run/netns/demo-0".into(),
        ifname: "net1".into(),
        args: RuntimeConf::pod_args("ns1", "demo-0", "sandbox1", "uid-1"),
    }
}

#[test]
fn the_environment_is_exactly_the_cni_variables_and_a_fixed_path() {
    let env = environment(
        Command::Add,
        &rt(),
        &["/opt/cni/bin".into(), "/usr/lib/cni".into()],
    )
    .unwrap();
    let want: Vec<(String, String)> = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "sandbox1"),
        ("CNI_NETNS", "/var/run/netns/demo-0"),
        ("CNI_IFNAME", "net1"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=demo-0;K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-1",
        ),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ("PATH", PLUGIN_PATH),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env, want);
}

#[test]
fn cni_args_that_would_smuggle_another_argument_are_refused() {
    for (k, v) in [
        ("K", "a;IP=10.0.0.9"),
        ("K=X", "a"),
        ("", "a"),
        ("K", "a\0b"),
    ] {
        let mut r = rt();
        r.args = vec![(k.into(), v.into())];
        assert!(environment(Command::Add, &r, &[]).is_err(), "{k:?}={v:?}");
    }
}

#[tokio::test]
async fn the_plugin_sees_only_the_environment_built_for_its_call() {
    // SAFETY-free: a variable of the test process must not reach the plugin.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("envdump");
    std::fs::write(&plugin, "#!/bin/sh\nenv | sort | sed 's/.*/\"&\",/' | tr -d '\\n' | sed 's/^/{\"cniVersion\":\"1.0.0\",\"env\":[/; s/,$/]}/'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(
        &[dir.path().into()],
        "envdump",
        Command::Add,
        &rt(),
        b"{}",
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .unwrap();
    let vars: Vec<String> = out["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .map(|v| v.split('=').next().unwrap_or_default().to_string())
        .filter(|k| !["PWD", "SHLVL", "_", "OLDPWD"].contains(&k.as_str()))
        .collect();
    assert_eq!(
        vars,
        [
            "CNI_ARGS",
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_IFNAME",
            "CNI_NETNS",
            "CNI_PATH",
            "PATH"
        ]
    );
}

fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_plugins_error_object_is_the_message() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "fails",
        r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"no addresses left in range","details":"pool 10.9.0.0/30"}'; exit 1"#,
    );
    let err = run(
        &[dir.path().into()],
        "fails",
        Command::Add,
        &rt(),
        b"{}",
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "CNI plugin fails failed: no addresses left in range (pool 10.9.0.0/30)"
    );
}

#[tokio::test]
async fn a_plugin_past_its_deadline_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child.pid");
    script(
        dir.path(),
        "hangs",
        &format!("sleep 300 & echo $! > {}; wait", marker.display()),
    );
    let started = std::time::Instant::now();
    let err = run(
        &[dir.path().into()],
        "hangs",
        Command::Add,
        &rt(),
        b"{}",
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CniError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild is gone too (killed with the group; reaped by init or a zombie).
    let gone = crate::cni::exec::tests::wait_gone(pid);
    assert!(gone, "sleep {pid} outlived the deadline");
}

pub(super) fn wait_gone(pid: i32) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie (state Z) waiting for its reaper.
        if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

#[tokio::test]
async fn output_beyond_the_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "floods",
        "head -c 2000000 /dev/zero | tr '\\0' ' '; echo '{}'",
    );
    let err = run(
        &[dir.path().into()],
        "floods",
        Command::Add,
        &rt(),
        b"{}",
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CniError::BadOutput { .. }), "{err}");
}

#[test]
fn a_plugin_is_looked_up_in_the_bin_dirs_in_order() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    script(b.path(), "p", "true");
    assert_eq!(
        find_plugin(&[a.path().into(), b.path().into()], "p").unwrap(),
        b.path().join("p")
    );
    script(a.path(), "p", "true");
    assert_eq!(
        find_plugin(&[a.path().into(), b.path().into()], "p").unwrap(),
        a.path().join("p")
    );
    assert!(find_plugin(&[a.path().into()], "missing").is_err());
}
