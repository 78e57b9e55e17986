//! Failure modes of the CRI resolver against small in-process gRPC servers: the real
//! tonic transport over a temp unix socket, serving the `k8s-cri` generated
//! `RuntimeService`, each arranged to produce one condition a real runtime cannot be made
//! to produce on demand.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::cri::{
    CriConfig, CriResolver, EventsState, NetnsResolver, NetnsSource, PodRef, ResolveError,
    POD_UID_LABEL,
};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

// === the fake runtime ===

#[derive(Default)]
struct FakeState {
    sandboxes: Vec<cri::PodSandbox>,
    /// sandbox id -> verbose `info["info"]` JSON.
    info: HashMap<String, String>,
    /// sandbox id -> status.linux network namespace mode.
    host_network: HashSet<String>,
    /// pod uids whose ListPodSandbox never answers.
    hang: HashSet<String>,
    calls: HashMap<&'static str, usize>,
    /// told the pod uid of each ListPodSandbox call as it arrives.
    arrived: Option<mpsc::UnboundedSender<String>>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        let mut s = self.0.lock().expect("fake state lock");
        f(&mut s)
    }

    fn add_sandbox(&self, id: &str, uid: &str, ready: bool, info: Option<String>) {
        self.with(|s| {
            s.sandboxes.push(cri::PodSandbox {
                id: id.into(),
                state: if ready {
                    cri::PodSandboxState::SandboxReady as i32
                } else {
                    cri::PodSandboxState::SandboxNotready as i32
                },
                labels: [(POD_UID_LABEL.to_string(), uid.to_string())].into(),
                ..Default::default()
            });
            if let Some(info) = info {
                s.info.insert(id.into(), info);
            }
        });
    }

    fn calls(&self, rpc: &str) -> usize {
        self.with(|s| s.calls.get(rpc).copied().unwrap_or(0))
    }

    fn count(&self, rpc: &'static str) {
        self.with(|s| *s.calls.entry(rpc).or_default() += 1);
    }
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

/// The generated trait has ~30 methods; the fake answers Unimplemented to those it does not
/// need. `#[async_trait]` must see the expanded methods, so the macro emits the whole impl.
macro_rules! runtime_service {
    ($ty:ty { $($own:item)* } unimplemented { $($name:ident($req:ty) -> $resp:ty;)* }) => {
        #[tonic::async_trait]
        impl RuntimeService for $ty {
            $($own)*
            $(async fn $name(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                Err(Status::unimplemented(stringify!($name)))
            })*
        }
    };
}

