//! The gRPC channel to the runtime socket, and the mapping of transport failures to
//! [`ResolveError`]. The channel is lazy and reconnects on the next call after the runtime
//! restarts; calls multiplex on one HTTP/2 connection, so a hung call never holds others.

use std::error::Error as _;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

use super::error::ResolveError;

/// A lazily connected channel to a unix socket. Nothing is dialled until the first call.
pub fn unix_channel(socket: &Path, connect_timeout: Duration) -> Channel {
    let path = socket.to_path_buf();
    // The authority is ignored: the connector dials the socket.
    Endpoint::from_static("http://runtime.invalid")
        .connect_timeout(connect_timeout)
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
}

/// How a failed call is classified. Pure, from the status and its source chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Dialling the socket failed with this I/O error kind.
    Connect(io::ErrorKind, String),
    /// The peer does not implement the called service.
    Unimplemented(String),
    /// The peer's deadline (grpc-timeout) expired.
    Deadline,
    /// The connection broke after the call was sent (runtime restarted or crashed).
    ConnectionLost(String),
    /// The peer does not speak HTTP/2 gRPC at all.
    Protocol(String),
    /// Any other status the runtime answered.
    Status,
}

/// Classifies a failed call: an I/O error anywhere in the source chain is a dial failure
/// (or a lost connection when it is not a dial error); an HTTP/2 protocol error is a peer
/// that is not gRPC; Unavailable/Unknown/Cancelled carrying a transport source is a lost
/// connection. h2 is not a direct dependency, so its errors are recognised by their text.
pub fn classify(status: &tonic::Status) -> Failure {
    let mut io_kind = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(err) = cur {
        // tonic's own client-side grpc-timeout.
        if err.is::<tonic::TimeoutExpired>() {
            return Failure::Deadline;
        }
        if let Some(e) = err.downcast_ref::<io::Error>() {
            io_kind.get_or_insert((e.kind(), e.to_string()));
        }
        cur = err.source();
    }
    let chain = chain_text(status);
    if let Some((kind, msg)) = io_kind {
        match kind {
            io::ErrorKind::NotFound
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::ConnectionRefused => return Failure::Connect(kind, msg),
            _ => return Failure::ConnectionLost(chain),
        }
    }
    match status.code() {
        Code::Unimplemented => Failure::Unimplemented(status.message().to_string()),
        Code::DeadlineExceeded => Failure::Deadline,
        _ if looks_like_protocol_error(&chain) => Failure::Protocol(chain),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
            if status.source().is_some() =>
        {
            Failure::ConnectionLost(chain)
        }
        // tonic reports a connection closed under an in-flight call as Unavailable or
        // Unknown with a message naming the transport, sometimes without a source.
        Code::Unavailable | Code::Unknown if mentions_transport(status.message()) => {
            Failure::ConnectionLost(chain)
        }
        _ => Failure::Status,
    }
}

fn chain_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = err.source();
    }
    text
}

fn looks_like_protocol_error(chain: &str) -> bool {
    let c = chain.to_ascii_lowercase();
    c.contains("frame with invalid size")
        || c.contains("invalid http version")
        || c.contains("http2 error: connection error detected: frame")
        || (c.contains("protocol error") && !c.contains("broken pipe") && !c.contains("reset"))
        || c.contains("invalid content-type")
        || c.contains("received http/1")
}

fn mentions_transport(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("transport")
        || m.contains("connection")
        || m.contains("broken pipe")
        || m.contains("h2")
        || m.contains("stream")
}

/// Checks that the peer speaks HTTP/2: sends the client connection preface and an empty
/// SETTINGS frame, and expects a SETTINGS frame back. Used to tell a socket that is not a
/// gRPC server (which may answer HTTP/1.1 and hang up) from a runtime that went away.
/// `Ok(true)`: HTTP/2; `Ok(false)`: something else answered (its first bytes in the text);
/// `Err`: the connection failed or closed without a word.
pub async fn probe_http2(socket: &Path, timeout: Duration) -> Result<(bool, String), io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await?;
        let mut head = [0u8; 9];
        let mut read = 0;
        while read < head.len() {
            let n = stream.read(&mut head[read..]).await?;
            if n == 0 {
                break;
            }
            read += n;
        }
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed without answering",
            ));
        }
        // A frame header: 24-bit length, type 0x4 (SETTINGS), flags, stream 0.
        let is_h2 = read == head.len() && head[3] == 0x4 && head[5..9] == [0, 0, 0, 0];
        Ok((is_h2, String::from_utf8_lossy(&head[..read]).into_owned()))
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")))
}

