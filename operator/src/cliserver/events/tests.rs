use api::{InterfaceStatus, RouteStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::fixtures::*;

const BEARER: (&str, &str) = ("authorization", "Bearer tok");

fn iface(name: &str, oper: &str, mtu: u32, addresses: &[&str]) -> InterfaceStatus {
    InterfaceStatus {
        name: name.into(),
        state: ObjectState::Applied,
        error: None,
        index: Some(7),
        mac: None,
        mtu: Some(mtu),
        oper_state: Some(oper.into()),
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
    }
}

fn route(dst: &str, state: ObjectState) -> RouteStatus {
    RouteStatus {
        dst: dst.into(),
        table: 254,
        metric: 0,
        state,
        error: None,
    }
}

fn applied(status: &str, reason: &str, message: &str, generation: i64) -> Condition {
    Condition {
        type_: "Applied".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

fn degraded(reason: &str, message: &str) -> Condition {
    Condition {
        type_: "Degraded".into(),
        ..applied("True", reason, message, 1)
    }
}

fn status(
    interfaces: Vec<InterfaceStatus>,
    routes: Vec<RouteStatus>,
    conditions: Vec<Condition>,
) -> NetworkConfigurationStatus {
    NetworkConfigurationStatus {
        interfaces,
        routes,
        conditions,
        ..Default::default()
    }
}

#[test]
fn status_changes_become_link_address_route_and_config_events() {
    let ifname = |s: &str| s.to_string();
    struct Case {
        name: &'static str,
        old: NetworkConfigurationStatus,
        new: NetworkConfigurationStatus,
        want: Vec<EventBody>,
    }
    let cases = vec![
        Case {
            name: "unchanged status says nothing",
            old: status(
                vec![iface("v10", "up", 1500, &["10.0.0.1/24"])],
                vec![],
                vec![],
            ),
            new: status(
                vec![iface("v10", "up", 1500, &["10.0.0.1/24"])],
                vec![],
                vec![],
            ),
            want: vec![],
        },
        Case {
            name: "a new link with an address",
            old: status(vec![], vec![], vec![]),
            new: status(
                vec![iface("v10", "up", 1500, &["10.0.0.1/24"])],
                vec![],
                vec![],
            ),
            want: vec![
                EventBody::LinkAdded {
                    ifname: ifname("v10"),
                },
                EventBody::LinkUp {
                    ifname: ifname("v10"),
                },
                EventBody::AddressAdded {
                    ifname: ifname("v10"),
                    address: "10.0.0.1/24".into(),
                },
            ],
        },
        Case {
            name: "link down, MTU and address changes",
            old: status(
                vec![iface("v10", "up", 1500, &["10.0.0.1/24"])],
                vec![],
                vec![],
            ),
            new: status(
                vec![iface("v10", "lowerlayerdown", 9000, &["10.0.0.2/24"])],
                vec![],
                vec![],
            ),
            want: vec![
                EventBody::LinkDown {
                    ifname: ifname("v10"),
                },
                EventBody::MtuChanged {
                    ifname: ifname("v10"),
                    old: Some(1500),
                    new: 9000,
                },
                EventBody::AddressRemoved {
                    ifname: ifname("v10"),
                    address: "10.0.0.1/24".into(),
                },
                EventBody::AddressAdded {
                    ifname: ifname("v10"),
                    address: "10.0.0.2/24".into(),
                },
            ],
        },
        Case {
            name: "a removed link takes its addresses",
            old: status(
                vec![iface("v10", "up", 1500, &["10.0.0.1/24"])],
                vec![],
                vec![],
            ),
            new: status(vec![], vec![], vec![]),
            want: vec![
                EventBody::AddressRemoved {
                    ifname: ifname("v10"),
                    address: "10.0.0.1/24".into(),
                },
                EventBody::LinkRemoved {
                    ifname: ifname("v10"),
                },
            ],
        },
        Case {
            name: "routes count only once applied",
            old: status(
                vec![],
                vec![
                    route("10.1.0.0/16", ObjectState::Applied),
                    route("10.2.0.0/16", ObjectState::Pending),
                ],
                vec![],
            ),
            new: status(
                vec![],
                vec![route("10.2.0.0/16", ObjectState::Applied)],
                vec![],
            ),
            want: vec![
                EventBody::RouteRemoved {
                    dst: "10.1.0.0/16".into(),
                    table: 254,
                    metric: 0,
                },
                EventBody::RouteAdded {
                    dst: "10.2.0.0/16".into(),
                    table: 254,
                    metric: 0,
                },
            ],
        },
        Case {
            name: "pending becomes applied",
            old: status(vec![], vec![], vec![applied("False", "Pending", "", 1)]),
            new: status(vec![], vec![], vec![applied("True", "Converged", "", 1)]),
            want: vec![EventBody::ConfigApplied {
                generation: 1,
                writes: 0,
            }],
        },
        Case {
            name: "a failure carries the agent's message",
            old: status(vec![], vec![], vec![applied("True", "Converged", "", 1)]),
            new: status(
                vec![],
                vec![],
                vec![applied("False", "Failed", "parent eth9 missing", 2)],
            ),
            want: vec![EventBody::ConfigFailed {
                generation: 2,
                error: "parent eth9 missing".into(),
            }],
        },
        Case {
            name: "a new degradation is reported",
            old: status(vec![], vec![], vec![]),
            new: status(
                vec![],
                vec![],
                vec![
                    degraded("SocketSquatted", "@nes is held by pid 7"),
                    applied("True", "Converged", "", 1),
                ],
            ),
            want: vec![
                EventBody::ConfigApplied {
                    generation: 1,
                    writes: 0,
                },
                EventBody::Degraded {
                    reason: "SocketSquatted".into(),
                    message: "@nes is held by pid 7".into(),
                },
            ],
        },
        Case {
            name: "an unchanged degradation says nothing",
            old: status(vec![], vec![], vec![degraded("SocketSquatted", "m")]),
            new: status(vec![], vec![], vec![degraded("SocketSquatted", "m")]),
            want: vec![],
        },
        Case {
            name: "a failed apply is ConfigFailed, not also Degraded",
            old: status(vec![], vec![], vec![applied("True", "Converged", "", 1)]),
            new: status(
                vec![],
                vec![],
                vec![
                    applied("False", "Failed", "boom", 2),
                    degraded("ApplyFailed", "boom"),
                ],
            ),
            want: vec![EventBody::ConfigFailed {
                generation: 2,
                error: "boom".into(),
            }],
        },
    ];
    for case in cases {
        assert_eq!(
            status_events(&case.old, &case.new),
            case.want,
            "{}",
            case.name
        );
    }
}

fn body(n: u32) -> EventBody {
    EventBody::LinkUp {
        ifname: format!("if{n}"),
    }
}

#[test]
fn event_log_numbers_from_one_and_resumes_after_since() {
    let mut log = EventLog::new(3, 1);
    assert_eq!(log.since(Some(0)), Ok(vec![]));
    for n in 1..=5 {
        assert_eq!(log.push("p", body(n), "t".into()).seq, u64::from(n));
    }
    // Holds 3, 4, 5.
    let seqs = |r: Result<Vec<Event>, Gone>| r.map(|v| v.iter().map(|e| e.seq).collect::<Vec<_>>());
    assert_eq!(seqs(log.since(None)), Ok(vec![3, 4, 5]));
    assert_eq!(seqs(log.since(Some(2))), Ok(vec![3, 4, 5]));
    assert_eq!(seqs(log.since(Some(4))), Ok(vec![5]));
    assert_eq!(seqs(log.since(Some(5))), Ok(vec![]));
    assert_eq!(
        log.since(Some(1)),
        Err(Gone {
            since: 1,
            oldest: 3
        })
    );
    // A sequence this log never issued (another replica's, or before a restart).
    assert_eq!(
        log.since(Some(9)),
        Err(Gone {
            since: 9,
            oldest: 3
        })
    );
}

#[test]
fn hub_takes_the_first_status_as_baseline_and_numbers_later_changes() {
    let hub = Hub::new(8);
    let up = status(vec![iface("v10", "up", 1500, &[])], vec![], vec![]);
    let down = status(vec![iface("v10", "down", 1500, &[])], vec![], vec![]);
    assert!(hub.observe("app", "web-0", &up).is_empty());
    let (backlog, mut live) = hub.subscribe("app", "web-0", None).unwrap();
    assert!(backlog.is_empty());
    let events = hub.observe("app", "web-0", &down);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, &events[0].pod), (1, &"web-0".to_string()));
    assert_eq!(live.try_recv().unwrap(), events[0]);
    // Another pod has its own numbering.
    hub.observe("app", "web-1", &down);
    assert_eq!(hub.observe("app", "web-1", &up)[0].seq, 1);
}

#[tokio::test]
async fn events_endpoint_streams_buffered_then_live_events_after_since_as_ndjson() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        let sar = api.access_review(true).await;
        api.expect_no_more().await;
        sar
    });
    let state = cliserver_state(client);
    let hub = state.events.clone();
    let up = status(vec![iface("v10", "up", 1500, &[])], vec![], vec![]);
    let down = status(vec![iface("v10", "down", 1500, &[])], vec![], vec![]);
    hub.observe("app", "web-0", &up);
    hub.observe("app", "web-0", &down); // 1
    hub.observe("app", "web-0", &up); // 2
    let feeder = tokio::spawn({
        let hub = hub.clone();
        async move {
            // Live events go out once the reader is subscribed (its backlog was taken).
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while hub
                .feeds()
                .pods
                .get(&("app".into(), "web-0".into()))
                .map(|p| p.feed.live.receiver_count())
                != Some(1)
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "reader never subscribed"
                );
                tokio::task::yield_now().await;
            }
            hub.observe("app", "web-0", &down); // 3
        }
    });
    let (code, lines) = read_lines(
        state,
        "/v1/namespaces/app/pods/web-0/events?since=1",
        &[BEARER],
        2,
    )
    .await;
    feeder.await.unwrap();
    let sar = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(sar.body["spec"]["resourceAttributes"]["verb"], "get");
    let seen: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| (l["seq"].as_u64().unwrap(), l["type"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [(2, "LinkUp"), (3, "LinkDown")]);
}