runtime_service! { Fake {
    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        self.count("Version");
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake-cri".into(),
            runtime_version: "1.0".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        self.count("ListPodSandbox");
        let filter = req.into_inner().filter.unwrap_or_default();
        let uid = filter
            .label_selector
            .get(POD_UID_LABEL)
            .cloned()
            .unwrap_or_default();
        let (hang, arrived) = self.with(|s| (s.hang.contains(&uid), s.arrived.clone()));
        if let Some(tx) = arrived {
            let _ = tx.send(uid.clone());
        }
        if hang {
            std::future::pending::<()>().await;
        }
        let items = self.with(|s| {
            s.sandboxes
                .iter()
                .filter(|sb| {
                    filter
                        .label_selector
                        .iter()
                        .all(|(k, v)| sb.labels.get(k) == Some(v))
                })
                .filter(|sb| filter.state.as_ref().is_none_or(|st| st.state == sb.state))
                .cloned()
                .collect()
        });
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        self.count("PodSandboxStatus");
        let req = req.into_inner();
        let (info, host) = self.with(|s| {
            (
                s.info.get(&req.pod_sandbox_id).cloned(),
                s.host_network.contains(&req.pod_sandbox_id),
            )
        });
        let Some(info) = info else {
            return Err(Status::not_found("no such sandbox"));
        };
        let network = if host {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        };
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: req.pod_sandbox_id,
                linux: Some(cri::LinuxPodSandboxStatus {
                    namespaces: Some(cri::Namespace {
                        options: Some(cri::NamespaceOption {
                            network: network as i32,
                            ..Default::default()
                        }),
                    }),
                }),
                ..Default::default()
            }),
            info: if req.verbose {
                [("info".to_string(), info)].into()
            } else {
                HashMap::new()
            },
            ..Default::default()
        }))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("get_container_events"))
    }

    } unimplemented {
        run_pod_sandbox(cri::RunPodSandboxRequest) -> cri::RunPodSandboxResponse;
        stop_pod_sandbox(cri::StopPodSandboxRequest) -> cri::StopPodSandboxResponse;
        remove_pod_sandbox(cri::RemovePodSandboxRequest) -> cri::RemovePodSandboxResponse;
        create_container(cri::CreateContainerRequest) -> cri::CreateContainerResponse;
        start_container(cri::StartContainerRequest) -> cri::StartContainerResponse;
        stop_container(cri::StopContainerRequest) -> cri::StopContainerResponse;
        remove_container(cri::RemoveContainerRequest) -> cri::RemoveContainerResponse;
        list_containers(cri::ListContainersRequest) -> cri::ListContainersResponse;
        container_status(cri::ContainerStatusRequest) -> cri::ContainerStatusResponse;
        update_container_resources(cri::UpdateContainerResourcesRequest) -> cri::UpdateContainerResourcesResponse;
        reopen_container_log(cri::ReopenContainerLogRequest) -> cri::ReopenContainerLogResponse;
        exec_sync(cri::ExecSyncRequest) -> cri::ExecSyncResponse;
        exec(cri::ExecRequest) -> cri::ExecResponse;
        attach(cri::AttachRequest) -> cri::AttachResponse;
        port_forward(cri::PortForwardRequest) -> cri::PortForwardResponse;
        container_stats(cri::ContainerStatsRequest) -> cri::ContainerStatsResponse;
        list_container_stats(cri::ListContainerStatsRequest) -> cri::ListContainerStatsResponse;
        pod_sandbox_stats(cri::PodSandboxStatsRequest) -> cri::PodSandboxStatsResponse;
        list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest) -> cri::ListPodSandboxStatsResponse;
        update_runtime_config(cri::UpdateRuntimeConfigRequest) -> cri::UpdateRuntimeConfigResponse;
        status(cri::StatusRequest) -> cri::StatusResponse;
        checkpoint_container(cri::CheckpointContainerRequest) -> cri::CheckpointContainerResponse;
        list_metric_descriptors(cri::ListMetricDescriptorsRequest) -> cri::ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest) -> cri::ListPodSandboxMetricsResponse;
        runtime_config(cri::RuntimeConfigRequest) -> cri::RuntimeConfigResponse;
    }
}

