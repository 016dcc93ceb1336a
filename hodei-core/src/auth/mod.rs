//! Who calls the job API (authentication) and what they may do (authorization).
//!
//! An [`Authenticator`] turns the credentials a call presents ([`PresentedCredentials`]:
//! a bearer token and, over mutual TLS, a verified client certificate) into an
//! [`Identity`]. Sources combine: a static tokens file ([`TokenFile`]), Kubernetes
//! TokenReview and SubjectAccessReview (`KubernetesAuth`, feature `kubernetes`), and
//! client certificates. With no source configured the authenticator is *open*: every
//! caller is `anonymous` with every right, which is only fit for a loopback listener.

#[cfg(feature = "kubernetes")]
mod cache;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod token_file;

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc};

use sha2::{Digest, Sha256};

#[cfg(feature = "kubernetes")]
pub use self::kubernetes::KubernetesAuth;
pub use self::token_file::{
    MAX_FILE_LEN, RELOAD_CHECK_INTERVAL, TokenFile, TokenFileError, token_line,
};

/// Name of the identity every caller gets from an open [`Authenticator`].
pub const ANONYMOUS: &str = "anonymous";

/// What a caller who may not see a job's env values gets instead of each value.
pub const REDACTED_ENV_VALUE: &str = "<redacted>";

/// The longest bearer token accepted; longer ones are refused without further checks.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// SHA-256 of a token: the only form in which a token is kept or used as a key.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random bearer token: 256 bits from a cryptographically secure generator seeded
/// by the operating system, as 64 lowercase hex digits.
#[must_use]
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// A named bundle of rights, as written in a tokens file or a certificate's O field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Submit jobs, and get, follow, list and cancel one's own.
    Submit,
    /// Get, follow and list every job.
    Read,
    /// Everything: submit, read and cancel any job, see every job's env values.
    Admin,
}

impl Role {
    /// The role's name as written in files and certificates.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `submit`, `read` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected submit, read or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "submit" => Ok(Self::Submit),
            "read" => Ok(Self::Read),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// What an identity may do, as fixed rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(clippy::struct_excessive_bools)]
pub struct Permissions {
    /// Submit jobs; see, follow, list and cancel one's own.
    pub submit: bool,
    /// Get, follow and list every job.
    pub read_all: bool,
    /// Cancel any job.
    pub cancel_any: bool,
    /// See the env values of every job (the owner always sees its own).
    pub see_env: bool,
}

impl Permissions {
    /// Every right.
    pub const ALL: Self = Self {
        submit: true,
        read_all: true,
        cancel_any: true,
        see_env: true,
    };

    /// The union of the rights of `roles`.
    #[must_use]
    pub fn from_roles(roles: impl IntoIterator<Item = Role>) -> Self {
        roles
            .into_iter()
            .fold(Self::default(), |p, role| match role {
                Role::Submit => Self { submit: true, ..p },
                Role::Read => Self {
                    read_all: true,
                    ..p
                },
                Role::Admin => Self::ALL,
            })
    }

    fn allows(self, action: Action) -> bool {
        match action {
            Action::Submit => self.submit,
            Action::Get | Action::List => self.read_all,
            Action::CancelAny => self.cancel_any,
            Action::SeeEnv => self.see_env,
        }
    }
}

/// One thing a caller may or may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Submit jobs (and see, follow, list and cancel one's own). Kubernetes verb `create`.
    Submit,
    /// Get or follow any job. Kubernetes verb `get`.
    Get,
    /// List every job. Kubernetes verb `list`.
    List,
    /// Cancel any job. Kubernetes verb `delete`.
    CancelAny,
    /// See any job's env values. Kubernetes verb `getenv`.
    SeeEnv,
}

impl Action {
    /// The RBAC verb on `jobs.hodei.io` that grants this action.
    #[must_use]
    pub fn kubernetes_verb(self) -> &'static str {
        match self {
            Self::Submit => "create",
            Self::Get => "get",
            Self::List => "list",
            Self::CancelAny => "delete",
            Self::SeeEnv => "getenv",
        }
    }
}

/// Who is calling, and the means to decide what they may do.
#[derive(Clone)]
pub struct Identity {
    name: String,
    grant: Grant,
}

