//! Long-polls of the pod API: answering once the keeper's pass for a generation has run.
//! Waiters follow the keeper's `settled` channel and the desired state, never a timer.

use std::time::Duration;

use api::wire::{WaitQuery, WAIT_SETTLED, WAIT_TIMEOUT};

use super::http::ApiError;
use super::PodServer;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The pass for the awaited generation (or a later one) ran, or the desired state of
    /// that generation cannot be applied (Degraded) so no pass will come.
    Settled,
    /// The wait ended first.
    TimedOut,
}

impl Waited {
    /// The value of the answer's `Nes-Wait` header.
    pub fn marker(self) -> &'static str {
        match self {
            Waited::Settled => WAIT_SETTLED,
            Waited::TimedOut => WAIT_TIMEOUT,
        }
    }
}

impl PodServer {
    /// Waits until the pass for `generation` (or a later one) has run, at most `wait`.
    /// Ends early, as a timeout, when the pod stops being served.
    pub async fn wait_settled(&self, generation: i64, wait: Duration) -> Waited {
        let mut settled = self.settled.clone();
        let mut desired = self.desired.clone();
        let stop = self.stop.clone();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        // A desired state that can no longer change (its sender gone) leaves the keeper to say.
        let mut desired_open = true;
        loop {
            if settled.borrow_and_update().is_some_and(|g| g >= generation) {
                return Waited::Settled;
            }
            {
                let d = desired.borrow_and_update();
                if d.generation >= generation && d.problem.is_some() {
                    return Waited::Settled;
                }
            }
            tokio::select! {
                _ = &mut deadline => return Waited::TimedOut,
                _ = stop.cancelled() => return Waited::TimedOut,
                changed = settled.changed() => if changed.is_err() { return Waited::TimedOut },
                changed = desired.changed(), if desired_open => desired_open = changed.is_ok(),
            }
        }
    }

    /// `GET /v1/self/status?wait=`: the status once the pass for the awaited generation
    /// (the current one unless named) has run, or the current status when the wait ends.
    pub async fn status_after(&self, query: WaitQuery) -> Result<(Waited, bytes::Bytes), ApiError> {
        let generation = query.generation.unwrap_or_else(|| self.generation());
        let waited = self.wait_settled(generation, query.wait).await;
        Ok((waited, self.status_json().await?))
    }
}
