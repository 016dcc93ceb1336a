//! Hodei Jobs: run jobs on ephemeral workers, embedded in your program.
//!
//! A [`HodeiServer`] accepts jobs over gRPC, picks a [`Provider`] for each, has it start a
//! worker, and streams the job's output back. [`HodeiClient`] talks to a server, and
//! [`WorkerAgent`] is the worker side. [`LocalProvider`] runs workers as local processes;
//! `KubernetesProvider` (feature `kubernetes`) runs each in its own pod.

pub mod auth;
pub(crate) mod backoff;
pub mod client;
pub mod controller;
pub mod disk;
pub mod job;
pub mod logs;
pub mod observe;
pub(crate) mod private_fs;
pub(crate) mod proc_stat;
pub mod provider;
pub mod resume;
pub mod server;
pub mod store;
pub(crate) mod wire;
pub mod worker;

pub use client::{
    ClientError, FollowRequest, HodeiClient, JobEvent, JobEvents, JobList, ListRequest,
};
pub use controller::{CancelOutcome, JobController};
pub use job::{
    Cpu, FailureReason, Job, JobId, JobPhase, JobSpec, JobState, Memory, ProcessExit,
    ValidationError, WorkerId,
};
pub use logs::{OutputChunk, OutputStream};
pub use provider::{LocalProvider, Provider, ProviderRegistry};
pub use resume::{DEFAULT_RECONNECT_WINDOW, FollowEvent, ResumingEvents};
pub use server::{HodeiServer, ServerError};
pub use worker::{WorkerAgent, WorkerReport};
