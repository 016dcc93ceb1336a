//! Workers the server expects to register: each one's credential and its pending slot,
//! issued, redeemed and revoked together.
//!
//! A one-time token is 256 random bits, bound to one worker id, valid once and only for a
//! short time; only its SHA-256 digest is kept, so a leaked table cannot be replayed. A
//! worker whose provider vouches for it (e.g. a pod-bound ServiceAccount token) presents
//! a platform credential that the provider checks before the entry is consumed. Either
//! way, only one registration per worker id ever succeeds.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::{Mutex, MutexGuard};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{resume::ResumeTable, worker_link::PendingWorker};
use crate::{
    job::WorkerId,
    provider::{Provider, WorkerProof},
};

/// Why a registration was refused. The text never contains the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// No registration is expected for this worker id: never provisioned, already
    /// registered, revoked, or expired and dropped.
    #[error("no registration is expected for this worker, or it was already used")]
    UnknownOrUsed,
    /// The registration window of this worker has passed.
    #[error("the registration window for this worker has expired")]
    Expired,
    /// The credential does not prove this worker id. The entry is kept for the real worker.
    #[error("the credential is not valid for this worker")]
    InvalidCredential,
    /// The provider refused the worker's platform identity. The entry is kept.
    #[error("the worker's identity was refused: {0}")]
    IdentityRefused(String),
    /// The provider could not check the identity now (e.g. its API is down); retrying may
    /// work. The entry is kept.
    #[error("the worker's identity cannot be checked now: {0}")]
    Unavailable(String),
}

/// What the server keeps to check a registration.
enum Check {
    /// SHA-256 of the one-time token.
    TokenDigest([u8; 32]),
    /// The provider that started the worker checks what it presents.
    Provider(Arc<dyn Provider>),
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TokenDigest(_) => f.write_str("TokenDigest(<redacted>)"),
            Self::Provider(provider) => f.debug_tuple("Provider").field(&provider.name()).finish(),
        }
    }
}

#[derive(Debug)]
struct Expected {
    pending: PendingWorker,
    check: Check,
    expires_at: Instant,
}

/// Workers that have been provisioned and have not registered yet: one entry per worker,
/// added before its provider starts it and removed when it registers or is destroyed.
#[derive(Debug, Default)]
pub(crate) struct WorkerRegistrations {
    entries: Mutex<HashMap<WorkerId, Expected>>,
    /// Registered workers whose job runs: how they re-attach after a broken stream.
    resumes: ResumeTable,
}

impl WorkerRegistrations {
    /// Expects `worker_id` to register within `ttl` and proving itself as `provider`
    /// says. Returns the one-time token to hand to the worker when the provider's workers
    /// prove themselves with one; the server keeps only its digest.
    pub fn expect(
        &self,
        worker_id: WorkerId,
        pending: PendingWorker,
        provider: &Arc<dyn Provider>,
        ttl: Duration,
    ) -> Option<String> {
        let (check, token) = match provider.capabilities().worker_proof {
            WorkerProof::OneTimeToken => {
                let mut secret = [0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                let token = hex::encode(secret);
                (Check::TokenDigest(digest(&token)), Some(token))
            }
            WorkerProof::PlatformIdentity => (Check::Provider(Arc::clone(provider)), None),
        };
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, entry| entry.expires_at > now);
        entries.insert(
            worker_id,
            Expected {
                pending,
                check,
                expires_at: now + ttl,
            },
        );
        token
    }