/// A gRPC server on its own thread and runtime, so that stopping it closes every
/// connection at once, as a runtime process dying does.
struct Server {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(socket: &Path, router: tonic::transport::server::Router) -> Server {
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind fake socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = UnixListener::from_std(listener).expect("tokio listener");
                let incoming = UnixListenerStream::new(listener);
                tokio::select! {
                    r = router.serve_with_incoming(incoming) => { r.expect("fake server"); }
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels every connection task.
        });
        Server {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn cri(socket: &Path, fake: Fake) -> Server {
        let router =
            tonic::transport::Server::builder().add_service(RuntimeServiceServer::new(fake));
        Server::start(socket, router)
    }

    /// Stops the server and waits until its connections are gone.
    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(socket: &Path) -> CriConfig {
    CriConfig {
        rpc_timeout: Duration::from_millis(500),
        ..CriConfig::with_socket(socket)
    }
}

fn pod(uid: &str) -> PodRef {
    PodRef::new(uid, "default", format!("pod-{uid}"))
}

fn fixture() -> (tempfile::TempDir, PathBuf, Fake, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("cri.sock");
    let fake = Fake::default();
    let server = Server::cri(&socket, fake.clone());
    (dir, socket, fake, server)
}

fn path_info(path: &Path) -> String {
    serde_json::json!({
        "pid": 1,
        "runtimeSpec": {"linux": {"namespaces": [
            {"type": "pid"},
            {"type": "network", "path": path.to_string_lossy()}
        ]}}
    })
    .to_string()
}

// === the happy paths ===

#[tokio::test]
async fn resolves_the_ready_sandbox_netns_path_and_its_inode() {
    let (dir, socket, fake, _server) = fixture();
    let netns_file = dir.path().join("netns-file");
    std::fs::write(&netns_file, b"").expect("netns stand-in");
    fake.add_sandbox(
        "old",
        "u1",
        false,
        Some(path_info(Path::new("/nonexistent"))),
    );
    fake.add_sandbox("new", "u1", true, Some(path_info(&netns_file)));

    let resolver = CriResolver::new(config(&socket));
    let r = resolver.resolve(&pod("u1")).await.expect("resolve");

    let md = std::fs::metadata(&netns_file).expect("stat");
    assert_eq!(r.sandbox_id, "new");
    assert_eq!(r.source, NetnsSource::RuntimeSpec);
    assert_eq!((r.identity.dev, r.identity.inode), (md.dev(), md.ino()));
    assert_eq!(r.identity.path.as_deref(), netns_file.to_str());
    assert!(!r.cached);
}

#[tokio::test]
async fn falls_back_to_the_sandbox_pid_when_the_spec_has_no_netns_path() {
    let (_dir, socket, fake, _server) = fixture();
    let info = serde_json::json!({"pid": std::process::id()}).to_string();
    fake.add_sandbox("sb", "u1", true, Some(info));

    let r = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect("resolve");

    let md = std::fs::metadata("/proc/self/ns/net").expect("stat own netns");
    assert_eq!(r.source, NetnsSource::SandboxPid);
    assert_eq!((r.identity.dev, r.identity.inode), (md.dev(), md.ino()));
}

#[tokio::test]
async fn without_containerd_events_the_cache_is_rechecked_with_list_only() {
    let (dir, socket, fake, _server) = fixture();
    let netns_file = dir.path().join("netns-file");
    std::fs::write(&netns_file, b"").expect("netns stand-in");
    fake.add_sandbox("sb", "u1", true, Some(path_info(&netns_file)));
    let resolver = CriResolver::new(config(&socket));

    // The fake serves only CRI: the follower learns there are no containerd events.
    let mut state = resolver.events_state();
    let unavailable = tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| matches!(s, EventsState::Unavailable(_))),
    )
    .await;
    assert!(
        matches!(unavailable, Ok(Ok(_))),
        "events never reported unavailable"
    );

    let first = resolver.resolve(&pod("u1")).await.expect("first");
    let second = resolver.resolve(&pod("u1")).await.expect("second");
    assert!(!first.cached);
    assert!(second.cached);
    assert_eq!(first.identity, second.identity);
    assert_eq!(fake.calls("PodSandboxStatus"), 1);
    assert_eq!(fake.calls("ListPodSandbox"), 2);
    assert_eq!(fake.calls("Version"), 1);
}

#[tokio::test]
async fn a_new_sandbox_of_the_same_pod_gives_a_new_identity() {
    let (dir, socket, fake, _server) = fixture();
    let first_file = dir.path().join("netns-1");
    let second_file = dir.path().join("netns-2");
    std::fs::write(&first_file, b"").expect("netns 1");
    std::fs::write(&second_file, b"").expect("netns 2");
    fake.add_sandbox("sb1", "u1", true, Some(path_info(&first_file)));
    let resolver = CriResolver::new(config(&socket));
    let first = resolver.resolve(&pod("u1")).await.expect("first");

    // The kubelet recreates the sandbox: the old one is not ready, a new one is.
    fake.with(|s| {
        s.sandboxes[0].state = cri::PodSandboxState::SandboxNotready as i32;
    });
    fake.add_sandbox("sb2", "u1", true, Some(path_info(&second_file)));
    let second = resolver.resolve(&pod("u1")).await.expect("second");

    assert_eq!(second.sandbox_id, "sb2");
    assert!(!second.cached);
    assert_ne!(first.identity.inode, second.identity.inode);
}

// === the failure modes ===

