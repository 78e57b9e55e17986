//! Netlink events of a pod namespace as typed [`NetEvent`]s, drift detection and the
//! keeper loop that re-converges on drift (debounced) and retries failures with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::NetworkConfigurationSpec;
use futures::StreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch as tokio_watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::apply::ApplyReport;
use crate::backoff::Backoff;
use crate::engine::{Checked, PodNetwork};
use crate::error::Result;
use crate::mirror::Mirror;
use crate::netlink::{parse_event, Change, Netlink};
use crate::netns::NetnsExecutor;
use crate::observe::{ObservedLink, NES_ROUTE_PROTOCOL};
use crate::owned::Owned;
use crate::saved::Saved;

/// Batches are buffered this deep per subscriber; a slow subscriber sees `Lagged` (the
/// keeper then runs one more pass, the pod's event log says events were lost). A broadcast
/// channel writes every slot up front, one per pod: 1024 slots were 80 KiB of each pod's
/// RSS, 9 MiB on a 110-pod node (issue #25).
const EVENT_BUFFER: usize = 256;

/// Most events in one batch. The listener sends every event it has at hand at once, so a
/// burst (a pass's echoes) wakes each subscriber once per batch instead of once per object;
/// a subscriber that lags holds at most `EVENT_BUFFER` batches of this many.
const MAX_BATCH: usize = 32;

/// The most events a subscriber that never reads can hold, however many happen: the
/// channel keeps the newest `EVENT_BUFFER` batches, and a batch is at most `MAX_BATCH`
/// events plus the second event of its last change (a new link that is up).
pub const MAX_LAGGING_EVENTS: usize = EVENT_BUFFER * (MAX_BATCH + 1);

/// Events the listener had at hand together, in the order they happened.
pub type Batch = Arc<[NetEvent]>;

/// A subscription to a namespace's events: one at a time, out of the batches the listener
/// sends.
pub struct Events {
    batches: broadcast::Receiver<Batch>,
    held: Batch,
    next: usize,
}

impl Events {
    fn new(batches: broadcast::Receiver<Batch>) -> Self {
        Self {
            batches,
            held: Arc::new([]),
            next: 0,
        }
    }

    /// A subscription that has ended: no listener.
    pub fn closed() -> Self {
        Self::new(broadcast::channel(1).1)
    }

    /// The next event. Cancel-safe: a batch is taken in hand in the poll that receives it.
    /// `Lagged(n)` counts batches, not events.
    pub async fn recv(&mut self) -> std::result::Result<NetEvent, broadcast::error::RecvError> {
        loop {
            if let Some(ev) = self.try_held() {
                return Ok(ev);
            }
            self.held = self.batches.recv().await?;
            self.next = 0;
        }
    }

    /// The next event of the batch in hand, without waiting.
    pub fn try_held(&mut self) -> Option<NetEvent> {
        let ev = self.held.get(self.next)?.clone();
        self.next += 1;
        Some(ev)
    }
}

/// One change in a pod's network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum NetEvent {
    LinkAdded {
        ifname: String,
        index: u32,
    },
    LinkRemoved {
        ifname: String,
        index: u32,
    },
    LinkUp {
        ifname: String,
        index: u32,
    },
    LinkDown {
        ifname: String,
        index: u32,
    },
    MtuChanged {
        ifname: String,
        index: u32,
        old: u32,
        new: u32,
    },
    AddressAdded {
        ifname: String,
        index: u32,
        address: String,
    },
    AddressRemoved {
        ifname: String,
        index: u32,
        address: String,
    },
    RouteAdded {
        dst: String,
        table: u32,
        metric: u32,
        protocol: u8,
    },
    RouteRemoved {
        dst: String,
        table: u32,
        metric: u32,
        protocol: u8,
    },
}

