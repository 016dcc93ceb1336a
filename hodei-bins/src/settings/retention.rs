//! Retention of finished jobs: by age, by count, and under the free-disk floor.

use clap::Args;
use hodei_core::{
    controller::RetentionPolicy,
    disk::{DEFAULT_MIN_FREE_DISK, FreeDiskFloor},
};

use super::parse;

/// Which finished jobs the server keeps; every flag can also come from its `HODEI_*`
/// variable.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Delete finished jobs and their logs this long after they finished, e.g. `7d`
    /// [default: kept regardless of age].
    #[arg(long, env = "HODEI_RETENTION", value_parser = parse::duration)]
    pub retention: Option<humantime::Duration>,
    /// Keep at most this many finished jobs, deleting the oldest [default: no limit].
    #[arg(long, env = "HODEI_RETENTION_JOBS")]
    pub retention_jobs: Option<u64>,
    /// Free space the data directory's filesystem keeps, as bytes (`1Gi`) or a share
    /// (`5%`); below it the oldest finished jobs are deleted.
    #[arg(long, env = "HODEI_MIN_FREE_DISK", default_value_t = DEFAULT_MIN_FREE_DISK)]
    pub min_free_disk: FreeDiskFloor,
}

impl RetentionArgs {
    /// The retention policy these settings ask for.
    #[must_use]
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy::builder()
            .maybe_max_age(self.retention.map(Into::into))
            .maybe_max_finished_jobs(self.retention_jobs)
            .min_free_disk(self.min_free_disk)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        retention: RetentionArgs,
    }

    #[test]
    fn unset_retention_keeps_jobs_until_the_disk_floor() {
        let probe = parse::parse::<Probe>(["probe"]).unwrap();
        assert_eq!(probe.retention.policy(), RetentionPolicy::default());
        assert_eq!(probe.retention.policy().max_age, None);
        assert_eq!(
            probe.retention.policy().min_free_disk,
            DEFAULT_MIN_FREE_DISK
        );
    }

    #[test]
    fn set_retention_takes_an_age_a_count_and_a_floor() {
        let probe = parse::parse::<Probe>([
            "probe",
            "--retention",
            "7d",
            "--retention-jobs=100",
            "--min-free-disk",
            "5%",
        ])
        .unwrap();
        let policy = probe.retention.policy();
        assert_eq!(policy.max_age, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(policy.max_finished_jobs, Some(100));
        assert_eq!(policy.min_free_disk, FreeDiskFloor::Percent(5));
    }

    #[test]
    fn a_bad_floor_names_the_flag() {
        let error = parse::parse::<Probe>(["probe", "--min-free-disk", "lots"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--min-free-disk"), "{error}");
        assert!(error.contains("percentage"), "{error}");
    }
}