#[tokio::test]
async fn events_since_a_sequence_no_longer_held_is_410_with_the_oldest_sequence() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect_no_more().await;
    });
    let state = Arc::new(State {
        events: Arc::new(Hub::new(2)),
        ..Arc::try_unwrap(cliserver_state(client)).ok().unwrap()
    });
    let up = status(vec![iface("v10", "up", 1500, &[])], vec![], vec![]);
    let down = status(vec![iface("v10", "down", 1500, &[])], vec![], vec![]);
    state.events.observe("app", "web-0", &up);
    for s in [&down, &up, &down, &up] {
        state.events.observe("app", "web-0", s); // 1..=4, holds 3 and 4
    }
    let (status, content_type, problem) = call(
        state,
        "GET",
        "/v1/namespaces/app/pods/web-0/events?since=1",
        &[("authorization", "Bearer tok")],
        "",
    )
    .await;
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (410, "application/problem+json")
    );
    assert_eq!(problem["oldestSequence"], 3);
}

// === subscriptions ===

#[test]
fn the_merge_filter_delivers_events_of_selected_pods_of_wanted_kinds_only() {
    let spec: NetworkCareSpec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "web"}}, "podNames": ["db-0"], "events": ["link", "config"]
    }))
    .unwrap();
    let link = body(1);
    let address = EventBody::AddressAdded {
        ifname: "v10".into(),
        address: "10.0.0.1/24".into(),
    };
    let applied = EventBody::ConfigApplied {
        generation: 1,
        writes: 0,
    };
    let web = labels(&[("app", "web")]);
    let other = labels(&[("app", "api")]);
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a BTreeMap<String, String>,
        &'a EventBody,
        bool,
    );
    let cases: Vec<Case<'_>> = vec![
        ("selected by label, wanted kind", "web-0", &web, &link, true),
        (
            "selected by label, config kind",
            "web-1",
            &web,
            &applied,
            true,
        ),
        (
            "selected by label, unwanted kind",
            "web-0",
            &web,
            &address,
            false,
        ),
        ("named pod whatever its labels", "db-0", &other, &link, true),
        ("neither named nor matching", "api-0", &other, &link, false),
    ];
    for (name, pod, labels, body, want) in cases {
        assert_eq!(delivers(&spec, pod, labels, body), want, "{name}");
    }
}

