//! Limits of the server: transport limits of both gRPC listeners, bounds of the
//! `FollowJob` streams, queue caps, the per-job log quota and the free-disk floor. Sizes
//! take a byte count or a quantity (`16Mi`), durations `30s`, `5m` or `7d`.

use clap::Args;
use hodei_core::{
    controller::{ControllerConfig, DEFAULT_MAX_QUEUED_JOBS, DEFAULT_MAX_QUEUED_JOBS_PER_OWNER},
    disk::FreeDiskFloor,
    server::{FollowLimits, GrpcLimits},
};

use super::parse;

/// Limits a server enforces; every flag can also come from its `HODEI_*` variable.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest message on the job API, either way [default: 16Mi].
    #[arg(long, env = "HODEI_JOB_API_MAX_MESSAGE_SIZE", value_parser = parse::bytes)]
    pub job_api_max_message_size: Option<u64>,
    /// Largest message on the worker API, either way [default: 4Mi].
    #[arg(long, env = "HODEI_WORKER_API_MAX_MESSAGE_SIZE", value_parser = parse::bytes)]
    pub worker_api_max_message_size: Option<u64>,
    /// Most concurrent calls (HTTP/2 streams) on one connection [default: 128].
    #[arg(long, env = "HODEI_MAX_STREAMS_PER_CONNECTION")]
    pub max_streams_per_connection: Option<u32>,
    /// How often the server pings a connection to check the peer is there [default: 30s].
    #[arg(long, env = "HODEI_KEEPALIVE_INTERVAL", value_parser = parse::duration)]
    pub keepalive_interval: Option<humantime::Duration>,
    /// How long the server waits for a ping's answer [default: 20s].
    #[arg(long, env = "HODEI_KEEPALIVE_TIMEOUT", value_parser = parse::duration)]
    pub keepalive_timeout: Option<humantime::Duration>,
    /// Largest header list (all metadata) of a call [default: 16Ki].
    #[arg(long, env = "HODEI_MAX_HEADER_SIZE", value_parser = parse::bytes)]
    pub max_header_size: Option<u64>,
    /// Longest time a call may take to answer; streams are bounded only until they start
    /// [default: 60s].
    #[arg(long, env = "HODEI_REQUEST_TIMEOUT", value_parser = parse::duration)]
    pub request_timeout: Option<humantime::Duration>,
    /// Most jobs queued at once (accepted, not yet given a worker); more submits are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "HODEI_MAX_QUEUED_JOBS", default_value_t = DEFAULT_MAX_QUEUED_JOBS)]
    pub max_queued_jobs: usize,
    /// Most jobs of one owner queued at once; more submits of that owner are refused.
    #[arg(long, env = "HODEI_MAX_QUEUED_JOBS_PER_OWNER",
        default_value_t = DEFAULT_MAX_QUEUED_JOBS_PER_OWNER)]
    pub max_queued_jobs_per_owner: usize,
    /// Most jobs of one owner running at once, on all providers (from leaving the queue to
    /// the end of the run); 0 means no cap [default: 0].
    #[arg(long, env = "HODEI_MAX_RUNNING_PER_OWNER", default_value_t = 0)]
    pub max_running_per_owner: usize,
    /// Caps of running jobs for named owners, in place of the one above, e.g.
    /// `alice=20,ci=50`; 0 means no cap for that owner.
    #[arg(long, env = "HODEI_MAX_RUNNING_PER_OWNER_OVERRIDES", value_parser = parse::owner_caps)]
    pub max_running_per_owner_overrides: Option<std::collections::BTreeMap<String, usize>>,
    /// Most output stored for one job; a job passing it is stopped and fails
    /// LogLimitExceeded [default: 1Gi].
    #[arg(long, env = "HODEI_MAX_LOG_BYTES", value_parser = parse::bytes)]
    pub max_log_bytes: Option<u64>,
    /// Least free space on the data directory's filesystem, bytes (`1Gi`) or a share
    /// (`5%`); below it submits are refused and jobs writing output fail DiskFull
    /// [default: 1Gi].
    #[arg(long, env = "HODEI_MIN_FREE_DISK")]
    pub min_free_disk: Option<FreeDiskFloor>,
    /// Most jobs followed (`FollowJob` streams) at once on the server [default: 4096].
    #[arg(long, env = "HODEI_MAX_FOLLOWERS")]
    pub max_followers: Option<usize>,
    /// Most jobs followed at once on one client connection [default: 64].
    #[arg(long, env = "HODEI_MAX_FOLLOWERS_PER_CONNECTION")]
    pub max_followers_per_connection: Option<usize>,
    /// How long a follower may take no event while its buffer is full before the server
    /// drops it [default: 60s].
    #[arg(long, env = "HODEI_FOLLOW_STALL_TIMEOUT", value_parser = parse::duration)]
    pub follow_stall_timeout: Option<humantime::Duration>,
}

