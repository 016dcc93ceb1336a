//! The job domain: ids, specs, their limits, resource quantities, states, label selectors
//! and validation.

mod ids;
mod label_selector;
mod labels;
pub mod limits;
mod phase;
mod placement;
mod quantity;
mod record;
mod retry;
mod secrets;
pub(crate) mod spec;
mod state;
mod validation;

pub(crate) use placement::{check_node_selector, check_tolerations};
pub(crate) use validation::excerpt;

pub use ids::{JobId, WorkerId};
pub use label_selector::{LabelSelector, LabelSelectorError};
pub use phase::JobPhase;
pub use placement::{
    AffinityOperator, NodeAffinityTerm, OptionSyntaxError, TaintEffect, Toleration,
    TolerationOperator,
};
pub use quantity::{Cpu, Memory, QuantityError};
pub use record::{Attempt, Job};
pub use retry::{
    FailureClass, MAX_RETRIES, MAX_RETRY_EXIT_CODES, RetryOn, RetryOnSyntaxError, RetryPolicy,
};
pub use secrets::SecretRef;
pub use spec::{DEFAULT_TIMEOUT, JobSpec, JobSpecBuilder, MAX_PRIORITY, MAX_TIMEOUT, MIN_PRIORITY};
pub use state::{FailureReason, JobState, ProcessExit};
pub use validation::ValidationError;
