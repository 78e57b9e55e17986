//! Whether a desired state is on disk yet. The standalone agent hands a change to its keeper
//! before the record's sync to disk ends, so the pass plans meanwhile; the pass writes
//! nothing to the kernel until the record is saved, and nothing at all if it is not.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The keeper's side: waits for the save of the desired state it is about to apply.
/// `Saved::default()` is a state that is saved already, or kept elsewhere (the API server).
#[derive(Clone, Debug, Default)]
pub struct Saved(Option<watch::Receiver<Option<bool>>>);

/// The writer's side: says how the save ended. Dropped without saying, the save failed.
#[derive(Debug)]
pub struct Saving(watch::Sender<Option<bool>>);

impl Saved {
    /// A save under way.
    pub fn pending() -> (Saving, Saved) {
        let (tx, rx) = watch::channel(None);
        (Saving(tx), Saved(Some(rx)))
    }

    /// Whether the desired state was saved; waits while its save runs.
    pub async fn wait(&self) -> bool {
        let Some(rx) = &self.0 else {
            return true;
        };
        let mut rx = rx.clone();
        // A writer gone without a word never saved it.
        rx.wait_for(Option::is_some)
            .await
            .map(|ended| *ended == Some(true))
            .unwrap_or(false)
    }

    /// [`Saved::wait`], adding the time it took to `waited`: time a pass spends waiting for
    /// the save is not the pass's own (its log tells them apart).
    pub async fn wait_counting(&self, waited: &mut Duration) -> bool {
        let asked = Instant::now();
        let saved = self.wait().await;
        *waited += asked.elapsed();
        saved
    }
}

impl Saving {
    pub fn finish(self, saved: bool) {
        let _ = self.0.send(Some(saved));
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

    async fn ended(saved: &Saved) -> Option<bool> {
        tokio::time::timeout(Duration::from_millis(50), saved.wait())
            .await
            .ok()
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
