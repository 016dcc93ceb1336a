//! A token-bucket limiter that spaces out writes to the API server.

use parking_lot::Mutex;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

/// Allows `per_second` permits a second on average, with bursts of up to `per_second`.
///
/// Each caller reserves its slot under a short lock and then sleeps outside it, so waiting
/// callers are served in arrival order and never hold the lock across an await.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: that many permits are already promised to sleeping callers.
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_second` permits a second, starting with a full burst.
    #[must_use]
    pub fn new(per_second: NonZeroU32) -> Self {
        let rate = f64::from(per_second.get());
        Self {
            per_second: rate,
            burst: rate,
            state: Mutex::new(Bucket {
                tokens: rate,
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Waits until a permit is available and takes it.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a permit now and says how long to wait before using it.
    fn reserve(&self) -> Duration {
        // A poisoned lock only means another caller panicked mid-update of two floats;
        // the bucket is still usable.
        let mut bucket = self.state.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refilled_at = now;
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limiter(per_second: u32) -> RateLimiter {
        RateLimiter::new(NonZeroU32::new(per_second).expect("non-zero"))
    }

    #[tokio::test(start_paused = true)]
    async fn burst_is_free_then_permits_are_spaced() {
        let limiter = limiter(4);
        let start = Instant::now();
        for _ in 0..4 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..4 {
            limiter.acquire().await;
        }
        // Four more permits at 4/s need one more second.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1010), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let limiter = Arc::new(limiter(10));
        let start = Instant::now();
        let tasks: Vec<_> = (0..30)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.acquire().await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task completes");
        }
        // 10 free, 20 more at 10/s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2010), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_only_up_to_the_burst() {
        let limiter = limiter(2);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(490), "{elapsed:?}");
    }
}
