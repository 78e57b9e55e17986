//! Subscriptions through a pod's socket, end to end: the in-cluster agent serving real pod
//! network namespaces, a tower-test mock API server and an HTTPS stub of the cliserver.
//! Creating one is forwarded for the pod; reading one merges the live netlink events of
//! the selected pods on this node with the cliserver's events of pods elsewhere, with the
//! node's own gapless numbering. A MEASURE line gives the latency from a netlink change in
//! a pod to its subscriber on the same node
//! (`cargo nextest run -p nes-tests --test netns_cluster_cares --success-output final`).

use nes_tests::cluster_support;
use nes_tests::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use api::wire::{CareView, Event, EventBody, NewCare, ProblemDetails};
use cluster_support::harness::{stub_cliserver_with, Agent, Answer, ServedPod};
use cluster_support::{pod, ApiServer, FakeResolver, DEADLINE, NS};
use common::{eventually, require_root};
use nes_tests::client::EventStream;
use serde_json::json;
use tokio::sync::mpsc;

/// A refusal to open a stream: its status and problem.
fn problem_of((code, body): (u16, String)) -> (u16, ProblemDetails) {
    (code, serde_json::from_str(&body).expect("a problem"))
}

fn labelled(name: &str, uid: &str, app: &str) -> serde_json::Value {
    let mut p = pod(name, uid, &["10.244.0.5"]);
    p["metadata"]["labels"]["app"] = json!(app);
    p
}

fn care_view() -> CareView {
    serde_json::from_value(json!({
        "name": "mon", "namespace": NS,
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "events": ["link", "route"]},
    }))
    .expect("care")
}

/// An event as the cliserver numbers it (`seq`), about pod `pod`.
fn upstream(seq: u64, pod: &str, body: EventBody) -> String {
    let event = Event {
        seq,
        time: "2026-11-23T10:00:00Z".into(),
        pod: pod.into(),
        body,
    };
    serde_json::to_string(&event).expect("event")
}

