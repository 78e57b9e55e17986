//! A pod's event log: a bounded buffer of sequenced events plus live delivery, so a reader
//! that reconnects with `since` gets exactly what it missed, or a clear 410 when the buffer
//! no longer holds it. Nothing is dropped silently.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use api::eventlog;
pub use api::eventlog::Gone;
use api::wire::{Event, EventBody};
use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

/// Events kept per pod for replay (the buffer grows to it on demand).
pub const DEFAULT_CAPACITY: usize = 4096;
/// Slots of the live channel. A broadcast channel allocates all of its slots up front, per
/// pod and per feed; a reader that falls further behind is caught up from the buffer.
pub const LIVE_SLOTS: usize = 64;
/// Events a stream copies out of the buffer at a time while catching up.
const CATCH_UP_CHUNK: usize = 64;

/// [`api::eventlog::EventLog`] (whose module states the sequence rules) shared between
/// tasks, with live delivery on a broadcast channel.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Event>,
}

struct Inner {
    pod: String,
    log: eventlog::EventLog,
}

impl EventLog {
    /// Sequences start at the agent's start time in microseconds, so they keep growing
    /// across agent restarts without being persisted: a reader resuming from before a restart
    /// is told (410) that events were missed instead of being handed reused numbers.
    pub fn new(pod: impl Into<String>, capacity: usize) -> Self {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Self::starting_at(pod, capacity, start.max(1))
    }

    pub fn starting_at(pod: impl Into<String>, capacity: usize, first_seq: u64) -> Self {
        let (live, _) = broadcast::channel(LIVE_SLOTS);
        let inner = Inner {
            pod: pod.into(),
            log: eventlog::EventLog::new(capacity, first_seq),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            live,
        }
    }

    /// Appends an event and delivers it to live readers.
    pub fn publish(&self, body: EventBody) -> Event {
        let mut inner = self.lock();
        let Inner { pod, log } = &mut *inner;
        let event = log.push(pod, body, now_rfc3339());
        // Sent while holding the lock, so a subscriber sees each event once: either in its
        // backlog or live, never both and never neither.
        let _ = self.live.send(event.clone());
        event
    }

    /// Appends an event that happened elsewhere (another pod's log, the cliserver): it keeps
    /// its pod and time and gets this log's next sequence.
    pub fn relay(&self, event: &Event) -> Event {
        let mut inner = self.lock();
        let event = inner.log.relay(event);
        let _ = self.live.send(event.clone());
        event
    }

    /// How many live readers (streams, followers) the log has.
    pub fn readers(&self) -> usize {
        self.live.receiver_count()
    }

    /// Events after `since` (all buffered ones when `None`) and a receiver for what follows.
    pub fn subscribe(
        &self,
        since: Option<u64>,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), Gone> {
        let inner = self.lock();
        let backlog = inner.log.since(since)?;
        Ok((backlog, self.live.subscribe()))
    }

    /// Live events from now on, without a backlog (a follower that only needs to know
    /// that something happened).
    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// At most `max` buffered events after `since`, for a reader catching up.
    fn replay(&self, since: Option<u64>, max: usize) -> Result<Vec<Event>, Gone> {
        self.lock().log.after(since, max)
    }

    /// The next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.lock().log.next_seq()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the buffer inconsistent.
        common::sync::lock(&self.inner)
    }
}

impl EventLog {
    /// The events after `since` (all buffered ones when `None`), then live ones in order
    /// without gaps or repeats, until `stop` or until the log moves past what a slow reader
    /// missed: the stream then ends, and a reconnect with `since` gets [`Gone`].
    pub fn stream(
        &self,
        since: Option<u64>,
        stop: CancellationToken,
    ) -> Result<impl Stream<Item = Event> + Send + 'static, Gone> {
        // The first piece and the live receiver under one lock: nothing published in
        // between is missed; what both hold is skipped by sequence.
        let (first, live) = {
            let inner = self.lock();
            (
                inner.log.after(since, CATCH_UP_CHUNK)?,
                self.live.subscribe(),
            )
        };
        let state = Follow {
            log: self.clone(),
            last: since,
            catching_up: first.len() == CATCH_UP_CHUNK,
            pending: first.into(),
            live,
            stop,
        };
        Ok(futures::stream::unfold(state, Follow::next))
    }
}