/// A hub with pods web-0, web-1 (app=web) and db-0 (app=db) in `app`, and subscription
/// `mon` on app=web link events.
fn hub_with_subscription(capacity: usize) -> Hub {
    let hub = Hub::new(capacity);
    hub.apply_pod_event(watcher::Event::Apply(pod_meta(
        "app",
        "web-0",
        &[("app", "web")],
    )));
    hub.apply_pod_event(watcher::Event::Apply(pod_meta(
        "app",
        "web-1",
        &[("app", "web")],
    )));
    hub.apply_pod_event(watcher::Event::Apply(pod_meta(
        "app",
        "db-0",
        &[("app", "db")],
    )));
    hub.apply_care(&network_care(
        "app",
        "mon",
        "care-uid",
        json!({"selector": {"matchLabels": {"app": "web"}}, "events": ["link"]}),
    ));
    hub
}

fn up() -> NetworkConfigurationStatus {
    link_status("up")
}

fn down() -> NetworkConfigurationStatus {
    link_status("down")
}

/// Alternates `pod` between up and down `n` times (after an up baseline when it is new):
/// n link events, numbered 1..=n in the pod's own log.
fn flap(hub: &Hub, pod: &str, n: usize) {
    hub.observe("app", pod, &up());
    for i in 0..n {
        hub.observe("app", pod, &if i % 2 == 0 { down() } else { up() });
    }
}