#[derive(Clone)]
enum Grant {
    Fixed(Permissions),
    #[cfg(feature = "kubernetes")]
    Kubernetes(kubernetes::KubernetesGrant),
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Identity");
        d.field("name", &self.name);
        match &self.grant {
            Grant::Fixed(p) => d.field("permissions", p),
            #[cfg(feature = "kubernetes")]
            Grant::Kubernetes(_) => d.field("permissions", &"kubernetes RBAC"),
        };
        d.finish()
    }
}

impl Identity {
    /// An identity with fixed rights.
    #[must_use]
    pub fn new(name: impl Into<String>, permissions: Permissions) -> Self {
        Self {
            name: name.into(),
            grant: Grant::Fixed(permissions),
        }
    }

    /// The caller every open authenticator answers with: `anonymous`, every right.
    #[must_use]
    pub fn anonymous() -> Self {
        Self::new(ANONYMOUS, Permissions::ALL)
    }

    /// The identity's name; jobs it submits are owned by this name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the identity may do `action`. Fixed rights answer at once; Kubernetes
    /// identities ask the API server (cached briefly).
    pub async fn may(&self, action: Action) -> Result<bool, AuthError> {
        match &self.grant {
            Grant::Fixed(p) => Ok(p.allows(action)),
            #[cfg(feature = "kubernetes")]
            Grant::Kubernetes(grant) => grant.may(action).await,
        }
    }
}

/// A verified client certificate's subject, as the TLS layer read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateIdentity {
    /// The subject's CN: the identity's name.
    pub common_name: String,
    /// The subject's O values: the identity's roles (values that are no role are ignored).
    pub organizations: Vec<String>,
}

/// What a call presented to prove who it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PresentedCredentials {
    /// The token of an `authorization: Bearer <token>` header.
    pub bearer: Option<String>,
    /// The subject of a client certificate the TLS layer verified against the client CA.
    pub certificate: Option<CertificateIdentity>,
}

impl fmt::Debug for PresentedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedCredentials")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// Why a presented bearer header is unusable.
const MALFORMED_HEADER: &str =
    "the authorization header is not `Bearer <token>` (set HODEI_TOKEN or --token)";

impl PresentedCredentials {
    /// The bearer token of `metadata`'s `authorization` header. A header that is not
    /// `Bearer <token>` is an error, so a typo is not mistaken for no credentials.
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Result<Self, AuthError> {
        let Some(value) = metadata.get("authorization") else {
            return Ok(Self::default());
        };
        let unauthenticated = || AuthError::Unauthenticated(MALFORMED_HEADER.to_owned());
        let value = value.to_str().map_err(|_| unauthenticated())?;
        let (scheme, token) = value.split_once(' ').ok_or_else(unauthenticated)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(unauthenticated());
        }
        Ok(Self {
            bearer: Some(token.to_owned()),
            certificate: None,
        })
    }
}

/// Why a caller could not be authenticated or authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or credentials no source accepts. The message says what to send.
    #[error("{0}")]
    Unauthenticated(String),
    /// A source could not answer (e.g. the Kubernetes API failed); try again later.
    #[error("cannot check credentials now: {0}")]
    Unavailable(String),
}

/// Why an [`Authenticator`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The tokens file (`HODEI_AUTH_TOKENS_FILE`) is unreadable or invalid.
    #[error("HODEI_AUTH_TOKENS_FILE {path}: {source}")]
    TokensFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: TokenFileError,
    },
}

/// Turns presented credentials into identities. Cheap to clone.
#[derive(Clone, Default)]
pub struct Authenticator {
    inner: Arc<Sources>,
}

#[derive(Default)]
struct Sources {
    /// Tokens given in code, by digest.
    given: Vec<(TokenDigest, Identity)>,
    tokens: Option<TokenFile>,
    #[cfg(feature = "kubernetes")]
    kubernetes: Option<KubernetesAuth>,
    certificates: bool,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Authenticator");
        d.field(
            "tokens_file",
            &self.inner.tokens.as_ref().map(TokenFile::path),
        );
        #[cfg(feature = "kubernetes")]
        d.field("kubernetes", &self.inner.kubernetes.is_some());
        d.field("client_certificates", &self.inner.certificates)
            .finish()
    }
}

/// Builds an [`Authenticator`] from its sources; made by [`Authenticator::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct AuthenticatorBuilder {
    given: Vec<(TokenDigest, Identity)>,
    tokens_file: Option<PathBuf>,
    #[cfg(feature = "kubernetes")]
    kubernetes: Option<KubernetesAuth>,
    client_certificates: bool,
}