impl NetEvent {
    /// Interface the event is about, if any.
    pub fn ifname(&self) -> Option<&str> {
        match self {
            NetEvent::LinkAdded { ifname, .. }
            | NetEvent::LinkRemoved { ifname, .. }
            | NetEvent::LinkUp { ifname, .. }
            | NetEvent::LinkDown { ifname, .. }
            | NetEvent::MtuChanged { ifname, .. }
            | NetEvent::AddressAdded { ifname, .. }
            | NetEvent::AddressRemoved { ifname, .. } => Some(ifname),
            _ => None,
        }
    }
}

fn is_up(l: &ObservedLink) -> bool {
    l.oper_state == "up" || (l.oper_state == "unknown" && l.admin_up)
}

/// Turns raw changes into events, remembering link state to report transitions.
#[derive(Default)]
pub struct EventMapper {
    links: HashMap<u32, ObservedLink>,
}

impl EventMapper {
    pub fn new(initial: Vec<ObservedLink>) -> Self {
        Self {
            links: initial.into_iter().map(|l| (l.index, l)).collect(),
        }
    }

    /// Events for one change (none, one or several).
    pub fn map(&mut self, change: Change) -> Vec<NetEvent> {
        let name_of = |links: &HashMap<u32, ObservedLink>, i: u32| {
            links.get(&i).map(|l| l.name.clone()).unwrap_or_default()
        };
        match change {
            Change::NewLink(l) => {
                let (ifname, index) = (l.name.clone(), l.index);
                let mut out = Vec::new();
                match self.links.get(&index) {
                    None => {
                        out.push(NetEvent::LinkAdded {
                            ifname: ifname.clone(),
                            index,
                        });
                        if is_up(&l) {
                            out.push(NetEvent::LinkUp { ifname, index });
                        }
                    }
                    Some(old) => {
                        if old.mtu != l.mtu {
                            out.push(NetEvent::MtuChanged {
                                ifname: ifname.clone(),
                                index,
                                old: old.mtu,
                                new: l.mtu,
                            });
                        }
                        match (is_up(old), is_up(&l)) {
                            (false, true) => out.push(NetEvent::LinkUp { ifname, index }),
                            (true, false) => out.push(NetEvent::LinkDown { ifname, index }),
                            _ => {}
                        }
                    }
                }
                self.links.insert(index, l);
                out
            }
            Change::DelLink(l) => {
                self.links.remove(&l.index);
                vec![NetEvent::LinkRemoved {
                    ifname: l.name,
                    index: l.index,
                }]
            }
            Change::NewAddress(a) => vec![NetEvent::AddressAdded {
                ifname: name_of(&self.links, a.index),
                index: a.index,
                address: a.addr.to_string(),
            }],
            Change::DelAddress(a) => vec![NetEvent::AddressRemoved {
                ifname: name_of(&self.links, a.index),
                index: a.index,
                address: a.addr.to_string(),
            }],
            Change::NewRoute(r) => vec![NetEvent::RouteAdded {
                dst: r.dst.to_string(),
                table: r.table,
                metric: r.metric,
                protocol: r.protocol,
            }],
            Change::DelRoute(r) => vec![NetEvent::RouteRemoved {
                dst: r.dst.to_string(),
                table: r.table,
                metric: r.metric,
                protocol: r.protocol,
            }],
        }
    }
}

/// What a namespace's listener feeds besides its subscribers, and when it stops.
pub struct Feed {
    pub mirror: Arc<Mirror>,
    /// Cancelled when the engine goes: the listener then closes its socket, which would
    /// otherwise pin a namespace that is being removed.
    pub stop: CancellationToken,
}

/// A namespace's running listener.
#[derive(Clone, Debug)]
pub struct Listener {
    /// Every subscriber gets every batch.
    batches: broadcast::Sender<Batch>,
    barriers: mpsc::Sender<oneshot::Sender<bool>>,
}

impl Listener {
    /// A subscription to every event from now on.
    pub fn subscribe(&self) -> Events {
        Events::new(self.batches.subscribe())
    }

    /// Returns once every notification of a write answered before the call has been
    /// applied to the mirror and sent to the subscribers (`Multicast::barrier` in
    /// [`crate::netlink`]): `true`, or `false` when that could not be established.
    pub async fn barrier(&self) -> bool {
        let (done, wait) = oneshot::channel();
        if self.barriers.send(done).await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(BARRIER_TIMEOUT, wait).await,
            Ok(Ok(true))
        )
    }
}

