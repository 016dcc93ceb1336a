//! TLS for the server's listeners: certificates reloaded when their files change, optional
//! client certificates, and handshakes that never hold up the accept loop.

use std::{
    fmt, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use parking_lot::Mutex;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

/// How often at most the certificate files are checked for a change.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections in their TLS handshake at once, per listener; the accept loop waits
/// beyond it, so a flood of idle connections cannot exhaust the server.
const MAX_PENDING_HANDSHAKES: usize = 128;
/// Connections handed over to the gRPC server and not yet picked up.
const ACCEPTED_QUEUE: usize = 32;

/// The server's TLS files, PEM encoded. The certificate and key are re-read when the
/// files change, so rotation (e.g. by cert-manager) needs no restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle for client certificates. Clients without a certificate are still
    /// accepted at the TLS level (they may authenticate otherwise); a client that
    /// presents one must present one this CA signed.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// A certificate and its key, without client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }

    /// Accepts client certificates signed by the CA bundle at `path`.
    #[must_use]
    pub fn client_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(path.into());
        self
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{} holds no {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected, e.g. "certificate".
        what: &'static str,
    },
    /// The key cannot be used, or does not belong to the certificate.
    #[error("the key {} does not fit the certificate {}", key.display(), cert.display())]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The client CA bundle cannot be used.
    #[error("the client CA bundle {} cannot be used", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The TLS configuration was refused.
    #[error("invalid TLS configuration")]
    Config(#[source] rustls::Error),
}

/// The crypto provider of every TLS connection Hodei makes or accepts.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration of a listener with `files`.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let certs = Arc::new(ReloadingCert::load(&files.cert, &files.key, &provider)?);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        Some(path) => {
            let roots = read_roots(path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM bundle, as trust anchors.
pub(crate) fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
    }
    Ok(roots)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        what: "private key",
    })
}

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
struct ReloadingCert {
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
    fn load(cert: &Path, key: &Path, provider: &Arc<CryptoProvider>) -> Result<Self, TlsError> {
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

/// Accepts connections on `listener` and hands over those whose TLS handshake succeeded.
/// Each handshake runs in its own task under [`HANDSHAKE_TIMEOUT`], at most
/// [`MAX_PENDING_HANDSHAKES`] at once. The accept loop ends when the stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (accepted, stream) = mpsc::channel(ACCEPTED_QUEUE);
    let acceptor = TlsAcceptor::from(config);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = accepted.closed() => return,
                permit = Arc::clone(&pending).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (socket, peer) = tokio::select! {
                () = accepted.closed() => return,
                result = listener.accept() => match result {
                    Ok(pair) => pair,
                    Err(error) => {
                        // E.g. out of file descriptors: wait instead of spinning.
                        warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let acceptor = acceptor.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => {
                        let _ = accepted.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(stream)
}

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSubject {
    /// The subject's common name (CN).
    pub common_name: String,
    /// The subject's organizations (O), in order.
    pub organizations: Vec<String>,
}

/// The subject of the client certificate the caller presented and the server verified
/// against its client CA; `None` for a caller without one (or without TLS), or whose
/// certificate names no common name.
#[must_use]
pub fn client_certificate<T>(request: &tonic::Request<T>) -> Option<CertificateSubject> {
    let certs = request.peer_certs()?;
    subject_of(certs.first()?)
}

fn subject_of(cert: &CertificateDer<'_>) -> Option<CertificateSubject> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(CertificateSubject {
        common_name,
        organizations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
        ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            Self {
                dir: tempfile::tempdir().unwrap(),
                ca: rcgen::Issuer::new(params, key),
            }
        }

        /// Writes a server certificate for `name` and its key; returns their paths.
        fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
            let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            let (cert_path, key_path) = (
                self.dir.path().join("tls.crt"),
                self.dir.path().join("tls.key"),
            );
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path)
        }
    }

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

    #[test]
    fn the_subject_gives_the_common_name_and_every_organization() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "submit");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_of(cert.der()),
            Some(CertificateSubject {
                common_name: "alice".into(),
                organizations: vec!["submit".into()],
            })
        );
        let mut nameless_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        nameless_params.distinguished_name = rcgen::DistinguishedName::new();
        let no_cn = nameless_params.self_signed(&key).unwrap();
        assert_eq!(subject_of(no_cn.der()), None);
    }
}
