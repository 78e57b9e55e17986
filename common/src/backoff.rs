//! Exponential backoff with jitter, for every retry in nes (the agent's converge passes and
//! reconnects, the shim, nescli's connects, the operator's webhook delivery and certificate
//! keeper). Level-triggered: there is no retry cap.

use std::time::{Duration, Instant};

use rand::Rng;

/// The delay before retry number `attempt` (0 first): drawn uniformly from [d/2, d] with
/// d = min(max, base * 2^attempt). Pure given `rng`, for callers that count attempts
/// themselves.
pub fn delay(base: Duration, max: Duration, attempt: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = ceiling(base, max, attempt);
    let half = ceiling / 2;
    let jitter_ns = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rng.random_range(0..=jitter_ns))
}

fn ceiling(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// [`delay`] with its own attempt count.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The upper bound of the next delay, without jitter.
    pub fn ceiling(&self) -> Duration {
        ceiling(self.base, self.max, self.attempt)
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(self.base, self.max, self.attempt, &mut rand::rng());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// The next delay, cut short at `deadline`, or `None` when the deadline has passed.
    pub fn delay_before(&mut self, deadline: Instant) -> Option<Duration> {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        Some(self.next_delay().min(left))
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let full = Duration::from_millis(100 * (1 << n)).min(Duration::from_secs(1));
            assert!(
                *d >= full / 2 && *d <= full,
                "attempt {n}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ceilings: Vec<Duration> = (0..7)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay();
                assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
                c
            })
            .collect();
        let ms: Vec<u128> = ceilings.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
    }

    #[test]
    fn backoff_stops_at_the_deadline() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        assert_eq!(b.delay_before(Instant::now()), None);
        let d = b.delay_before(Instant::now() + Duration::from_millis(10));
        assert!(d.is_some_and(|d| d <= Duration::from_millis(10)), "{d:?}");
    }
}
