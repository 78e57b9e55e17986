//! A thin typed layer over netlink-proto and rtnetlink's message types: one socket opened
//! inside a namespace, verb methods, observed-state structs out. Raw netlink types stay in
//! this module.
//!
//! Writes are *pipelined and batched*: each verb method queues its request in call order
//! (the order the kernel applies them) and returns a [`Pending`] future that resolves once
//! the kernel has answered it; the first one awaited sends everything queued, many
//! requests to a datagram. Callers may hold many of them at once; see [`crate::apply`] for
//! the bounded window.

mod build;
mod convert;
pub mod filter;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::sync::lock;
use futures::StreamExt;
use ipnet::IpNet;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::proto::ReplyExpectation;
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use tracing::debug;

use crate::error::{Error, Result};
use crate::netns::NetnsExecutor;
use crate::observe::{ObservedAddress, ObservedLink, ObservedRoute, NES_ROUTE_PROTOCOL};
use crate::plan::{LinkKind, RouteTarget};

pub use convert::{parse_event, Change};

/// Receive buffer asked for each socket (root may exceed `rmem_max` with SO_RCVBUFFORCE).
const RCVBUF: usize = 8 << 20;

/// A kernel acknowledgement still to come.
pub type Pending = futures::future::BoxFuture<'static, Result<()>>;

/// The rtnetlink socket of one namespace.
#[derive(Clone)]
pub struct Netlink {
    /// Reads are answered on it; writes go through [`Writer`], batched.
    handle: Handle,
    writer: Writer,
    netns: Arc<str>,
    writes: Arc<AtomicU64>,
    /// The kernel serves one dump per socket at a time (another is EBUSY); status reads,
    /// the keeper and the event watcher share this socket, so dumps take turns.
    dumps: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("netns", &self.netns)
            .finish()
    }
}

impl Netlink {
    /// Opens a route-netlink socket inside the executor's namespace and drives it from the
    /// current tokio runtime.
    pub async fn open(exec: &NetnsExecutor) -> Result<Self> {
        let netns: Arc<str> = exec.path().display().to_string().into();
        let rt = tokio::runtime::Handle::current();
        let (conn, handle, unsolicited) = exec
            .run(move || -> std::io::Result<_> {
                let _enter = rt.enter();
                // netlink-proto directly, not rtnetlink's handle: only it sends many
                // requests in one datagram (`request_batch_with_expectation`).
                let (mut conn, handle, unsolicited) =
                    rtnetlink::proto::new_connection(rtnetlink::sys::constants::NETLINK_ROUTE)?;
                // The last write of a batch asks for an acknowledgement, and it says when the
                // batch is done.
                conn.set_forward_ack(true);
                let socket = conn.socket_mut().socket_mut();
                grow_rcvbuf(socket);
                // Dumps honour the filters in their request's header (as `ip` asks too):
                // the route dump leaves out the `local` table's routes, one or two for each
                // address. Without it (kernels before 4.20) they are dumped and dropped here.
                let _ = socket.set_netlink_get_strict_chk(true);
                Ok((conn, handle, unsolicited))
            })
            .await?
            .map_err(|source| Error::Socket {
                netns: netns.to_string(),
                source,
            })?;
        tokio::spawn(conn);
        Ok(Self {
            writer: Writer {
                handle: handle.clone(),
                queued: Arc::default(),
                refusals: Arc::new(std::sync::Mutex::new(Refusals::new(unsolicited))),
            },
            handle,
            netns,
            writes: Arc::new(AtomicU64::new(0)),
            dumps: Arc::default(),
        })
    }

