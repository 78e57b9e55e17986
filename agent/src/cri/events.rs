//! containerd's event stream: decoding envelopes (pure), the notices the resolver publishes,
//! and the reconnect backoff.

use containerd_client::events::{ContainerCreate, ContainerDelete, TaskExit, TaskStart};
use prost::Message;

/// What the resolver tells subscribers about sandboxes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxEvent {
    /// A sandbox of this pod was created or started: its netns is (about to be) new.
    /// Re-resolve; until the runtime marks it ready, `resolve` answers `NoReadySandbox`.
    Started { pod_uid: String, sandbox_id: String },
    /// A sandbox the resolver had cached exited or was deleted.
    Gone { pod_uid: String, sandbox_id: String },
    /// The event stream was (re)connected after a gap: events may have been missed, the
    /// cache was cleared, every pod should be re-resolved.
    Resync,
}

/// The state of the event subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsState {
    /// Not connected yet, or reconnecting after the runtime went away.
    Connecting,
    /// Subscribed to containerd's events.
    Live,
    /// The runtime has no containerd event API (e.g. CRI-O) or events are disabled.
    Unavailable(String),
}

/// One containerd event the resolver cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeEvent {
    ContainerCreate {
        id: String,
    },
    ContainerDelete {
        id: String,
    },
    TaskStart {
        container_id: String,
        pid: u32,
    },
    /// Only the exit of a task's init process (`id == container_id` or empty) counts.
    TaskExit {
        container_id: String,
    },
}

impl RuntimeEvent {
    pub fn container_id(&self) -> &str {
        match self {
            Self::ContainerCreate { id } | Self::ContainerDelete { id } => id,
            Self::TaskStart { container_id, .. } | Self::TaskExit { container_id } => container_id,
        }
    }

    /// Whether this event may announce a new sandbox (then its labels are looked up).
    pub fn is_birth(&self) -> bool {
        matches!(self, Self::ContainerCreate { .. } | Self::TaskStart { .. })
    }
}

/// Decodes an envelope's payload by topic. Unknown topics, exec-process exits and
/// undecodable payloads give `None` (logged by the caller at debug level).
pub fn decode_event(topic: &str, payload: &[u8]) -> Option<RuntimeEvent> {
    match topic {
        "/containers/create" => ContainerCreate::decode(payload)
            .ok()
            .map(|e| RuntimeEvent::ContainerCreate { id: e.id }),
        "/containers/delete" => ContainerDelete::decode(payload)
            .ok()
            .map(|e| RuntimeEvent::ContainerDelete { id: e.id }),
        "/tasks/start" => TaskStart::decode(payload)
            .ok()
            .map(|e| RuntimeEvent::TaskStart {
                container_id: e.container_id,
                pid: e.pid,
            }),
        "/tasks/exit" => TaskExit::decode(payload).ok().and_then(|e| {
            (e.id.is_empty() || e.id == e.container_id).then_some(RuntimeEvent::TaskExit {
                container_id: e.container_id,
            })
        }),
        _ => None,
    }
    .filter(|e| !e.container_id().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_client::events::TaskDelete;

    #[test]
    fn decode_event_cases() {
        let start = TaskStart {
            container_id: "sb1".into(),
            pid: 42,
        }
        .encode_to_vec();
        let init_exit = TaskExit {
            container_id: "sb1".into(),
            id: "sb1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let exec_exit = TaskExit {
            container_id: "sb1".into(),
            id: "exec-7".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let create = ContainerCreate {
            id: "sb2".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let delete = ContainerDelete { id: "sb2".into() }.encode_to_vec();
        let task_delete = TaskDelete {
            container_id: "sb1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let cases: Vec<(&str, &str, Vec<u8>, Option<RuntimeEvent>)> = vec![
            (
                "task start",
                "/tasks/start",
                start,
                Some(RuntimeEvent::TaskStart {
                    container_id: "sb1".into(),
                    pid: 42,
                }),
            ),
            (
                "init exit",
                "/tasks/exit",
                init_exit,
                Some(RuntimeEvent::TaskExit {
                    container_id: "sb1".into(),
                }),
            ),
            ("exec exit is ignored", "/tasks/exit", exec_exit, None),
            (
                "container create",
                "/containers/create",
                create,
                Some(RuntimeEvent::ContainerCreate { id: "sb2".into() }),
            ),
            (
                "container delete",
                "/containers/delete",
                delete,
                Some(RuntimeEvent::ContainerDelete { id: "sb2".into() }),
            ),
            (
                "other topics are ignored",
                "/tasks/delete",
                task_delete,
                None,
            ),
            (
                "garbage is ignored",
                "/tasks/start",
                vec![0xff, 0xff, 0xff],
                None,
            ),
            ("empty id is ignored", "/containers/delete", vec![], None),
        ];
        for (name, topic, payload, want) in cases {
            assert_eq!(decode_event(topic, &payload), want, "{name}");
        }
    }
}
