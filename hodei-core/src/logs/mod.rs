//! Job output: a durable append-only log per job plus live followers.

mod chunk;
mod file_format;
mod follower;
mod hub;
mod job_log;

pub(crate) use chunk::now_us;
pub use chunk::{OutputChunk, OutputStream};
pub use follower::LogFollower;
pub use hub::LogHub;
pub(crate) use job_log::{AppendError, Appended, JobLog};
