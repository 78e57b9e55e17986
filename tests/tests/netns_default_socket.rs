//! Root only: nescli's default endpoint is the abstract socket `@nes` of the network namespace
//! it runs in. A thread moves into a fresh netns and binds `@nes` there; nescli is started in
//! that netns with nsenter and reaches it without any socket flag.

use nes_tests::support;

use std::sync::{mpsc, Arc};

use axum::http::StatusCode;
use nix::sched::{unshare, CloneFlags};

use support::*;

#[test]
fn nescli_reaches_at_nes_of_its_own_network_namespace_by_default() {
    const TEST: &str = "nescli_reaches_at_nes_of_its_own_network_namespace_by_default";
    if !require_root(TEST) {
        return;
    }
    if std::process::Command::new("nsenter")
        .arg("--version")
        .output()
        .is_err()
    {
        skip(TEST, "no nsenter");
        return;
    }
    // The thread that enters the new netns binds there and then parks until the test ends,
    // keeping /proc/<pid>/task/<tid>/ns/net for nsenter.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let result = unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare: {e}"))
            .map(|()| {
                let stub = Stub::at_abstract(
                    api::wire::POD_SOCKET_NAME,
                    Arc::new(|_, _| json(StatusCode::OK, &status_view(true, 3))),
                );
                (stub, nix::unistd::gettid().as_raw())
            });
        let _ = ready_tx.send(result);
        let _ = done_rx.recv();
    });
    let (stub, tid) = ready_rx
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("netns thread: {e}"))
        .unwrap_or_else(|e| panic!("{e}"));

    let mut nsenter = std::process::Command::new("nsenter");
    clean_env(&mut nsenter);
    nsenter
        .arg(format!(
            "--net=/proc/{}/task/{tid}/ns/net",
            std::process::id()
        ))
        .arg(nes_tests::bins::nescli())
        .args(["status", "--timeout", "5s"]);
    let out = run(nsenter);
    let _ = done_tx.send(());

    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("POD web-0"), "{}", out.stdout);
    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/self/status");
}
