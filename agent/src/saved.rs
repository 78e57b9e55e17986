//! Whether a desired state is on disk yet. The standalone agent hands a change to its keeper
//! before the record is written, so the pass plans meanwhile. A save has two steps: the
//! record every reader uses is replaced ("written"; what a crash of the agent leaves), then
//! its power-loss copy is synced ("saved"). The pass writes nothing to the kernel before the
//! record is written, and nothing at all if that fails: an agent restarted after a crash
//! re-applies the record it reads. It need not wait for the sync: a power loss takes the
//! namespace's state with it. What outlives a power loss (a CNI plugin's lease) waits for
//! the sync, and so does the answer to the request.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How far a save has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Writing,
    /// The record readers use is replaced; its sync runs.
    Written,
    Saved,
    Failed,
}

/// The keeper's side: waits for the save of the desired state it is about to apply.
/// `Saved::default()` is a state that is saved already, or kept elsewhere (the API server).
#[derive(Clone, Debug, Default)]
pub struct Saved(Option<watch::Receiver<Stage>>);

/// The writer's side: says how far the save got and how it ended. Dropped without saying,
/// the save failed.
#[derive(Debug)]
pub struct Saving(watch::Sender<Stage>);

impl Saved {
    /// A save under way.
    pub fn pending() -> (Saving, Saved) {
        let (tx, rx) = watch::channel(Stage::Writing);
        (Saving(tx), Saved(Some(rx)))
    }

    /// Whether the desired state was saved, synced to disk; waits while its save runs.
    pub async fn wait(&self) -> bool {
        self.reached(|s| s != Stage::Written).await == Stage::Saved
    }

    /// Whether the desired state's record is written, as an agent restarted after a crash
    /// would read it, and its save has not failed; waits until it is written or failed.
    pub async fn written(&self) -> bool {
        matches!(self.reached(|_| true).await, Stage::Written | Stage::Saved)
    }

    /// The first stage past writing that `done` accepts; a writer gone without a word never
    /// saved it.
    async fn reached(&self, done: impl Fn(Stage) -> bool) -> Stage {
        let Some(rx) = &self.0 else {
            return Stage::Saved;
        };
        let mut rx = rx.clone();
        rx.wait_for(|s| *s != Stage::Writing && done(*s))
            .await
            .map_or(Stage::Failed, |s| *s)
    }

    /// [`Saved::wait`], adding the time it took to `waited`: time a pass spends waiting for
    /// the save is not the pass's own (its log tells them apart).
    pub async fn wait_counting(&self, waited: &mut Duration) -> bool {
        counting(waited, self.wait()).await
    }

    /// [`Saved::written`], adding the time it took to `waited`.
    pub async fn written_counting(&self, waited: &mut Duration) -> bool {
        counting(waited, self.written()).await
    }
}

async fn counting(waited: &mut Duration, wait: impl std::future::Future<Output = bool>) -> bool {
    let asked = Instant::now();
    let answer = wait.await;
    *waited += asked.elapsed();
    answer
}

impl Saving {
    /// The record is written; its sync to disk runs.
    pub fn written(&self) {
        self.0.send_if_modified(|s| {
            let first = *s == Stage::Writing;
            if first {
                *s = Stage::Written;
            }
            first
        });
    }

    pub fn finish(self, saved: bool) {
        let _ = self.0.send(match saved {
            true => Stage::Saved,
            false => Stage::Failed,
        });
    }
}

/// One save is itself: a desired state compared with another (is this a new target?)
/// compares whose save it waits for, not how that save is going.
impl PartialEq for Saved {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_channel(b),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The answer, if it comes at once.
    async fn now(wait: impl std::future::Future<Output = bool>) -> Option<bool> {
        tokio::time::timeout(Duration::from_millis(50), wait)
            .await
            .ok()
    }

    async fn ended(saved: &Saved) -> Option<bool> {
        now(saved.wait()).await
    }

    #[tokio::test]
    async fn a_pending_save_holds_its_waiters_until_it_ends() {
        assert_eq!(ended(&Saved::default()).await, Some(true));
        let (saving, saved) = Saved::pending();
        assert_eq!(ended(&saved).await, None, "answered before the save ended");
        saving.finish(true);
        assert_eq!(ended(&saved).await, Some(true));
        assert_eq!(ended(&saved.clone()).await, Some(true));
    }

    #[tokio::test]
    async fn a_failed_or_abandoned_save_is_not_saved() {
        let (saving, saved) = Saved::pending();
        saving.finish(false);
        assert_eq!(ended(&saved).await, Some(false));
        let (saving, saved) = Saved::pending();
        drop(saving);
        assert_eq!(ended(&saved).await, Some(false));
    }

    async fn written(saved: &Saved) -> Option<bool> {
        now(saved.written()).await
    }

    #[tokio::test]
    async fn a_written_record_lets_writes_go_while_its_sync_runs() {
        assert_eq!(written(&Saved::default()).await, Some(true));
        let (saving, saved) = Saved::pending();
        assert_eq!(written(&saved).await, None, "written before the record was");
        saving.written();
        assert_eq!(written(&saved).await, Some(true));
        assert_eq!(ended(&saved).await, None, "saved before the sync ended");
        saving.finish(true);
        assert_eq!(ended(&saved).await, Some(true));
        assert_eq!(written(&saved).await, Some(true));
        // A sync that fails: the change is not kept (its record is put back), so a pass that
        // has not begun by then does not write it.
        let (saving, saved) = Saved::pending();
        saving.written();
        saving.finish(false);
        assert_eq!(
            (written(&saved).await, ended(&saved).await),
            (Some(false), Some(false))
        );
        // A write that fails: neither.
        let (saving, saved) = Saved::pending();
        saving.finish(false);
        assert_eq!(
            (written(&saved).await, ended(&saved).await),
            (Some(false), Some(false))
        );
        let (saving, saved) = Saved::pending();
        drop(saving);
        assert_eq!(written(&saved).await, Some(false));
    }

    #[test]
    fn saves_compare_by_which_save_they_are() {
        let (_a, a) = Saved::pending();
        let (_b, b) = Saved::pending();
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
        assert_ne!(a, Saved::default());
        assert_eq!(Saved::default(), Saved::default());
    }
}
