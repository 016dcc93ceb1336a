//! The job domain: ids, specs, their limits, resource quantities, states, label selectors
//! and validation.

mod ids;
mod label_selector;
mod labels;
pub mod limits;
mod phase;
mod quantity;
mod record;
pub(crate) mod spec;
mod state;
mod validation;

pub(crate) use validation::excerpt;

pub use ids::{JobId, WorkerId};
pub use label_selector::{LabelSelector, LabelSelectorError};
pub use phase::JobPhase;
pub use quantity::{Cpu, Memory, QuantityError};
pub use record::Job;
pub use spec::{DEFAULT_TIMEOUT, JobSpec, JobSpecBuilder, MAX_TIMEOUT};
pub use state::{FailureReason, JobState, ProcessExit};
pub use validation::ValidationError;
