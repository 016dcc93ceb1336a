//! Keeps a `ListJobs` answer within the job API's message limit: the newest jobs that fit,
//! and a flag saying some were left out.

use hodei_proto::v1 as pb;
use prost::Message;

/// Room kept under the message limit for what is not a job: the `truncated` flag, gRPC
/// framing, and encoders that round up.
pub(super) const LIST_MARGIN_BYTES: usize = 64 * 1024;

/// The answer holding the leading `jobs` (newest first) whose encoding, with
/// [`LIST_MARGIN_BYTES`] to spare, stays within `max_message_bytes`; `truncated` is set
/// when some were left out.
pub(super) fn fit(mut jobs: Vec<pb::Job>, max_message_bytes: usize) -> pb::ListJobsResponse {
    let budget = max_message_bytes.saturating_sub(LIST_MARGIN_BYTES);
    let mut used = 0_usize;
    let fitting = jobs
        .iter()
        .position(|job| {
            let len = job.encoded_len();
            // Tag of field 1, the length prefix, the job.
            used = used.saturating_add(1 + prost::length_delimiter_len(len) + len);
            used > budget
        })
        .unwrap_or(jobs.len());
    let truncated = fitting < jobs.len();
    jobs.truncate(fitting);
    pb::ListJobsResponse {
        jobs,
        truncated,
        next_page_token: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{
        Job, JobSpec,
        limits::{MAX_ARG_BYTES, MAX_COMMAND_LINE_BYTES, MAX_ENV_VAR_BYTES},
    };

    /// A job whose spec is close to the largest legal one (1.5 MiB): a maximal command
    /// line and three maximal variables.
    fn big_job() -> pb::Job {
        let args = vec!["a".repeat(MAX_ARG_BYTES); MAX_COMMAND_LINE_BYTES / MAX_ARG_BYTES - 1];
        let env = (0..3)
            .map(|i| (format!("V{i}"), "v".repeat(MAX_ENV_VAR_BYTES - 2)))
            .collect();
        let spec = JobSpec::builder("echo")
            .args(args)
            .env(env)
            .build()
            .unwrap();
        pb::Job::from(&Job::new(spec, "alice"))
    }

    #[test]
    fn an_answer_that_would_pass_the_limit_keeps_the_newest_jobs_that_fit() {
        let job = big_job();
        let job_bytes = job.encoded_len();
        assert!(job_bytes > 1200 * 1024, "{job_bytes}");
        let limit = 16 << 20;
        let answer = fit(vec![job; 40], limit);
        assert!(answer.truncated);
        let fitting =
            (limit - LIST_MARGIN_BYTES) / (job_bytes + 1 + prost::length_delimiter_len(job_bytes));
        assert_eq!(answer.jobs.len(), fitting);
        assert!(answer.encoded_len() + 5 <= limit);
    }

    #[test]
    fn an_answer_within_the_limit_is_whole() {
        let jobs = vec![big_job(); 3];
        let answer = fit(jobs.clone(), 16 << 20);
        assert!(!answer.truncated);
        assert_eq!(answer.jobs, jobs);
        let empty = fit(Vec::new(), 16 << 20);
        assert!(!empty.truncated && empty.jobs.is_empty());
    }
}
