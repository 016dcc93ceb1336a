//! Identifiers of jobs and workers.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ValidationError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random identifier.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.is_empty() {
                    return Err(ValidationError::new($field, "must not be empty"));
                }
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| ValidationError::new($field, format!("{} is not a valid id (expected a UUID)", super::excerpt(s))))
            }
        }
    };
}

uuid_id!(
    /// Identifies one job for its whole life.
    JobId,
    "job_id"
);
uuid_id!(
    /// Identifies one worker: a pod or a process started for exactly one job.
    WorkerId,
    "worker_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
    }

    #[test]
    fn bad_id_names_the_field() {
        let err = "nope".parse::<WorkerId>().unwrap_err();
        assert_eq!(err.field(), "worker_id");
        assert!(err.to_string().contains("nope"));
    }
}