/// A barrier is one netlink round trip; past this, the kernel or the listener is stuck.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts listening in the namespace; events go to every subscriber of the returned
/// listener, changes to the mirror, until `feed.stop`.
pub async fn listen(
    exec: &NetnsExecutor,
    initial: Vec<ObservedLink>,
    feed: Feed,
) -> Result<Listener> {
    let mut socket = Netlink::open_multicast(exec).await?;
    let (tx, _) = broadcast::channel(EVENT_BUFFER);
    let (barriers, mut asked) = mpsc::channel::<oneshot::Sender<bool>>(16);
    let netns = exec.path().display().to_string();
    let span = tracing::info_span!("netlink_watch", netns = %netns);
    let batches = tx.clone();
    feed.mirror.set_fed(true);
    tokio::spawn(
        async move {
            let mut mapper = EventMapper::new(initial);
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut handle = |msg: NetlinkMessage<RouteNetlinkMessage>, batch: &mut Vec<_>| {
                if matches!(msg.payload, NetlinkPayload::Overrun(_)) {
                    warn!("netlink events lost (socket overrun)");
                    feed.mirror.doubt();
                    return;
                }
                let Some(change) = parse_event(&msg) else {
                    return;
                };
                feed.mirror.change(change.clone());
                for ev in mapper.map(change) {
                    debug!(event = ?ev, "netlink event");
                    batch.push(ev);
                }
            };
            // No subscriber is no reason to stop: the mirror is fed still.
            let send = |batch: &mut Vec<NetEvent>| {
                if !batch.is_empty() {
                    let _ = tx.send(batch.drain(..).collect());
                }
            };
            loop {
                tokio::select! {
                    _ = feed.stop.cancelled() => break,
                    msg = socket.messages.next() => {
                        let Some((msg, _)) = msg else {
                            warn!("netlink multicast socket closed");
                            break;
                        };
                        handle(msg, &mut batch);
                        // What else has arrived goes in the same batch: the mirror is fed
                        // as before, the subscribers wake once for all of it.
                        while batch.len() < MAX_BATCH {
                            let Ok((msg, _)) = socket.messages.try_recv() else {
                                break;
                            };
                            handle(msg, &mut batch);
                        }
                        send(&mut batch);
                        // The socket's channel is not tokio's, so nothing else makes this
                        // loop yield: a batch of writes echoes hundreds of events at once,
                        // and the subscribers must get to run before the channel laps them.
                        tokio::task::consume_budget().await;
                    }
                    Some(done) = asked.recv() => {
                        let answered = socket.barrier(|msg| handle(msg, &mut batch)).await;
                        send(&mut batch);
                        while let Ok((msg, _)) = socket.messages.try_recv() {
                            handle(msg, &mut batch);
                            if batch.len() >= MAX_BATCH {
                                send(&mut batch);
                                tokio::task::consume_budget().await;
                            }
                        }
                        send(&mut batch);
                        let _ = done.send(answered);
                    }
                }
            }
            feed.mirror.set_fed(false);
        }
        .instrument(span),
    );
    Ok(Listener { batches, barriers })
}

