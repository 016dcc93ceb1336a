//! Kubernetes callers: TokenReview says who presents a token, SubjectAccessReview on
//! `jobs.hodei.io` in the worker namespace what they may do. Answers are cached briefly,
//! keyed by the token's SHA-256, never the token.

use std::{sync::Arc, time::Duration};

use hodei_k8s::reviews::{ResourceAction, ReviewedUser, TokenVerdict, review_access, review_token};
use tracing::debug;

use super::{Action, AuthError, Grant, Identity, TokenDigest, cache::TtlCache};

/// Default audience the tokens must be meant for.
pub const DEFAULT_AUDIENCE: &str = "hodei";
/// API group of the virtual resource access is reviewed on.
pub const API_GROUP: &str = "hodei.io";
/// The virtual resource access is reviewed on.
pub const RESOURCE: &str = "jobs";
/// How long a TokenReview or SubjectAccessReview answer is reused.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most answers kept, per kind.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Authenticates bearer tokens with the Kubernetes API server. Cheap to clone.
#[derive(Clone)]
pub struct KubernetesAuth {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    audience: String,
    namespace: String,
    /// `None` is a refused token.
    tokens: TtlCache<TokenDigest, Option<ReviewedUser>>,
    access: TtlCache<(TokenDigest, Action), bool>,
}

impl std::fmt::Debug for KubernetesAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesAuth")
            .field("audience", &self.inner.audience)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

#[bon::bon]
impl KubernetesAuth {
    /// Reviews tokens with `client`, and access on `jobs.hodei.io` in `namespace`.
    #[builder]
    pub fn new(
        /// A client of the API server; needs `create` on `tokenreviews` and
        /// `subjectaccessreviews`.
        #[builder(start_fn)]
        client: kube::Client,
        /// Namespace access is reviewed in: the namespace of the worker pods.
        #[builder(start_fn, into)]
        namespace: String,
        /// Audience tokens must be meant for.
        #[builder(into, default = DEFAULT_AUDIENCE)]
        audience: String,
        /// How long an answer is reused.
        #[builder(default = DEFAULT_CACHE_TTL)]
        cache_ttl: Duration,
        /// Most answers kept, per kind.
        #[builder(default = DEFAULT_CACHE_CAPACITY)]
        cache_capacity: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                audience,
                namespace,
                tokens: TtlCache::new(cache_ttl, cache_capacity),
                access: TtlCache::new(cache_ttl, cache_capacity),
            }),
        }
    }

    /// A client of the API server named by `settings` (`kubeconfig`, `context`; else
    /// in-cluster, then the default kubeconfig), for [`builder`](Self::builder).
    pub async fn client(
        settings: &crate::provider::KubernetesSettings,
    ) -> Result<kube::Client, crate::provider::kubernetes::KubernetesError> {
        crate::provider::kubernetes::client_for(settings).await
    }

    pub(crate) async fn authenticate(
        &self,
        token: &str,
        digest: TokenDigest,
    ) -> Result<Identity, AuthError> {
        let inner = &self.inner;
        let user = match inner.tokens.get(&digest) {
            Some(user) => user,
            None => {
                let verdict = review_token(&inner.client, token, &inner.audience)
                    .await
                    .map_err(unavailable)?;
                let user = match verdict {
                    TokenVerdict::Authenticated(user) if !user.username.is_empty() => Some(user),
                    TokenVerdict::Authenticated(_) => None,
                    TokenVerdict::Refused { reason } => {
                        debug!(%reason, "the API server refused a token");
                        None
                    }
                };
                inner.tokens.insert(digest, user.clone());
                user
            }
        };
        let user = user.ok_or_else(|| {
            AuthError::Unauthenticated(format!(
                "the bearer token is not valid for audience {:?} (check HODEI_TOKEN or --token)",
                inner.audience
            ))
        })?;
        Ok(Identity {
            name: user.username.clone(),
            grant: Grant::Kubernetes(KubernetesGrant {
                auth: self.clone(),
                user: Arc::new(user),
                digest,
            }),
        })
    }
}

fn unavailable(error: hodei_k8s::Error) -> AuthError {
    AuthError::Unavailable(format!("the Kubernetes API failed: {error}"))
}

/// The rights of a Kubernetes user, asked for as needed.
#[derive(Clone)]
pub(crate) struct KubernetesGrant {
    auth: KubernetesAuth,
    user: Arc<ReviewedUser>,
    digest: TokenDigest,
}

