//! When a failed job runs again: the server's budget for failures of the platform and the
//! wait between attempts. A job's own failures are retried only as its spec asks.

use clap::Args;
use hodei_core::controller::{
    DEFAULT_INFRASTRUCTURE_RETRIES, DEFAULT_MAX_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF, RetrySettings,
};

use super::parse;

/// The server's retry policy; every flag can also come from its `HODEI_*` variable.
#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    /// Most times a job runs again after failures of the platform (worker lost, pod
    /// evicted or deleted, registration timeout, provider errors); 0 turns them off.
    #[arg(long, env = "HODEI_INFRA_RETRIES", default_value_t = DEFAULT_INFRASTRUCTURE_RETRIES)]
    pub infra_retries: u32,
    /// Wait before the first retry; it doubles with each further one, with jitter.
    #[arg(long, env = "HODEI_RETRY_BACKOFF", value_parser = parse::duration,
        default_value_t = DEFAULT_RETRY_BACKOFF.into())]
    pub retry_backoff: humantime::Duration,
    /// Longest wait between two attempts.
    #[arg(long, env = "HODEI_MAX_RETRY_BACKOFF", value_parser = parse::duration,
        default_value_t = DEFAULT_MAX_RETRY_BACKOFF.into())]
    pub max_retry_backoff: humantime::Duration,
}

impl RetryArgs {
    /// The retry policy these settings ask for.
    #[must_use]
    pub fn settings(&self) -> RetrySettings {
        RetrySettings {
            infrastructure_retries: self.infra_retries,
            backoff: self.retry_backoff.into(),
            max_backoff: self.max_retry_backoff.into(),
        }
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
        retry: RetryArgs,
    }

    #[test]
    fn defaults_and_settings_are_read() {
        let probe = parse::parse::<Probe>(["probe"]).unwrap();
        assert_eq!(probe.retry.settings(), RetrySettings::default());
        let probe = parse::parse::<Probe>([
            "probe",
            "--infra-retries",
            "0",
            "--retry-backoff",
            "2s",
            "--max-retry-backoff",
            "1m",
        ])
        .unwrap();
        assert_eq!(
            probe.retry.settings(),
            RetrySettings {
                infrastructure_retries: 0,
                backoff: Duration::from_secs(2),
                max_backoff: Duration::from_secs(60),
            }
        );
    }
}
