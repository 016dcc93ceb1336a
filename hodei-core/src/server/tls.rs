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
use std::{
    pin::Pin,
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
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

/// A connection accepted on a TLS listener: TLS, or a plaintext client that dialed the
/// TLS port by mistake and is answered with an error saying so.
#[derive(Debug)]
pub(crate) enum ServerIo {
    /// After a successful handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// A client that did not start with a TLS handshake.
    Plain(TcpStream),
}

/// What the gRPC services learn about the connection of a request.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    tcp: TcpConnectInfo,
    tls: Option<TlsConnectInfo<TcpConnectInfo>>,
}

impl Connected for ServerIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Self::Tls(stream) => PeerInfo {
                tcp: stream.get_ref().0.connect_info(),
                tls: Some(stream.connect_info()),
            },
            Self::Plain(stream) => PeerInfo {
                tcp: stream.connect_info(),
                tls: None,
            },
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// Why a plaintext request on a TLS listener is refused.
const TLS_REQUIRED: &str = "this server accepts TLS only: use an https:// URL (with the CA that signed the server's certificate, e.g. --ca-cert or HODEI_CA_CERT)";

/// Runs before every service: refuses plaintext requests on a TLS listener, and exposes
/// the connection to the services the way tonic does (`remote_addr`, `peer_certs`).
#[allow(clippy::result_large_err)] // the signature tonic's interceptors have
pub(crate) fn connection_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let Some(peer) = request.extensions_mut().remove::<PeerInfo>() else {
        // A plaintext listener: tonic's own connection info is already there.
        return Ok(request);
    };
    let Some(tls) = peer.tls else {
        return Err(tonic::Status::unavailable(TLS_REQUIRED));
    };
    request.extensions_mut().insert(peer.tcp);
    request.extensions_mut().insert(tls);
    Ok(request)
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts connections on `listener` and hands over those whose TLS handshake succeeded,
/// and plaintext ones to be refused. Each handshake runs in its own task under
/// [`HANDSHAKE_TIMEOUT`], at most [`MAX_PENDING_HANDSHAKES`] at once. The accept loop
/// ends when the stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<io::Result<ServerIo>> {
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
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, socket)).await {
                    Ok(Ok(io)) => {
                        let _ = accepted.send(Ok(io)).await;
                    }
                    Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(stream)
}

async fn handshake(acceptor: &TlsAcceptor, socket: TcpStream) -> io::Result<ServerIo> {
    let mut first = [0_u8; 1];
    if socket.peek(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(ServerIo::Plain(socket));
    }
    Ok(ServerIo::Tls(Box::new(acceptor.accept(socket).await?)))
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
    fn the_subject_gives_the_common_name_and_the_organization() {
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

    fn client_cert(
        ca: &rcgen::Issuer<'static, rcgen::KeyPair>,
        cn: &str,
        o: &str,
    ) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
        let key = rcgen::KeyPair::generate().unwrap();
        (
            params.signed_by(&key, ca).unwrap().pem(),
            key.serialize_pem(),
        )
    }

    fn ca_pem(ca: &rcgen::Issuer<'static, rcgen::KeyPair>) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(ca.key()).unwrap().pem()
    }

    #[tokio::test]
    async fn a_verified_client_certificate_reaches_the_services_and_others_are_refused() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let pki = Pki::new();
        let (cert, key) = pki.issue("localhost");
        let clients = Pki::new();
        let client_ca = pki.dir.path().join("client-ca.crt");
        std::fs::write(&client_ca, ca_pem(&clients.ca)).unwrap();
        let files = TlsFiles::new(cert, key).client_ca(&client_ca);

        let seen = Arc::new(Mutex::new(Vec::new()));
        let capture = {
            let seen = Arc::clone(&seen);
            move |request: tonic::Request<()>| {
                seen.lock().push(client_certificate(&request));
                Ok(request)
            }
        };
        let (_health, health_service) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(tonic::service::InterceptorLayer::new(
                    connection_interceptor as super::super::ConnectionInterceptor,
                ))
                .layer(tonic::service::InterceptorLayer::new(capture))
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    incoming(listener, server_config(&files).unwrap()),
                    stop.clone().cancelled_owned(),
                ),
        );
        let check = |identity: Option<(String, String)>| {
            let tls = crate::client::ClientTls {
                ca: Some(ca_pem(&pki.ca).into_bytes()),
                identity: identity.map(|(c, k)| (c.into_bytes(), k.into_bytes())),
            };
            let url = format!("https://localhost:{port}");
            async move {
                let channel = crate::client::endpoint(&url, &tls)?.connect().await?;
                HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .map_err(|status| Box::new(status) as Box<dyn std::error::Error>)?;
                Ok::<_, Box<dyn std::error::Error>>(())
            }
        };

        check(Some(client_cert(&clients.ca, "alice", "admin")))
            .await
            .unwrap();
        check(None).await.unwrap();
        let stranger = Pki::new();
        assert!(
            check(Some(client_cert(&stranger.ca, "mallory", "admin")))
                .await
                .is_err()
        );
        assert_eq!(
            *seen.lock(),
            [
                Some(CertificateSubject {
                    common_name: "alice".into(),
                    organizations: vec!["admin".into()],
                }),
                None,
            ]
        );
        stop.cancel();
        serving.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_handshake_does_not_hold_up_the_next() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let pki = Pki::new();
        let (cert, key) = pki.issue("localhost");
        let (_health, health_service) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    incoming(listener, server_config(&TlsFiles::new(cert, key)).unwrap()),
                    stop.clone().cancelled_owned(),
                ),
        );
        // Silent, and half a TLS record: both wait in their own handshake task.
        let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stalled, &[TLS_HANDSHAKE_RECORD, 3, 1])
            .await
            .unwrap();

        let tls = crate::client::ClientTls {
            ca: Some(ca_pem(&pki.ca).into_bytes()),
            identity: None,
        };
        let channel = tokio::time::timeout(
            Duration::from_secs(5),
            crate::client::endpoint(&format!("https://localhost:{port}"), &tls)
                .unwrap()
                .connect(),
        )
        .await
        .expect("the handshake waited for the stalled ones")
        .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
        stop.cancel();
        drop((_silent, stalled));
        serving.await.unwrap().unwrap();
    }
}