/// Whether an event may mean that declared or owned state drifted, so a pass is worth
/// running (the pass itself decides what, if anything, to write).
pub fn is_drift(ev: &NetEvent, desired: &NetworkConfigurationSpec, owned: &Owned) -> bool {
    let declared = |n: &str| desired.interfaces.iter().any(|i| i.name == n);
    match ev {
        NetEvent::RouteAdded { .. } => false,
        NetEvent::RouteRemoved {
            dst,
            table,
            metric,
            protocol,
        } => {
            // Compared as networks (a spec stored before canonical values were required need
            // not be canonical), the event's parsed once: a pod can churn its own routes.
            *protocol == NES_ROUTE_PROTOCOL
                || api::validate::net(dst).is_some_and(|removed| {
                    desired.routes.iter().any(|r| {
                        api::validate::net(&r.dst) == Some(removed)
                            && r.table == *table
                            && (r.metric == *metric || (*metric == 1024 && r.metric == 0))
                    })
                })
        }
        NetEvent::AddressAdded { .. } => false,
        // Removing an address silently flushes the routes through it, so where routes are
        // declared any removal on a declared interface gets a pass; otherwise only a wanted
        // address's does (a pass removing an unwanted one is no drift of its own making).
        NetEvent::AddressRemoved {
            ifname, address, ..
        } => {
            owned.owns_address(ifname, address)
                || wanted_address(desired, ifname, address)
                || (declared(ifname) && !desired.routes.is_empty())
        }
        other => other
            .ifname()
            .is_some_and(|n| declared(n) || owned.links.contains(n)),
    }
}

/// Whether `desired` declares `address` on `ifname` (compared as networks: the event's
/// text is canonical, the spec's need not be).
fn wanted_address(desired: &NetworkConfigurationSpec, ifname: &str, address: &str) -> bool {
    let Some(removed) = api::validate::net(address) else {
        return true;
    };
    desired
        .interfaces
        .iter()
        .filter(|i| i.name == ifname)
        .flat_map(|i| &i.addresses)
        .any(|a| api::validate::net(a) == Some(removed))
}

/// Options of the keeper loop.
#[derive(Clone, Debug)]
pub struct KeeperOptions {
    /// Quiet time after the last relevant event before a pass runs.
    pub debounce: Duration,
    /// A pass runs at least this often, to catch what the events missed.
    pub resync: Duration,
}

impl Default for KeeperOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            resync: Duration::from_secs(300),
        }
    }
}

/// Records ownership durably before a pass writes addresses; see
/// [`PodNetwork::converge_recording`].
pub type Recorder =
    Arc<dyn Fn(Owned) -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync>;

/// Keeps `desired` applied in `net`: converges now, then again on drift (debounced), on a
/// new desired spec, after a failure (exponential backoff with jitter) and periodically.
/// Each report is published on the returned channel (its `owned` is the record to persist).
/// The loop ends when the `desired` sender is dropped.
pub fn spawn_keeper(
    net: Arc<PodNetwork>,
    mut desired: tokio_watch::Receiver<NetworkConfigurationSpec>,
    owned: Owned,
    opts: KeeperOptions,
) -> tokio_watch::Receiver<Option<Arc<ApplyReport>>> {
    let first = Target {
        generation: 0,
        spec: Arc::new(desired.borrow_and_update().clone()),
        validated: false,
        saved: Saved::default(),
    };
    let (tx, rx) = tokio_watch::channel(Some(first));
    tokio::spawn(async move {
        let mut generation = 0;
        while desired.changed().await.is_ok() {
            generation += 1;
            let spec = Arc::new(desired.borrow_and_update().clone());
            let target = Target {
                generation,
                spec,
                validated: false,
                saved: Saved::default(),
            };
            if tx.send(Some(target)).is_err() {
                return;
            }
        }
    });
    spawn_recording_keeper(net, rx, owned, opts, None).reports
}

/// What the keeper keeps applied: a desired spec and the generation it belongs to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    pub generation: i64,
    /// Shared: each pass takes the target, and a pod's spec may hold 1,500 objects.
    pub spec: Arc<NetworkConfigurationSpec>,
    /// `spec` passed `api::validate` where it was accepted: the pass need not check it again.
    pub validated: bool,
    /// The save of `spec`, which the pass waits for before it writes.
    pub saved: Saved,
}

/// What a running keeper publishes.
pub struct Keeper {
    /// Each pass's report.
    pub reports: tokio_watch::Receiver<Option<Arc<ApplyReport>>>,
    /// The generation of the last pass that ran to its end (applied, failed or refused),
    /// published after its report: waiters follow this, never a timer.
    pub settled: tokio_watch::Receiver<Option<i64>>,
}

