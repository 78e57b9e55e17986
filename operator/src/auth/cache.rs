//! A short memory of TokenReview and SubjectAccessReview answers, so that a client sending
//! many requests (an agent forwarding its pods' writes, an event stream reconnecting) costs
//! the API server one review every few seconds instead of one per request.
//!
//! Keys are SHA-256 digests (of the token, and of what is asked): no token is kept in memory
//! longer than its request. Refusals are kept too, for less time, so that a client retrying a
//! bad token cannot turn each of its requests into a review. The map is bounded: when full,
//! expired entries go first, then the one closest to expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::sync::lock;
use ring::digest::{Context, SHA256};
use tokio::time::Instant;

/// How long an accepted answer is reused: a revoked token or a removed RoleBinding takes
/// effect after at most this.
pub const ALLOWED_TTL: Duration = Duration::from_secs(5);
/// How long a refusal is reused.
pub const DENIED_TTL: Duration = Duration::from_secs(1);
/// Answers kept per cache.
pub const MAX_ENTRIES: usize = 1024;

/// A SHA-256 digest naming what was asked.
pub type Key = [u8; 32];

/// The key of `parts`, each length-prefixed so that no two lists share one.
pub fn key(parts: &[&str]) -> Key {
    let mut digest = Context::new(&SHA256);
    for part in parts {
        digest.update(&(part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.finish().as_ref());
    key
}

/// Answers that expire, at most `max` of them.
#[derive(Debug)]
pub struct TtlCache<V> {
    entries: Mutex<HashMap<Key, (Instant, V)>>,
    max: usize,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// The answer kept for `key`, if it has not expired.
    pub fn get(&self, key: &Key) -> Option<V> {
        let mut entries = lock(&self.entries);
        match entries.get(key) {
            Some((expires, value)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `key` for `ttl`.
    pub fn insert(&self, key: Key, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if entries.len() >= self.max && !entries.contains_key(&key) {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.max {
                let soonest = entries.iter().min_by_key(|(_, (e, _))| *e).map(|(k, _)| *k);
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, (now + ttl, value));
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_for_different_splits_of_the_same_text() {
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["tok"]), key(&["tok"]));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_expires_after_its_ttl() {
        let cache = TtlCache::new(4);
        cache.insert(key(&["t"]), 1, Duration::from_secs(5));
        assert_eq!(cache.get(&key(&["t"])), Some(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(cache.get(&key(&["t"])), None);
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_expired_answers_then_the_one_expiring_first() {
        let cache = TtlCache::new(2);
        cache.insert(key(&["short"]), 1, Duration::from_secs(1));
        cache.insert(key(&["long"]), 2, Duration::from_secs(10));
        cache.insert(key(&["new"]), 3, Duration::from_secs(5));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key(&["short"])), None);
        tokio::time::advance(Duration::from_secs(6)).await;
        cache.insert(key(&["newer"]), 4, Duration::from_secs(5));
        assert_eq!(cache.len(), 2, "the expired one went");
        assert_eq!(cache.get(&key(&["long"])), Some(2));
        assert_eq!(cache.get(&key(&["newer"])), Some(4));
    }
}
