//! `ListJobsRequest` to a filter and a page, and job phases both ways.

use hodei_proto::v1 as pb;
use time::OffsetDateTime;

use super::job::{from_unix_ms, unix_ms};
use crate::{
    job::{JobPhase, LabelSelector, ValidationError},
    store::{DEFAULT_PAGE_SIZE, JobFilter, MAX_PAGE_SIZE, PageToken},
};

impl From<JobPhase> for pb::JobPhase {
    fn from(phase: JobPhase) -> Self {
        match phase {
            JobPhase::Queued => Self::Queued,
            JobPhase::Provisioning => Self::Provisioning,
            JobPhase::Running => Self::Running,
            JobPhase::Succeeded => Self::Succeeded,
            JobPhase::Failed => Self::Failed,
            JobPhase::Cancelled => Self::Cancelled,
            JobPhase::TimedOut => Self::TimedOut,
        }
    }
}

impl TryFrom<pb::JobPhase> for JobPhase {
    type Error = ValidationError;

    fn try_from(phase: pb::JobPhase) -> Result<Self, Self::Error> {
        Ok(match phase {
            pb::JobPhase::Unspecified => {
                return Err(ValidationError::new(
                    "states",
                    "JOB_PHASE_UNSPECIFIED is not a phase",
                ));
            }
            pb::JobPhase::Queued => Self::Queued,
            pb::JobPhase::Provisioning => Self::Provisioning,
            pb::JobPhase::Running => Self::Running,
            pb::JobPhase::Succeeded => Self::Succeeded,
            pb::JobPhase::Failed => Self::Failed,
            pb::JobPhase::Cancelled => Self::Cancelled,
            pb::JobPhase::TimedOut => Self::TimedOut,
        })
    }
}

/// Milliseconds since the Unix epoch, as list requests carry times.
pub(crate) fn list_time(at: OffsetDateTime) -> i64 {
    unix_ms(Some(at))
}

/// A list request, checked: what it selects, whose jobs, and which page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListQuery {
    /// The conditions of the request (the caller's permissions are applied later).
    pub filter: JobFilter,
    /// Only the caller's own jobs.
    pub owned_by_caller: bool,
    /// Jobs per page, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// Where the page starts.
    pub page_token: Option<PageToken>,
}

fn time_bound(field: &'static str, ms: i64) -> Result<Option<OffsetDateTime>, ValidationError> {
    if ms < 0 {
        return Err(ValidationError::new(
            field,
            format!("{ms} is before 1970; 0 means no bound"),
        ));
    }
    from_unix_ms(field, ms)
}

impl TryFrom<pb::ListJobsRequest> for ListQuery {
    type Error = ValidationError;

    fn try_from(request: pb::ListJobsRequest) -> Result<Self, Self::Error> {
        let (field, asked) = if request.page_size == 0 {
            ("limit", request.limit)
        } else {
            ("page_size", request.page_size)
        };
        let page_size = match asked {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(ValidationError::new(
                    field,
                    format!("{n} exceeds the maximum of {MAX_PAGE_SIZE}"),
                ));
            }
            n => n,
        };
        let page_token = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse()?),
        };
        let states = request
            .states
            .iter()
            .map(|&value| {
                pb::JobPhase::try_from(value)
                    .map_err(|_| ValidationError::new("states", format!("unknown phase {value}")))
                    .and_then(JobPhase::try_from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = JobFilter::builder()
            .states(states)
            .maybe_owner((!request.owner.is_empty()).then_some(request.owner))
            .labels(LabelSelector::parse(&request.label_selector)?)
            .maybe_created_after(time_bound(
                "created_after_unix_ms",
                request.created_after_unix_ms,
            )?)
            .maybe_created_before(time_bound(
                "created_before_unix_ms",
                request.created_before_unix_ms,
            )?)
            .build();
        Ok(Self {
            filter,
            owned_by_caller: request.owned_by_caller,
            page_size,
            page_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PageToken;

    #[test]
    fn every_phase_goes_over_the_wire_and_back() {
        for phase in JobPhase::ALL {
            assert_eq!(JobPhase::try_from(pb::JobPhase::from(phase)), Ok(phase));
        }
        let error = JobPhase::try_from(pb::JobPhase::Unspecified).unwrap_err();
        assert_eq!(error.field(), "states");
    }

    #[test]
    fn a_full_request_becomes_its_filter_and_page() {
        let token = PageToken::after_seq(7);
        let query = ListQuery::try_from(pb::ListJobsRequest {
            page_size: 5,
            page_token: token.to_string(),
            states: vec![pb::JobPhase::Running.into(), pb::JobPhase::Queued.into()],
            owner: "alice".into(),
            owned_by_caller: true,
            label_selector: "team=a".into(),
            created_after_unix_ms: 1_000,
            created_before_unix_ms: 2_000,
            ..Default::default()
        })
        .unwrap();
        let expected = JobFilter::builder()
            .states([JobPhase::Queued, JobPhase::Running])
            .owner("alice")
            .labels(LabelSelector::parse("team=a").unwrap())
            .created_after(OffsetDateTime::from_unix_timestamp(1).unwrap())
            .created_before(OffsetDateTime::from_unix_timestamp(2).unwrap())
            .build();
        assert_eq!(
            query,
            ListQuery {
                filter: expected,
                owned_by_caller: true,
                page_size: 5,
                page_token: Some(token),
            }
        );
        assert_eq!(
            list_time(OffsetDateTime::from_unix_timestamp(1).unwrap()),
            1_000
        );
    }

    #[test]
    fn an_empty_request_selects_everything_with_the_default_page_size() {
        let query = ListQuery::try_from(pb::ListJobsRequest::default()).unwrap();
        assert_eq!(query.filter, JobFilter::default());
        assert_eq!(query.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(query.page_token, None);
        let limit = ListQuery::try_from(pb::ListJobsRequest {
            limit: 3,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            limit.page_size, 3,
            "the older field still sets the page size"
        );
    }

    fn refused(request: pb::ListJobsRequest) -> String {
        ListQuery::try_from(request).unwrap_err().field().to_owned()
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                pb::ListJobsRequest {
                    page_size: MAX_PAGE_SIZE + 1,
                    ..Default::default()
                },
                "page_size",
            ),
            (
                pb::ListJobsRequest {
                    limit: MAX_PAGE_SIZE + 1,
                    ..Default::default()
                },
                "limit",
            ),
            (
                pb::ListJobsRequest {
                    page_token: "nope".into(),
                    ..Default::default()
                },
                "page_token",
            ),
            (
                pb::ListJobsRequest {
                    states: vec![0],
                    ..Default::default()
                },
                "states",
            ),
            (
                pb::ListJobsRequest {
                    states: vec![99],
                    ..Default::default()
                },
                "states",
            ),
            (
                pb::ListJobsRequest {
                    label_selector: "a in ()".into(),
                    ..Default::default()
                },
                "label_selector",
            ),
            (
                pb::ListJobsRequest {
                    created_after_unix_ms: -1,
                    ..Default::default()
                },
                "created_after_unix_ms",
            ),
            (
                pb::ListJobsRequest {
                    created_before_unix_ms: i64::MAX,
                    ..Default::default()
                },
                "created_before_unix_ms",
            ),
        ];
        for (request, field) in cases {
            assert_eq!(refused(request), field);
        }
    }
}
