//! Lists of jobs from SQLite: phase, owner, creation time and the page's position are
//! selected in SQL; labels are checked on each row as it streams in.

use futures::TryStreamExt;
use sqlx::{QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;

use super::SqliteStore;
use crate::store::{JobFilter, JobPage, LIST_SCAN_LIMIT, PageCollector, PageRequest, StoreError};

/// `time` in whole milliseconds since the Unix epoch, as the `created_ms` column holds it.
pub(super) fn unix_ms(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Whether a stored job is terminal follows from its phase: when every phase asked for
/// is on one side, the `terminal` column narrows the rows read.
fn terminal_of(filter: &JobFilter) -> Option<bool> {
    let mut terminal = filter.states.iter().map(|phase| phase.is_terminal());
    let first = terminal.next()?;
    terminal.all(|t| t == first).then_some(first)
}

impl SqliteStore {
    /// One page of the jobs `filter` selects, newest first, read one row at a time so a
    /// list never holds more than its budget in memory.
    pub(super) async fn list_page(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<JobPage, StoreError> {
        let mut query =
            QueryBuilder::<Sqlite>::new("SELECT id, created_seq, record FROM jobs WHERE 1 = 1");
        if let Some(after) = page.after {
            query
                .push(" AND created_seq < ")
                .push_bind(i64::try_from(after.seq()).unwrap_or(i64::MAX));
        }
        if let Some(owner) = &filter.owner {
            query.push(" AND owner = ").push_bind(owner.clone());
        }
        if let Some(terminal) = terminal_of(filter) {
            query.push(" AND terminal = ").push_bind(terminal);
        }
        if !filter.states.is_empty() {
            query.push(" AND json_extract(record, '$.state.phase') IN (");
            let mut phases = query.separated(", ");
            for phase in &filter.states {
                phases.push_bind(phase.as_str());
            }
            query.push(")");
        }
        if let Some(after) = filter.created_after {
            query.push(" AND created_ms >= ").push_bind(unix_ms(after));
        }
        if let Some(before) = filter.created_before {
            query.push(" AND created_ms < ").push_bind(unix_ms(before));
        }
        query
            .push(" ORDER BY created_seq DESC LIMIT ")
            .push_bind(i64::try_from(LIST_SCAN_LIMIT).unwrap_or(i64::MAX));

        let mut collector = PageCollector::new(filter, *page);
        let mut rows = query.build().fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            let record = row.get::<&str, _>("record");
            let job = Self::decode(row.get::<&str, _>("id"), record)?;
            let seq = u64::try_from(row.get::<i64, _>("created_seq")).unwrap_or(0);
            if collector.offer(seq, record.len(), job).is_break() {
                break;
            }
        }
        Ok(collector.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use time::Duration;

    use super::*;
    use crate::{
        job::{FailureReason, Job, JobId, JobPhase, JobSpec, JobState, LabelSelector},
        store::{JobStore, PageToken},
    };

    /// Owner, state and labels of a stored job.
    type StoredJob = (
        &'static str,
        JobState,
        &'static [(&'static str, &'static str)],
    );

    /// A store holding, oldest first: a queued job of alice labelled team=a, a running
    /// one of bob labelled team=b, a failed one of alice labelled team=a and tier=web,
    /// a succeeded one of bob without labels; created a minute apart from `T0`.
    async fn store() -> (tempfile::TempDir, SqliteStore, Vec<JobId>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let failed = JobState::Failed {
            reason: FailureReason::ServerRestarted,
        };
        let rows: [StoredJob; 4] = [
            ("alice", JobState::Queued, &[("team", "a")]),
            ("bob", JobState::Running, &[("team", "b")]),
            ("alice", failed, &[("team", "a"), ("tier", "web")]),
            ("bob", JobState::Succeeded, &[]),
        ];
        let mut ids = Vec::new();
        for (minute, (owner, state, labels)) in (0..).zip(rows) {
            let labels = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let mut job = Job::new(
                JobSpec::builder("true").labels(labels).build().unwrap(),
                "local",
            );
            job.owner = owner.into();
            job.state = state;
            job.created_at = t0() + Duration::minutes(minute);
            store.insert(&job).await.unwrap();
            ids.push(job.id);
        }
        (dir, store, ids)
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap()
    }

    /// Indexes (into the stored order) of the jobs `filter` lists, newest first.
    async fn listed(store: &SqliteStore, ids: &[JobId], filter: JobFilter) -> Vec<usize> {
        let page = store.list(&filter, &PageRequest::first(100)).await.unwrap();
        assert_eq!(page.next, None);
        page.jobs
            .iter()
            .map(|job| ids.iter().position(|id| *id == job.id).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn each_filter_selects_its_jobs_newest_first() {
        let (_dir, store, ids) = store().await;
        let selector = |s| LabelSelector::parse(s).unwrap();
        let cases = [
            (JobFilter::default(), vec![3, 2, 1, 0]),
            (
                JobFilter::builder().states([JobPhase::Running]).build(),
                vec![1],
            ),
            (
                JobFilter::builder()
                    .states([JobPhase::Queued, JobPhase::Failed])
                    .build(),
                vec![2, 0],
            ),
            (
                JobFilter::builder()
                    .states([JobPhase::Running, JobPhase::Succeeded])
                    .build(),
                vec![3, 1],
            ),
            (
                JobFilter::builder().states([JobPhase::TimedOut]).build(),
                vec![],
            ),
            (JobFilter::builder().owner("alice").build(), vec![2, 0]),
            (JobFilter::builder().owner("carol").build(), vec![]),
            (
                JobFilter::builder().labels(selector("team=a")).build(),
                vec![2, 0],
            ),
            (
                JobFilter::builder().labels(selector("team!=a")).build(),
                vec![3, 1],
            ),
            (
                JobFilter::builder()
                    .labels(selector("team in (a,b),!tier"))
                    .build(),
                vec![1, 0],
            ),
            (
                JobFilter::builder().labels(selector("tier")).build(),
                vec![2],
            ),
            (
                JobFilter::builder()
                    .created_after(t0() + Duration::minutes(1))
                    .build(),
                vec![3, 2, 1],
            ),
            (
                JobFilter::builder()
                    .created_before(t0() + Duration::minutes(1))
                    .build(),
                vec![0],
            ),
            (
                JobFilter::builder()
                    .created_after(t0() + Duration::minutes(1))
                    .created_before(t0() + Duration::minutes(3))
                    .build(),
                vec![2, 1],
            ),
            (
                JobFilter::builder()
                    .owner("bob")
                    .states([JobPhase::Running, JobPhase::Succeeded])
                    .labels(selector("team"))
                    .build(),
                vec![1],
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(
                listed(&store, &ids, filter.clone()).await,
                expected,
                "{filter:?}"
            );
        }
    }

    #[tokio::test]
    async fn pages_cover_every_selected_job_once_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut labelled = Vec::new();
        for i in 0..23 {
            let team = if i % 3 == 0 { "a" } else { "b" };
            let spec = JobSpec::builder("true")
                .labels([("team".to_owned(), team.to_owned())].into())
                .build()
                .unwrap();
            let job = Job::new(spec, "local");
            store.insert(&job).await.unwrap();
            if team == "a" {
                labelled.push(job.id);
            }
        }
        labelled.reverse();
        let filter = JobFilter::builder()
            .labels(LabelSelector::parse("team=a").unwrap())
            .build();
        for size in [1, 2, 3, 7, 8, 100] {
            let mut seen = Vec::new();
            let mut token = None;
            let mut pages = 0;
            loop {
                let request = PageRequest::first(size).after(token);
                let page = store.list(&filter, &request).await.unwrap();
                assert!(page.jobs.len() <= size as usize);
                seen.extend(page.jobs.iter().map(|j| j.id));
                pages += 1;
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, labelled, "page size {size}");
            assert_eq!(
                pages,
                labelled.len().div_ceil(size as usize),
                "page size {size}"
            );
            let unique: BTreeSet<_> = seen.iter().collect();
            assert_eq!(unique.len(), seen.len());
        }
    }

    #[tokio::test]
    async fn a_token_past_every_job_gives_an_empty_last_page() {
        let (_dir, store, _ids) = store().await;
        let page = store
            .list(
                &JobFilter::default(),
                &PageRequest::first(10).after(Some(PageToken::after_seq(1))),
            )
            .await
            .unwrap();
        assert!(page.jobs.is_empty());
        assert_eq!(page.next, None);
        let unknown = store
            .list(
                &JobFilter::default(),
                &PageRequest::first(10).after(Some(PageToken::after_seq(1_000))),
            )
            .await
            .unwrap();
        assert_eq!(
            unknown.jobs.len(),
            4,
            "a token beyond the newest job starts at it"
        );
    }
}