    /// Opens a socket subscribed to link, IPv4/IPv6 address and route notifications. The
    /// socket lives as long as the returned [`Multicast`]: netlink-proto's connection task
    /// would otherwise notice a dropped receiver only at the next notification, holding the
    /// namespace until then.
    pub(crate) async fn open_multicast(exec: &NetnsExecutor) -> Result<Multicast> {
        use rtnetlink::MulticastGroup as G;
        let netns = exec.path().display().to_string();
        let rt = tokio::runtime::Handle::current();
        let log_netns = netns.clone();
        let (conn, handle, messages, port) = exec
            .run(move || -> std::io::Result<_> {
                let _enter = rt.enter();
                let groups = [
                    G::Link,
                    G::Ipv4Ifaddr,
                    G::Ipv6Ifaddr,
                    G::Ipv4Route,
                    G::Ipv6Route,
                ];
                let (mut conn, handle, messages) = rtnetlink::new_multicast_connection(&groups)?;
                let socket = conn.socket_mut().socket_mut();
                grow_rcvbuf(socket);
                // Only speed depends on it: the parser drops these routes anyway.
                if let Err(error) = filter::drop_routes_nes_never_reads(socket) {
                    tracing::warn!(netns = %log_netns, %error, "no notification filter; unread routes are parsed");
                }
                let mut addr = rtnetlink::sys::SocketAddr::new(0, 0);
                socket.get_address(&mut addr)?;
                Ok((conn, handle, messages, addr.port_number()))
            })
            .await?
            .map_err(|source| Error::Socket { netns, source })?;
        let conn = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn));
        Ok(Multicast {
            messages,
            handle,
            port,
            _conn: conn,
        })
    }

    /// Namespace path, for errors and logs.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Netlink write requests sent so far on this socket.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    // === reads ===

    pub async fn get_links(&self) -> Result<Vec<ObservedLink>> {
        let _turn = self.dumps.lock().await;
        let get = RouteNetlinkMessage::GetLink(LinkMessage::default());
        let answers = self.read(get, NLM_F_DUMP, "links", "dump links").await?;
        Ok(answers
            .into_iter()
            .filter_map(|c| match c {
                Change::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    pub async fn get_link(&self, name: &str) -> Result<Option<ObservedLink>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_one(m, name).await
    }

    /// The link with this index, if any.
    pub async fn get_link_by_index(&self, index: u32) -> Result<Option<ObservedLink>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.get_one(m, &format!("index {index}")).await
    }

    async fn get_one(&self, m: LinkMessage, name: &str) -> Result<Option<ObservedLink>> {
        let get = RouteNetlinkMessage::GetLink(m);
        match self.read(get, 0, &format!("link {name}"), "get link").await {
            Ok(answers) => Ok(answers.into_iter().find_map(|c| match c {
                Change::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(Error::Kernel { errno, .. }) if errno == libc_enodev() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_addresses(&self) -> Result<Vec<ObservedAddress>> {
        let _turn = self.dumps.lock().await;
        let get = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        let answers = self
            .read(get, NLM_F_DUMP, "addresses", "dump addresses")
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|c| match c {
                Change::NewAddress(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// Unicast routes of every table but `local`, both families.
    pub async fn dump_routes(&self) -> Result<Vec<ObservedRoute>> {
        let _turn = self.dumps.lock().await;
        let get = RouteNetlinkMessage::GetRoute(route_dump_request());
        let answers = self.read(get, NLM_F_DUMP, "routes", "dump routes").await?;
        Ok(answers
            .into_iter()
            .filter_map(|c| match c {
                Change::NewRoute(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// Sends one read request and collects its answers, read as events are
    /// ([`convert::change`]); a refusal is [`Error::Kernel`].
    async fn read(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        object: &str,
        op: &'static str,
    ) -> Result<Vec<Change>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | flags;
        let mut answers = self
            .handle
            .request(req, kernel())
            .map_err(|e| Error::Netlink {
                object: format!("{object} in {}", self.netns),
                op,
                message: e.to_string(),
            })?;
        let mut out = Vec::new();
        while let Some(m) = answers.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => out.extend(convert::change(&inner)),
                NetlinkPayload::Error(e) => {
                    if let Some(errno) = errno_of(&e) {
                        return Err(Error::Kernel {
                            object: object.to_string(),
                            op,
                            errno,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    // === writes (pipelined, batched) ===

    /// Creates a link. `parent` is the index of the parent link in the namespace of this
    /// socket; `move_to` is an open namespace file the new link is created in (for a pod
    /// link made from a host parent); `peer_ns` is where a veth's peer goes.
    pub fn create_link(
        &self,
        name: &str,
        kind: &LinkKind,
        mtu: Option<u32>,
        parent: Option<u32>,
        move_to: Option<std::os::fd::RawFd>,
        peer_ns: Option<std::os::fd::RawFd>,
    ) -> Result<Pending> {
        let mut msg = build::new_link(name, kind, parent, peer_ns)?;
        let object = format!("link {name}");
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(fd) = move_to {
            msg.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        self.write(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            object,
            "create link",
        )
    }

    /// Changes settings of a link; `None` leaves a setting alone. `controller`:
    /// `Some(Some(i))` enslaves to bridge `i`, `Some(None)` releases.
    pub fn set_link(
        &self,
        index: u32,
        ifname: &str,
        mtu: Option<u32>,
        up: Option<bool>,
        controller: Option<Option<u32>>,
        alias: Option<&str>,
    ) -> Result<Pending> {
        let mut b = LinkUnspec::new_with_index(index);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        match controller {
            Some(Some(c)) => b = b.controller(c),
            Some(None) => b = b.nocontroller(),
            None => {}
        }
        if let Some(a) = alias {
            b = b.alias(a);
        }
        match up {
            Some(true) => b = b.up(),
            Some(false) => b = b.down(),
            None => {}
        }
        self.write(
            RouteNetlinkMessage::SetLink(b.build()),
            0,
            format!("link {ifname}"),
            "set link",
        )
    }

    pub fn del_link(&self, index: u32, ifname: &str) -> Result<Pending> {
        let msg = LinkUnspec::new_with_index(index).build();
        self.write(
            RouteNetlinkMessage::DelLink(msg),
            0,
            format!("link {ifname}"),
            "delete link",
        )
    }

    pub fn add_address(&self, index: u32, ifname: &str, addr: IpNet) -> Result<Pending> {
        let msg = address_message(index, addr);
        let object = format!("address {addr} on {ifname}");
        self.write(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            object,
            "add address",
        )
    }

    pub fn del_address(&self, index: u32, ifname: &str, addr: IpNet) -> Result<Pending> {
        let msg = address_message(index, addr);
        self.write(
            RouteNetlinkMessage::DelAddress(msg),
            0,
            format!("address {addr} on {ifname}"),
            "delete address",
        )
    }

    /// Adds (or replaces) a route with nes's route protocol. `oif` is the index of `route.dev`.
    pub fn add_route(
        &self,
        route: &RouteTarget,
        oif: Option<u32>,
        replace: bool,
    ) -> Result<Pending> {
        let object = format!("route {}", route.key);
        let mut msg = route_message(route, &object)?;
        if let Some(i) = oif {
            msg.attributes
                .push(rtnetlink::packet_route::route::RouteAttribute::Oif(i));
        }
        if let Some(via) = route.via {
            msg.attributes
                .push(rtnetlink::packet_route::route::RouteAttribute::Gateway(
                    via.into(),
                ));
        }
        let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        let op = if replace {
            "replace route"
        } else {
            "add route"
        };
        self.write(RouteNetlinkMessage::NewRoute(msg), flags, object, op)
    }

    /// Deletes nes's route with this key (the kernel matches destination, table, metric
    /// and protocol, so a route of someone else is never hit).
    pub fn del_route(&self, route: &RouteTarget) -> Result<Pending> {
        let object = format!("route {}", route.key);
        let msg = route_message(route, &object)?;
        self.write(
            RouteNetlinkMessage::DelRoute(msg),
            0,
            object,
            "delete route",
        )
    }

    /// Sends one write request now and returns the acknowledgement to await.
    fn write(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        object: String,
        op: &'static str,
    ) -> Result<Pending> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let (tx, rx) = futures::channel::oneshot::channel();
        self.writer.queue(Queued { req, tx });
        self.writes.fetch_add(1, Ordering::Relaxed);
        debug!(netns = %self.netns, %object, op, "netlink write");
        let writer = self.writer.clone();
        Ok(Box::pin(async move {
            writer.flush();
            match rx.await {
                Ok(None) => Ok(()),
                Ok(Some(errno)) => Err(Error::Kernel { object, op, errno }),
                Err(_) => Err(Error::Netlink {
                    object,
                    op,
                    message: "the netlink socket closed before the kernel answered".into(),
                }),
            }
        }))
    }
}

type Handle = rtnetlink::proto::ConnectionHandle<RouteNetlinkMessage>;

/// The kernel's netlink address.
fn kernel() -> rtnetlink::sys::SocketAddr {
    rtnetlink::sys::SocketAddr::new(0, 0)
}

/// A write waiting to be sent, and where its answer goes (`Some(errno)`: refused).
struct Queued {
    req: NetlinkMessage<RouteNetlinkMessage>,
    tx: futures::channel::oneshot::Sender<Option<i32>>,
}

/// Largest datagram of writes sent at once: well under the socket's default send buffer
/// (the kernel refuses a datagram larger than it, EMSGSIZE).
const BATCH_BYTES: usize = 32 << 10;

/// The write side of a namespace's socket. Writes are queued in call order and sent
/// together, many messages per datagram, when the first of their answers is awaited: the
/// kernel runs a datagram's messages in order, so one system call carries many writes where
/// `ip -batch` makes one per write. Only the last write of a datagram asks for an
/// acknowledgement; the kernel answers the others only when it refuses them (see
/// [`Refusals`]), which spares it an acknowledgement for each and the connection reading and
/// routing each.
#[derive(Clone)]
struct Writer {
    handle: Handle,
    queued: Arc<std::sync::Mutex<Vec<Queued>>>,
    refusals: Arc<std::sync::Mutex<Refusals>>,
}

impl Writer {
    fn queue(&self, q: Queued) {
        lock(&self.queued).push(q);
    }

    /// Sends everything queued, in order, in datagrams of at most [`BATCH_BYTES`].
    fn flush(&self) {
        // Taken and sent under the lock: batches reach the connection in queue order.
        let mut queued = lock(&self.queued);
        let mut batch = Vec::new();
        let mut bytes = 0;
        for q in queued.drain(..) {
            let len = rtnetlink::packet_core::Emitable::buffer_len(&q.req);
            if !batch.is_empty() && bytes + len > BATCH_BYTES {
                self.send(std::mem::take(&mut batch));
                bytes = 0;
            }
            bytes += len;
            batch.push(q);
        }
        if !batch.is_empty() {
            self.send(batch);
        }
    }

    /// Sends one datagram of writes; each write's answer goes out once the last one's
    /// acknowledgement (or refusal) is here.
    fn send(&self, batch: Vec<Queued>) {
        let n = batch.len();
        let mut txs = Vec::with_capacity(n);
        let mut reqs = Vec::with_capacity(n);
        for (i, q) in batch.into_iter().enumerate() {
            let mut req = q.req;
            let expect = match i + 1 == n {
                true => ReplyExpectation::Expected,
                false => {
                    req.header.flags &= !NLM_F_ACK;
                    ReplyExpectation::NotExpected
                }
            };
            reqs.push((req, expect));
            txs.push(q.tx);
        }
        // On failure every sender is dropped: each write says the socket closed.
        let Ok(mut answers) = self.handle.request_batch_with_expectation(reqs, kernel()) else {
            return;
        };
        let refusals = self.refusals.clone();
        tokio::spawn(async move {
            while let Some(m) = answers.next().await {
                let NetlinkPayload::Error(e) = m.payload else {
                    continue;
                };
                let last = m.header.sequence_number;
                let mut refusals = lock(&refusals);
                refusals.receive();
                let mut results = refusals.take(last, n);
                results[n - 1] = errno_of(&e);
                for (tx, result) in txs.into_iter().zip(results) {
                    let _ = tx.send(result);
                }
                return;
            }
            // The socket closed first: dropping the senders says so to each write.
        });
    }
}

/// Refusals of writes that asked for no acknowledgement. netlink-proto hands the kernel's
/// answer to such a write to the connection's unsolicited stream, and numbers a batch's
/// messages one after another, so an answer is placed by its sequence number relative to
/// its batch's last. The connection forwards unsolicited messages before answers it reads
/// with or after them, and the kernel answers a datagram in order: by the time the last
/// write's acknowledgement is received, every refusal of its batch is in the stream. (No
/// answer is lost to a full receive buffer: the writes in flight are bounded by
/// [`crate::apply`]'s window, their answers far below the socket's [`RCVBUF`].)
struct Refusals {
    /// Only the kernel's answers reach it: the socket joins no multicast group.
    stream: UnsolicitedStream,
    /// Refusals received and not yet taken by their batch, by sequence number: a batch's
    /// task may receive those of a batch whose task has not run yet.
    by_seq: foldhash::HashMap<u32, i32>,
}

type UnsolicitedStream = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

impl Refusals {
    fn new(stream: UnsolicitedStream) -> Self {
        Self {
            stream,
            by_seq: Default::default(),
        }
    }

    /// Moves what the connection has forwarded so far into `by_seq`.
    fn receive(&mut self) {
        while let Ok((m, _)) = self.stream.try_recv() {
            self.record(&m);
        }
    }

    fn record(&mut self, m: &NetlinkMessage<RouteNetlinkMessage>) {
        if let NetlinkPayload::Error(e) = &m.payload {
            if let Some(errno) = errno_of(e) {
                self.by_seq.insert(m.header.sequence_number, errno);
            }
        }
    }

    /// The answers of a batch of `n` writes whose last has sequence number `last`: the
    /// refusal of each, or `None` (applied). Sequence numbers wrap.
    fn take(&mut self, last: u32, n: usize) -> Vec<Option<i32>> {
        let mut answers = vec![None; n];
        if self.by_seq.is_empty() {
            return answers;
        }
        let first = last.wrapping_sub(n.saturating_sub(1) as u32);
        for (seq, answer) in (0..).map(|i| first.wrapping_add(i)).zip(&mut answers) {
            *answer = self.by_seq.remove(&seq);
        }
        answers
    }
}

fn errno_of(e: &rtnetlink::packet_core::ErrorMessage) -> Option<i32> {
    e.code.map(|c| -c.get())
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

/// A namespace's notification socket: the notifications, and a way to know that all of
/// them up to now have been received ([`Multicast::barrier`]).
pub(crate) struct Multicast {
    pub messages: futures::channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    handle: rtnetlink::Handle,
    /// This socket's netlink port: the kernel's answers to it carry it, notifications
    /// carry their writer's.
    port: u32,
    _conn: tokio_util::task::AbortOnDropHandle<()>,
}

/// Barrier requests tried before giving up (see [`Multicast::barrier`]).
const BARRIER_TRIES: usize = 3;

impl Multicast {
    /// Asks this socket for the loopback link (index 1 in every namespace). The kernel
    /// queues a write's notifications on this socket before it answers the write (and a
    /// write is answered only after its datagram's last), and the connection hands messages
    /// over in order, so once the answer is here every notification of a write answered
    /// before the call is in [`Multicast::messages`].
    /// netlink-proto matches answers by sequence number, which a notification echoes from
    /// its writer's socket: a notification taken for the answer is given to `stray` (it
    /// must be handled like the others) and the request is sent again. `false` when no
    /// true answer came.
    pub async fn barrier(
        &mut self,
        mut stray: impl FnMut(NetlinkMessage<RouteNetlinkMessage>),
    ) -> bool {
        for _ in 0..BARRIER_TRIES {
            let mut link = LinkMessage::default();
            link.header.index = 1;
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(link));
            req.header.flags = NLM_F_REQUEST;
            let Ok(answer) = self.handle.request(req) else {
                return false;
            };
            let mut answered = false;
            for msg in answer.collect::<Vec<_>>().await {
                let ours = msg.header.port_number == self.port
                    && matches!(
                        msg.payload,
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(_))
                    );
                match ours {
                    true => answered = true,
                    false => stray(msg),
                }
            }
            if answered {
                return true;
            }
        }
        false
    }
}

/// A dump of unicast routes only: the kernel leaves out the `local` and broadcast routes
/// each address brings, which [`convert::route`] would drop (on a socket with strict checks;
/// see [`Netlink::open`]).
fn route_dump_request() -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.kind = rtnetlink::packet_route::route::RouteType::Unicast;
    m
}

fn grow_rcvbuf(sock: &rtnetlink::sys::Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = sock.set_rx_buf_sz(RCVBUF);
    }
}

fn address_message(index: u32, addr: IpNet) -> AddressMessage {
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::AddressFamily;
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = addr.prefix_len();
    msg.header.family = if addr.addr().is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.attributes.push(AddressAttribute::Local(addr.addr()));
    if addr.addr().is_ipv4() {
        msg.attributes.push(AddressAttribute::Address(addr.addr()));
        if let (IpNet::V4(n), true) = (addr, addr.prefix_len() < 31) {
            msg.attributes
                .push(AddressAttribute::Broadcast(n.broadcast()));
        }
    }
    msg
}

fn route_message(route: &RouteTarget, object: &str) -> Result<RouteMessage> {
    let b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(|e| Error::Conflict {
            object: object.to_string(),
            reason: e.to_string(),
        })?
        .table_id(route.table)
        .protocol(RouteProtocol::Other(NES_ROUTE_PROTOCOL))
        .priority(route.metric);
    let mut msg = b.build();
    if route.via.is_none() && route.dst.addr().is_ipv4() {
        msg.header.scope = rtnetlink::packet_route::route::RouteScope::Link;
    }
    if route.metric == 0 {
        msg.attributes.retain(|a| {
            !matches!(
                a,
                rtnetlink::packet_route::route::RouteAttribute::Priority(0)
            )
        });
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(seq: u32, errno: i32) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut e = rtnetlink::packet_core::ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-errno);
        let mut m = NetlinkMessage::new(Default::default(), NetlinkPayload::Error(e));
        m.header.sequence_number = seq;
        m
    }

    fn refusals(received: &[(u32, i32)]) -> Refusals {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        for &(seq, errno) in received {
            tx.unbounded_send((refusal(seq, errno), kernel()))
                .expect("open channel");
        }
        let mut r = Refusals::new(rx);
        r.receive();
        r
    }

    #[test]
    fn each_refusal_goes_to_its_own_write_by_sequence_number() {
        // A batch of five whose last is number 14: numbers 10..=14.
        let mut r = refusals(&[(10, 2), (12, 19)]);
        assert_eq!(r.take(14, 5), vec![Some(2), None, Some(19), None, None]);
        assert!(r.by_seq.is_empty(), "all taken");
    }

    #[test]
    fn a_later_batchs_refusal_waits_for_its_batch_and_an_acknowledgement_is_no_refusal() {
        // Batch 1..=3 and batch 4..=6; the second batch's task ran first.
        let ack = refusal(1, 0);
        let mut r = refusals(&[(2, 101), (5, 22)]);
        r.record(&ack);
        assert_eq!(r.take(6, 3), vec![None, Some(22), None]);
        assert_eq!(r.take(3, 3), vec![None, Some(101), None]);
        assert!(r.by_seq.is_empty());
    }

    #[test]
    fn sequence_numbers_wrap_within_a_batch() {
        let mut r = refusals(&[(u32::MAX, 17), (0, 2)]);
        assert_eq!(r.take(1, 4), vec![None, Some(17), Some(2), None]);
        assert!(r.by_seq.is_empty());
    }

    #[test]
    fn a_batch_of_one_is_its_acknowledgement() {
        let mut r = refusals(&[]);
        assert_eq!(r.take(7, 1), vec![None]);
    }
}