#[test]
fn a_subscription_numbers_the_merged_events_of_its_pods_on_its_own() {
    let hub = hub_with_subscription(16);
    flap(&hub, "web-0", 2); // care 1, 2
    flap(&hub, "db-0", 3); // not selected
    flap(&hub, "web-1", 1); // care 3
                            // An address change of a selected pod is not a wanted kind.
    hub.observe(
        "app",
        "web-1",
        &status(
            vec![iface("v10", "down", 1500, &["10.0.0.9/24"])],
            vec![],
            vec![],
        ),
    );
    let (backlog, _live, uid) = hub.subscribe_care("app", "mon", None).unwrap();
    let seen: Vec<(u64, &str, &str)> = backlog
        .iter()
        .map(|e| {
            let kind = match &e.body {
                EventBody::LinkUp { .. } => "LinkUp",
                EventBody::LinkDown { .. } => "LinkDown",
                _ => "other",
            };
            (e.seq, e.pod.as_str(), kind)
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "web-0", "LinkDown"),
            (2, "web-0", "LinkUp"),
            (3, "web-1", "LinkDown")
        ]
    );
    assert_eq!(uid, "care-uid");
    let state = hub.care_state("app", "mon").unwrap();
    assert_eq!(state.matched_pods, ["web-0", "web-1"]);
    assert_eq!(state.last_sequence, 3);
    // A pod relabelled out of the selector stops contributing.
    hub.apply_pod_event(watcher::Event::Apply(pod_meta(
        "app",
        "web-1",
        &[("app", "old")],
    )));
    flap(&hub, "web-1", 2);
    assert_eq!(hub.care_state("app", "mon").unwrap().last_sequence, 3);
    assert_eq!(
        hub.care_state("app", "mon").unwrap().matched_pods,
        ["web-0"]
    );
}

