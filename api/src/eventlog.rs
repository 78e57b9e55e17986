//! The one bounded, sequenced event log behind every `.../events?since=SEQ` stream (a pod's
//! log on its agent, a subscription's feed on a node, the cliserver's per-pod and
//! per-subscription logs). Live delivery (a broadcast channel) is layered on top by each
//! daemon; this part is pure.
//!
//! # Sequence semantics
//!
//! - Every event a log holds has a sequence number one greater than the one before it; a
//!   log's numbers only grow and are never reused. Where a log starts is its owner's choice
//!   (the cliserver starts at 1, an agent at its start time in microseconds so that its
//!   numbers keep growing across restarts without being persisted).
//! - `since` is the last sequence the reader saw; it is served every held event after it.
//!   No `since` means every held event.
//! - A `since` the log cannot serve without a gap is [`Gone`] (a 410 on the wire, naming the
//!   oldest sequence still held): older than the buffer (`since + 1 < oldest`), or not yet
//!   issued (`since >= next`): a number this log never gave out belongs to another numbering
//!   (another replica, an earlier run of the daemon, another node's feed), and handing its
//!   reader "nothing yet" would silently skip every event until the numbers catch up.
//! - `since = oldest - 1` and `since = last` are gapless resumes (all held events, none).

use std::collections::VecDeque;

use crate::wire::{Event, EventBody};

/// A resume point a log cannot serve: `since` is older than what it holds or was never
/// issued by it. The reader starts again from `oldest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    pub since: u64,
    pub oldest: u64,
}

/// The last `capacity` events of one stream, numbered from `first_seq`.
#[derive(Debug, Clone)]
pub struct EventLog {
    events: VecDeque<Event>,
    next_seq: u64,
    capacity: usize,
}

impl EventLog {
    pub fn new(capacity: usize, first_seq: u64) -> Self {
        Self {
            events: VecDeque::new(),
            next_seq: first_seq,
            capacity: capacity.max(1),
        }
    }

    /// Numbers `body` and keeps it, dropping the oldest event when full.
    pub fn push(&mut self, pod: &str, body: EventBody, time: String) -> Event {
        self.append(Event {
            seq: 0,
            time,
            pod: pod.to_string(),
            body,
        })
    }

    /// Keeps an event that happened elsewhere (another log): it keeps its pod and time and
    /// gets this log's next sequence.
    pub fn relay(&mut self, event: &Event) -> Event {
        self.append(event.clone())
    }

    fn append(&mut self, mut event: Event) -> Event {
        event.seq = self.next_seq;
        self.next_seq += 1;
        if self.events.len() >= self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
        event
    }

    /// The next sequence to be issued.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last sequence issued (`first_seq - 1` before the first).
    pub fn last(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// The oldest sequence still held (the next one when empty).
    pub fn oldest(&self) -> u64 {
        self.events.front().map(|e| e.seq).unwrap_or(self.next_seq)
    }

    /// The held events after `since` (all of them without it); see the module's rules.
    pub fn since(&self, since: Option<u64>) -> Result<Vec<Event>, Gone> {
        self.after(since, usize::MAX)
    }

    /// At most `max` of the held events after `since`, oldest first: a reader catches up in
    /// pieces instead of copying the whole buffer at once.
    pub fn after(&self, since: Option<u64>, max: usize) -> Result<Vec<Event>, Gone> {
        let skip = match since {
            None => 0,
            Some(since) => {
                let oldest = self.oldest();
                if since.saturating_add(1) < oldest || since >= self.next_seq {
                    return Err(Gone { since, oldest });
                }
                // Held sequences are consecutive from `oldest`.
                usize::try_from(since + 1 - oldest).unwrap_or(usize::MAX)
            }
        };
        Ok(self.events.iter().skip(skip).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(i: u32) -> EventBody {
        EventBody::LinkUp {
            ifname: format!("eth{i}"),
        }
    }

    fn log_with(capacity: usize, first: u64, n: u32) -> EventLog {
        let mut log = EventLog::new(capacity, first);
        for i in 0..n {
            log.push("p", up(i), "t".into());
        }
        log
    }

    type Seqs = Result<Vec<u64>, Gone>;

    fn seqs(r: Result<Vec<Event>, Gone>) -> Seqs {
        r.map(|v| v.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn events_are_numbered_in_order_from_the_first_sequence() {
        let log = log_with(8, 100, 3);
        assert_eq!(seqs(log.since(None)), Ok(vec![100, 101, 102]));
        assert_eq!((log.oldest(), log.last(), log.next_seq()), (100, 102, 103));
    }

    #[test]
    fn a_relayed_event_keeps_its_pod_and_time_and_gets_the_next_sequence() {
        let mut log = log_with(8, 5, 1);
        let elsewhere = Event {
            seq: 77,
            time: "then".into(),
            pod: "q".into(),
            body: up(1),
        };
        let kept = log.relay(&elsewhere);
        assert_eq!(
            (kept.seq, kept.time.as_str(), kept.pod.as_str()),
            (6, "then", "q")
        );
    }

    /// The edge rules, once for every log (capacity 3, events 1..=6 issued, 4..=6 held).
    #[test]
    fn since_serves_exactly_what_follows_or_is_gone() {
        let log = log_with(3, 1, 6);
        let gone = |since| Err(Gone { since, oldest: 4 });
        let cases: &[(Option<u64>, Seqs)] = &[
            (None, Ok(vec![4, 5, 6])),
            (Some(2), gone(2)),           // older than the buffer
            (Some(3), Ok(vec![4, 5, 6])), // right before the oldest: gapless
            (Some(5), Ok(vec![6])),
            (Some(6), Ok(vec![])), // the last one: nothing yet
            (Some(7), gone(7)),    // never issued: another numbering
            (Some(u64::MAX), gone(u64::MAX)),
        ];
        for (since, want) in cases {
            assert_eq!(&seqs(log.since(*since)), want, "since {since:?}");
        }
    }

    /// A log's buffer grows with what it holds: thousands of pods and feeds each with a
    /// large capacity must not cost that capacity up front.
    #[test]
    fn a_log_does_not_preallocate_its_capacity() {
        let log = EventLog::new(4096, 1);
        assert!(log.events.capacity() < 64, "{}", log.events.capacity());
        let log = log_with(4096, 1, 3);
        assert!(log.events.capacity() < 64, "{}", log.events.capacity());
    }

    #[test]
    fn after_serves_the_same_events_in_pieces() {
        let log = log_with(3, 1, 6);
        assert_eq!(seqs(log.after(None, 2)), Ok(vec![4, 5]));
        assert_eq!(seqs(log.after(Some(3), 2)), Ok(vec![4, 5]));
        assert_eq!(seqs(log.after(Some(5), 2)), Ok(vec![6]));
        assert_eq!(seqs(log.after(Some(6), 2)), Ok(vec![]));
        assert_eq!(
            log.after(Some(2), 2).map(|_| ()),
            Err(Gone {
                since: 2,
                oldest: 4
            })
        );
    }

    #[test]
    fn an_empty_log_serves_a_reader_of_the_sequence_before_its_first_only() {
        let log = log_with(3, 10, 0);
        assert_eq!(seqs(log.since(Some(9))), Ok(vec![]));
        assert_eq!(
            seqs(log.since(Some(5))),
            Err(Gone {
                since: 5,
                oldest: 10
            })
        );
        assert_eq!(
            seqs(log.since(Some(10))),
            Err(Gone {
                since: 10,
                oldest: 10
            })
        );
    }
}