/// [`spawn_keeper`] where the desired target may be `None`: nothing is written while it is
/// (the desired state cannot be read; the kernel is kept as it is). `recorder` keeps the
/// ownership record before writes.
pub fn spawn_recording_keeper(
    net: Arc<PodNetwork>,
    mut desired: tokio_watch::Receiver<Option<Target>>,
    owned: Owned,
    opts: KeeperOptions,
    recorder: Option<Recorder>,
) -> Keeper {
    let (tx, rx) = tokio_watch::channel(None);
    let (settled_tx, settled) = tokio_watch::channel(None);
    let span = tracing::info_span!("keeper", netns = %net.executor().path().display());
    tokio::spawn(
        async move {
            let mut events = match net.events().await {
                Ok(e) => e,
                Err(error) => {
                    warn!(%error, "cannot subscribe to netlink events; relying on resync");
                    Events::closed()
                }
            };
            let mut owned = owned;
            let mut backoff = Backoff::default();
            loop {
                let Some(Target {
                    generation,
                    spec,
                    validated,
                    saved,
                }) = desired.borrow_and_update().clone()
                else {
                    // Held: wait for a readable desired state, write nothing meanwhile.
                    if desired.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                let checked = match validated {
                    true => Checked::Validated,
                    false => Checked::No,
                };
                let record = |o| match &recorder {
                    Some(r) => r(o),
                    None => Box::pin(futures::future::ok(())),
                };
                let pass = net.converge_checked(&spec, checked, &saved, &owned, record);
                let (pass, during) = while_draining(pass, &mut events).await;
                if matches!(pass, Err(crate::error::Error::NotSaved)) {
                    // Nothing written and nothing settled: the backend puts back the
                    // desired state that is stored.
                    debug!("the desired state was not saved; waiting for the stored one");
                    if desired.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let mut retry = match pass {
                    Ok(report) => {
                        owned = report.owned.clone();
                        let ok = report.is_converged();
                        let _ = tx.send(Some(Arc::new(report)));
                        if ok {
                            backoff.reset();
                            None
                        } else {
                            Some(backoff.next_delay())
                        }
                    }
                    Err(error) => {
                        warn!(%error, "converge pass failed");
                        Some(backoff.next_delay())
                    }
                };
                // What happened during the pass, judged against the record it left: its own
                // writes are no drift.
                let drift = match &during {
                    Drained::Lost => true,
                    Drained::Events(evs) => evs.iter().any(|ev| is_drift(ev, &spec, &owned)),
                };
                if drift && retry.is_none() {
                    debug!("drift during the pass");
                    retry = Some(opts.debounce);
                }
                settled_tx.send_replace(Some(generation));
                let delay = retry.unwrap_or(opts.resync);
                if !next_reason(&mut desired, &mut events, &owned, delay, opts.debounce).await {
                    return;
                }
            }
        }
        .instrument(span),
    );
    Keeper {
        reports: rx,
        settled,
    }
}

/// Waits for a reason to run a pass again: `delay` passed, a new desired target, drift
/// (debounced by `quiet`) or lost events. `false` when the desired state's sender is gone
/// (the keeper ends).
async fn next_reason(
    desired: &mut tokio_watch::Receiver<Option<Target>>,
    events: &mut Events,
    owned: &Owned,
    delay: Duration,
    quiet: Duration,
) -> bool {
    let wake = tokio::time::sleep(delay);
    tokio::pin!(wake);
    // A closed channel (no listener) is not listened to any more: resyncs remain.
    let mut open = true;
    loop {
        tokio::select! {
            _ = &mut wake => return true,
            changed = desired.changed() => return changed.is_ok(),
            ev = events.recv(), if open => match ev {
                Ok(ev) if desired.borrow().as_ref().is_some_and(|d| is_drift(&ev, &d.spec, owned)) => {
                    debug!(event = ?ev, "drift");
                    return debounce(events, desired, quiet).await;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Err(broadcast::error::RecvError::Closed) => open = false,
            },
        }
    }
}

/// Events seen while a pass ran.
enum Drained {
    Events(Vec<NetEvent>),
    /// More than [`MAX_HELD_EVENTS`], or the channel lagged: judge them all as drift.
    Lost,
}

/// Events held while a pass runs; past this, the pass is simply run again.
const MAX_HELD_EVENTS: usize = 16 * 1024;

/// Runs `pass` while keeping up with `events`, so a big pass of the keeper's own making
/// (each write echoes as an event) does not overrun the channel and force a needless
/// extra pass. The events are returned to be judged once the pass has updated the record.
async fn while_draining<T>(
    pass: impl std::future::Future<Output = T>,
    events: &mut Events,
) -> (T, Drained) {
    tokio::pin!(pass);
    let mut held = Drained::Events(Vec::new());
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            out = &mut pass => return (out, held),
            ev = events.recv(), if open => match (ev, &mut held) {
                (Ok(ev), Drained::Events(evs)) if evs.len() < MAX_HELD_EVENTS => {
                    evs.push(ev);
                    // The rest of its batch without polling the pass for each.
                    evs.extend(std::iter::from_fn(|| events.try_held()));
                }
                (Ok(_), _) | (Err(broadcast::error::RecvError::Lagged(_)), _) => {
                    held = Drained::Lost
                }
                (Err(broadcast::error::RecvError::Closed), _) => open = false,
            },
        }
    }
}

/// Swallows events until none came for `quiet` (at most 10 x `quiet` in all). A new
/// desired target ends it at once: a request must not wait behind drift (the pass it
/// triggers heals the drift too). `false` when the desired state's sender is gone.
async fn debounce(
    events: &mut Events,
    desired: &mut tokio_watch::Receiver<Option<Target>>,
    quiet: Duration,
) -> bool {
    let give_up = tokio::time::Instant::now() + quiet * 10;
    loop {
        tokio::select! {
            changed = desired.changed() => return changed.is_ok(),
            ev = tokio::time::timeout(quiet, events.recv()) => match ev {
                Err(_) => return true,
                Ok(Err(broadcast::error::RecvError::Closed)) => return true,
                Ok(_) if tokio::time::Instant::now() >= give_up => return true,
                Ok(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{ObservedAddress, ObservedRoute};

    fn link(index: u32, name: &str, mtu: u32, up: bool) -> ObservedLink {
        ObservedLink {
            index,
            name: name.into(),
            mtu,
            admin_up: up,
            oper_state: if up { "up" } else { "down" }.into(),
            ..Default::default()
        }
    }

    fn up(i: u32) -> NetEvent {
        NetEvent::LinkUp {
            ifname: format!("eth{i}"),
            index: i,
        }
    }

    #[tokio::test]
    async fn events_come_one_at_a_time_in_order_out_of_batches_and_a_dropped_recv_loses_none() {
        use futures::FutureExt;
        let (tx, rx) = broadcast::channel::<Batch>(4);
        let mut events = Events::new(rx);
        tx.send(Arc::from(vec![up(1), up(2)])).expect("send");
        tx.send(Arc::from(vec![up(3)])).expect("send");
        for i in 1..=3 {
            assert_eq!(events.recv().await.expect("event"), up(i));
        }
        assert_eq!(events.try_held(), None);
        // A recv given up while nothing is there (as a select! does) takes nothing with it.
        assert!(events.recv().now_or_never().is_none());
        tx.send(Arc::from(vec![up(4), up(5)])).expect("send");
        assert_eq!(
            events.recv().now_or_never().map(|r| r.ok()),
            Some(Some(up(4)))
        );
        assert_eq!(events.try_held(), Some(up(5)));
        drop(tx);
        assert!(matches!(
            events.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_subscriber_behind_by_more_batches_than_the_buffer_is_told_it_lagged() {
        let (tx, rx) = broadcast::channel::<Batch>(2);
        let mut events = Events::new(rx);
        for i in 0..3 {
            tx.send(Arc::from(vec![up(i)])).expect("send");
        }
        assert!(matches!(
            events.recv().await,
            Err(broadcast::error::RecvError::Lagged(1))
        ));
        assert_eq!(events.recv().await.expect("event"), up(1));
    }

    #[test]
    fn mapper_reports_link_transitions_and_mtu_changes() {
        let mut m = EventMapper::new(vec![link(2, "eth0", 1500, true)]);
        assert_eq!(
            m.map(Change::NewLink(link(2, "eth0", 9000, false))),
            vec![
                NetEvent::MtuChanged {
                    ifname: "eth0".into(),
                    index: 2,
                    old: 1500,
                    new: 9000
                },
                NetEvent::LinkDown {
                    ifname: "eth0".into(),
                    index: 2
                },
            ]
        );
        assert_eq!(
            m.map(Change::NewLink(link(2, "eth0", 9000, true))),
            vec![NetEvent::LinkUp {
                ifname: "eth0".into(),
                index: 2
            }]
        );
        assert_eq!(
            m.map(Change::DelAddress(ObservedAddress {
                index: 2,
                addr: "10.0.0.5/24".parse().unwrap()
            })),
            vec![NetEvent::AddressRemoved {
                ifname: "eth0".into(),
                index: 2,
                address: "10.0.0.5/24".into()
            }]
        );
        assert_eq!(
            m.map(Change::NewLink(link(5, "vx0", 1450, false))),
            vec![NetEvent::LinkAdded {
                ifname: "vx0".into(),
                index: 5
            }]
        );
    }

    #[test]
    fn drift_is_a_removed_owned_address_or_nes_route_but_not_a_foreign_one() {
        let desired = NetworkConfigurationSpec {
            interfaces: vec![api::InterfaceSpec {
                name: "eth0".into(),
                ..Default::default()
            }],
            routes: vec![],
            ..Default::default()
        };
        let mut owned = Owned::default();
        owned.add_address("eth0", "10.0.0.5/24".into());
        let removed = |ifname: &str, a: &str| NetEvent::AddressRemoved {
            ifname: ifname.into(),
            index: 2,
            address: a.into(),
        };
        assert!(is_drift(&removed("eth0", "10.0.0.5/24"), &desired, &owned));
        assert!(!is_drift(&removed("lo", "127.0.0.2/8"), &desired, &owned));
        let r = ObservedRoute {
            dst: "10.1.0.0/16".parse().unwrap(),
            table: 254,
            metric: 0,
            protocol: 4,
            gateway: None,
            oif: None,
            prefsrc: None,
        };
        let ev = |protocol| NetEvent::RouteRemoved {
            dst: r.dst.to_string(),
            table: 254,
            metric: 0,
            protocol,
        };
        assert!(is_drift(&ev(NES_ROUTE_PROTOCOL), &desired, &owned));
        assert!(!is_drift(&ev(4), &desired, &owned));
    }

    #[test]
    fn removing_an_unwanted_address_is_drift_only_where_routes_could_go_with_it() {
        let with = |addresses: &[&str], routes: bool| NetworkConfigurationSpec {
            interfaces: vec![api::InterfaceSpec {
                name: "eth0".into(),
                addresses: addresses.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            }],
            routes: match routes {
                true => vec![api::RouteSpec {
                    dst: "10.20.0.0/16".into(),
                    via: Some("10.0.0.1".into()),
                    dev: None,
                    metric: 0,
                    table: api::netconf::MAIN_TABLE,
                }],
                false => vec![],
            },
            ..Default::default()
        };
        let removed = |a: &str| NetEvent::AddressRemoved {
            ifname: "eth0".into(),
            index: 2,
            address: a.into(),
        };
        let none = Owned::default();
        // The pass replaced .1 by .2: its own removal is no drift.
        assert!(!is_drift(
            &removed("10.0.0.1/32"),
            &with(&["10.0.0.2/32"], false),
            &none
        ));
        // A wanted address, written differently in the spec, is.
        assert!(is_drift(
            &removed("fd00::1/64"),
            &with(&["fd00:0::0001/64"], false),
            &none
        ));
        // With declared routes, any removal on the interface may have flushed them.
        assert!(is_drift(
            &removed("10.0.0.1/32"),
            &with(&["10.0.0.2/32"], true),
            &none
        ));
    }
}