#[test]
fn a_deleted_subscription_ends_its_readers_and_a_new_uid_starts_a_new_sequence() {
    let hub = hub_with_subscription(16);
    flap(&hub, "web-0", 1);
    let (_, mut live, _) = hub.subscribe_care("app", "mon", Some(1)).unwrap();
    hub.apply_care_event(watcher::Event::Delete(network_care(
        "app",
        "mon",
        "care-uid",
        json!({}),
    )));
    assert_eq!(live.try_recv(), Err(broadcast::error::TryRecvError::Closed));
    assert_eq!(
        hub.subscribe_care("app", "mon", None).err(),
        Some(CareStreamError::Unknown)
    );
    hub.apply_care(&network_care(
        "app",
        "mon",
        "uid-2",
        json!({"podNames": ["web-0"]}),
    ));
    hub.observe("app", "web-0", &up());
    let state = hub.care_state("app", "mon").unwrap();
    assert_eq!((state.uid.as_str(), state.last_sequence), ("uid-2", 1));
}

#[test]
fn a_relist_forgets_subscriptions_deleted_while_the_watch_was_down() {
    let hub = hub_with_subscription(16);
    hub.apply_care(&network_care(
        "app",
        "keep",
        "k",
        json!({"podNames": ["web-0"]}),
    ));
    hub.apply_care_event(watcher::Event::Init);
    hub.apply_care_event(watcher::Event::InitApply(network_care(
        "app",
        "keep",
        "k",
        json!({"podNames": ["web-0"]}),
    )));
    hub.apply_care_event(watcher::Event::InitDone);
    assert!(hub.care_uid("app", "keep").is_some());
    assert_eq!(hub.care_uid("app", "mon"), None);
}

/// Waits until `n` readers follow subscription `app/mon` live.
async fn readers(hub: &Hub, n: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while hub
        .feeds()
        .cares
        .get(&key("app", "mon"))
        .map(|c| c.feed.live.receiver_count())
        != Some(n)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader never subscribed"
        );
        tokio::task::yield_now().await;
    }
}

fn seqs_and_pods(lines: &[serde_json::Value]) -> Vec<(u64, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["seq"].as_u64().unwrap(),
                l["pod"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_subscription_stream_resumes_after_since_without_gaps_across_two_pods() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            api.token_review("tok", "alice", json!({})).await;
            let sar = api.access_review(true).await;
            assert_eq!(
                sar.body["spec"]["resourceAttributes"],
                json!({"namespace": "app", "verb": "get", "group": "nes.network-config.io", "resource": "networkcares", "name": "mon"})
            );
        }
        api.expect_no_more().await;
    });
    let state = Arc::new(State {
        events: Arc::new(hub_with_subscription(16)),
        ..Arc::try_unwrap(cliserver_state(client)).ok().unwrap()
    });
    let hub = state.events.clone();
    flap(&hub, "web-0", 2); // 1, 2
    flap(&hub, "web-1", 2); // 3, 4
                            // A first reader takes everything held, then disconnects.
    let (code, first) = read_lines(
        state.clone(),
        "/v1/namespaces/app/networkcares/mon/events",
        &[BEARER],
        4,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        seqs_and_pods(&first),
        [
            (1, "web-0".into()),
            (2, "web-0".into()),
            (3, "web-1".into()),
            (4, "web-1".into())
        ]
    );
    // Meanwhile both pods change again; the reader comes back from the middle of what it saw.
    hub.observe("app", "web-0", &down()); // 5
    let feeder = tokio::spawn({
        let hub = hub.clone();
        async move {
            readers(&hub, 1).await;
            hub.observe("app", "web-1", &down()); // 6, live
        }
    });
    let (code, resumed) = read_lines(
        state,
        "/v1/namespaces/app/networkcares/mon/events?since=2",
        &[BEARER],
        4,
    )
    .await;
    feeder.await.unwrap();
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        seqs_and_pods(&resumed),
        [
            (3, "web-1".into()),
            (4, "web-1".into()),
            (5, "web-0".into()),
            (6, "web-1".into())
        ]
    );
}

