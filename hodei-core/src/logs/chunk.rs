//! A numbered piece of a job's output.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Which stream of the command a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Self::Stdout => 1,
            Self::Stderr => 2,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            _ => None,
        }
    }
}

/// Raw output bytes with their sequence number (1 is the first chunk of a job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Position in the job's log; consecutive, starting at 1.
    pub seq: u64,
    /// Stdout or stderr.
    pub stream: OutputStream,
    /// The bytes, exactly as the command wrote them.
    pub data: Bytes,
    /// When the worker read them, in microseconds since the Unix epoch.
    pub emitted_at_us: i64,
}

/// Now, in microseconds since the Unix epoch: the `emitted_at_us` of a chunk made now.
pub(crate) fn now_us() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}