impl AuthenticatorBuilder {
    /// Accepts `token` as `identity`; only its SHA-256 is kept. For a host program (or
    /// `hodei --embedded`) that hands its one caller a token it made itself.
    pub fn token(mut self, token: &str, identity: Identity) -> Self {
        self.given.push((digest(token), identity));
        self
    }

    /// A static tokens file (`sha256:<hex> <name> <role>[,<role>...]` per line); read at
    /// [`build`](Self::build), re-read when it changes.
    pub fn tokens_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokens_file = Some(path.into());
        self
    }

    /// Sets or clears the tokens file.
    pub fn maybe_tokens_file(mut self, path: Option<PathBuf>) -> Self {
        self.tokens_file = path;
        self
    }

    /// Kubernetes TokenReview and SubjectAccessReview.
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes(mut self, kubernetes: KubernetesAuth) -> Self {
        self.kubernetes = Some(kubernetes);
        self
    }

    /// Accept verified client certificates: CN is the name, O values the roles. Set it
    /// when the TLS layer verifies client certificates against a CA.
    pub fn client_certificates(mut self, enabled: bool) -> Self {
        self.client_certificates = enabled;
        self
    }

    /// Reads the tokens file, if any. With no source the authenticator is open.
    pub async fn build(self) -> Result<Authenticator, AuthSetupError> {
        let tokens = match self.tokens_file {
            Some(path) => Some(
                TokenFile::load(path.clone())
                    .await
                    .map_err(|source| AuthSetupError::TokensFile { path, source })?,
            ),
            None => None,
        };
        Ok(Authenticator {
            inner: Arc::new(Sources {
                given: self.given,
                tokens,
                #[cfg(feature = "kubernetes")]
                kubernetes: self.kubernetes,
                certificates: self.client_certificates,
            }),
        })
    }
}

impl Authenticator {
    /// Starts combining sources.
    pub fn builder() -> AuthenticatorBuilder {
        AuthenticatorBuilder::default()
    }

    /// Lets every caller in as `anonymous` with every right. Only for loopback.
    #[must_use]
    pub fn open() -> Self {
        Self::default()
    }

    /// Whether any source is configured; `false` means [`open`](Self::open).
    #[must_use]
    pub fn is_configured(&self) -> bool {
        let sources = &self.inner;
        #[cfg(feature = "kubernetes")]
        if sources.kubernetes.is_some() {
            return true;
        }
        !sources.given.is_empty() || sources.tokens.is_some() || sources.certificates
    }

    /// Who presents `credentials`. A bearer token, when present, decides alone (a wrong
    /// token is refused even with a good certificate).
    pub async fn authenticate(
        &self,
        credentials: &PresentedCredentials,
    ) -> Result<Identity, AuthError> {
        if !self.is_configured() {
            return Ok(Identity::anonymous());
        }
        let sources = &self.inner;
        if let Some(token) = &credentials.bearer {
            if token.len() > MAX_TOKEN_LEN {
                return Err(invalid_token());
            }
            let digest = digest(token);
            if let Some((_, identity)) = sources.given.iter().find(|(d, _)| *d == digest) {
                return Ok(identity.clone());
            }
            if let Some(tokens) = &sources.tokens
                && let Some(identity) = tokens.lookup(&digest).await
            {
                return Ok(identity);
            }
            #[cfg(feature = "kubernetes")]
            if let Some(kubernetes) = &sources.kubernetes {
                return kubernetes.authenticate(token, digest).await;
            }
            return Err(invalid_token());
        }
        if sources.certificates
            && let Some(certificate) = &credentials.certificate
        {
            let name = certificate.common_name.trim();
            if name.is_empty() {
                return Err(AuthError::Unauthenticated(
                    "the client certificate's subject has no common name (CN)".to_owned(),
                ));
            }
            let roles = certificate
                .organizations
                .iter()
                .filter_map(|o| o.parse::<Role>().ok());
            return Ok(Identity::new(name, Permissions::from_roles(roles)));
        }
        Err(AuthError::Unauthenticated(
            "no credentials: send `authorization: Bearer <token>` (set HODEI_TOKEN or --token)"
                .to_owned(),
        ))
    }
}

fn invalid_token() -> AuthError {
    AuthError::Unauthenticated(
        "the bearer token is not valid (check HODEI_TOKEN or --token)".to_owned(),
    )
}

#[cfg(test)]
mod tests;
