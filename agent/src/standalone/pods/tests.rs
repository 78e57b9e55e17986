use std::time::Instant;

use super::*;
use crate::standalone::store::FileStore;

/// A PUT body of `addrs` addresses on eth0 and `routes` routes (the bench's big change).
fn big_body(addrs: usize, routes: usize) -> Vec<u8> {
    let addresses: Vec<String> = (0..addrs)
        .map(|i| format!("10.1.{}.{}/16", i / 250, i % 250 + 1))
        .collect();
    let routes: Vec<serde_json::Value> = (0..routes)
        .map(|i| {
            serde_json::json!({
                "dst": format!("172.{}.{}.0/24", 16 + i / 256, i % 256),
                "via": "10.1.255.254",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "interfaces": [{"name": "eth0", "addresses": addresses}],
        "routes": routes,
    }))
    .expect("json")
}

fn backend(dir: &Path) -> (FileBackend, watch::Receiver<Desired>) {
    let store: Arc<dyn DesiredStore> = Arc::new(FileStore::open(dir).expect("store"));
    let cares = Arc::new(
        Cares::open(
            dir,
            Arc::default(),
            CancellationToken::new(),
            super::super::cares::LINGER,
        )
        .expect("cares"),
    );
    let (desired, rx) = watch::channel(Desired::default());
    let backend = FileBackend {
        name: "big-0".into(),
        store,
        record: tokio::sync::Mutex::new(Stored::new(PodRecord::default())),
        owned: Arc::default(),
        desired,
        cares,
        unreadable: None,
        problem: Default::default(),
        policy: Gate {
            governing: Governing::default_policy(),
            node: api::host::HostAccess::default(),
        },
        validated: AtomicI64::new(-1),
        allow_host_cni: false,
    };
    (backend, rx)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The in-process cost of a 500-address + 1000-route PUT, phase by phase (printed as
/// MEASURE lines): the body parsed, then the backend's one merge, one validation, policy
/// check and state file write. What is stored, handed to the keeper and answered is the
/// fragment itself.
#[tokio::test]
async fn a_big_put_is_stored_handed_over_and_answered_as_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, desired) = backend(dir.path());
    let body = big_body(500, 1000);
    let t = Instant::now();
    let fragment: NetworkConfigurationSpec = api::wire::parse_json(&body, "spec").expect("parse");
    let parse = ms(t);
    let t = Instant::now();
    let view = backend
        .do_apply("bench", fragment.clone())
        .await
        .expect("apply");
    let apply = ms(t);
    let t = Instant::now();
    api::validate(&fragment).expect("valid");
    let validate = ms(t);
    let t = Instant::now();
    let merged = merge([("bench", &fragment)]).expect("merge");
    let merge_once = ms(t);
    let t = Instant::now();
    backend
        .store
        .save("big-1", &backend.record.lock().await.record)
        .expect("save");
    let save = ms(t);
    println!(
        "MEASURE big PUT in process: parse {parse:.2} ms, backend apply {apply:.2} ms \
         (of which: one validation {validate:.2} ms, one merge {merge_once:.2} ms, \
         state file write {save:.2} ms); removed by this change: two more merges and two \
         more validations (fragment alone, then the keeper's pass), about {:.2} ms",
        2.0 * (merge_once + validate)
    );
    assert_eq!(merged.spec, fragment);
    assert_eq!(view.generation, 1);
    assert_eq!(*view.spec, fragment);
    assert_eq!(*desired.borrow().spec, fragment);
    assert_eq!(desired.borrow().generation, 1);
    let stored = backend.store.load("big-0").expect("load").expect("stored");
    assert_eq!(stored.fragments.get("bench"), Some(&fragment));
}

#[tokio::test]
async fn a_fragment_another_manager_conflicts_with_is_refused_naming_the_owner_and_stores_nothing()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, desired) = backend(dir.path());
    let mtu = |mtu: u32| -> NetworkConfigurationSpec {
        serde_json::from_value(serde_json::json!({"interfaces": [{"name": "eth0", "mtu": mtu}]}))
            .expect("spec")
    };
    backend.do_apply("b", mtu(1500)).await.expect("first");
    let err = backend.do_apply("a", mtu(9000)).await.unwrap_err();
    assert_eq!(err.0.status, 409, "{:?}", err.0);
    assert!(
        err.0
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("\"b\""),
        "the owner is named: {:?}",
        err.0
    );
    assert_eq!(desired.borrow().generation, 1);
    let stored = backend.store.load("big-0").expect("load").expect("stored");
    assert_eq!(stored.fragments.len(), 1);
    let view = backend.config().await.expect("config");
    assert_eq!(*view.spec, mtu(1500));
}

#[tokio::test]
async fn an_invalid_fragment_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, desired) = backend(dir.path());
    // The fragment's own repeat is named by its index.
    let bad: NetworkConfigurationSpec = serde_json::from_value(serde_json::json!({
        "interfaces": [{"name": "eth0", "addresses": ["10.0.0.1/24", "10.0.0.1/24"]}]
    }))
    .expect("spec");
    let err = backend.do_apply("a", bad).await.unwrap_err();
    assert_eq!(err.0.status, 422, "{:?}", err.0);
    assert!(
        err.0
            .errors
            .iter()
            .any(|p| p.field == "spec.interfaces[0].addresses[1]"),
        "{:?}",
        err.0
    );
    assert_eq!(desired.borrow().generation, 0);
    assert_eq!(backend.store.load("big-0").expect("load"), None);
}

/// A change's save writes the ownership record as it is when the save runs, not the copy
/// in the pod's record: a pass records what it adds on the ownership record's own lock,
/// and a save must not put an older one back over it.
#[tokio::test]
async fn a_save_keeps_the_ownership_record_a_pass_wrote_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, _desired) = backend(dir.path());
    let mut recorded = Owned::default();
    recorded.add_address("eth0", "10.9.0.5/24".into());
    backend.save_owned(&recorded).await.expect("recorded");
    let fragment: NetworkConfigurationSpec =
        serde_json::from_value(serde_json::json!({"interfaces": [{"name": "eth0"}]}))
            .expect("spec");
    backend.do_apply("app", fragment).await.expect("apply");
    let loaded = backend.store.load("big-0").expect("load").expect("record");
    assert_eq!(loaded.owned, recorded);
    let file: Owned = serde_json::from_slice(
        &std::fs::read(dir.path().join("owned/big-0.json")).expect("the ownership file"),
    )
    .expect("json");
    assert_eq!(file, recorded);
}
