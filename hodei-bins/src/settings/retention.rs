//! Retention of finished jobs: by age, by count, and under the free-disk floor.

use clap::Args;
use hodei_core::controller::RetentionPolicy;

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
}

impl RetentionArgs {
    /// The retention policy these settings ask for.
    #[must_use]
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy::builder()
            .maybe_max_age(self.retention.map(Into::into))
            .maybe_max_finished_jobs(self.retention_jobs)
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
    }

    #[test]
    fn set_retention_takes_an_age_and_a_count() {
        let probe =
            parse::parse::<Probe>(["probe", "--retention", "7d", "--retention-jobs=100"]).unwrap();
        let policy = probe.retention.policy();
        assert_eq!(policy.max_age, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(policy.max_finished_jobs, Some(100));
    }
}