struct Follow {
    log: EventLog,
    /// The last sequence handed out (`since` until then).
    last: Option<u64>,
    /// The buffer may hold more after `last` than `pending`: read it before live events.
    catching_up: bool,
    pending: VecDeque<Event>,
    live: broadcast::Receiver<Event>,
    stop: CancellationToken,
}

impl Follow {
    async fn next(mut self) -> Option<(Event, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = Some(event.seq);
                return Some((event, self));
            }
            if self.catching_up {
                // A gap (the buffer moved past `last`) ends the stream; the reconnect is told.
                let piece = self.log.replay(self.last, CATCH_UP_CHUNK).ok()?;
                self.catching_up = piece.len() == CATCH_UP_CHUNK;
                self.pending = piece.into();
                continue;
            }
            let next = tokio::select! {
                _ = self.stop.cancelled() => return None,
                next = self.live.recv() => next,
            };
            match next {
                Ok(event) if self.last.is_some_and(|last| event.seq <= last) => {}
                Ok(event) => self.pending.push_back(event),
                Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(i: u32) -> EventBody {
        EventBody::LinkUp {
            ifname: format!("eth{i}"),
        }
    }

    #[test]
    fn events_are_numbered_in_order_from_the_first_sequence() {
        let log = EventLog::starting_at("p", 8, 100);
        let seqs: Vec<_> = (0..3).map(|i| log.publish(up(i)).seq).collect();
        assert_eq!(seqs, [100, 101, 102]);
    }

    #[test]
    fn subscribe_since_returns_exactly_the_missed_events_then_live_ones() {
        let log = EventLog::starting_at("p", 8, 1);
        for i in 0..5 {
            log.publish(up(i));
        }
        let (backlog, mut rx) = log.subscribe(Some(3)).expect("in buffer");
        assert_eq!(backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        log.publish(up(9));
        assert_eq!(rx.try_recv().expect("live").seq, 6);
    }

    #[test]
    fn subscribe_since_older_than_the_buffer_is_gone_with_the_oldest_sequence() {
        let log = EventLog::starting_at("p", 3, 1);
        for i in 0..6 {
            log.publish(up(i));
        }
        assert_eq!(
            log.subscribe(Some(2)).map(|_| ()),
            Err(Gone {
                since: 2,
                oldest: 4
            })
        );
        // the event right before the oldest buffered one is still a gapless resume
        assert_eq!(log.subscribe(Some(3)).expect("resume").0.len(), 3);
    }

    #[test]
    fn subscribe_since_the_latest_sequence_has_an_empty_backlog() {
        let log = EventLog::starting_at("p", 3, 10);
        log.publish(up(0));
        assert!(log.subscribe(Some(10)).expect("ok").0.is_empty());
        // and a reader from before this log existed (agent restart) is told it missed events
        assert_eq!(
            log.subscribe(Some(5)).map(|_| ()),
            Err(Gone {
                since: 5,
                oldest: 10
            })
        );
    }

    /// Used to be a 4096-slot live channel per log and a copy of the whole backlog per
    /// stream: a reader far behind now catches up from the buffer in pieces, in order.
    #[tokio::test]
    async fn a_stream_behind_by_more_than_the_live_slots_gets_every_event_once_in_order() {
        use futures::StreamExt;
        let log = EventLog::starting_at("p", 4096, 1);
        let n = (LIVE_SLOTS * 3 + CATCH_UP_CHUNK * 2 + 5) as u64;
        for i in 0..n / 2 {
            log.publish(up(i as u32));
        }
        let stream = log.stream(None, CancellationToken::new()).expect("stream");
        for i in n / 2..n {
            log.publish(up(i as u32)); // the reader lags the live channel
        }
        let seqs: Vec<u64> = stream.take(n as usize).map(|e| e.seq).collect().await;
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    }

    /// Used to be an empty backlog and a stream that skipped every event up to `since`
    /// (silently); now the same 410 as the cliserver (see `api::eventlog`).
    #[test]
    fn subscribe_since_a_sequence_never_issued_is_gone() {
        let log = EventLog::starting_at("p", 3, 10);
        log.publish(up(0));
        assert_eq!(
            log.subscribe(Some(11)).map(|_| ()),
            Err(Gone {
                since: 11,
                oldest: 10
            })
        );
    }
}
