//! Polling a condition until it holds or a deadline passes.

use std::{fmt, future::Future, time::Duration};

/// How often [`wait_until`] looks: in-process checks and loopback calls are cheap, and a
/// benchmark that waits must not add much to what it measures.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// What a condition returns: `bool`, or `Option<T>` to hand back what it found.
pub trait Ready {
    /// What the wait returns once the condition holds.
    type Output;

    /// `Some` once the condition holds.
    fn ready(self) -> Option<Self::Output>;
}

impl Ready for bool {
    type Output = ();

    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Output = T;

    fn ready(self) -> Option<T> {
        self
    }
}

/// A wait whose condition did not hold in time. Its `Debug` is its message, so a test's
/// `unwrap()` says what it waited for.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {timeout:?} waiting until {what}")]
pub struct TimedOut {
    what: String,
    timeout: Duration,
}

impl TimedOut {
    pub(crate) fn new(what: &str, timeout: Duration) -> Self {
        Self {
            what: what.to_owned(),
            timeout,
        }
    }
}

impl fmt::Debug for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Awaits `condition` every 10 ms until it holds, for at most `timeout`; `what` names the
/// awaited state in the error, e.g. "the worker is destroyed". Uses tokio's clock, so it
/// works under paused time.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: &str,
    mut condition: F,
) -> Result<<Fut::Output as Ready>::Output, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Ready,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = condition().await.ready() {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut::new(what, timeout));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use std::future::ready;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_what_the_condition_found() {
        let mut looks = 0;
        let found = wait_until(Duration::from_secs(1), "the third look", || {
            looks += 1;
            ready((looks == 3).then_some(looks))
        })
        .await;
        assert_eq!(found, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn names_what_it_waited_for_when_time_runs_out() {
        let error = wait_until(Duration::from_secs(30), "never", || ready(false))
            .await
            .expect_err("the condition never holds");
        assert_eq!(
            format!("{error:?}"),
            "timed out after 30s waiting until never"
        );
    }
}