#[tokio::test]
async fn a_missing_socket_is_socket_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("absent.sock");
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("no socket");
    assert!(
        matches!(&err, ResolveError::SocketMissing { socket: s, pod, .. } if s == &socket && pod == "u1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_socket_nobody_listens_on_is_runtime_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("nobody listening");
    assert!(
        matches!(err, ResolveError::RuntimeUnavailable { .. }),
        "{err:?}"
    );
}

/// Root ignores file modes, so as root the connecting side runs in a child process as
/// `nobody` (this same test binary, re-executed for the inner test below).
#[tokio::test]
async fn a_socket_without_permission_is_permission_denied() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    let socket = dir.path().join("cri.sock");
    let _server = Server::cri(&socket, Fake::default());
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    if !nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let err = CriResolver::new(config(&socket))
            .resolve(&pod("u1"))
            .await
            .expect_err("no permission");
        assert!(
            matches!(err, ResolveError::PermissionDenied { .. }),
            "{err:?}"
        );
        return;
    }

    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "--exact",
                "permission_denied_inner",
                "--ignored",
                "--nocapture",
            ])
            .env("NES_CRI_PERMISSION_SOCKET", &socket)
            .uid(65534)
            .gid(65534)
            .output()
    })
    .await
    .expect("join")
    .expect("run the test binary as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("PERMISSION_DENIED_OK"),
        "child as nobody failed: {}\n{stdout}\n{stderr}",
        out.status
    );
}

/// The half of the test above that runs as `nobody`: ignored in a normal run (it would test
/// nothing there), re-executed with `--ignored` by that test.
#[tokio::test]
#[ignore = "run as nobody by a_socket_without_permission_is_permission_denied"]
async fn permission_denied_inner() {
    let socket = std::env::var_os("NES_CRI_PERMISSION_SOCKET")
        .expect("NES_CRI_PERMISSION_SOCKET: only a_socket_without_permission_is_permission_denied runs this");
    let err = CriResolver::new(config(Path::new(&socket)))
        .resolve(&pod("u1"))
        .await
        .expect_err("no permission");
    assert!(
        matches!(err, ResolveError::PermissionDenied { .. }),
        "{err:?}"
    );
    eprintln!("PERMISSION_DENIED_OK {err}");
}

