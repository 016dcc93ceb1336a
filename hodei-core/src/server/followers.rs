//! How many `FollowJob` streams may be open: in total and per client connection, and how
//! long a follower may leave its buffer full.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tonic::Status;

use crate::observe;

/// Bounds of the `FollowJob` streams of one server. Every field has a finite default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowLimits {
    /// Most `FollowJob` streams open at once on the server (default 4096).
    pub max_followers: usize,
    /// Most `FollowJob` streams open at once on one client connection (default 64, below
    /// the 128 streams a connection may carry, so unary calls still fit beside them).
    pub max_followers_per_connection: usize,
    /// How long a follower's buffer may stay full, its client taking no event, before the
    /// server drops the follower (default 60 s).
    pub stall_timeout: Duration,
}

impl Default for FollowLimits {
    fn default() -> Self {
        Self {
            max_followers: 4096,
            max_followers_per_connection: 64,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// A setting of [`FollowLimits`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid follow limit {setting}: {message}")]
pub struct FollowLimitError {
    /// The offending field of [`FollowLimits`].
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl FollowLimits {
    /// Refuses caps of zero (nobody could follow a job) and a zero stall timeout (every
    /// follower would be dropped the moment its buffer fills).
    pub fn validate(&self) -> Result<(), FollowLimitError> {
        let refuse = |setting, message: &str| {
            Err(FollowLimitError {
                setting,
                message: message.to_owned(),
            })
        };
        if self.max_followers == 0 {
            return refuse("max_followers", "must be at least 1");
        }
        if self.max_followers_per_connection == 0 {
            return refuse("max_followers_per_connection", "must be at least 1");
        }
        if self.stall_timeout.is_zero() {
            return refuse("stall_timeout", "must be greater than zero");
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Open streams by client connection; a connection with none has no entry, so the map
    /// never holds more entries than `total`.
    by_connection: HashMap<Option<SocketAddr>, usize>,
}

/// The open `FollowJob` streams of a server, counted against [`FollowLimits`].
#[derive(Debug, Clone)]
pub(super) struct Followers {
    limits: FollowLimits,
    counts: Arc<Mutex<Counts>>,
}

impl Followers {
    pub(super) fn new(limits: FollowLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    pub(super) fn stall_timeout(&self) -> Duration {
        self.limits.stall_timeout
    }

    /// A slot for one more stream on `connection` (the client's address; streams of
    /// callers without one share a single count), or RESOURCE_EXHAUSTED naming the cap
    /// that is full and the setting that raises it.
    pub(super) fn admit(&self, connection: Option<SocketAddr>) -> Result<FollowerSlot, Status> {
        let mut counts = self.counts.lock();
        if counts.total >= self.limits.max_followers {
            observe::job_api_refusal("max_followers");
            return Err(Status::resource_exhausted(format!(
                "the server already has {} jobs followed, its limit (HODEI_MAX_FOLLOWERS); \
                 try again later",
                self.limits.max_followers
            )));
        }
        let on_connection = counts.by_connection.get(&connection).copied().unwrap_or(0);
        if on_connection >= self.limits.max_followers_per_connection {
            observe::job_api_refusal("max_followers_per_connection");
            return Err(Status::resource_exhausted(format!(
                "this connection already follows {on_connection} jobs, the limit per \
                 connection (HODEI_MAX_FOLLOWERS_PER_CONNECTION); end a follow or open \
                 another connection"
            )));
        }
        counts.total += 1;
        *counts.by_connection.entry(connection).or_default() += 1;
        observe::followers(counts.total);
        Ok(FollowerSlot {
            connection,
            counts: Arc::clone(&self.counts),
        })
    }

    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let counts = self.counts.lock();
        (counts.total, counts.by_connection.len())
    }
}

/// One open `FollowJob` stream; dropping it frees its place.
#[derive(Debug)]
pub(super) struct FollowerSlot {
    connection: Option<SocketAddr>,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for FollowerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(open) = counts.by_connection.get_mut(&self.connection) {
            *open -= 1;
            if *open == 0 {
                counts.by_connection.remove(&self.connection);
            }
        }
        observe::followers(counts.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn limits(total: usize, per_connection: usize) -> FollowLimits {
        FollowLimits {
            max_followers: total,
            max_followers_per_connection: per_connection,
            ..FollowLimits::default()
        }
    }

    #[test]
    fn a_connection_over_its_cap_is_refused_while_others_are_admitted() {
        let followers = Followers::new(limits(10, 2));
        let _a = followers.admit(addr(1)).unwrap();
        let b = followers.admit(addr(1)).unwrap();
        let refused = followers.admit(addr(1)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("HODEI_MAX_FOLLOWERS_PER_CONNECTION"),
            "{refused:?}"
        );
        let _c = followers.admit(addr(2)).unwrap();
        drop(b);
        let _d = followers.admit(addr(1)).unwrap();
        assert_eq!(followers.open(), (3, 2));
    }

    #[test]
    fn the_total_cap_counts_every_connection() {
        let followers = Followers::new(limits(2, 2));
        let a = followers.admit(addr(1)).unwrap();
        let _b = followers.admit(addr(2)).unwrap();
        let refused = followers.admit(addr(3)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("(HODEI_MAX_FOLLOWERS)"),
            "{refused:?}"
        );
        drop(a);
        let _c = followers.admit(addr(3)).unwrap();
    }

    #[test]
    fn released_slots_leave_no_entries_behind() {
        let followers = Followers::new(limits(100, 100));
        let slots: Vec<_> = (1..=50)
            .map(|port| followers.admit(addr(port)).unwrap())
            .collect();
        assert_eq!(followers.open(), (50, 50));
        drop(slots);
        assert_eq!(followers.open(), (0, 0));
    }

    #[test]
    fn callers_without_an_address_share_one_count() {
        let followers = Followers::new(limits(10, 1));
        let _a = followers.admit(None).unwrap();
        assert!(followers.admit(None).is_err());
    }

    #[test]
    fn zero_caps_and_timeouts_are_refused_naming_the_setting() {
        let cases = [
            (limits(0, 1), "max_followers"),
            (limits(1, 0), "max_followers_per_connection"),
            (
                FollowLimits {
                    stall_timeout: Duration::ZERO,
                    ..FollowLimits::default()
                },
                "stall_timeout",
            ),
        ];
        for (limits, setting) in cases {
            let error = limits.validate().unwrap_err();
            assert_eq!(error.setting, setting);
            assert!(error.to_string().contains(setting), "{error}");
        }
        FollowLimits::default().validate().unwrap();
    }
}