#[tokio::test]
async fn a_subscription_stream_since_a_sequence_no_longer_held_is_410_with_the_oldest() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect_no_more().await;
    });
    let state = Arc::new(State {
        events: Arc::new(hub_with_subscription(3)),
        ..Arc::try_unwrap(cliserver_state(client)).ok().unwrap()
    });
    flap(&state.events, "web-0", 3); // 1..=3
    flap(&state.events, "web-1", 2); // 4, 5: holds 3..=5
    let (status, content_type, problem) = call(
        state,
        "GET",
        "/v1/namespaces/app/networkcares/mon/events?since=1",
        &[("authorization", "Bearer tok")],
        "",
    )
    .await;
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (410, "application/problem+json")
    );
    assert_eq!(problem["oldestSequence"], 3);
}

#[tokio::test]
async fn a_subscription_this_replica_has_not_seen_yet_is_read_from_the_api_server() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect(
            "GET",
            "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkcares/new",
            200,
            serde_json::to_value(network_care(
                "app",
                "new",
                "n-1",
                json!({"podNames": ["web-0"]}),
            ))
            .unwrap(),
        )
        .await;
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect(
            "GET",
            "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkcares/none",
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        )
        .await;
        api.expect_no_more().await;
    });
    let state = cliserver_state(client);
    let hub = state.events.clone();
    let feeder = tokio::spawn({
        let hub = hub.clone();
        async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while hub
                .feeds()
                .cares
                .get(&key("app", "new"))
                .map(|c| c.feed.live.receiver_count())
                != Some(1)
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "reader never subscribed"
                );
                tokio::task::yield_now().await;
            }
            flap(&hub, "web-0", 1);
        }
    });
    let (code, lines) = read_lines(
        state.clone(),
        "/v1/namespaces/app/networkcares/new/events",
        &[BEARER],
        1,
    )
    .await;
    feeder.await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(seqs_and_pods(&lines), [(1, "web-0".into())]);
    let (status, _, _) = call(
        state,
        "GET",
        "/v1/namespaces/app/networkcares/none/events",
        &[("authorization", "Bearer tok")],
        "",
    )
    .await;
    assert_eq!(status.as_u16(), 404);
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn readers_of_pods_without_a_configuration_hold_at_most_the_waiting_cap_of_feeds() {
    let hub = Hub::default();
    let held: Vec<_> = (0..MAX_WAITING_FEEDS)
        .map(|i| hub.subscribe("app", &format!("nope-{i}"), None).unwrap())
        .collect();
    assert_eq!(hub.waiting_feeds(), MAX_WAITING_FEEDS);
    assert_eq!(
        hub.subscribe("app", "one-more", None).unwrap_err(),
        PodStreamError::TooManyWaiting
    );
    // A second reader of a pod already waited for needs no new feed.
    assert!(hub.subscribe("app", "nope-0", None).is_ok());
    // Readers gone: their feeds make room.
    drop(held);
    assert!(hub.subscribe("app", "one-more", None).is_ok());
    assert_eq!(hub.waiting_feeds(), 1, "feeds nobody reads were dropped");
}

#[tokio::test]
async fn a_reader_waiting_for_a_pod_gets_its_first_status_as_events() {
    let hub = Hub::default();
    let (backlog, mut live) = hub.subscribe("app", "web-0", None).unwrap();
    assert!(backlog.is_empty());
    let events = hub.observe("app", "web-0", &up());
    assert!(
        !events.is_empty(),
        "the first status is news to a waiting reader"
    );
    assert_eq!(live.recv().await.unwrap(), events[0]);
    assert_eq!(hub.waiting_feeds(), 0);
}
