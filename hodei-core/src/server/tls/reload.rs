//! The served certificate pair, re-read from disk when its files change.

use std::{
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use parking_lot::Mutex;
use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tracing::{debug, warn};

use super::{TlsError, read_certs, read_key};

/// How often at most the certificate files are checked for a change.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert)?;
    let private_key = read_key(key)?;
    CertifiedKey::from_der(chain, private_key, provider)
        .map(Arc::new)
        .map_err(|source| TlsError::Key {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })
}

/// What the files looked like when last read (inode, time and size, following symlinks
/// as Kubernetes Secret volumes use them): a change means a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp([Option<(u64, SystemTime, u64)>; 2]);

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Self {
        let one = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.ino(), m.modified().ok()?, m.len())))
        };
        Self([one(cert), one(key)])
    }
}

/// Serves the certificate pair on disk, re-read when the files change (checked at most
/// once per [`RELOAD_CHECK_INTERVAL`]); an invalid new pair is refused with a warning and
/// the last good one kept.
pub(super) struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<CertState>,
}

struct CertState {
    current: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub(super) fn load(
        cert: &Path,
        key: &Path,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamp = Stamp::of(cert, key);
        let current = load_pair(cert, key, provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider: Arc::clone(provider),
            state: Mutex::new(CertState {
                current,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to serve at `now`, re-read first if the files changed.
    fn current(&self, now: Instant) -> Arc<CertifiedKey> {
        let mut state = self.state.lock();
        if now.saturating_duration_since(state.checked) < RELOAD_CHECK_INTERVAL {
            return Arc::clone(&state.current);
        }
        state.checked = now;
        let stamp = Stamp::of(&self.cert, &self.key);
        if stamp != state.stamp {
            // Recorded even when the new pair is bad, so a broken rotation warns once
            // per change instead of on every handshake.
            state.stamp = stamp;
            match load_pair(&self.cert, &self.key, &self.provider) {
                Ok(pair) => {
                    debug!(cert = %self.cert.display(), "reloaded the TLS certificate");
                    state.current = pair;
                }
                Err(error) => warn!(
                    error = %crate::server::error_chain(&error),
                    "the changed TLS certificate files cannot be used; keeping the previous certificate"
                ),
            }
        }
        Arc::clone(&state.current)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tls::{crypto_provider, test_pki::Pki};

    fn leaf_names(pair: &CertifiedKey) -> Vec<String> {
        let (_, cert) = x509_parser::parse_x509_certificate(pair.cert[0].as_ref()).unwrap();
        cert.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn a_changed_pair_is_served_after_the_check_interval_and_a_bad_one_is_not() {
        let pki = Pki::new();
        let (cert, key) = pki.issue("first.test");
        let certs = ReloadingCert::load(&cert, &key, &crypto_provider()).unwrap();
        let start = Instant::now();
        assert_eq!(leaf_names(&certs.current(start)), ["DNSName(first.test)"]);

        // Rotated on disk: the same answer until the check interval has passed.
        std::thread::sleep(Duration::from_millis(20));
        pki.issue("second.test");
        assert_eq!(
            leaf_names(&certs.current(start + Duration::from_millis(500))),
            ["DNSName(first.test)"]
        );
        let later = start + RELOAD_CHECK_INTERVAL;
        assert_eq!(leaf_names(&certs.current(later)), ["DNSName(second.test)"]);

        // A half-written rotation keeps the last good pair.
        std::fs::write(&key, "not a key").unwrap();
        assert_eq!(
            leaf_names(&certs.current(later + RELOAD_CHECK_INTERVAL)),
            ["DNSName(second.test)"]
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let pki = Pki::new();
        let (cert, key) = pki.issue("a.test");
        let other = pki.dir.path().join("other.key");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let error = ReloadingCert::load(&cert, &other, &crypto_provider()).unwrap_err();
        assert!(matches!(error, TlsError::Key { .. }), "{error:?}");
        assert!(error.to_string().contains("other.key"), "{error}");
        let missing =
            ReloadingCert::load(&pki.dir.path().join("nope.crt"), &key, &crypto_provider())
                .unwrap_err();
        assert!(missing.to_string().contains("nope.crt"), "{missing}");
    }
}
