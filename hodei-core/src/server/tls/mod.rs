//! TLS for the server's listeners: certificates reloaded when their files change, optional
//! client certificates, and handshakes that never hold up the accept loop.

mod accept;
mod reload;

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::auth::CertificateIdentity;
pub(crate) use accept::{connection_interceptor, incoming};
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

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
    let certs = Arc::new(reload::ReloadingCert::load(
        &files.cert,
        &files.key,
        &provider,
    )?);
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

/// The subject of the client certificate the caller presented and the server verified
/// against its client CA; `None` for a caller without one (or without TLS), or whose
/// certificate names no common name.
#[must_use]
pub fn client_certificate<T>(request: &tonic::Request<T>) -> Option<CertificateIdentity> {
    let certs = request.peer_certs()?;
    subject_of(certs.first()?)
}

fn subject_of(cert: &CertificateDer<'_>) -> Option<CertificateIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(CertificateIdentity {
        common_name,
        organizations,
    })
}

#[cfg(test)]
pub(crate) mod test_pki {
    use std::path::PathBuf;

    /// A test CA with a directory to write certificates into.
    pub(crate) struct Pki {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl Pki {
        pub(crate) fn new() -> Self {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            Self {
                dir: tempfile::tempdir().unwrap(),
                ca: rcgen::Issuer::new(params, key),
            }
        }

        /// Writes a server certificate for `name` and its key; returns their paths.
        pub(crate) fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(CertificateIdentity {
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
