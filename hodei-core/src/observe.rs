//! Metrics the server emits through the `metrics` facade; a binary installs the exporter.
//!
//! Labels are low-cardinality on purpose: never a job or worker id.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::job::{FailureReason, JobState};

/// Job API calls refused, by `reason`: `unauthenticated`, `permission_denied`,
/// `not_found_hidden` (another identity's job the caller may not read), `max_followers`,
/// `max_followers_per_connection` (a `FollowJob` over a cap), or `follower_stalled` (a
/// follow dropped because its client took no event for the stall timeout).
pub const JOB_API_REFUSALS: &str = "hodei_job_api_refusals_total";
/// `FollowJob` streams open now.
pub const FOLLOWERS: &str = "hodei_followers";
/// Jobs accepted.
pub const JOBS_SUBMITTED: &str = "hodei_jobs_submitted_total";
/// Jobs that reached a terminal state, by state and reason.
pub const JOBS_FINISHED: &str = "hodei_jobs_finished_total";
/// Jobs currently in each non-terminal phase.
pub const JOBS_ACTIVE: &str = "hodei_jobs_active";
/// Time from acceptance to the terminal state.
pub const JOB_DURATION: &str = "hodei_job_duration_seconds";
/// Time spent in each start phase: `queued` (accepted until the provider is asked for a
/// worker), `provisioning` (the provider's create call), `scheduling` (created until placed,
/// e.g. a pod bound to a node; only providers that report placement), `registration`
/// (placed, or created, until the worker proved its token), `first_output` (the job
/// started until its first output).
pub const JOB_START_PHASE: &str = "hodei_job_start_phase_seconds";
/// Provider failures while starting workers, by provider and reason.
pub const PROVISIONING_FAILURES: &str = "hodei_provisioning_failures_total";
/// Output bytes stored.
pub const OUTPUT_BYTES: &str = "hodei_output_bytes_total";
/// Output lines stored.
pub const OUTPUT_LINES: &str = "hodei_output_lines_total";
/// Workers provisioned and not yet destroyed, by provider.
pub const WORKERS_ACTIVE: &str = "hodei_workers_active";
/// 1 when a provider reports healthy, 0 when not, by provider.
pub const PROVIDER_HEALTHY: &str = "hodei_provider_healthy";
/// 1 when the server serves off loopback without TLS or caller authentication because the
/// operator said so, else 0.
pub const INSECURE: &str = "hodei_insecure";
/// Kubernetes API writes and lists made by the provider, by verb and outcome.
pub const KUBERNETES_API_REQUESTS: &str = "hodei_kubernetes_api_requests_total";
/// Submits refused because the server was full, by `reason`: `queue_full`,
/// `owner_queue_full` or `disk_below_floor`.
pub const JOBS_REFUSED: &str = "hodei_jobs_refused_total";
/// Free bytes on the filesystem holding the data directory, at the last sample.
pub const DISK_FREE_BYTES: &str = "hodei_disk_free_bytes";
/// 1 while free space is below the floor (`HODEI_MIN_FREE_DISK`), else 0.
pub const DISK_BELOW_FLOOR: &str = "hodei_disk_below_floor";

/// Job state writes the store refused, each try counted.
pub const STORE_WRITE_FAILURES: &str = "hodei_store_write_failures_total";
/// 1 while every job state write succeeds, 0 while some are failing and kept in memory.
pub const STORE_HEALTHY: &str = "hodei_store_healthy";
/// Finished jobs deleted by retention, by `reason`: `age`, `count` or `disk`.
pub const JOBS_DELETED: &str = "hodei_jobs_deleted_total";
/// Finished job logs whose sync to disk failed; their end may be lost in a machine crash.
pub const LOG_SYNC_FAILURES: &str = "hodei_log_sync_failures_total";
/// Workers that re-attached to their running job after their stream broke.
pub const WORKER_RECONNECTS: &str = "hodei_worker_reconnects_total";
/// Resumed workers whose first resent chunk did not follow the last stored one; the
/// resume protocol keeps it at 0.
pub const RESUME_GAPS: &str = "hodei_resume_gaps_total";
/// Running jobs a server took over at start from the server process before it.
pub const JOBS_ADOPTED: &str = "hodei_jobs_adopted_total";
/// Adopted jobs whose worker never came back (gone, or not back within the reconnect
/// window): they ended `WorkerLost`.
pub const JOBS_LOST_AFTER_RESTART: &str = "hodei_jobs_lost_after_restart_total";
/// Jobs that had not started when the server last stopped and were queued again.
pub const JOBS_REQUEUED: &str = "hodei_jobs_requeued_total";
/// Attempts that failed and were followed by another, by `class` of the failure:
/// `user` (the job asked for it) or `infrastructure`.
pub const JOB_RETRIES: &str = "hodei_job_retries_total";

/// A job API call was refused for `reason`.
pub(crate) fn job_api_refusal(reason: &'static str) {
    counter!(JOB_API_REFUSALS, "reason" => reason).increment(1);
}

/// A submit was refused because the server was full, for `reason`.
pub(crate) fn job_refused(reason: &'static str) {
    counter!(JOBS_REFUSED, "reason" => reason).increment(1);
}