impl LimitArgs {
    /// `config` with the queue caps and the per-owner caps of running jobs set, and the log quota and the free-disk floor where
    /// they were set.
    #[must_use]
    pub fn apply(&self, config: ControllerConfig) -> ControllerConfig {
        ControllerConfig {
            max_queued_jobs: self.max_queued_jobs,
            max_queued_jobs_per_owner: self.max_queued_jobs_per_owner,
            max_running_per_owner: self.max_running_per_owner,
            max_running_per_owner_overrides: self
                .max_running_per_owner_overrides
                .clone()
                .unwrap_or_default(),
            max_log_bytes: self.max_log_bytes.unwrap_or(config.max_log_bytes),
            min_free_disk: self.min_free_disk.unwrap_or(config.min_free_disk),
            ..config
        }
    }

    /// The transport limits: the defaults with what was set over them. Sizes too large
    /// for this machine saturate, and the server's own check then judges them.
    #[must_use]
    pub fn grpc_limits(&self) -> GrpcLimits {
        let defaults = GrpcLimits::default();
        let size = |set: Option<u64>, default: usize| {
            set.map_or(default, |bytes| {
                usize::try_from(bytes).unwrap_or(usize::MAX)
            })
        };
        GrpcLimits {
            job_api_max_message_bytes: size(
                self.job_api_max_message_size,
                defaults.job_api_max_message_bytes,
            ),
            worker_api_max_message_bytes: size(
                self.worker_api_max_message_size,
                defaults.worker_api_max_message_bytes,
            ),
            max_concurrent_streams: self
                .max_streams_per_connection
                .unwrap_or(defaults.max_concurrent_streams),
            keepalive_interval: self
                .keepalive_interval
                .map_or(defaults.keepalive_interval, Into::into),
            keepalive_timeout: self
                .keepalive_timeout
                .map_or(defaults.keepalive_timeout, Into::into),
            max_header_list_bytes: self
                .max_header_size
                .map_or(defaults.max_header_list_bytes, |bytes| {
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                }),
            request_timeout: self
                .request_timeout
                .map_or(defaults.request_timeout, Into::into),
        }
    }

