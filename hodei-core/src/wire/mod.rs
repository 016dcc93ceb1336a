//! Conversions between the `hodei.v1` wire messages and domain types, one module per
//! protocol, so a change to a `.proto` file touches one module here.
//!
//! Encoding is `From`, decoding is `TryFrom`. Decoding never trusts the peer: bad input is
//! a [`ValidationError`] naming the field (`status.reason.exit.kind`), never a panic.

mod job;
mod list;
mod placement;
mod worker;

use std::time::Duration;

pub(crate) use list::{ListQuery, list_time};
pub(crate) use worker::{Registration, Resumption, ServerMessage, WorkerMessage};

use crate::job::ValidationError;

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The error for a required message field or oneof that is absent.
fn missing(field: &'static str) -> ValidationError {
    ValidationError::new(field, "is missing")
}
