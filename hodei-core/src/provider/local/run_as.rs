//! The unprivileged user local workers (and so their jobs) run as.

use std::fmt;

use nix::unistd::{Uid, User};

/// Why a user to run workers as cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    /// No such user name.
    #[error("HODEI_LOCAL_RUN_AS: no user named {0:?}")]
    UnknownUser(String),
    /// The user database could not be read.
    #[error("HODEI_LOCAL_RUN_AS: cannot look up {user:?}")]
    Lookup {
        /// The user asked for.
        user: String,
        /// Why the lookup failed.
        #[source]
        source: nix::Error,
    },
}

/// A user and primary group to run local workers as. The worker gets no supplementary
/// groups: the server drops its own and does not add the user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// The user named `user`, or with the numeric uid `user`; a uid without an entry in
    /// the user database runs with the group of the same number.
    pub fn user(user: &str) -> Result<Self, RunAsError> {
        let lookup_error = |source| RunAsError::Lookup {
            user: user.to_owned(),
            source,
        };
        if let Ok(uid) = user.parse::<u32>() {
            match User::from_uid(Uid::from_raw(uid)).map_err(lookup_error)? {
                Some(entry) => Ok(Self::from_entry(&entry)),
                None => Ok(Self {
                    name: uid.to_string(),
                    uid,
                    gid: uid,
                }),
            }
        } else {
            let entry = User::from_name(user)
                .map_err(lookup_error)?
                .ok_or_else(|| RunAsError::UnknownUser(user.to_owned()))?;
            Ok(Self::from_entry(&entry))
        }
    }

    fn from_entry(entry: &User) -> Self {
        Self {
            name: entry.name.clone(),
            uid: entry.uid.as_raw(),
            gid: entry.gid.as_raw(),
        }
    }

    /// The user id.
    #[must_use]
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The primary group id.
    #[must_use]
    pub fn gid(&self) -> u32 {
        self.gid
    }
}

impl fmt::Display for RunAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_found_by_name_or_uid_and_an_unknown_name_is_refused() {
        let nobody = RunAs::user("nobody").unwrap();
        assert_ne!(nobody.uid(), 0);
        assert_eq!(RunAs::user(&nobody.uid().to_string()).unwrap(), nobody);
        let unnamed = RunAs::user("4000000").unwrap();
        assert_eq!((unnamed.uid(), unnamed.gid()), (4_000_000, 4_000_000));
        assert_eq!(RunAs::user("root").unwrap().uid(), 0);
        assert!(matches!(
            RunAs::user("no-such-user-hodei"),
            Err(RunAsError::UnknownUser(name)) if name == "no-such-user-hodei"
        ));
    }
}