/// Milliseconds at the given percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test]
async fn a_subscription_read_through_the_pod_socket_merges_live_netlink_events_with_the_cliservers()
{
    if !require_root() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let web = ServedPod::new("csw", "web-0", "uid-w");
    let db = ServedPod::new("csd", "db-0", "uid-d");
    let mon = ServedPod::new("csm", "mon-0", "uid-m");
    for (p, app) in [(&web, "web"), (&db, "db"), (&mon, "mon")] {
        api.put_pod(labelled(&p.name, &p.uid, app));
        resolver.set(&p.uid, &format!("sb-{}", p.name), &p.fx.pod.path());
    }
    let mut agent = Agent::new(&api, &resolver);

    // The cliserver: the subscription exists until `deleted`; its first event stream is
    // fed by `upstream_tx`, later ones are refused as the cliserver would once it is gone.
    let deleted = Arc::new(AtomicBool::new(false));
    let (upstream_tx, upstream_rx) = mpsc::unbounded_channel::<String>();
    let upstream_rx = Mutex::new(Some(upstream_rx));
    let gone = deleted.clone();
    let view = care_view();
    let care_path = format!("/v1/namespaces/{NS}/networkcares/mon");
    let events_path = format!("{care_path}/events");
    let stream_path = events_path.clone();
    let (url, seen) = stub_cliserver_with(agent.dir.path(), move |req| {
        let not_found = || {
            Answer::Json(
                404,
                serde_json::to_value(ProblemDetails::new(404, "not found", "no NetworkCare mon"))
                    .expect("problem"),
            )
        };
        match (
            req.method.as_str(),
            req.uri.split('?').next().unwrap_or_default(),
        ) {
            ("POST", p) if p == format!("/v1/namespaces/{NS}/networkcares") => {
                Answer::Json(201, serde_json::to_value(&view).expect("view"))
            }
            _ if gone.load(Ordering::SeqCst) => not_found(),
            ("GET", p) if p == care_path => {
                Answer::Json(200, serde_json::to_value(&view).expect("view"))
            }
            ("GET", p) if p == stream_path => match upstream_rx.lock().unwrap().take() {
                Some(rx) => Answer::Lines(rx),
                None => not_found(),
            },
            _ => Answer::Json(500, json!({"title": "unexpected request"})),
        }
    })
    .await;
    agent.cliserver = url;
    agent.start();
    let client = mon.client();
    for p in [&web, &db, &mon] {
        let c = p.client();
        c.connect().await;
    }

    // Creating: checked by the one validator on the socket, then forwarded for mon-0.
    let new = NewCare {
        name: "mon".into(),
        spec: care_view().spec,
    };
    let (code, body) = client
        .call(
            "POST",
            "/v1/self/networkcares",
            &serde_json::to_string(&new).expect("new"),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        serde_json::from_str::<CareView>(&body).expect("view"),
        care_view()
    );
    let bad = json!({"name": "Mon/x", "spec": {"podNames": ["web-0"]}});
    let (code, body) = client
        .call("POST", "/v1/self/networkcares", &bad.to_string())
        .await;
    assert_eq!(code, 422, "{body}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "the bad one is never forwarded: {seen:?}");
        assert_eq!(
            (
                seen[0].uri.as_str(),
                seen[0].pod_name.as_str(),
                seen[0].pod_uid.as_str()
            ),
            ("/v1/namespaces/apps/networkcares", "mon-0", "uid-m")
        );
        assert_eq!(seen[0].body, serde_json::to_value(&new).expect("new"));
        assert_eq!(seen[0].token, "Bearer token-1");
    }

    // Reading: the feed asks for the subscription, then follows the cliserver's stream.
    let uri = "/v1/self/networkcares/mon/events";
    let mut reader = EventStream::open(&client, uri).await.expect("stream");
    assert!(
        eventually(DEADLINE, || seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.uri == events_path))
        .await,
        "the feed follows the cliserver's stream"
    );
    // A pod elsewhere is relayed; a pod served here comes from netlink, not from its status.
    upstream_tx
        .send(upstream(
            7,
            "web-9",
            EventBody::LinkUp {
                ifname: "eth0".into(),
            },
        ))
        .expect("send");
    upstream_tx
        .send(upstream(
            8,
            "web-0",
            EventBody::LinkDown {
                ifname: "eth0".into(),
            },
        ))
        .expect("send");
    let remote = reader.next().await;
    assert_eq!(
        (remote.pod.as_str(), &remote.body, remote.time.as_str()),
        (
            "web-9",
            &EventBody::LinkUp {
                ifname: "eth0".into()
            },
            "2026-11-23T10:00:00Z"
        )
    );

    // Changes in the kernel: db-0 is not selected; an address is not a kind asked for.
    db.fx.pod.ip(&["link", "set", "cni-peer", "mtu", "1300"]);
    web.fx
        .pod
        .ip(&["addr", "add", "10.9.9.9/32", "dev", "cni-peer"]);
    let (mut latencies, mut ip_runs) = (Vec::new(), Vec::new());
    for i in 0..20u32 {
        let mtu = 1400 + i;
        let changed = Instant::now();
        web.fx
            .pod
            .ip(&["link", "set", "cni-peer", "mtu", &mtu.to_string()]);
        ip_runs.push(changed.elapsed().as_secs_f64() * 1e3);
        let event = reader.next().await;
        latencies.push(changed.elapsed().as_secs_f64() * 1e3);
        assert_eq!(
            (event.pod.as_str(), &event.body),
            (
                "web-0",
                &EventBody::MtuChanged {
                    ifname: "cni-peer".into(),
                    old: Some(if i == 0 { 1500 } else { mtu - 1 }),
                    new: mtu
                }
            ),
            "change {i}"
        );
        assert_eq!(
            event.seq,
            remote.seq + 1 + u64::from(i),
            "gapless numbering"
        );
    }
    latencies.sort_by(f64::total_cmp);
    ip_runs.sort_by(f64::total_cmp);
    println!(
        "MEASURE netlink change in a pod -> its subscriber on the same node (20 samples, from \
         starting `ip link set`): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; `ip` alone p50 {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 1.0),
        percentile(&ip_runs, 0.5)
    );
    web.fx
        .pod
        .ip(&["route", "add", "10.77.0.0/16", "dev", "cni-peer"]);
    let route = reader.next().await;
    assert_eq!(
        (route.pod.as_str(), &route.body),
        (
            "web-0",
            &EventBody::RouteAdded {
                dst: "10.77.0.0/16".into(),
                table: 254,
                metric: 0
            }
        )
    );
    let last = route.seq;

    // Resuming: a reconnect with `since` gets exactly what came after it ...
    drop(reader);
    let mut again = EventStream::open(&client, &format!("{uri}?since={}", last - 2))
        .await
        .expect("resume");
    let resumed = [again.next().await, again.next().await];
    assert_eq!([resumed[0].seq, resumed[1].seq], [last - 1, last]);
    assert_eq!(resumed[1], route);
    // ... and one from before the feed began is told what is still held.
    let (code, problem) = EventStream::open(&client, &format!("{uri}?since={}", remote.seq - 5))
        .await
        .err()
        .map(problem_of)
        .expect("gone");
    assert_eq!((code, problem.oldest_sequence), (410, Some(remote.seq)));

    // The subscription deleted (its owner gone): the cliserver's stream ends, the feed
    // cannot follow it again and ends too, and a new read is a 404.
    deleted.store(true, Ordering::SeqCst);
    drop(upstream_tx);
    assert!(
        again.ends_with_nothing_more().await,
        "delivery stops with the subscription"
    );
    let (code, _) = EventStream::open(&client, uri)
        .await
        .err()
        .map(problem_of)
        .expect("no such subscription");
    assert_eq!(code, 404);
    for s in seen.lock().unwrap().iter() {
        assert_eq!(
            (s.pod_name.as_str(), s.pod_uid.as_str()),
            ("mon-0", "uid-m"),
            "{s:?}"
        );
    }

    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}
