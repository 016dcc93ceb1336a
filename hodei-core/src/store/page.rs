//! One page of a job list: what a list asks for, the opaque token that continues it, and
//! the pure step that decides, row by row, what goes on the page.

use std::{fmt, ops::ControlFlow, str::FromStr};

use super::JobFilter;
use crate::job::{Job, ValidationError};

/// Jobs per page when a list asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most jobs per page a list may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Most stored jobs one page reads, matching or not, so that a selective filter costs a
/// bounded amount of work per call; a page that stops there is short but has a
/// [`next`](JobPage::next) token.
pub const LIST_SCAN_LIMIT: usize = 10_000;

/// Where a list continues: after the job it names, towards older jobs. Opaque to
/// clients; only the server that issued it can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageToken(u64);

/// Version byte of the token format, so a later format can tell old tokens apart.
const TOKEN_VERSION: u8 = 1;

impl PageToken {
    /// The token continuing after the job a store numbered `seq`: stores number jobs in
    /// the order they were created, from 1, and list higher numbers first.
    #[must_use]
    pub fn after_seq(seq: u64) -> Self {
        Self(seq)
    }

    /// The number of the last job of the previous page.
    #[must_use]
    pub fn seq(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0_u8; 9];
        bytes[0] = TOKEN_VERSION;
        bytes[1..].copy_from_slice(&self.0.to_be_bytes());
        f.write_str(&hex::encode(bytes))
    }
}

impl FromStr for PageToken {
    type Err = ValidationError;

    /// A token this server issued; anything else is refused naming `page_token`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = || {
            ValidationError::new(
                "page_token",
                format!(
                    "{} is not a page token of this server; pass next_page_token of a previous answer unchanged",
                    crate::job::excerpt(s)
                ),
            )
        };
        let bytes = hex::decode(s).map_err(|_| refuse())?;
        let [version, seq @ ..] = <[u8; 9]>::try_from(bytes.as_slice()).map_err(|_| refuse())?;
        match (version, u64::from_be_bytes(seq)) {
            (TOKEN_VERSION, seq) if seq > 0 => Ok(Self(seq)),
            _ => Err(refuse()),
        }
    }
}

/// What one page of a list asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Most jobs on the page (at least one is asked for).
    pub size: u32,
    /// Continue after this token; `None` starts with the newest job.
    pub after: Option<PageToken>,
    /// Most bytes of stored records the page holds (the first job always fits).
    pub max_bytes: usize,
}

impl PageRequest {
    /// The first page of `size` jobs, with no byte budget.
    #[must_use]
    pub fn first(size: u32) -> Self {
        Self {
            size,
            after: None,
            max_bytes: usize::MAX,
        }
    }

    /// The page after `token`.
    #[must_use]
    pub fn after(mut self, token: Option<PageToken>) -> Self {
        self.after = token;
        self
    }

    /// Holds no more than `max_bytes` of stored records.
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

/// Jobs of a list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// More jobs were asked for, but they would have passed the byte budget.
    pub truncated: bool,
    /// Where the next page starts; `None` when no job is left.
    pub next: Option<PageToken>,
    /// For each job of `jobs`, the token that continues the list right after it.
    pub continue_after: Vec<PageToken>,
}

impl JobPage {
    /// Keeps the jobs `keep` selects (and their tokens); `next` stays.
    pub fn retain(&mut self, mut keep: impl FnMut(&Job) -> bool) {
        let mut tokens = std::mem::take(&mut self.continue_after).into_iter();
        let mut kept_tokens = Vec::with_capacity(self.jobs.len());
        self.jobs.retain(|job| {
            let token = tokens.next();
            let kept = keep(job);
            if kept {
                kept_tokens.extend(token);
            }
            kept
        });
        self.continue_after = kept_tokens;
    }

    /// Where the list continues when only the first `kept` jobs are shown: `next` when
    /// all are, else right after the last one shown (after the first when none is, so a
    /// list never stalls on one job).
    #[must_use]
    pub fn next_after(&self, kept: usize) -> Option<PageToken> {
        if kept >= self.jobs.len() {
            return self.next;
        }
        self.continue_after
            .get(kept.saturating_sub(1))
            .copied()
            .or(self.next)
    }
}

/// Builds a page from stored jobs offered newest first: keeps those the filter selects
/// until the page is full, the byte budget is spent or [`LIST_SCAN_LIMIT`] rows were read.
/// A [`JobStore`](super::JobStore) feeds it the jobs after [`PageRequest::after`], newest
/// first, until it answers `Break`.
#[derive(Debug)]
pub struct PageCollector<'a> {
    filter: &'a JobFilter,
    request: PageRequest,
    page: JobPage,
    last_kept: Option<u64>,
    bytes: usize,
    scanned: usize,
}

impl<'a> PageCollector<'a> {
    /// A collector for one page.
    #[must_use]
    pub fn new(filter: &'a JobFilter, request: PageRequest) -> Self {
        Self {
            filter,
            request,
            page: JobPage::default(),
            last_kept: None,
            bytes: 0,
            scanned: 0,
        }
    }

