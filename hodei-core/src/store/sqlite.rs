//! The embedded default store: SQLite through sqlx, one row per job.

use std::path::Path;

use async_trait::async_trait;
use sqlx::{
    Acquire, Row,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use time::OffsetDateTime;

use super::{JobFilter, JobPage, JobStore, PageRequest, StoreError, WorkerRecord};
use crate::{
    job::{Job, JobId, WorkerId},
    private_fs,
};

mod list;

/// The database file under the data directory.
const DB_FILE: &str = "jobs.db";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY NOT NULL,
    created_seq INTEGER NOT NULL,
    terminal INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created_seq ON jobs (created_seq);
CREATE INDEX IF NOT EXISTS jobs_terminal ON jobs (terminal);";

/// Changes to [`SCHEMA`], in order; `PRAGMA user_version` counts those applied. Append
/// only: a database remembers how far it got.
const MIGRATIONS: &[&str] = &[
    // Jobs record their owner; older rows get an empty one.
    "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
     CREATE INDEX IF NOT EXISTS jobs_owner_created_seq ON jobs (owner, created_seq);",
    // Finished jobs record when, in Unix seconds, so retention can find the old ones.
    "ALTER TABLE jobs ADD COLUMN finished_at INTEGER;
     UPDATE jobs SET finished_at = CAST(strftime('%s', json_extract(record, '$.finished_at')) AS INTEGER)
       WHERE terminal = 1;
     CREATE INDEX IF NOT EXISTS jobs_terminal_finished_at ON jobs (terminal, finished_at);",
    // Workers, so a restarted server finds the workers of its running jobs again.
    "CREATE TABLE IF NOT EXISTS workers (
         worker_id TEXT PRIMARY KEY NOT NULL,
         job_id TEXT NOT NULL,
         provider TEXT NOT NULL,
         locator TEXT,
         resume_digest BLOB
     );",
    // A cancel asked of a running job is kept with its worker, for a server taking over.
    "ALTER TABLE workers ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;",
    // Jobs record when they were created, in Unix milliseconds, so lists can select by it.
    "ALTER TABLE jobs ADD COLUMN created_ms INTEGER;
     UPDATE jobs SET created_ms = CAST(ROUND(
         (julianday(json_extract(record, '$.created_at')) - 2440587.5) * 86400000.0) AS INTEGER);",
];

