//! The observed state of a pod's network namespace kept current from its netlink events, so
//! a status read does not dump the kernel each time. The kernel stays the source of truth:
//! the mirror is only trusted while every change since its last dump was announced and
//! applied, and is dumped again on any doubt — events lost (socket overrun, the listener
//! gone), a change whose consequences the kernel does not all announce (a link going down
//! or away flushes its IPv4 routes silently; an address removed takes the routes that
//! prefer it as their source, and its link's last IPv4 address every IPv4 route through
//! the link), around the agent's own writing pass, and when older than
//! [`MAX_AGE`]. A new network namespace is a new [`PodNetwork`](crate::engine::PodNetwork)
//! and so a new mirror.

use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Seeded like std's hasher, without SipHash's cost on small keys.
use foldhash::{HashMap, HashSet};

use crate::netlink::Change;
use ipnet::IpNet;
use std::net::IpAddr;

use crate::observe::{Observed, ObservedAddress, ObservedRoute};

/// A mirror is dumped again when its last dump is older than this.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// Changes held while a dump is in flight; past this the dump is not trusted.
const MAX_REPLAY: usize = 16 * 1024;

/// What an applied change did to the mirror.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The mirror follows it.
    Followed,
    /// Its consequences are not all announced: the mirror must be dumped again.
    Doubt,
}

/// What identifies the entries of a mirrored state, so a change is followed without
/// scanning it (a big pass announces thousands of changes, each checked here).
#[derive(Debug, Default, Clone)]
pub struct Keys {
    addresses: HashSet<ObservedAddress>,
    routes: HashSet<ObservedRoute>,
    /// How many routes each (destination, table, metric) has.
    route_keys: HashMap<(IpNet, u32, u32), usize>,
    /// How many routes prefer each source address.
    prefsrcs: HashMap<IpAddr, usize>,
    /// How many IPv4 addresses each link has.
    v4_addresses: HashMap<u32, usize>,
}

impl Keys {
    /// The keys of `observed`.
    pub fn of(observed: &Observed) -> Self {
        let mut keys = Self::default();
        for a in &observed.addresses {
            keys.add_address(a);
        }
        for r in &observed.routes {
            keys.add_route(r);
        }
        keys
    }

    fn add_address(&mut self, a: &ObservedAddress) -> bool {
        if !self.addresses.insert(a.clone()) {
            return false;
        }
        if a.addr.addr().is_ipv4() {
            *self.v4_addresses.entry(a.index).or_default() += 1;
        }
        true
    }

    fn remove_address(&mut self, a: &ObservedAddress) -> bool {
        if !self.addresses.remove(a) {
            return false;
        }
        if a.addr.addr().is_ipv4() {
            decrement(&mut self.v4_addresses, a.index);
        }
        true
    }

    fn add_route(&mut self, r: &ObservedRoute) {
        if self.routes.insert(r.clone()) {
            *self.route_keys.entry(route_key(r)).or_default() += 1;
            if let Some(src) = r.prefsrc {
                *self.prefsrcs.entry(src).or_default() += 1;
            }
        }
    }

    fn remove_route(&mut self, r: &ObservedRoute) -> bool {
        if !self.routes.remove(r) {
            return false;
        }
        decrement(&mut self.route_keys, route_key(r));
        if let Some(src) = r.prefsrc {
            decrement(&mut self.prefsrcs, src);
        }
        true
    }

    /// Whether the kernel changes routes unannounced when it removes `gone` (already
    /// removed from these keys): routes preferring it as their source (IPv4 flushes them,
    /// IPv6 drops their `src`) and, when it was its link's last IPv4 address, every IPv4
    /// route through that link (the kernel turns IPv4 off there). Other routes a removal
    /// takes, the kernel's own prefix route among them, it announces.
    fn removal_is_unannounced(&self, gone: &ObservedAddress) -> bool {
        let ip = gone.addr.addr();
        self.prefsrcs.contains_key(&ip)
            || (ip.is_ipv4() && !self.v4_addresses.contains_key(&gone.index))
    }
}

/// One less of `key`; gone at zero.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let Entry::Occupied(mut e) = counts.entry(key) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

fn route_key(r: &ObservedRoute) -> (IpNet, u32, u32) {
    (r.dst, r.table, r.metric)
}

/// Applies one announced change to `observed` (whose keys are `keys`): additions are
/// followed, anything whose effects the kernel may not announce in full is a
/// [`Applied::Doubt`].
pub fn apply(observed: &mut Observed, keys: &mut Keys, change: &Change) -> Applied {
    match change {
        Change::NewLink(l) => match observed.links.iter_mut().find(|o| o.index == l.index) {
            None => {
                observed.links.push(l.clone());
                Applied::Followed
            }
            // Up or down: routes through it may come or go unannounced.
            Some(o) if o.admin_up != l.admin_up || o.oper_state != l.oper_state => Applied::Doubt,
            Some(o) => {
                *o = l.clone();
                Applied::Followed
            }
        },
        Change::DelLink(_) => Applied::Doubt,
        Change::DelAddress(a) => {
            // Not held: the mirror missed something.
            if !keys.remove_address(a) {
                return Applied::Doubt;
            }
            observed.addresses.retain(|o| o != a);
            match keys.removal_is_unannounced(a) {
                true => Applied::Doubt,
                false => Applied::Followed,
            }
        }
        Change::NewAddress(a) => {
            if keys.add_address(a) {
                observed.addresses.push(a.clone());
            }
            Applied::Followed
        }
        Change::NewRoute(r) => {
            if keys.routes.contains(r) {
                return Applied::Followed;
            }
            // Same key, other next hop: a replace or another path of it; not guessed.
            if keys.route_keys.contains_key(&route_key(r)) {
                return Applied::Doubt;
            }
            keys.add_route(r);
            observed.routes.push(r.clone());
            Applied::Followed
        }
        Change::DelRoute(r) => match keys.remove_route(r) {
            true => {
                observed.routes.retain(|o| o != r);
                Applied::Followed
            }
            false => Applied::Doubt,
        },
    }
}