    /// The bounds of `FollowJob` streams: the defaults with what was set over them.
    #[must_use]
    pub fn follow_limits(&self) -> FollowLimits {
        let defaults = FollowLimits::default();
        FollowLimits {
            max_followers: self.max_followers.unwrap_or(defaults.max_followers),
            max_followers_per_connection: self
                .max_followers_per_connection
                .unwrap_or(defaults.max_followers_per_connection),
            stall_timeout: self
                .follow_stall_timeout
                .map_or(defaults.stall_timeout, Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn unset_limits_are_the_defaults_and_set_ones_take_quantities() {
        let probe = parse::parse::<Probe>(["probe"]).unwrap();
        assert_eq!(probe.limits.grpc_limits(), GrpcLimits::default());
        let probe = parse::parse::<Probe>([
            "probe",
            "--job-api-max-message-size",
            "32Mi",
            "--max-header-size=8Ki",
            "--request-timeout",
            "2m",
        ])
        .unwrap();
        let limits = probe.limits.grpc_limits();
        assert_eq!(limits.job_api_max_message_bytes, 32 << 20);
        assert_eq!(limits.max_header_list_bytes, 8 << 10);
        assert_eq!(limits.request_timeout, std::time::Duration::from_secs(120));
        assert_eq!(
            limits.worker_api_max_message_bytes,
            GrpcLimits::default().worker_api_max_message_bytes
        );
    }

    #[test]
    fn the_admission_limits_default_and_take_quantities_and_shares() {
        let probe = parse::parse::<Probe>(["probe"]).unwrap();
        let config = probe.limits.apply(ControllerConfig::default());
        assert_eq!(config.max_queued_jobs, 10_000);
        assert_eq!(config.max_queued_jobs_per_owner, 1_000);
        assert_eq!(config.max_log_bytes, 1 << 30);
        assert_eq!(config.min_free_disk, FreeDiskFloor::Bytes(1 << 30));
        let probe = parse::parse::<Probe>([
            "probe",
            "--max-queued-jobs=5",
            "--max-queued-jobs-per-owner=2",
            "--max-log-bytes=64Ki",
            "--min-free-disk=5%",
        ])
        .unwrap();
        let config = probe.limits.apply(ControllerConfig::default());
        assert_eq!(config.max_queued_jobs, 5);
        assert_eq!(config.max_queued_jobs_per_owner, 2);
        assert_eq!(config.max_log_bytes, 64 << 10);
        assert_eq!(config.min_free_disk, FreeDiskFloor::Percent(5));
    }

    #[test]
    fn per_owner_running_caps_default_to_none_and_take_overrides() {
        let probe = parse::parse::<Probe>(["probe"]).unwrap();
        let config = probe.limits.apply(ControllerConfig::default());
        assert_eq!(config.max_running_per_owner, 0);
        assert!(config.max_running_per_owner_overrides.is_empty());
        let probe = parse::parse::<Probe>([
            "probe",
            "--max-running-per-owner=10",
            "--max-running-per-owner-overrides",
            "alice=20, ci=50,CN=bot=0",
        ])
        .unwrap();
        let config = probe.limits.apply(ControllerConfig::default());
        assert_eq!(config.max_running_per_owner, 10);
        assert_eq!(
            config.max_running_per_owner_overrides,
            [("CN=bot", 0), ("alice", 20), ("ci", 50)]
                .map(|(o, c)| (o.to_owned(), c))
                .into()
        );
        for (bad, needle) in [
            ("alice", "is not OWNER=COUNT"),
            ("=3", "names no owner"),
            ("alice=lots", "not a whole number"),
            ("a=1,a=2", "given twice"),
        ] {
            let error = parse::parse::<Probe>(["probe", "--max-running-per-owner-overrides", bad])
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("--max-running-per-owner-overrides") && error.contains(needle),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_bad_floor_names_the_flag() {
        let error = parse::parse::<Probe>(["probe", "--min-free-disk", "lots"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--min-free-disk"), "{error}");
    }

    #[test]
    fn follow_limits_default_and_take_flags() {
        let probe = parse::parse::<Probe>(["probe"]).unwrap();
        assert_eq!(probe.limits.follow_limits(), FollowLimits::default());
        let probe = parse::parse::<Probe>([
            "probe",
            "--max-followers=10",
            "--max-followers-per-connection",
            "3",
            "--follow-stall-timeout",
            "5s",
        ])
        .unwrap();
        assert_eq!(
            probe.limits.follow_limits(),
            FollowLimits {
                max_followers: 10,
                max_followers_per_connection: 3,
                stall_timeout: std::time::Duration::from_secs(5),
            }
        );
    }

    #[test]
    fn a_bad_size_names_the_flag() {
        let error = parse::parse::<Probe>(["probe", "--max-header-size", "lots"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--max-header-size"), "{error}");
        assert!(error.contains("64Mi"), "{error}");
    }
}
