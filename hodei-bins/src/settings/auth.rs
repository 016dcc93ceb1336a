//! Who may call the job API: `HODEI_AUTH_*` variables and building the authenticator.

use std::path::PathBuf;

use clap::{ArgAction, Args};
use hodei_core::auth::Authenticator;

use super::{KubernetesArgs, SettingsError, parse::switch};

/// Default audience of Kubernetes tokens.
pub const DEFAULT_AUDIENCE: &str = "hodei";

/// Authentication of job API callers; with none configured, every caller is an anonymous
/// admin (only for loopback).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication")]
pub struct AuthArgs {
    /// Static tokens file: `sha256:<hex> <name> <role>[,<role>...]` per line; re-read
    /// when it changes. Make lines with `hodei token new`.
    #[arg(
        long = "auth-tokens-file",
        env = "HODEI_AUTH_TOKENS_FILE",
        value_name = "FILE"
    )]
    pub tokens_file: Option<PathBuf>,
    /// Accept Kubernetes tokens (TokenReview) and decide with SubjectAccessReview on
    /// `jobs.hodei.io` in the worker namespace (HODEI_K8S_NAMESPACE).
    #[arg(long = "auth-kubernetes", env = "HODEI_AUTH_KUBERNETES", value_name = "BOOL",
        default_value = "false", value_parser = switch, action = ArgAction::Set)]
    pub kubernetes: bool,
    /// Audience Kubernetes tokens must be meant for.
    #[arg(long = "auth-audience", env = "HODEI_AUTH_AUDIENCE", value_name = "AUDIENCE",
        default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
}

impl AuthArgs {
    /// The authenticator these settings describe. `client_certificates` is whether the
    /// TLS layer verifies client certificates (`HODEI_TLS_CLIENT_CA`); the Kubernetes
    /// client and namespace come from `kubernetes`.
    pub async fn authenticator(
        &self,
        kubernetes: &KubernetesArgs,
        client_certificates: bool,
    ) -> Result<Authenticator, SettingsError> {
        let builder = Authenticator::builder()
            .maybe_tokens_file(self.tokens_file.clone())
            .client_certificates(client_certificates);
        let builder = self.with_kubernetes(builder, kubernetes).await?;
        builder.build().await.map_err(SettingsError::Auth)
    }

    #[cfg(feature = "kubernetes")]
    async fn with_kubernetes(
        &self,
        builder: hodei_core::auth::AuthenticatorBuilder,
        kubernetes: &KubernetesArgs,
    ) -> Result<hodei_core::auth::AuthenticatorBuilder, SettingsError> {
        use hodei_core::{auth::KubernetesAuth, provider::KubernetesSettings};
        if !self.kubernetes {
            return Ok(builder);
        }
        if self.audience.trim().is_empty() {
            return Err(SettingsError::Invalid(hodei_core::ValidationError::new(
                "HODEI_AUTH_AUDIENCE",
                "must not be empty",
            )));
        }
        let settings = KubernetesSettings {
            namespace: kubernetes.namespace.clone(),
            kubeconfig: kubernetes.kubeconfig.clone(),
            context: kubernetes.context.clone(),
            ..KubernetesSettings::default()
        };
        let client = KubernetesAuth::client(&settings)
            .await
            .map_err(SettingsError::KubernetesAuth)?;
        tracing::info!(namespace = %settings.namespace, audience = %self.audience, "Kubernetes authentication enabled");
        Ok(builder.kubernetes(
            KubernetesAuth::builder(client, settings.namespace)
                .audience(self.audience.trim())
                .build(),
        ))
    }

    #[cfg(not(feature = "kubernetes"))]
    async fn with_kubernetes(
        &self,
        builder: hodei_core::auth::AuthenticatorBuilder,
        _kubernetes: &KubernetesArgs,
    ) -> Result<hodei_core::auth::AuthenticatorBuilder, SettingsError> {
        if self.kubernetes {
            return Err(SettingsError::Invalid(hodei_core::ValidationError::new(
                "HODEI_AUTH_KUBERNETES",
                "this build has no Kubernetes support (feature `kubernetes`)",
            )));
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        auth: AuthArgs,
        #[command(flatten)]
        kubernetes: KubernetesArgs,
    }

    fn parse(args: &[&str]) -> Args {
        super::super::parse(std::iter::once("hodei-server-bin").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn flags_set_the_sources() {
        let args = parse(&[
            "--auth-tokens-file=/etc/hodei/tokens",
            "--auth-kubernetes=yes",
            "--auth-audience=jobs",
        ]);
        assert_eq!(
            args.auth.tokens_file.as_deref(),
            Some(std::path::Path::new("/etc/hodei/tokens"))
        );
        assert!(args.auth.kubernetes);
        assert_eq!(args.auth.audience, "jobs");
    }

    #[tokio::test]
    async fn without_sources_the_server_is_open_and_a_tokens_file_configures_it() {
        let open = parse(&[]);
        let auth = open
            .auth
            .authenticator(&open.kubernetes, false)
            .await
            .unwrap();
        assert!(!auth.is_configured());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# nobody yet\n").unwrap();
        let flag = format!("--auth-tokens-file={}", file.display());
        let args = parse(&[&flag]);
        let auth = args
            .auth
            .authenticator(&args.kubernetes, false)
            .await
            .unwrap();
        assert!(auth.is_configured());

        let missing = parse(&["--auth-tokens-file=/nonexistent/tokens"]);
        let error = missing
            .auth
            .authenticator(&missing.kubernetes, false)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("HODEI_AUTH_TOKENS_FILE"),
            "{error}"
        );
    }
}
