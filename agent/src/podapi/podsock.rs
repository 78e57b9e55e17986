//! The pod's socket: the abstract unix address `@nes`, bound inside the pod's network
//! namespace. Abstract names are scoped per netns, so only that pod's processes reach it.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::error::{Error, Result};
use crate::netns::NetnsExecutor;

/// Response header by which agents recognise each other on `@nes`.
pub const SERVER_HEADER: &str = "nes-agent";

/// Binds `@name` on the namespace's thread and returns it ready for tokio.
pub async fn bind(ns: &NetnsExecutor, name: &str) -> Result<tokio::net::UnixListener> {
    let owned = name.to_string();
    let bound = ns.run(move || bind_here(&owned)).await?;
    let io = |source| Error::PodSocket {
        name: name.to_string(),
        source,
    };
    match bound {
        Ok(listener) => {
            listener.set_nonblocking(true).map_err(io)?;
            tokio::net::UnixListener::from_std(listener).map_err(io)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(identify_holder(ns, name).await),
        Err(source) => Err(io(source)),
    }
}

fn bind_here(name: &str) -> std::io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    UnixListener::bind_addr(&addr)
}

/// Connects to `@name` from inside the namespace (tests and probes).
pub async fn connect(ns: &NetnsExecutor, name: &str) -> Result<tokio::net::UnixStream> {
    let owned = name.to_string();
    let io = |source| Error::PodSocket {
        name: name.to_string(),
        source,
    };
    let stream = ns.run(move || connect_here(&owned)).await?.map_err(io)?;
    stream.set_nonblocking(true).map_err(io)?;
    tokio::net::UnixStream::from_std(stream).map_err(io)
}

fn connect_here(name: &str) -> std::io::Result<UnixStream> {
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
}

/// Tells another agent from a squatter: the holder must run as root and answer as a nes agent.
async fn identify_holder(ns: &NetnsExecutor, name: &str) -> Error {
    let stream = match connect(ns, name).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let creds = match getsockopt(&stream, PeerCredentials) {
        Ok(c) => c,
        Err(errno) => {
            return Error::PodSocket {
                name: name.into(),
                source: errno.into(),
            }
        }
    };
    let (uid, pid) = (creds.uid(), creds.pid());
    if uid == 0 && answers_as_agent(stream).await {
        Error::SocketHeldByAgent {
            name: name.into(),
            pid,
        }
    } else {
        Error::SocketSquatted {
            name: name.into(),
            uid,
            pid,
        }
    }
}

async fn answers_as_agent(stream: tokio::net::UnixStream) -> bool {
    use http_body_util::Empty;
    let probe = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get("/healthz")
            .header("host", "nes")
            .body(Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(
            resp.headers()
                .get(http::header::SERVER)
                .is_some_and(|v| v.as_bytes() == SERVER_HEADER.as_bytes()),
        )
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}