/// One pod namespace's mirror, fed by its event listener and read by status reads.
#[derive(Debug, Default)]
pub struct Mirror {
    state: Mutex<State>,
    /// One dump at a time; readers that waited for one use its result.
    dumping: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// The event listener runs: without it nothing is trusted.
    fed: bool,
    /// The current state and when the dump it grew from was taken, while trusted.
    trusted: Option<(Instant, Arc<Observed>)>,
    /// The keys of the trusted state.
    keys: Keys,
    /// Bumped on every doubt: a dump begun before one is not trusted.
    epoch: u64,
    /// Changes seen while a dump is in flight, applied on top of it when it lands.
    replay: Option<Vec<Change>>,
    /// The last dump and when it was taken, trusted or not: readers that asked before it
    /// began share it (a burst of reads costs one dump).
    last: Option<(Instant, Arc<Observed>)>,
    /// Dumps taken for reads, for tests and metrics.
    dumps: u64,
}

/// A dump in flight, from [`Mirror::begin_dump`].
#[derive(Debug)]
pub struct DumpTicket {
    epoch: u64,
    taken: Instant,
}

impl Mirror {
    /// The listener starts (`true`) or ends (`false`); either way what was trusted is not.
    pub fn set_fed(&self, fed: bool) {
        let mut s = self.lock();
        s.fed = fed;
        s.doubt();
    }

    /// Something may have changed unannounced (events lost, the agent writes).
    pub fn doubt(&self) {
        self.lock().doubt();
    }

    /// One announced change, from the listener.
    pub fn change(&self, change: Change) {
        let mut s = self.lock();
        if let Some(replay) = s.replay.as_mut() {
            if replay.len() < MAX_REPLAY {
                replay.push(change.clone());
            } else {
                s.doubt();
            }
        }
        let State { trusted, keys, .. } = &mut *s;
        let Some((_, observed)) = trusted.as_mut() else {
            return;
        };
        if apply(Arc::make_mut(observed), keys, &change) == Applied::Doubt {
            s.doubt();
        }
    }

    /// The current state when it can be trusted and its dump is younger than `max_age`;
    /// else a dump taken no earlier than `asked`, if there is one.
    pub fn current(&self, asked: Instant, max_age: Duration) -> Option<Arc<Observed>> {
        let s = self.lock();
        if let Some((taken, observed)) = &s.trusted {
            if taken.elapsed() <= max_age {
                return Some(observed.clone());
            }
        }
        s.last
            .as_ref()
            .filter(|(taken, _)| *taken >= asked)
            .map(|(_, o)| o.clone())
    }

    /// The turn to dump; hold it until [`Mirror::land`].
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.dumping.lock().await
    }

    /// A dump is about to be taken: changes from now on are kept to be replayed on it.
    pub fn begin_dump(&self) -> DumpTicket {
        let mut s = self.lock();
        s.replay = Some(Vec::new());
        DumpTicket {
            epoch: s.epoch,
            taken: Instant::now(),
        }
    }

    /// The dump of `ticket` landed (`None`: it failed). It becomes the trusted state when
    /// the listener fed the mirror all along and nothing was doubted meanwhile; the
    /// changes seen since it began are applied on top.
    pub fn land(&self, ticket: DumpTicket, dump: Option<Observed>) -> Option<Arc<Observed>> {
        let mut s = self.lock();
        let replay = s.replay.take().unwrap_or_default();
        let mut observed = dump?;
        s.dumps += 1;
        // Replayed only onto a dump that may be trusted; a doubtful change leaves it as read.
        let mut keys = Keys::of(&observed);
        let trusted = s.fed
            && s.epoch == ticket.epoch
            && replay
                .iter()
                .all(|c| apply(&mut observed, &mut keys, c) == Applied::Followed);
        let observed = Arc::new(observed);
        s.last = Some((ticket.taken, observed.clone()));
        if trusted {
            s.trusted = Some((ticket.taken, observed.clone()));
            s.keys = keys;
        }
        Some(observed)
    }

    /// Dumps taken for reads so far.
    pub fn dumps(&self) -> u64 {
        self.lock().dumps
    }

    /// Whether a read would be answered without a dump now.
    pub fn is_trusted(&self) -> bool {
        self.lock().trusted.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        common::sync::lock(&self.state)
    }
}

impl State {
    fn doubt(&mut self) {
        self.trusted = None;
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests;