    /// Takes the next older stored job: its creation sequence, the size of its stored
    /// record, and the job. `Break` means the page is done and no more rows are needed.
    pub fn offer(&mut self, seq: u64, record_bytes: usize, job: Job) -> ControlFlow<()> {
        self.scanned += 1;
        if self.filter.matches(&job) {
            let size = usize::try_from(self.request.size.max(1)).unwrap_or(usize::MAX);
            if self.page.jobs.len() >= size {
                // One more job is selected: the page is full and another follows.
                self.page.next = self.last_kept.map(PageToken::after_seq);
                return ControlFlow::Break(());
            }
            self.bytes = self.bytes.saturating_add(record_bytes);
            if self.bytes > self.request.max_bytes && !self.page.jobs.is_empty() {
                self.page.truncated = true;
                self.page.next = self.last_kept.map(PageToken::after_seq);
                return ControlFlow::Break(());
            }
            self.page.jobs.push(job);
            self.page.continue_after.push(PageToken::after_seq(seq));
            self.last_kept = Some(seq);
        }
        if self.scanned >= LIST_SCAN_LIMIT {
            self.page.next = Some(PageToken::after_seq(seq));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// The page; when no `Break` came, the stored jobs ran out and no next page follows.
    #[must_use]
    pub fn finish(self) -> JobPage {
        self.page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobPhase, JobSpec, JobState};

    #[test]
    fn a_token_reads_back_and_anything_else_is_refused_naming_the_field() {
        let token = PageToken::after_seq(42);
        assert_eq!(token.to_string().parse::<PageToken>().unwrap(), token);
        for bad in [
            "",
            "zz",
            "01",
            "02000000000000002a",
            "010000000000000000",
            "01000000000000002a00",
            "01000000000000002A!",
        ] {
            let error = bad.parse::<PageToken>().unwrap_err();
            assert_eq!(error.field(), "page_token", "{bad}");
        }
    }

    fn job(running: bool) -> Job {
        let mut job = Job::new(JobSpec::builder("true").build().unwrap(), "local");
        if running {
            job.state = JobState::Running;
        }
        job
    }

    #[test]
    fn a_full_page_says_where_the_next_starts_only_when_another_job_is_selected() {
        let filter = JobFilter::builder().states([JobPhase::Running]).build();
        let mut collector = PageCollector::new(&filter, PageRequest::first(2));
        for (seq, running) in [(9, true), (8, false), (7, true)] {
            assert!(collector.offer(seq, 10, job(running)).is_continue());
        }
        assert!(collector.offer(6, 10, job(false)).is_continue());
        assert!(collector.offer(5, 10, job(true)).is_break());
        let page = collector.finish();
        assert_eq!(page.jobs.len(), 2);
        assert_eq!(page.next, Some(PageToken::after_seq(7)));
        assert!(!page.truncated);
        assert_eq!(
            page.continue_after,
            [PageToken::after_seq(9), PageToken::after_seq(7)]
        );
        assert_eq!(page.next_after(2), page.next);
        assert_eq!(page.next_after(1), Some(PageToken::after_seq(9)));
        assert_eq!(
            page.next_after(0),
            Some(PageToken::after_seq(9)),
            "never stalls"
        );
        let mut first_only = page.clone();
        let first = first_only.jobs[0].id;
        first_only.retain(|job| job.id == first);
        assert_eq!(first_only.continue_after, [PageToken::after_seq(9)]);
        assert_eq!(first_only.next, page.next);

        let mut exact = PageCollector::new(&filter, PageRequest::first(2));
        for seq in [2, 1] {
            assert!(exact.offer(seq, 10, job(true)).is_continue());
        }
        assert_eq!(exact.finish().next, None, "the jobs ran out");
    }

    #[test]
    fn the_byte_budget_cuts_a_page_after_its_first_job() {
        let filter = JobFilter::default();
        let request = PageRequest::first(10).max_bytes(15);
        let mut collector = PageCollector::new(&filter, request);
        assert!(collector.offer(3, 10, job(true)).is_continue());
        assert!(collector.offer(2, 10, job(true)).is_break());
        let page = collector.finish();
        assert_eq!(page.jobs.len(), 1);
        assert!(page.truncated);
        assert_eq!(page.next, Some(PageToken::after_seq(3)));

        let mut tiny = PageCollector::new(&filter, PageRequest::first(10).max_bytes(1));
        assert!(
            tiny.offer(3, 10, job(true)).is_continue(),
            "the first job always fits"
        );
    }

    #[test]
    fn a_page_stops_at_the_scan_limit_and_continues_after_the_last_job_read() {
        let filter = JobFilter::builder().states([JobPhase::Running]).build();
        let mut collector = PageCollector::new(&filter, PageRequest::first(5));
        let mut seq = 100_000;
        let mut scanned = 0;
        while collector.offer(seq, 10, job(false)).is_continue() {
            seq -= 1;
            scanned += 1;
        }
        assert_eq!(scanned + 1, LIST_SCAN_LIMIT);
        let page = collector.finish();
        assert!(page.jobs.is_empty());
        assert_eq!(page.next, Some(PageToken::after_seq(seq)));
    }
}
