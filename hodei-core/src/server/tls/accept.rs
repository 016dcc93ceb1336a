//! Accepting connections on a TLS listener: bounded handshakes in their own tasks, and a
//! clear refusal for plaintext clients.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tracing::{debug, warn};

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections in their TLS handshake at once, per listener; the accept loop waits
/// beyond it, so a flood of idle connections cannot exhaust the server.
const MAX_PENDING_HANDSHAKES: usize = 128;
/// Connections handed over to the gRPC server and not yet picked up.
const ACCEPTED_QUEUE: usize = 32;

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
    // The authenticator reads who a verified client certificate names from here.
    if let Some(subject) = super::client_certificate(&request) {
        request.extensions_mut().insert(subject);
    }
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
    incoming_bounded(listener, config, MAX_PENDING_HANDSHAKES)
}

/// [`incoming`] with at most `max_pending` handshakes at once.
fn incoming_bounded(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    max_pending: usize,
) -> ReceiverStream<io::Result<ServerIo>> {
    let (accepted, stream) = mpsc::channel(ACCEPTED_QUEUE);
    let acceptor = TlsAcceptor::from(config);
    let pending = Arc::new(Semaphore::new(max_pending));
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

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::auth::CertificateIdentity;
    use crate::server::tls::{TlsFiles, client_certificate, server_config, test_pki::Pki};

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
    async fn a_verified_client_certificate_and_the_peer_address_reach_the_services() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let pki = Pki::new();
        let (cert, key) = pki.issue("localhost");
        let clients = Pki::new();
        let client_ca = pki.dir.path().join("client-ca.crt");
        std::fs::write(&client_ca, ca_pem(&clients.ca)).unwrap();
        let files = TlsFiles::new(cert, key).client_ca(&client_ca);

        let seen = Arc::new(Mutex::new(Vec::new()));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let capture = {
            let seen = Arc::clone(&seen);
            let peers = Arc::clone(&peers);
            move |request: tonic::Request<()>| {
                // The per-connection follow cap keys on the peer address.
                peers
                    .lock()
                    .push(request.remote_addr().map(|addr| addr.ip()));
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
                    connection_interceptor as crate::server::ConnectionInterceptor,
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
                Some(CertificateIdentity {
                    common_name: "alice".into(),
                    organizations: vec!["admin".into()],
                }),
                None,
            ]
        );
        assert_eq!(
            *peers.lock(),
            [Some(std::net::Ipv4Addr::LOCALHOST.into()); 2]
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

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_nothing_is_dropped_after_the_handshake_timeout() {
        use tokio::io::AsyncReadExt;

        let pki = Pki::new();
        let (cert, key) = pki.issue("localhost");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _accepted = incoming(listener, server_config(&TlsFiles::new(cert, key)).unwrap());
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let start = tokio::time::Instant::now();
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT * 3, silent.read(&mut [0_u8; 1])).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        assert!(
            start.elapsed() >= HANDSHAKE_TIMEOUT,
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connections_beyond_the_handshake_bound_wait_for_a_free_slot() {
        use tokio::io::AsyncReadExt;

        let pki = Pki::new();
        let (cert, key) = pki.issue("localhost");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = server_config(&TlsFiles::new(cert, key)).unwrap();
        let _accepted = incoming_bounded(listener, config, 1);
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let start = tokio::time::Instant::now();
        let limit = HANDSHAKE_TIMEOUT * 5;
        let read = tokio::time::timeout(limit, first.read(&mut [0_u8; 1])).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        let read = tokio::time::timeout(limit, second.read(&mut [0_u8; 1])).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        // The second handshake only started when the first gave up its slot.
        assert!(
            start.elapsed() >= HANDSHAKE_TIMEOUT * 2,
            "{:?}",
            start.elapsed()
        );
    }
}