/// Free disk space was sampled.
#[allow(clippy::cast_precision_loss)] // a gauge; byte precision does not matter
pub(crate) fn disk_free(free_bytes: u64, below_floor: bool) {
    gauge!(DISK_FREE_BYTES).set(free_bytes as f64);
    gauge!(DISK_BELOW_FLOOR).set(if below_floor { 1.0 } else { 0.0 });
}

/// `open` `FollowJob` streams are open now.
pub(crate) fn followers(open: usize) {
    gauge!(FOLLOWERS).set(open as f64);
}

/// A job was accepted.
pub(crate) fn job_submitted() {
    counter!(JOBS_SUBMITTED).increment(1);
    gauge!(JOBS_ACTIVE, "phase" => "queued").increment(1.0);
}

/// A job moved from `from` to `to`.
pub(crate) fn phase_changed(from: &JobState, to: &JobState) {
    if from.phase_name() == to.phase_name() {
        return;
    }
    if !from.is_terminal() {
        gauge!(JOBS_ACTIVE, "phase" => from.phase_name()).decrement(1.0);
    }
    if !to.is_terminal() {
        gauge!(JOBS_ACTIVE, "phase" => to.phase_name()).increment(1.0);
    }
}

/// A job ended in `state` after `duration`.
pub(crate) fn job_finished(state: &JobState, duration: Duration) {
    let reason = match state {
        JobState::Failed { reason } => reason.kind(),
        _ => "none",
    };
    counter!(JOBS_FINISHED, "state" => state.phase_name(), "reason" => reason).increment(1);
    histogram!(JOB_DURATION, "state" => state.phase_name()).record(duration.as_secs_f64());
    if let JobState::Failed {
        reason: FailureReason::ProviderFailure {
            provider, reason, ..
        },
    } = state
    {
        counter!(PROVISIONING_FAILURES, "provider" => provider.clone(), "reason" => reason.clone())
            .increment(1);
    }
}

/// Time spent in one start phase.
pub(crate) fn start_phase(phase: &'static str, duration: Duration) {
    histogram!(JOB_START_PHASE, "phase" => phase).record(duration.as_secs_f64());
}

/// Output was stored.
pub(crate) fn output_stored(bytes: usize, lines: usize) {
    counter!(OUTPUT_BYTES).increment(bytes as u64);
    counter!(OUTPUT_LINES).increment(lines as u64);
}

/// A worker was provisioned (`+1`) or destroyed (`-1`).
pub(crate) fn worker_count(provider: &str, delta: f64) {
    gauge!(WORKERS_ACTIVE, "provider" => provider.to_owned()).increment(delta);
}

/// A Kubernetes API request ended; `outcome` is `ok` or an error kind such as `quota`.
#[cfg(feature = "kubernetes")]
pub(crate) fn kubernetes_api_request(verb: &'static str, outcome: &'static str) {
    counter!(KUBERNETES_API_REQUESTS, "verb" => verb, "outcome" => outcome).increment(1);
}

/// A provider's latest health check.
pub(crate) fn provider_health(provider: &str, healthy: bool) {
    gauge!(PROVIDER_HEALTHY, "provider" => provider.to_owned()).set(if healthy {
        1.0
    } else {
        0.0
    });
}

/// Whether the server serves unprotected off loopback.
pub(crate) fn insecure(insecure: bool) {
    gauge!(INSECURE).set(if insecure { 1.0 } else { 0.0 });
}

/// The store refused a job state write.
pub(crate) fn store_write_failed() {
    counter!(STORE_WRITE_FAILURES).increment(1);
}

/// Whether every job state write is succeeding.
pub(crate) fn store_healthy(healthy: bool) {
    gauge!(STORE_HEALTHY).set(if healthy { 1.0 } else { 0.0 });
}

/// Retention deleted `count` finished jobs for `reason`.
pub(crate) fn jobs_deleted(reason: &'static str, count: usize) {
    counter!(JOBS_DELETED, "reason" => reason).increment(count as u64);
}

/// A finished job log could not be synced to disk.
pub(crate) fn log_sync_failed() {
    counter!(LOG_SYNC_FAILURES).increment(1);
}

/// A worker re-attached to its running job.
pub(crate) fn worker_reconnected() {
    counter!(WORKER_RECONNECTS).increment(1);
}

/// A job running when the server last stopped was taken over.
pub(crate) fn job_adopted() {
    counter!(JOBS_ADOPTED).increment(1);
}

/// An adopted job's worker did not come back.
pub(crate) fn job_lost_after_restart() {
    counter!(JOBS_LOST_AFTER_RESTART).increment(1);
}

/// A job's attempt failed and the job runs again.
pub(crate) fn job_retried(class: crate::job::FailureClass) {
    counter!(JOB_RETRIES, "class" => class.name()).increment(1);
}

/// A job that had not started when the server last stopped was queued again.
pub(crate) fn job_requeued() {
    counter!(JOBS_REQUEUED).increment(1);
}

/// A resumed worker's output did not start right after the last stored chunk.
pub(crate) fn resume_gap() {
    counter!(RESUME_GAPS).increment(1);
}
