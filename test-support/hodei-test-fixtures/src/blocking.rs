//! [`wait_until`] for synchronous tests, whose conditions often run a program.

use std::time::{Duration, Instant};

use crate::wait::{Ready, TimedOut};

/// How often [`wait_until`] looks; a look often starts a process (`hodei`, `kubectl`).
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Calls `condition` every 100 ms until it holds, for at most `timeout`; `what` names the
/// awaited state in the error, e.g. "the worker pod is gone".
pub fn wait_until<R: Ready>(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> R,
) -> Result<R::Output, TimedOut> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = condition().ready() {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut::new(what, timeout));
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_holds_at_once_does_not_sleep() {
        let started = Instant::now();
        wait_until(Duration::from_secs(5), "true", || true).expect("it holds");
        assert!(started.elapsed() < POLL_EVERY);
    }

    #[test]
    fn a_zero_timeout_looks_once() {
        let mut looks = 0;
        let error = wait_until(Duration::ZERO, "never", || {
            looks += 1;
            false
        })
        .expect_err("the condition never holds");
        assert_eq!(looks, 1);
        assert!(error.to_string().contains("never"), "{error}");
    }
}