/// Applies the migrations `pool`'s database has not had yet, each in its own transaction.
async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    let applied = usize::try_from(applied).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(migration).execute(&mut *tx).await?;
        sqlx::raw_sql(&format!("PRAGMA user_version = {}", index + 1))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Jobs in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (or creates) `jobs.db` under `data_dir`. The directory is made private
    /// (0700) and the database 0600; SQLite gives its `-wal` and `-shm` files the
    /// database's mode.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        private_fs::create_dir(data_dir)?;
        let db = data_dir.join(DB_FILE);
        // Created here first, because SQLite would create it with the umask's mode.
        private_fs::file_options()
            .create(true)
            .append(true)
            .open(&db)?;
        for file in [DB_FILE, "jobs.db-wal", "jobs.db-shm"] {
            private_fs::tighten(&data_dir.join(file));
        }
        let options = SqliteConnectOptions::new()
            .filename(db)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    fn decode(id: &str, record: &str) -> Result<Job, StoreError> {
        serde_json::from_str(record).map_err(|source| StoreError::Corrupt {
            id: id.to_owned(),
            source,
        })
    }

    /// The ids of `rows`; a row whose id does not parse is skipped (it was not written by
    /// this server, and nothing else can name it).
    fn rows_to_ids(rows: &[sqlx::sqlite::SqliteRow]) -> Vec<JobId> {
        rows.iter()
            .filter_map(|row| row.get::<&str, _>("id").parse().ok())
            .collect()
    }

    /// Writes a terminal state with `synchronous = FULL`, so the commit is on disk before
    /// the call returns; the connection then goes back to `NORMAL`. A connection that
    /// cannot go back is closed rather than returned to the pool.
    async fn update_durably(&self, job: &Job, record: String) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        let updated = Self::update_query(job, record).execute(&mut *conn).await;
        if let Err(error) = sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await
        {
            conn.close().await?;
            return Err(error.into());
        }
        updated?;
        Ok(())
    }

    fn update_query(
        job: &Job,
        record: String,
    ) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'static>> {
        sqlx::query("UPDATE jobs SET terminal = ?2, record = ?3, finished_at = ?4 WHERE id = ?1")
            .bind(job.id.to_string())
            .bind(job.state.is_terminal())
            .bind(record)
            .bind(job.finished_at.map(OffsetDateTime::unix_timestamp))
    }

    /// A stored worker record, or `None` when a field does not read back.
    fn worker_record(row: &sqlx::sqlite::SqliteRow) -> Option<WorkerRecord> {
        let digest: Option<Vec<u8>> = row.try_get("resume_digest").ok()?;
        Some(WorkerRecord {
            worker_id: row.try_get::<&str, _>("worker_id").ok()?.parse().ok()?,
            job_id: row.try_get::<&str, _>("job_id").ok()?.parse().ok()?,
            provider: row.try_get("provider").ok()?,
            locator: row.try_get("locator").ok()?,
            resume_digest: match digest {
                Some(bytes) => Some(<[u8; 32]>::try_from(bytes.as_slice()).ok()?),
                None => None,
            },
            cancel_requested: row.try_get("cancel_requested").ok()?,
        })
    }

    fn rows_to_jobs(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<Job>, StoreError> {
        rows.iter()
            .map(|row| Self::decode(row.get::<&str, _>("id"), row.get::<&str, _>("record")))
            .collect()
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert(&self, job: &Job) -> Result<(), StoreError> {
        let record = serde_json::to_string(job).map_err(StoreError::Encode)?;
        sqlx::query(
            "INSERT INTO jobs (id, created_seq, terminal, record, owner, finished_at, created_ms)
             VALUES (?1, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM jobs), ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(job.id.to_string())
        .bind(job.state.is_terminal())
        .bind(record)
        .bind(&job.owner)
        .bind(job.finished_at.map(OffsetDateTime::unix_timestamp))
        .bind(list::unix_ms(job.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn update(&self, job: &Job) -> Result<(), StoreError> {
        let record = serde_json::to_string(job).map_err(StoreError::Encode)?;
        if job.state.is_terminal() {
            return self.update_durably(job, record).await;
        }
        Self::update_query(job, record).execute(&self.pool).await?;
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let id = id.to_string();
        let row = sqlx::query("SELECT record FROM jobs WHERE id = ?1")
            .bind(&id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Self::decode(&id, row.get::<&str, _>("record")))
            .transpose()
    }

    async fn list(&self, filter: &JobFilter, page: &PageRequest) -> Result<JobPage, StoreError> {
        self.list_page(filter, page).await
    }

    async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        let rows =
            sqlx::query("SELECT id, record FROM jobs WHERE terminal = 0 ORDER BY created_seq")
                .fetch_all(&self.pool)
                .await?;
        Self::rows_to_jobs(&rows)
    }

    async fn finished_before(
        &self,
        cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE terminal = 1 AND finished_at < ?1
             ORDER BY finished_at, created_seq LIMIT ?2",
        )
        .bind(cutoff.unix_timestamp())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(Self::rows_to_ids(&rows))
    }

    async fn finished_beyond(&self, keep: u64, limit: u32) -> Result<Vec<JobId>, StoreError> {
        let finished: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE terminal = 1")
            .fetch_one(&self.pool)
            .await?;
        let beyond = u64::try_from(finished)
            .unwrap_or(0)
            .saturating_sub(keep)
            .min(u64::from(limit));
        if beyond == 0 {
            return Ok(Vec::new());
        }
        let rows =
            sqlx::query("SELECT id FROM jobs WHERE terminal = 1 ORDER BY created_seq LIMIT ?1")
                .bind(i64::try_from(beyond).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
        Ok(Self::rows_to_ids(&rows))
    }

    async fn delete_finished(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut deleted = Vec::with_capacity(ids.len());
        for id in ids {
            let done = sqlx::query("DELETE FROM jobs WHERE id = ?1 AND terminal = 1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                deleted.push(*id);
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn contains(&self, id: JobId) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn save_worker(&self, record: &WorkerRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO workers
               (worker_id, job_id, provider, locator, resume_digest, cancel_requested)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(record.worker_id.to_string())
        .bind(record.job_id.to_string())
        .bind(&record.provider)
        .bind(record.locator.as_deref())
        .bind(record.resume_digest.map(Vec::from))
        .bind(record.cancel_requested)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker_id, job_id, provider, locator, resume_digest, cancel_requested
             FROM workers",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            match Self::worker_record(row) {
                Some(record) => records.push(record),
                // Not written by this server: it names nothing it could find again.
                None => tracing::warn!("skipping a worker record that cannot be read"),
            }
        }
        Ok(records)
    }

    async fn remove_worker(&self, worker_id: WorkerId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM workers WHERE worker_id = ?1")
            .bind(worker_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobSpec, JobState};

    #[tokio::test]
    async fn jobs_survive_reopening_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Job::new(JobSpec::builder("true").build().unwrap(), "local");
        let second = Job::new(JobSpec::builder("false").build().unwrap(), "local");
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.insert(&first).await.unwrap();
            store.insert(&second).await.unwrap();
            first.state = JobState::Succeeded;
            store.update(&first).await.unwrap();
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(store.get(first.id).await.unwrap(), Some(first.clone()));
        let listed: Vec<_> = store
            .list(&JobFilter::default(), &PageRequest::first(10))
            .await
            .unwrap()
            .jobs
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(listed, vec![second.id, first.id]);
        let unfinished: Vec<_> = store
            .unfinished()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(unfinished, vec![second.id]);
        assert_eq!(store.get(JobId::new()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_data_dir_and_the_database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;

        use crate::private_fs::tests::mode_of;

        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = SqliteStore::open(&dir).await.unwrap();
        let job = Job::new(JobSpec::builder("true").build().unwrap(), "local");
        store.insert(&job).await.unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        for file in ["jobs.db", "jobs.db-wal", "jobs.db-shm"] {
            assert_eq!(mode_of(&dir.join(file)), 0o600, "{file}");
        }
    }

    fn owned(owner: &str) -> JobFilter {
        JobFilter::builder().owner(owner).build()
    }

    #[tokio::test]
    async fn listing_by_owner_keeps_the_limit_for_that_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut ids = Vec::new();
        for owner in ["alice", "bob", "alice", "bob", "bob"] {
            let mut job = Job::new(JobSpec::builder("true").build().unwrap(), "local");
            job.owner = owner.into();
            store.insert(&job).await.unwrap();
            ids.push(job.id);
        }
        let alice: Vec<_> = store
            .list(&owned("alice"), &PageRequest::first(1))
            .await
            .unwrap()
            .jobs
            .into_iter()
            .map(|j| (j.id, j.owner))
            .collect();
        assert_eq!(alice, vec![(ids[2], "alice".to_owned())]);
        assert_eq!(
            store
                .list(&owned("alice"), &PageRequest::first(10))
                .await
                .unwrap()
                .jobs
                .len(),
            2
        );
        assert!(
            store
                .list(&owned(""), &PageRequest::first(10))
                .await
                .unwrap()
                .jobs
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_database_from_before_owners_is_migrated_and_its_jobs_have_no_owner() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job::new(JobSpec::builder("true").build().unwrap(), "local");
        {
            // The first schema, written as the previous version did.
            let pool = SqlitePool::connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.path().join("jobs.db"))
                    .create_if_missing(true),
            )
            .await
            .unwrap();
            sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
            let mut record = serde_json::to_value(&job).unwrap();
            record.as_object_mut().unwrap().remove("owner");
            sqlx::query(
                "INSERT INTO jobs (id, created_seq, terminal, record) VALUES (?1, 1, 0, ?2)",
            )
            .bind(job.id.to_string())
            .bind(record.to_string())
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        for _ in 0..2 {
            // Opening twice applies the migration once.
            let store = SqliteStore::open(dir.path()).await.unwrap();
            let stored = store.get(job.id).await.unwrap().unwrap();
            assert_eq!(stored.owner, "");
            // Its creation time was read out of the record.
            let at = job.created_at;
            let since = |at| JobFilter::builder().created_after(at).build();
            let found = store.list(&since(at), &PageRequest::first(10)).await;
            assert_eq!(found.unwrap().jobs.len(), 1);
            let later = at + time::Duration::milliseconds(1);
            let found = store.list(&since(later), &PageRequest::first(10)).await;
            assert!(found.unwrap().jobs.is_empty());
            assert_eq!(
                store
                    .list(&owned(""), &PageRequest::first(10))
                    .await
                    .unwrap()
                    .jobs
                    .len(),
                1
            );
            store.pool.close().await;
        }
    }

    #[tokio::test]
    async fn a_list_stops_before_its_byte_budget_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..5 {
            let job = Job::new(
                JobSpec::builder("echo")
                    .args(["x".repeat(10_000)])
                    .build()
                    .unwrap(),
                "local",
            );
            store.insert(&job).await.unwrap();
            ids.push(job.id);
        }
        let all = JobFilter::default();
        let whole = store.list(&all, &PageRequest::first(10)).await.unwrap();
        assert_eq!(whole.jobs.len(), 5);
        assert!(!whole.truncated);
        let record = serde_json::to_string(&whole.jobs[0]).unwrap().len();
        let page = store
            .list(
                &all,
                &PageRequest::first(10).max_bytes(record * 2 + record / 2),
            )
            .await
            .unwrap();
        let listed: Vec<_> = page.jobs.iter().map(|j| j.id).collect();
        assert_eq!(listed, vec![ids[4], ids[3]], "the newest that fit");
        assert!(page.truncated);
        let rest = store
            .list(&all, &PageRequest::first(10).after(page.next))
            .await
            .unwrap();
        let rest: Vec<_> = rest.jobs.iter().map(|j| j.id).collect();
        assert_eq!(rest, vec![ids[2], ids[1], ids[0]], "the next page goes on");
        let one = store
            .list(&all, &PageRequest::first(10).max_bytes(1))
            .await
            .unwrap();
        assert_eq!(one.jobs.len(), 1, "the first job always fits");
        assert!(one.truncated);
        let exact = store.list(&all, &PageRequest::first(2)).await.unwrap();
        assert!(!exact.truncated, "a limit is not a budget");
    }

    #[tokio::test]
    async fn a_duplicate_insert_fails_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let job = Job::new(JobSpec::builder("true").build().unwrap(), "local");
        store.insert(&job).await.unwrap();
        let mut changed = job.clone();
        changed.state = JobState::Running;
        assert!(store.insert(&changed).await.is_err());
        assert_eq!(store.get(job.id).await.unwrap(), Some(job));
    }

    fn finished(hours_ago: i64) -> Job {
        let mut job = Job::new(JobSpec::builder("true").build().unwrap(), "local");
        job.state = JobState::Succeeded;
        job.finished_at = Some(OffsetDateTime::now_utc() - time::Duration::hours(hours_ago));
        job
    }

    #[tokio::test]
    async fn a_terminal_update_is_stored_and_the_connection_goes_back_to_normal_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut job = Job::new(JobSpec::builder("true").build().unwrap(), "local");
        store.insert(&job).await.unwrap();
        job.state = JobState::Succeeded;
        job.finished_at = Some(OffsetDateTime::now_utc());
        store.update(&job).await.unwrap();
        assert_eq!(store.get(job.id).await.unwrap(), Some(job));
        // Every pooled connection, including the one that wrote, is NORMAL (1) again.
        let open = store.pool.size();
        assert!(open > 0);
        let mut held = Vec::new();
        for _ in 0..open {
            held.push(store.pool.acquire().await.unwrap());
        }
        for conn in &mut held {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(level, 1);
        }
    }

    #[tokio::test]
    async fn retention_queries_find_old_and_surplus_finished_jobs_and_never_active_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let oldest = finished(48);
        let old = finished(30);
        let active = Job::new(JobSpec::builder("sleep 1").build().unwrap(), "local");
        let recent = finished(1);
        for job in [&oldest, &active, &old, &recent] {
            store.insert(job).await.unwrap();
        }
        let cutoff = OffsetDateTime::now_utc() - time::Duration::hours(24);
        assert_eq!(
            store.finished_before(cutoff, 10).await.unwrap(),
            vec![oldest.id, old.id]
        );
        assert_eq!(
            store.finished_before(cutoff, 1).await.unwrap(),
            vec![oldest.id]
        );
        assert_eq!(
            store.finished_beyond(1, 10).await.unwrap(),
            vec![oldest.id, old.id]
        );
        assert_eq!(store.finished_beyond(0, 1).await.unwrap(), vec![oldest.id]);
        assert!(store.finished_beyond(3, 10).await.unwrap().is_empty());
        let deleted = store
            .delete_finished(&[oldest.id, active.id, JobId::new()])
            .await
            .unwrap();
        assert_eq!(deleted, vec![oldest.id]);
        assert!(!store.contains(oldest.id).await.unwrap());
        assert!(store.contains(active.id).await.unwrap());
        assert_eq!(
            store
                .list(&JobFilter::default(), &PageRequest::first(10))
                .await
                .unwrap()
                .jobs
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn a_job_finished_by_an_update_is_found_by_its_finish_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut job = Job::new(JobSpec::builder("true").build().unwrap(), "local");
        store.insert(&job).await.unwrap();
        let cutoff = OffsetDateTime::now_utc() - time::Duration::hours(1);
        assert!(store.finished_before(cutoff, 10).await.unwrap().is_empty());
        job.state = JobState::Succeeded;
        job.finished_at = Some(cutoff - time::Duration::hours(1));
        store.update(&job).await.unwrap();
        assert_eq!(
            store.finished_before(cutoff, 10).await.unwrap(),
            vec![job.id]
        );
    }

    #[tokio::test]
    async fn worker_records_survive_reopening_and_are_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (worker_id, job_id) = (WorkerId::new(), JobId::new());
        let mut record = WorkerRecord {
            worker_id,
            job_id,
            provider: "local".into(),
            locator: Some("pid 42".into()),
            resume_digest: None,
            cancel_requested: false,
        };
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.save_worker(&record).await.unwrap();
            record.resume_digest = Some([7; 32]);
            record.cancel_requested = true;
            store.save_worker(&record).await.unwrap();
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(store.workers().await.unwrap(), vec![record]);
        store.remove_worker(worker_id).await.unwrap();
        assert!(store.workers().await.unwrap().is_empty());
    }
}
