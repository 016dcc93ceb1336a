//! One-time tokens with which a worker proves it is the one the server started.
//!
//! A token is 256 random bits, bound to one worker id, valid once and only for a short
//! time. Only its SHA-256 digest is kept, so a leaked table cannot be replayed.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::{Mutex, MutexGuard};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::job::WorkerId;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Never issued, or already used.
    #[error("token is unknown or was already used")]
    UnknownOrUsed,
    /// Issued for another worker.
    #[error("token was issued for another worker")]
    WorkerMismatch,
    /// Its time to live has passed.
    #[error("token has expired")]
    Expired,
}

#[derive(Debug)]
struct Entry {
    worker_id: WorkerId,
    expires_at: Instant,
}

/// Issues and redeems one-time worker tokens.
#[derive(Debug, Default)]
pub struct TokenIssuer {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl TokenIssuer {
    /// An issuer with no tokens.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh token for `worker_id`, valid for `ttl`.
    pub fn issue(&self, worker_id: WorkerId, ttl: Duration) -> String {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = hex::encode(secret);
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, entry| entry.expires_at > now);
        entries.insert(
            digest(&token),
            Entry {
                worker_id,
                expires_at: now + ttl,
            },
        );
        token
    }

    /// Accepts `token` once for `worker_id`. A token presented by the wrong worker stays
    /// valid for the right one, so a guess cannot lock the real worker out.
    pub fn redeem(&self, worker_id: WorkerId, token: &str) -> Result<(), TokenError> {
        let key = digest(token);
        let mut entries = self.lock();
        let entry = entries.get(&key).ok_or(TokenError::UnknownOrUsed)?;
        if entry.worker_id != worker_id {
            return Err(TokenError::WorkerMismatch);
        }
        let expired = entry.expires_at <= Instant::now();
        entries.remove(&key);
        if expired {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Drops every token of `worker_id`, e.g. when its job ended before it registered.
    pub fn revoke(&self, worker_id: WorkerId) {
        self.lock().retain(|_, entry| entry.worker_id != worker_id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.entries.lock()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once_for_its_worker() {
        let issuer = TokenIssuer::new();
        let worker = WorkerId::new();
        let token = issuer.issue(worker, Duration::from_secs(60));
        assert_eq!(token.len(), 64, "256 bits, hex encoded");
        assert_eq!(issuer.redeem(worker, &token), Ok(()));
        assert_eq!(
            issuer.redeem(worker, &token),
            Err(TokenError::UnknownOrUsed)
        );
    }

    #[test]
    fn a_token_is_bound_to_its_worker() {
        let issuer = TokenIssuer::new();
        let worker = WorkerId::new();
        let token = issuer.issue(worker, Duration::from_secs(60));
        assert_eq!(
            issuer.redeem(WorkerId::new(), &token),
            Err(TokenError::WorkerMismatch)
        );
        assert_eq!(
            issuer.redeem(worker, &token),
            Ok(()),
            "still valid for the right worker"
        );
    }

    #[test]
    fn wrong_and_expired_tokens_are_refused() {
        let issuer = TokenIssuer::new();
        let worker = WorkerId::new();
        assert_eq!(
            issuer.redeem(worker, "guess"),
            Err(TokenError::UnknownOrUsed)
        );
        let token = issuer.issue(worker, Duration::ZERO);
        assert_eq!(issuer.redeem(worker, &token), Err(TokenError::Expired));
    }

    #[test]
    fn tokens_are_stored_hashed_and_differ() {
        let issuer = TokenIssuer::new();
        let worker = WorkerId::new();
        let a = issuer.issue(worker, Duration::from_secs(60));
        let b = issuer.issue(worker, Duration::from_secs(60));
        assert_ne!(a, b);
        let entries = issuer.lock();
        assert!(
            entries
                .keys()
                .all(|k| hex::encode(k) != a && hex::encode(k) != b)
        );
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let issuer = TokenIssuer::new();
        let worker = WorkerId::new();
        let token = issuer.issue(worker, Duration::from_secs(60));
        issuer.revoke(worker);
        assert_eq!(
            issuer.redeem(worker, &token),
            Err(TokenError::UnknownOrUsed)
        );
    }
}