/// Everything a call needs to turn a failure into a typed error.
#[derive(Clone, Debug)]
pub struct CallCtx<'a> {
    pub pod: &'a str,
    pub socket: &'a Path,
    pub rpc: &'static str,
    pub timeout: Duration,
}

impl CallCtx<'_> {
    /// Maps a failed call to its typed error.
    pub fn error(&self, status: tonic::Status) -> ResolveError {
        let pod = self.pod.to_string();
        let socket: PathBuf = self.socket.to_path_buf();
        match classify(&status) {
            Failure::Connect(kind, msg) => {
                let source = io::Error::new(kind, msg);
                match kind {
                    io::ErrorKind::NotFound => ResolveError::SocketMissing {
                        pod,
                        socket,
                        source,
                    },
                    io::ErrorKind::PermissionDenied => ResolveError::PermissionDenied {
                        pod,
                        socket,
                        source,
                    },
                    _ => ResolveError::RuntimeUnavailable {
                        pod,
                        socket,
                        source,
                    },
                }
            }
            Failure::Unimplemented(msg) => ResolveError::NotCriSocket {
                pod,
                socket,
                detail: format!("{} is unimplemented: {msg}", self.rpc),
            },
            Failure::Protocol(msg) => ResolveError::NotCriSocket {
                pod,
                socket,
                detail: format!("the peer does not speak gRPC: {msg}"),
            },
            Failure::Deadline => ResolveError::DeadlineExceeded {
                pod,
                socket,
                rpc: self.rpc,
                after: self.timeout,
            },
            Failure::ConnectionLost(_) => ResolveError::RuntimeRestarted {
                pod,
                socket,
                rpc: self.rpc,
                source: status,
            },
            Failure::Status => ResolveError::Rpc {
                pod,
                socket,
                rpc: self.rpc,
                source: status,
            },
        }
    }

    /// Runs one call under the deadline (also sent to the runtime as grpc-timeout) and maps
    /// its failure.
    pub async fn run<T, F>(&self, call: F) -> Result<T, ResolveError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(self.error(status)),
            Err(_) => Err(ResolveError::DeadlineExceeded {
                pod: self.pod.to_string(),
                socket: self.socket.to_path_buf(),
                rpc: self.rpc,
                after: self.timeout,
            }),
        }
    }

    /// A request carrying the deadline as grpc-timeout.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.timeout);
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn with_io(kind: io::ErrorKind) -> tonic::Status {
        let mut s = tonic::Status::unavailable("error trying to connect");
        s.set_source(std::sync::Arc::new(Wrapped(io::Error::new(kind, "dial"))));
        s
    }

    #[test]
    fn classify_cases() {
        let cases: Vec<(&str, tonic::Status, Failure)> = vec![
            (
                "missing socket",
                with_io(io::ErrorKind::NotFound),
                Failure::Connect(io::ErrorKind::NotFound, "dial".into()),
            ),
            (
                "permission denied",
                with_io(io::ErrorKind::PermissionDenied),
                Failure::Connect(io::ErrorKind::PermissionDenied, "dial".into()),
            ),
            (
                "refused",
                with_io(io::ErrorKind::ConnectionRefused),
                Failure::Connect(io::ErrorKind::ConnectionRefused, "dial".into()),
            ),
            (
                "reset under a call",
                with_io(io::ErrorKind::ConnectionReset),
                Failure::ConnectionLost("error trying to connect: transport error: dial".into()),
            ),
            (
                "unimplemented",
                tonic::Status::unimplemented("no such service"),
                Failure::Unimplemented("no such service".into()),
            ),
            (
                "server deadline",
                tonic::Status::deadline_exceeded("late"),
                Failure::Deadline,
            ),
            (
                "application error",
                tonic::Status::not_found("sandbox gone"),
                Failure::Status,
            ),
            (
                "unknown without transport words is an application error",
                tonic::Status::unknown("boom"),
                Failure::Status,
            ),
        ];
        for (name, status, want) in cases {
            assert_eq!(classify(&status), want, "{name}");
        }
    }
}