#[tokio::test]
async fn a_grpc_server_without_the_runtime_service_is_not_a_cri_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("other.sock");
    // A real gRPC server, serving only CRI's image service.
    let router = tonic::transport::Server::builder()
        .add_service(cri::image_service_server::ImageServiceServer::new(NoImages));
    let _server = Server::start(&socket, router);
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("not cri");
    assert!(matches!(err, ResolveError::NotCriSocket { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn an_http1_server_is_not_a_cri_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("http.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("not cri");
    server.abort();
    assert!(matches!(err, ResolveError::NotCriSocket { .. }), "{err:?}");
}

#[tokio::test]
async fn a_pod_without_sandboxes_is_pod_not_found() {
    let (_dir, socket, fake, _server) = fixture();
    fake.add_sandbox("other", "u2", true, Some(path_info(Path::new("/x"))));
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("not found");
    assert!(
        matches!(&err, ResolveError::PodNotFound { pod, .. } if pod == "u1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_pod_with_only_stopped_sandboxes_has_no_ready_sandbox() {
    let (_dir, socket, fake, _server) = fixture();
    fake.add_sandbox("stopped", "u1", false, None);
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("none ready");
    assert!(
        matches!(&err, ResolveError::NoReadySandbox { not_ready, .. } if not_ready == &vec!["stopped".to_string()]),
        "{err:?}"
    );
}

#[tokio::test]
async fn two_ready_sandboxes_are_refused() {
    let (_dir, socket, fake, _server) = fixture();
    fake.add_sandbox("a", "u1", true, Some(path_info(Path::new("/x"))));
    fake.add_sandbox("b", "u1", true, Some(path_info(Path::new("/y"))));
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("several");
    assert!(
        matches!(&err, ResolveError::SeveralReadySandboxes { sandboxes, .. } if sandboxes.len() == 2),
        "{err:?}"
    );
    assert_eq!(
        fake.calls("PodSandboxStatus"),
        0,
        "must not look at either netns"
    );
}

#[tokio::test]
async fn a_host_network_sandbox_is_refused() {
    let (_dir, socket, fake, _server) = fixture();
    fake.add_sandbox(
        "h",
        "u1",
        true,
        Some(serde_json::json!({"pid": 1}).to_string()),
    );
    fake.with(|s| s.host_network.insert("h".into()));
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("host network");
    assert!(matches!(err, ResolveError::HostNetwork { .. }), "{err:?}");
}

#[tokio::test]
async fn a_netns_file_removed_meanwhile_is_unreadable() {
    let (dir, socket, fake, _server) = fixture();
    fake.add_sandbox("sb", "u1", true, Some(path_info(&dir.path().join("gone"))));
    let err = CriResolver::new(config(&socket))
        .resolve(&pod("u1"))
        .await
        .expect_err("unreadable");
    assert!(
        matches!(err, ResolveError::NetnsUnreadable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_hung_call_exceeds_its_deadline_without_blocking_other_pods() {
    let (dir, socket, fake, _server) = fixture();
    let netns_file = dir.path().join("netns-file");
    std::fs::write(&netns_file, b"").expect("netns stand-in");
    fake.add_sandbox("ok", "fine", true, Some(path_info(&netns_file)));
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    fake.with(|s| {
        s.hang.insert("stuck".into());
        s.arrived = Some(arrived_tx);
    });
    let resolver = Arc::new(CriResolver::new(CriConfig {
        rpc_timeout: Duration::from_secs(2),
        ..CriConfig::with_socket(&socket)
    }));

    let started = Instant::now();
    let stuck = {
        let r = resolver.clone();
        tokio::spawn(async move { r.resolve(&pod("stuck")).await })
    };
    // Wait until the stuck call is inside the runtime, then resolve another pod.
    loop {
        let uid = tokio::time::timeout(Duration::from_secs(5), arrived.recv())
            .await
            .expect("stuck call never arrived")
            .expect("channel open");
        if uid == "stuck" {
            break;
        }
    }
    let fine = resolver
        .resolve(&pod("fine"))
        .await
        .expect("other pod resolves");
    assert_eq!(fine.sandbox_id, "ok");
    assert!(
        !stuck.is_finished(),
        "the stuck call should still be waiting"
    );

    let err = stuck.await.expect("join").expect_err("deadline");
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, ResolveError::DeadlineExceeded { rpc: "ListPodSandbox", pod, .. } if pod == "stuck"),
        "{err:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_runtime_dying_mid_call_is_runtime_restarted_and_the_next_runtime_is_used() {
    let (dir, socket, fake, mut server) = fixture();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    fake.with(|s| {
        s.hang.insert("u1".into());
        s.arrived = Some(arrived_tx);
    });
    let resolver = Arc::new(CriResolver::new(CriConfig {
        rpc_timeout: Duration::from_secs(10),
        ..CriConfig::with_socket(&socket)
    }));
    let call = {
        let r = resolver.clone();
        tokio::spawn(async move { r.resolve(&pod("u1")).await })
    };
    tokio::time::timeout(Duration::from_secs(5), arrived.recv())
        .await
        .expect("call never arrived");

    // The runtime process dies with the call in flight.
    server.kill();
    let err = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the broken call must end before its deadline")
        .expect("join")
        .expect_err("connection lost");
    assert!(
        matches!(
            &err,
            ResolveError::RuntimeRestarted {
                rpc: "ListPodSandbox",
                ..
            }
        ),
        "{err:?}"
    );

    // The runtime comes back on the same path: the resolver reconnects.
    std::fs::remove_file(&socket).expect("remove old socket");
    let netns_file = dir.path().join("netns-file");
    std::fs::write(&netns_file, b"").expect("netns stand-in");
    let fake2 = Fake::default();
    fake2.add_sandbox("sb", "u1", true, Some(path_info(&netns_file)));
    let _server2 = Server::cri(&socket, fake2);
    let deadline = Instant::now() + Duration::from_secs(5);
    let resolved = loop {
        match resolver.resolve(&pod("u1")).await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline && e.is_transient() => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("no reconnect: {e:?}"),
        }
    };
    assert_eq!(resolved.sandbox_id, "sb");
}

// === an image service that is not a runtime service ===

struct NoImages;

#[tonic::async_trait]
impl cri::image_service_server::ImageService for NoImages {
    async fn list_images(
        &self,
        _: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        Ok(Response::new(cri::ListImagesResponse::default()))
    }
    async fn image_status(
        &self,
        _: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        Err(Status::unimplemented("image_status"))
    }
    async fn pull_image(
        &self,
        _: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        Err(Status::unimplemented("pull_image"))
    }
    async fn remove_image(
        &self,
        _: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        Err(Status::unimplemented("remove_image"))
    }
    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        Err(Status::unimplemented("image_fs_info"))
    }
}
