//! `nes-shim`: the tiny container nes injects into labelled pods. It does no network work.
//!
//! - `nes-shim` follows the pod's status on `@nes` (the agent's socket in this pod's netns):
//!   it reads `/v1/self/status`, then follows `/v1/self/events` and reads the status again
//!   after each burst of events, reconnecting with backoff. It keeps the last answer in
//!   memory and serves it on the abstract socket `@nes-shim` (the container has a read-only
//!   root filesystem and no volume). While `@nes` is unreachable (the agent restarting or
//!   being upgraded) the last answer stands. SIGTERM ends it at once.
//! - `nes-shim probe` (the readiness probe) asks the running shim: exit 0 only when the
//!   last answer said Applied.
//!
//! Only std, serde_json and nes's wire types: one HTTP/1.1 exchange at a time over an
//! abstract unix socket, so the static binary stays small.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::wire::{Event, StatusView, POD_SOCKET_NAME};
use common::backoff::Backoff;
use common::sync::lock;
use nix::sys::signal::{SigSet, Signal};

/// Where the running shim answers `nes-shim probe`.
const SHIM_SOCKET_NAME: &str = "nes-shim";
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => follow(),
        (Some("probe"), None) => probe(),
        _ => {
            eprintln!("usage: nes-shim [probe]");
            ExitCode::from(2)
        }
    }
}

// === the probe ===

/// Exit 0 only when the running shim's last answer said Applied.
fn probe() -> ExitCode {
    let answer = connect(SHIM_SOCKET_NAME).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        s.read_to_string(&mut line)?;
        Ok(line)
    });
    match answer {
        Ok(line) => {
            println!("{}", line.trim_end());
            if line.starts_with("applied") {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            println!("nes-shim is not answering on @{SHIM_SOCKET_NAME}: {error}");
            ExitCode::FAILURE
        }
    }
}

// === the follower ===

/// The last thing nes said about this pod, as `nes-shim probe` prints it.
type Answer = Arc<Mutex<String>>;

fn follow() -> ExitCode {
    // SIGTERM and SIGINT are taken by a thread that exits at once (the shim is PID 1 of its
    // container: without this, SIGTERM would be ignored until the kill).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(errno) = signals.thread_block() {
        eprintln!("nes-shim: cannot block signals: {errno}");
        return ExitCode::FAILURE;
    }
    std::thread::spawn(move || {
        let _ = signals.wait();
        std::process::exit(0);
    });

    let answer: Answer = Arc::new(Mutex::new("unknown: nes has not answered yet".into()));
    let served = answer.clone();
    std::thread::spawn(move || serve(served));
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
    let mut since: Option<u64> = None;
    loop {
        match follow_once(&answer, &mut since) {
            // The stream ended cleanly (agent stopping): reconnect soon.
            Ok(()) => backoff.reset(),
            Err(error) => {
                eprintln!("nes-shim: @{POD_SOCKET_NAME}: {error}; keeping the last answer")
            }
        }
        std::thread::sleep(backoff.next_delay());
    }
}

/// Serves the last answer on `@nes-shim`: one line per connection.
fn serve(answer: Answer) {
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
    let listener = loop {
        match SocketAddr::from_abstract_name(SHIM_SOCKET_NAME.as_bytes())
            .and_then(|a| UnixListener::bind_addr(&a))
        {
            Ok(l) => break l,
            // A previous shim of this pod may linger for a moment.
            Err(error) => {
                eprintln!("nes-shim: cannot bind @{SHIM_SOCKET_NAME}: {error}; retrying");
                std::thread::sleep(backoff.next_delay());
            }
        }
    };
    for stream in listener.incoming().flatten() {
        let line = lock(&answer).clone();
        let mut stream = stream;
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = writeln!(stream, "{line}");
    }
}

/// One connection's worth of following: the status now, then the events stream, reading
/// the status again after each burst of events. Returns when the stream ends.
fn follow_once(answer: &Answer, since: &mut Option<u64>) -> std::io::Result<()> {
    refresh(answer)?;
    let path = match since {
        Some(seq) => format!("/v1/self/events?since={seq}"),
        None => "/v1/self/events".to_string(),
    };
    let mut reader = BufReader::new(request(&path)?);
    let (status, chunked) = read_head(&mut reader)?;
    if status == 410 {
        *since = None; // the agent restarted: start from what it has
        return Ok(());
    }
    if status != 200 || !chunked {
        return Err(other(format!("events: HTTP {status}")));
    }
    let mut partial = Vec::new();
    loop {
        let Some(chunk) = read_chunk(&mut reader)? else {
            return Ok(());
        };
        partial.extend_from_slice(&chunk);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            if let Ok(event) = serde_json::from_slice::<Event>(&line) {
                *since = Some(event.seq);
            }
        }
        // A burst is over when nothing more is buffered: one status read covers it.
        if reader.buffer().is_empty() {
            refresh(answer)?;
        }
    }
}

/// Reads `/v1/self/status` and keeps what it says.
fn refresh(answer: &Answer) -> std::io::Result<()> {
    let stream = request("/v1/self/status")?;
    stream.set_read_timeout(Some(STATUS_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let (status, chunked) = read_head(&mut reader)?;
    let mut body = Vec::new();
    if chunked {
        while let Some(chunk) = read_chunk(&mut reader)? {
            body.extend_from_slice(&chunk);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    if status != 200 {
        return Err(other(format!("status: HTTP {status}")));
    }
    let view: StatusView = serde_json::from_slice(&body).map_err(|e| other(e.to_string()))?;
    *lock(answer) = summary(&view);
    Ok(())
}

/// The probe's line for a status.
fn summary(view: &StatusView) -> String {
    if view.is_applied() {
        return format!("applied: generation {}", view.generation);
    }
    match view.status.conditions.iter().find(|c| c.type_ == "Applied") {
        Some(c) => format!("not applied: {}: {}", c.reason, c.message),
        None => "not applied: no Applied condition yet".to_string(),
    }
}

/// Sends `GET path` to `@nes`, refusing a server that is not root (something in the pod
/// squatting the name).
fn request(path: &str) -> std::io::Result<UnixStream> {
    let mut stream = connect(POD_SOCKET_NAME)?;
    let creds = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)?;
    if creds.uid() != 0 {
        return Err(other(format!(
            "@{POD_SOCKET_NAME} is held by uid {}, not by nes",
            creds.uid()
        )));
    }
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: nes\r\nUser-Agent: nes-shim\r\nConnection: close\r\n\r\n"
    )?;
    Ok(stream)
}

fn connect(name: &str) -> std::io::Result<UnixStream> {
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
}

/// The status code and whether the body is chunked.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(u16, bool)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| other(format!("not an HTTP response: {line:?}")))?;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(other("connection closed in the headers".into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok((status, chunked));
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
}

/// One chunk of a chunked body; `None` at its end.
fn read_chunk(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let size = line.trim_end().split(';').next().unwrap_or_default();
    let size = usize::from_str_radix(size, 16).map_err(|_| other(format!("bad chunk {line:?}")))?;
    if size == 0 {
        return Ok(None);
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok(Some(chunk))
}

fn other(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_answer_is_read_back_whole() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        assert_eq!(read_head(&mut r).unwrap(), (200, true));
        let mut body = Vec::new();
        while let Some(c) = read_chunk(&mut r).unwrap() {
            body.extend(c);
        }
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn a_non_http_answer_is_an_error() {
        let mut r = BufReader::new(&b"SSH-2.0\r\n"[..]);
        assert!(read_head(&mut r).is_err());
    }
}
