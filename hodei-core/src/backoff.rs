//! The wait between attempts to reach a lost server, shared by workers re-attaching and
//! clients resuming a follow.

use std::time::Duration;

use rand::Rng;

/// The wait before the first retry; it doubles with each attempt up to [`MAX_DELAY`].
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(5);

/// The wait before retry number `attempt` (0 for the first): doubling from
/// [`FIRST_DELAY`] to [`MAX_DELAY`], less up to a fifth at random so that many peers
/// losing the same server do not all come back at once.
pub(crate) fn reconnect_delay(attempt: u32) -> Duration {
    let full = FIRST_DELAY
        .saturating_mul(1 << attempt.min(5))
        .min(MAX_DELAY);
    full.mul_f64(1.0 - rand::rng().random_range(0.0..0.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_to_its_maximum_less_up_to_a_fifth() {
        for (attempt, full) in [
            (0, 250),
            (1, 500),
            (2, 1000),
            (4, 4000),
            (5, 5000),
            (40, 5000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let delay = reconnect_delay(attempt);
                assert!(
                    delay <= full && delay > full.mul_f64(0.8),
                    "{attempt}: {delay:?}"
                );
            }
        }
    }
}