impl KubernetesGrant {
    pub(crate) async fn may(&self, action: Action) -> Result<bool, AuthError> {
        let inner = &self.auth.inner;
        let key = (self.digest, action);
        if let Some(allowed) = inner.access.get(&key) {
            return Ok(allowed);
        }
        let request = ResourceAction {
            verb: action.kubernetes_verb().to_owned(),
            group: API_GROUP.to_owned(),
            resource: RESOURCE.to_owned(),
            namespace: inner.namespace.clone(),
        };
        let allowed = review_access(&inner.client, &self.user, &request)
            .await
            .map_err(unavailable)?;
        inner.access.insert(key, allowed);
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use hodei_k8s::test_support::{body_json, json, mock_client, next_request, status};
    use serde_json::json;

    use super::*;
    use crate::auth::{Authenticator, PresentedCredentials};

    fn bearer(token: &str) -> PresentedCredentials {
        PresentedCredentials {
            bearer: Some(token.to_owned()),
            certificate: None,
        }
    }

    async fn authenticator(client: kube::Client) -> Authenticator {
        Authenticator::builder()
            .kubernetes(KubernetesAuth::builder(client, "jobs").build())
            .build()
            .await
            .unwrap()
    }

    fn token_answer(authenticated: bool) -> serde_json::Value {
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {}, "spec": {},
            "status": if authenticated {
                json!({"authenticated": true, "audiences": ["hodei"],
                       "user": {"username": "system:serviceaccount:ci:builder", "groups": ["ci"]}})
            } else {
                json!({"authenticated": false, "error": "token expired"})
            },
        })
    }

    fn access_answer(allowed: bool) -> serde_json::Value {
        json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "metadata": {}, "spec": {}, "status": {"allowed": allowed},
        })
    }

    #[tokio::test]
    async fn an_allowed_and_a_denied_action_and_the_cache() {
        let (client, mut handle) = mock_client();
        let auth = authenticator(client).await;
        let api = tokio::spawn(async move {
            let (request, respond) = next_request(&mut handle).await;
            let sent = body_json(request).await;
            assert_eq!(sent["spec"]["audiences"], json!(["hodei"]));
            respond.send_response(json(201, &token_answer(true)));
            for allowed in [true, false] {
                let (request, respond) = next_request(&mut handle).await;
                assert_eq!(
                    request.uri().path(),
                    "/apis/authorization.k8s.io/v1/subjectaccessreviews"
                );
                let sent = body_json(request).await;
                assert_eq!(sent["spec"]["user"], "system:serviceaccount:ci:builder");
                assert_eq!(
                    sent["spec"]["resourceAttributes"],
                    json!({"verb": if allowed { "create" } else { "delete" },
                           "group": "hodei.io", "resource": "jobs", "namespace": "jobs"})
                );
                respond.send_response(json(201, &access_answer(allowed)));
            }
            handle
        });
        let identity = auth.authenticate(&bearer("tok")).await.unwrap();
        assert_eq!(identity.name(), "system:serviceaccount:ci:builder");
        assert!(identity.may(Action::Submit).await.unwrap());
        assert!(!identity.may(Action::CancelAny).await.unwrap());
        let mut handle = api.await.unwrap();
        // Within the TTL, the same token and actions are answered from the cache.
        let again = auth.authenticate(&bearer("tok")).await.unwrap();
        assert!(again.may(Action::Submit).await.unwrap());
        assert!(!again.may(Action::CancelAny).await.unwrap());
        drop(auth);
        drop(again);
        drop(identity);
        assert!(
            handle.next_request().await.is_none(),
            "no second request was made"
        );
    }

    #[tokio::test]
    async fn a_refused_token_is_unauthenticated_and_cached() {
        let (client, mut handle) = mock_client();
        let auth = authenticator(client).await;
        let api = tokio::spawn(async move {
            let (_, respond) = next_request(&mut handle).await;
            respond.send_response(json(201, &token_answer(false)));
            handle
        });
        for _ in 0..2 {
            assert!(matches!(
                auth.authenticate(&bearer("old")).await,
                Err(AuthError::Unauthenticated(_))
            ));
        }
        let mut handle = api.await.unwrap();
        drop(auth);
        assert!(handle.next_request().await.is_none());
    }

    #[tokio::test]
    async fn an_api_failure_is_unavailable_and_not_cached() {
        let (client, mut handle) = mock_client();
        let auth = authenticator(client).await;
        let api = tokio::spawn(async move {
            let (_, respond) = next_request(&mut handle).await;
            respond.send_response(status(500, "InternalError", "etcd is down"));
            let (_, respond) = next_request(&mut handle).await;
            respond.send_response(json(201, &token_answer(true)));
        });
        assert!(matches!(
            auth.authenticate(&bearer("tok")).await,
            Err(AuthError::Unavailable(_))
        ));
        assert!(auth.authenticate(&bearer("tok")).await.is_ok());
        api.await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_answer_is_asked_again() {
        let (client, mut handle) = mock_client();
        // Expiry itself is tested with paused time in the cache; here every answer is stale.
        let auth = Authenticator::builder()
            .kubernetes(
                KubernetesAuth::builder(client, "jobs")
                    .cache_ttl(Duration::ZERO)
                    .build(),
            )
            .build()
            .await
            .unwrap();
        let api = tokio::spawn(async move {
            for _ in 0..2 {
                let (_, respond) = next_request(&mut handle).await;
                respond.send_response(json(201, &token_answer(true)));
            }
        });
        auth.authenticate(&bearer("tok")).await.unwrap();
        auth.authenticate(&bearer("tok")).await.unwrap();
        api.await.unwrap();
    }
}