    /// Accepts `credential` for `worker_id` once and hands over the worker's pending slot.
    /// A refused credential leaves the entry in place, so a guess cannot lock the real
    /// worker out; an expired entry is dropped.
    pub async fn redeem(
        &self,
        worker_id: WorkerId,
        credential: &str,
    ) -> Result<PendingWorker, RegistrationError> {
        let provider = {
            let mut entries = self.lock();
            let entry = Self::live(&mut entries, worker_id)?;
            match &entry.check {
                Check::TokenDigest(expected) => {
                    if *expected != digest(credential) {
                        return Err(RegistrationError::InvalidCredential);
                    }
                    return Self::take(&mut entries, worker_id);
                }
                Check::Provider(provider) => Arc::clone(provider),
            }
        };
        // The lock is not held across the provider's check (a network call); the entry is
        // taken afterwards, so of concurrent registrations only one can succeed.
        provider
            .verify_worker(worker_id, credential)
            .await
            .map_err(|error| {
                if error.retryable {
                    RegistrationError::Unavailable(error.message)
                } else {
                    RegistrationError::IdentityRefused(error.message)
                }
            })?;
        let mut entries = self.lock();
        Self::live(&mut entries, worker_id)?;
        Self::take(&mut entries, worker_id)
    }

    /// Forgets `worker_id`, e.g. when its job ended: it can neither register nor resume.
    pub fn revoke(&self, worker_id: WorkerId) {
        self.lock().remove(&worker_id);
        self.resumes.forget(worker_id);
    }

    /// Registered workers that may re-attach.
    pub fn resumes(&self) -> &ResumeTable {
        &self.resumes
    }

    /// The entry of `worker_id` if it has not expired; an expired one is dropped.
    fn live(
        entries: &mut HashMap<WorkerId, Expected>,
        worker_id: WorkerId,
    ) -> Result<&Expected, RegistrationError> {
        let expired = entries
            .get(&worker_id)
            .ok_or(RegistrationError::UnknownOrUsed)?
            .expires_at
            <= Instant::now();
        if expired {
            entries.remove(&worker_id);
            return Err(RegistrationError::Expired);
        }
        entries
            .get(&worker_id)
            .ok_or(RegistrationError::UnknownOrUsed)
    }

