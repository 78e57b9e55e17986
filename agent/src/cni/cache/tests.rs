use super::*;

fn info() -> CachedInfo {
    CachedInfo {
        kind: CACHE_KIND.into(),
        container_id: "sandbox1".into(),
        config: br#"{"cniVersion":"1.0.0","name":"data","plugins":[{"type":"bridge"}]}"#.to_vec(),
        if_name: "net1".into(),
        network_name: "data".into(),
        netns: "/var/run/netns/demo-0".into(),
        cni_args: vec![["K8S_POD_NAME".into(), "demo-0".into()]],
        capability_args: Default::default(),
        result: Some(serde_json::json!({"cniVersion": "1.0.0"})),
        managed_by: Some(MANAGED_BY.into()),
        nes_reference: Some("data".into()),
        nes_seq: 7,
    }
}

#[test]
fn the_cache_file_is_libcnis_format_at_libcnis_path() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    cache.save(&info()).unwrap();
    let path = dir.path().join("results/data-sandbox1-net1");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["kind"], "cniCacheV1");
    assert_eq!(doc["containerId"], "sandbox1");
    assert_eq!(doc["ifName"], "net1");
    assert_eq!(doc["networkName"], "data");
    assert_eq!(doc["netns"], "/var/run/netns/demo-0");
    assert_eq!(
        doc["cniArgs"],
        serde_json::json!([["K8S_POD_NAME", "demo-0"]])
    );
    // Go encodes []byte as standard base64.
    assert_eq!(
        doc["config"],
        "eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoiZGF0YSIsInBsdWdpbnMiOlt7InR5cGUiOiJicmlkZ2UifV19"
    );
    assert_eq!(doc["result"]["cniVersion"], "1.0.0");
    assert_eq!(cache.attached("sandbox1"), vec![info()]);
}

#[test]
fn only_nes_entries_of_the_sandbox_count_as_attached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let runtime_eth0 = CachedInfo {
        if_name: "eth0".into(),
        network_name: "cbr0".into(),
        managed_by: None,
        ..info()
    };
    cache.save(&runtime_eth0).unwrap();
    let other_pod = CachedInfo {
        container_id: "sandbox2".into(),
        ..info()
    };
    cache.save(&other_pod).unwrap();
    cache.save(&info()).unwrap();
    assert_eq!(cache.attached("sandbox1"), vec![info()]);
    cache.remove(&info()).unwrap();
    cache.remove(&info()).unwrap(); // idempotent
    assert_eq!(cache.attached("sandbox1"), vec![]);
    assert!(dir.path().join("results/cbr0-sandbox1-eth0").exists());
}
