//! The providers a server knows, and which one runs a job.

use std::sync::Arc;

use super::{Provider, ProviderHealth};
use crate::job::JobSpec;

/// Why no provider was chosen for a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// The job asked for a provider that is not registered.
    #[error("invalid provider: {name:?} is not registered (available: {})", available.join(", "))]
    UnknownProvider {
        /// What was asked for.
        name: String,
        /// What exists.
        available: Vec<String>,
    },
    /// The job asked for a provider that cannot take jobs now.
    #[error("provider {name:?} is unhealthy: {reason}")]
    Unhealthy {
        /// The provider.
        name: String,
        /// Why.
        reason: String,
    },
    /// The job asked for a provider that cannot meet it.
    #[error("provider {name:?} cannot run this job: {why}")]
    CannotRunJob {
        /// The provider.
        name: String,
        /// Why.
        why: String,
    },
    /// No registered provider is healthy and able to run the job.
    #[error("no provider can run this job: {}", reasons.join("; "))]
    NoProvider {
        /// Why each provider was passed over.
        reasons: Vec<String>,
    },
}

/// Providers in the order they were registered; that order is the preference order.
#[derive(Debug, Clone, Default)]
pub struct ProviderRegistry {
    providers: Vec<Arc<dyn Provider>>,
}

impl ProviderRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider; a later one with the same name replaces the earlier one.
    pub fn register(&mut self, provider: Arc<dyn Provider>) {
        self.providers.retain(|p| p.name() != provider.name());
        self.providers.push(provider);
    }

    /// All providers, in preference order.
    #[must_use]
    pub fn all(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    /// The provider called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Picks the provider for `spec`. An explicit choice wins or fails; it never falls
    /// back. Otherwise the first healthy provider that can meet the job is chosen.
    pub async fn select(&self, spec: &JobSpec) -> Result<Arc<dyn Provider>, SelectionError> {
        if let Some(name) = &spec.provider {
            let provider = self
                .get(name)
                .ok_or_else(|| SelectionError::UnknownProvider {
                    name: name.clone(),
                    available: self.providers.iter().map(|p| p.name().to_owned()).collect(),
                })?;
            if let Some(why) = Self::cannot_run(provider.as_ref(), spec) {
                return Err(SelectionError::CannotRunJob {
                    name: name.clone(),
                    why,
                });
            }
            if let ProviderHealth::Unhealthy(reason) = provider.health().await {
                return Err(SelectionError::Unhealthy {
                    name: name.clone(),
                    reason,
                });
            }
            return Ok(Arc::clone(provider));
        }
        let mut reasons = Vec::new();
        for provider in &self.providers {
            if let Some(why) = Self::cannot_run(provider.as_ref(), spec) {
                reasons.push(format!("{}: {why}", provider.name()));
                continue;
            }
            match provider.health().await {
                ProviderHealth::Healthy => return Ok(Arc::clone(provider)),
                ProviderHealth::Unhealthy(reason) => {
                    reasons.push(format!("{}: unhealthy: {reason}", provider.name()))
                }
            }
        }
        if reasons.is_empty() {
            reasons.push("no provider is registered".to_owned());
        }
        Err(SelectionError::NoProvider { reasons })
    }

    fn cannot_run(provider: &dyn Provider, spec: &JobSpec) -> Option<String> {
        if spec.image.is_some() && !provider.capabilities().containers {
            return Some(
                "the job names an image and this provider does not run containers".to_owned(),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::{
        job::WorkerId,
        provider::{
            KnownWorkers, ProviderCapabilities, ProviderError, ProvisionedWorker, WorkerLaunch,
        },
    };

    #[derive(Debug)]
    struct Fake {
        name: &'static str,
        containers: bool,
        healthy: bool,
    }

    #[async_trait]
    impl Provider for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn capabilities(&self) -> ProviderCapabilities {
            ProviderCapabilities {
                containers: self.containers,
                max_workers: None,
                registration_timeout: Duration::from_secs(1),
                worker_proof: crate::provider::WorkerProof::OneTimeToken,
            }
        }
        async fn health(&self) -> ProviderHealth {
            if self.healthy {
                ProviderHealth::Healthy
            } else {
                ProviderHealth::Unhealthy("down".into())
            }
        }
        async fn provision(&self, _: WorkerLaunch) -> Result<ProvisionedWorker, ProviderError> {
            Err(ProviderError::fatal("Fake", "not used"))
        }
        async fn destroy(&self, _: WorkerId) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn cleanup_orphans(&self, _: &dyn KnownWorkers) -> Result<usize, ProviderError> {
            Ok(0)
        }
    }

    fn registry(providers: Vec<Fake>) -> ProviderRegistry {
        let mut registry = ProviderRegistry::new();
        for p in providers {
            registry.register(Arc::new(p));
        }
        registry
    }

    fn spec() -> crate::job::JobSpecBuilder {
        JobSpec::builder("true")
    }

    #[tokio::test]
    async fn explicit_provider_wins_over_order() {
        let r = registry(vec![
            Fake {
                name: "local",
                containers: false,
                healthy: true,
            },
            Fake {
                name: "kubernetes",
                containers: true,
                healthy: true,
            },
        ]);
        let chosen = r
            .select(&spec().provider("kubernetes").build().unwrap())
            .await
            .unwrap();
        assert_eq!(chosen.name(), "kubernetes");
    }

    #[tokio::test]
    async fn unknown_or_unhealthy_explicit_provider_is_an_error_not_a_fallback() {
        let r = registry(vec![
            Fake {
                name: "local",
                containers: false,
                healthy: true,
            },
            Fake {
                name: "kubernetes",
                containers: true,
                healthy: false,
            },
        ]);
        let err = r
            .select(&spec().provider("nomad").build().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SelectionError::UnknownProvider { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("provider"), "{err}");
        let err = r
            .select(&spec().provider("kubernetes").build().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, SelectionError::Unhealthy { .. }), "{err}");
    }

    #[tokio::test]
    async fn an_image_needs_a_container_provider() {
        let r = registry(vec![
            Fake {
                name: "local",
                containers: false,
                healthy: true,
            },
            Fake {
                name: "kubernetes",
                containers: true,
                healthy: true,
            },
        ]);
        let chosen = r
            .select(&spec().image("alpine:3").build().unwrap())
            .await
            .unwrap();
        assert_eq!(chosen.name(), "kubernetes");
        let err = r
            .select(&spec().image("alpine:3").provider("local").build().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, SelectionError::CannotRunJob { .. }), "{err}");
        let only_local = registry(vec![Fake {
            name: "local",
            containers: false,
            healthy: true,
        }]);
        let err = only_local
            .select(&spec().image("alpine:3").build().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, SelectionError::NoProvider { .. }), "{err}");
    }

    #[tokio::test]
    async fn first_healthy_provider_is_chosen() {
        let r = registry(vec![
            Fake {
                name: "a",
                containers: false,
                healthy: false,
            },
            Fake {
                name: "b",
                containers: false,
                healthy: true,
            },
        ]);
        assert_eq!(
            r.select(&spec().build().unwrap()).await.unwrap().name(),
            "b"
        );
    }
}