    fn take(
        entries: &mut HashMap<WorkerId, Expected>,
        worker_id: WorkerId,
    ) -> Result<PendingWorker, RegistrationError> {
        entries
            .remove(&worker_id)
            .map(|entry| entry.pending)
            .ok_or(RegistrationError::UnknownOrUsed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WorkerId, Expected>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.entries.lock()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use tokio::sync::oneshot;

    use super::*;
    use crate::{
        job::JobId,
        logs::LogHub,
        provider::{
            KnownWorkers, ProviderCapabilities, ProviderError, ProviderHealth, ProvisionedWorker,
            WorkerLaunch,
        },
    };

    /// A provider whose workers prove themselves as `proof` says; the platform credential
    /// `good` passes, `down` fails as if the platform were unreachable, others are refused.
    #[derive(Debug)]
    struct FakeProvider {
        proof: WorkerProof,
        checks: AtomicUsize,
    }

    impl FakeProvider {
        fn shared(proof: WorkerProof) -> Arc<dyn Provider> {
            Arc::new(Self {
                proof,
                checks: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait]
    impl Provider for FakeProvider {
        fn name(&self) -> &str {
            "fake"
        }
        fn capabilities(&self) -> ProviderCapabilities {
            ProviderCapabilities {
                containers: false,
                max_workers: None,
                registration_timeout: Duration::from_secs(60),
                worker_proof: self.proof,
            }
        }
        async fn health(&self) -> ProviderHealth {
            ProviderHealth::Healthy
        }
        async fn provision(&self, _: WorkerLaunch) -> Result<ProvisionedWorker, ProviderError> {
            unreachable!("not used")
        }
        async fn destroy(&self, _: WorkerId) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn cleanup_orphans(&self, _: &dyn KnownWorkers) -> Result<usize, ProviderError> {
            Ok(0)
        }
        async fn verify_worker(
            &self,
            _worker_id: WorkerId,
            credential: &str,
        ) -> Result<(), ProviderError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            // Like a network call: lets a concurrent registration run meanwhile.
            tokio::task::yield_now().await;
            match credential {
                "good" => Ok(()),
                "down" => Err(ProviderError::retryable("ApiDown", "the API is down")),
                _ => Err(ProviderError::fatal("Refused", "not this pod")),
            }
        }
    }

    struct Fixture {
        registrations: WorkerRegistrations,
        _dir: tempfile::TempDir,
        logs: LogHub,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let logs = LogHub::open(dir.path()).unwrap();
            Self {
                registrations: WorkerRegistrations::default(),
                _dir: dir,
                logs,
            }
        }

        fn pending(&self) -> (PendingWorker, JobId) {
            let job_id = JobId::new();
            let log = self.logs.create(job_id).unwrap();
            let (attach, _) = oneshot::channel();
            (
                PendingWorker {
                    job_id,
                    log,
                    first_seq: 1,
                    attach,
                },
                job_id,
            )
        }

        fn expect(
            &self,
            worker: WorkerId,
            provider: &Arc<dyn Provider>,
            ttl: Duration,
        ) -> (Option<String>, JobId) {
            let (pending, job_id) = self.pending();
            (
                self.registrations.expect(worker, pending, provider, ttl),
                job_id,
            )
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_token_works_once_for_its_worker() {
        let f = Fixture::new();
        let provider = FakeProvider::shared(WorkerProof::OneTimeToken);
        let worker = WorkerId::new();
        let (token, job_id) = f.expect(worker, &provider, MINUTE);
        let token = token.expect("a one-time token is issued");
        assert_eq!(token.len(), 64, "256 bits, hex encoded");
        let pending = f.registrations.redeem(worker, &token).await.unwrap();
        assert_eq!(pending.job_id, job_id, "the slot of that worker");
        assert_eq!(
            f.registrations.redeem(worker, &token).await.unwrap_err(),
            RegistrationError::UnknownOrUsed
        );
        assert_eq!(f.registrations.len(), 0);
    }

    #[tokio::test]
    async fn a_token_is_bound_to_its_worker() {
        let f = Fixture::new();
        let provider = FakeProvider::shared(WorkerProof::OneTimeToken);
        let (worker, other) = (WorkerId::new(), WorkerId::new());
        let token = f.expect(worker, &provider, MINUTE).0.unwrap();
        let other_token = f.expect(other, &provider, MINUTE).0.unwrap();
        assert_eq!(
            f.registrations
                .redeem(worker, &other_token)
                .await
                .unwrap_err(),
            RegistrationError::InvalidCredential
        );
        assert_eq!(
            f.registrations
                .redeem(WorkerId::new(), &token)
                .await
                .unwrap_err(),
            RegistrationError::UnknownOrUsed
        );
        f.registrations.redeem(worker, &token).await.unwrap();
        f.registrations.redeem(other, &other_token).await.unwrap();
    }

    #[tokio::test]
    async fn a_wrong_guess_does_not_lock_the_worker_out() {
        let f = Fixture::new();
        let provider = FakeProvider::shared(WorkerProof::OneTimeToken);
        let worker = WorkerId::new();
        let token = f.expect(worker, &provider, MINUTE).0.unwrap();
        for guess in ["guess", "", &token[..63], &token.to_uppercase()] {
            let error = f.registrations.redeem(worker, guess).await.unwrap_err();
            assert_eq!(error, RegistrationError::InvalidCredential, "{guess:?}");
            assert!(!error.to_string().contains(guess) || guess.is_empty());
        }
        f.registrations.redeem(worker, &token).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_refused_and_dropped() {
        let f = Fixture::new();
        let provider = FakeProvider::shared(WorkerProof::OneTimeToken);
        let worker = WorkerId::new();
        let token = f.expect(worker, &provider, MINUTE).0.unwrap();
        tokio::time::sleep(MINUTE).await;
        assert_eq!(
            f.registrations.redeem(worker, &token).await.unwrap_err(),
            RegistrationError::Expired
        );
        assert_eq!(f.registrations.len(), 0, "the expired entry is gone");

        // Expired entries of workers that never came back are dropped by later ones.
        f.expect(WorkerId::new(), &provider, MINUTE);
        tokio::time::sleep(MINUTE).await;
        let fresh = WorkerId::new();
        let token = f.expect(fresh, &provider, MINUTE).0.unwrap();
        assert_eq!(f.registrations.len(), 1, "only the fresh entry is kept");
        f.registrations.redeem(fresh, &token).await.unwrap();
    }

    #[tokio::test]
    async fn tokens_are_stored_hashed_and_differ() {
        let f = Fixture::new();
        let provider = FakeProvider::shared(WorkerProof::OneTimeToken);
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let token_a = f.expect(a, &provider, MINUTE).0.unwrap();
        let token_b = f.expect(b, &provider, MINUTE).0.unwrap();
        assert_ne!(token_a, token_b);
        let entries = f.registrations.lock();
        for entry in entries.values() {
            let Check::TokenDigest(kept) = &entry.check else {
                panic!("token entries keep a digest");
            };
            assert!(hex::encode(kept) != token_a && hex::encode(kept) != token_b);
        }
        let printed = format!("{entries:?}");
        assert!(!printed.contains(&token_a) && !printed.contains(&token_b));
    }

    #[tokio::test]
    async fn revoked_workers_cannot_register() {
        let f = Fixture::new();
        let provider = FakeProvider::shared(WorkerProof::OneTimeToken);
        let worker = WorkerId::new();
        let token = f.expect(worker, &provider, MINUTE).0.unwrap();
        f.registrations.revoke(worker);
        assert_eq!(
            f.registrations.redeem(worker, &token).await.unwrap_err(),
            RegistrationError::UnknownOrUsed
        );
        assert_eq!(f.registrations.len(), 0);
    }

    #[tokio::test]
    async fn a_platform_identity_is_verified_by_the_provider_once() {
        let f = Fixture::new();
        let provider = FakeProvider::shared(WorkerProof::PlatformIdentity);
        let worker = WorkerId::new();
        let (token, job_id) = f.expect(worker, &provider, MINUTE);
        assert_eq!(token, None, "no secret is issued");

        assert_eq!(
            f.registrations.redeem(worker, "forged").await.unwrap_err(),
            RegistrationError::IdentityRefused("not this pod".into())
        );
        assert!(matches!(
            f.registrations.redeem(worker, "down").await.unwrap_err(),
            RegistrationError::Unavailable(_)
        ));
        let pending = f.registrations.redeem(worker, "good").await.unwrap();
        assert_eq!(pending.job_id, job_id);
        assert_eq!(
            f.registrations.redeem(worker, "good").await.unwrap_err(),
            RegistrationError::UnknownOrUsed,
            "a replay of a valid credential is refused"
        );
    }

    #[tokio::test]
    async fn unknown_workers_never_reach_the_provider() {
        let f = Fixture::new();
        let checks = Arc::new(FakeProvider {
            proof: WorkerProof::PlatformIdentity,
            checks: AtomicUsize::new(0),
        });
        let provider: Arc<dyn Provider> = checks.clone();
        f.expect(WorkerId::new(), &provider, MINUTE);
        assert_eq!(
            f.registrations
                .redeem(WorkerId::new(), "good")
                .await
                .unwrap_err(),
            RegistrationError::UnknownOrUsed
        );
        assert_eq!(checks.checks.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn of_concurrent_verified_registrations_only_one_succeeds() {
        let f = Fixture::new();
        let provider = FakeProvider::shared(WorkerProof::PlatformIdentity);
        let worker = WorkerId::new();
        f.expect(worker, &provider, MINUTE);
        let (a, b) = tokio::join!(
            f.registrations.redeem(worker, "good"),
            f.registrations.redeem(worker, "good")
        );
        assert_eq!(
            usize::from(a.is_ok()) + usize::from(b.is_ok()),
            1,
            "{a:?} {b:?}"
        );
    }

    #[tokio::test]
    async fn a_provider_without_platform_identity_refuses_by_default() {
        let provider = crate::provider::LocalProvider::builder("/bin/true").build();
        let error = provider
            .verify_worker(WorkerId::new(), "anything")
            .await
            .unwrap_err();
        assert!(!error.retryable);
    }
}
