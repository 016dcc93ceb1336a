//! Asking the API server who presents a token (TokenReview) and what they may do
//! (SubjectAccessReview). Neither call reads or stores anything beyond its answer.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::{Error, Result};

/// `extra` key the API server sets on a pod-bound ServiceAccount token: the pod's name.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// `extra` key the API server sets on a pod-bound ServiceAccount token: the pod's uid.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// The user behind a token the API server accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReviewedUser {
    /// E.g. `system:serviceaccount:hodei-jobs:hodei-worker` or an OIDC user name.
    pub username: String,
    /// The user's uid, when the authenticator gives one.
    pub uid: Option<String>,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
    /// Extra attributes, e.g. [`POD_NAME_EXTRA`] and [`POD_UID_EXTRA`] for pod-bound tokens.
    pub extra: BTreeMap<String, Vec<String>>,
    /// Audiences the token is valid for that were also asked for.
    pub audiences: Vec<String>,
}

impl ReviewedUser {
    /// The one value of an `extra` attribute, when it has exactly one.
    #[must_use]
    pub fn extra_value(&self, key: &str) -> Option<&str> {
        match self.extra.get(key).map(Vec::as_slice) {
            Some([value]) => Some(value.as_str()),
            _ => None,
        }
    }

    /// Name of the pod a pod-bound ServiceAccount token was issued for.
    #[must_use]
    pub fn pod_name(&self) -> Option<&str> {
        self.extra_value(POD_NAME_EXTRA)
    }

    /// Uid of the pod a pod-bound ServiceAccount token was issued for.
    #[must_use]
    pub fn pod_uid(&self) -> Option<&str> {
        self.extra_value(POD_UID_EXTRA)
    }
}

/// What the API server said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenVerdict {
    /// The token is valid for the audience; this is who presents it.
    Authenticated(ReviewedUser),
    /// The token is invalid, expired, or not meant for the audience.
    Refused {
        /// The API server's reason, when it gives one. Never contains the token.
        reason: String,
    },
}

/// Asks the API server whether `token` is valid for `audience` (a TokenReview).
///
/// Needs `create` on `tokenreviews.authentication.k8s.io`. A refused token is a verdict,
/// not an error; errors are failures to get an answer.
pub async fn review_token(client: &Client, token: &str, audience: &str) -> Result<TokenVerdict> {
    let review = TokenReview {
        metadata: ObjectMeta::default(),
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![audience.to_owned()]),
        },
        status: None,
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| Error::from_kube("tokenreview", e))?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Ok(TokenVerdict::Refused {
            reason: status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the token is not valid".to_owned()),
        });
    }
    let audiences = status.audiences.unwrap_or_default();
    // An API server that ignores audiences answers without them; accept only an
    // explicit match so a token for another audience is never taken for ours.
    if !audiences.iter().any(|a| a == audience) {
        return Ok(TokenVerdict::Refused {
            reason: format!("the token is not meant for audience {audience:?}"),
        });
    }
    let UserInfo {
        username,
        uid,
        groups,
        extra,
    } = status.user.unwrap_or_default();
    Ok(TokenVerdict::Authenticated(ReviewedUser {
        username: username.unwrap_or_default(),
        uid,
        groups: groups.unwrap_or_default(),
        extra: extra.unwrap_or_default(),
        audiences,
    }))
}

/// An action on a resource, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAction {
    /// E.g. `create`, `get`, `list`, `delete`.
    pub verb: String,
    /// API group, e.g. `hodei.io`.
    pub group: String,
    /// Resource, e.g. `jobs`.
    pub resource: String,
    /// Namespace the action is in.
    pub namespace: String,
}

/// Asks the API server whether `user` may do `action` (a SubjectAccessReview).
///
/// Needs `create` on `subjectaccessreviews.authorization.k8s.io`. Returns whether it is
/// allowed; a denial is not an error.
pub async fn review_access(
    client: &Client,
    user: &ReviewedUser,
    action: &ResourceAction,
) -> Result<bool> {
    let review = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SubjectAccessReviewSpec {
            user: Some(user.username.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: Some(user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(action.verb.clone()),
                group: Some(action.group.clone()),
                resource: Some(action.resource.clone()),
                namespace: Some(action.namespace.clone()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        status: None,
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| Error::from_kube("subjectaccessreview", e))?;
    Ok(answer
        .status
        .is_some_and(|s| s.allowed && s.denied != Some(true)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::{body_json, json, mock_client, next_request, status};

    fn token_review_answer(status: &serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {}, "spec": {}, "status": status,
        })
    }

    #[tokio::test]
    async fn an_accepted_pod_token_names_its_pod() {
        let (client, mut handle) = mock_client();
        let review = tokio::spawn(async move { review_token(&client, "secret", "hodei").await });
        let (request, respond) = next_request(&mut handle).await;
        assert_eq!(request.method(), "POST");
        assert_eq!(
            request.uri().path(),
            "/apis/authentication.k8s.io/v1/tokenreviews"
        );
        let sent = body_json(request).await;
        assert_eq!(sent["spec"]["token"], "secret");
        assert_eq!(sent["spec"]["audiences"], json!(["hodei"]));
        respond.send_response(json(
            201,
            &token_review_answer(&json!({
                "authenticated": true,
                "audiences": ["hodei"],
                "user": {
                    "username": "system:serviceaccount:jobs:hodei-worker",
                    "uid": "u-1",
                    "groups": ["system:serviceaccounts"],
                    "extra": {
                        POD_NAME_EXTRA: ["hodei-worker-abc"],
                        POD_UID_EXTRA: ["pod-uid-1"],
                    },
                },
            })),
        ));
        let TokenVerdict::Authenticated(user) = review.await.unwrap().unwrap() else {
            panic!("the token was accepted");
        };
        assert_eq!(user.username, "system:serviceaccount:jobs:hodei-worker");
        assert_eq!(user.pod_name(), Some("hodei-worker-abc"));
        assert_eq!(user.pod_uid(), Some("pod-uid-1"));
    }

    #[tokio::test]
    async fn a_rejected_token_or_a_missing_audience_is_refused() {
        for answer in [
            json!({"authenticated": false, "error": "token has expired"}),
            json!({"authenticated": true, "user": {"username": "someone"}}),
            json!({"authenticated": true, "audiences": ["other"], "user": {"username": "x"}}),
        ] {
            let (client, mut handle) = mock_client();
            let review = tokio::spawn(async move { review_token(&client, "t", "hodei").await });
            let (_, respond) = next_request(&mut handle).await;
            respond.send_response(json(201, &token_review_answer(&answer)));
            let verdict = review.await.unwrap().unwrap();
            assert!(
                matches!(verdict, TokenVerdict::Refused { .. }),
                "{answer} must be refused, got {verdict:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_review_the_server_may_not_make_is_an_error() {
        let (client, mut handle) = mock_client();
        let review = tokio::spawn(async move { review_token(&client, "t", "hodei").await });
        let (_, respond) = next_request(&mut handle).await;
        respond.send_response(status(403, "Forbidden", "cannot create tokenreviews"));
        assert!(matches!(
            review.await.unwrap(),
            Err(Error::Forbidden { .. })
        ));
    }

    #[tokio::test]
    async fn access_reviews_ask_about_the_user_and_action() {
        for (allowed, denied, expected) in [(true, false, true), (false, true, false)] {
            let (client, mut handle) = mock_client();
            let user = ReviewedUser {
                username: "alice".into(),
                groups: vec!["team-a".into()],
                ..ReviewedUser::default()
            };
            let action = ResourceAction {
                verb: "create".into(),
                group: "hodei.io".into(),
                resource: "jobs".into(),
                namespace: "jobs".into(),
            };
            let review = tokio::spawn(async move { review_access(&client, &user, &action).await });
            let (request, respond) = next_request(&mut handle).await;
            assert_eq!(
                request.uri().path(),
                "/apis/authorization.k8s.io/v1/subjectaccessreviews"
            );
            let sent = body_json(request).await;
            assert_eq!(sent["spec"]["user"], "alice");
            assert_eq!(sent["spec"]["groups"], json!(["team-a"]));
            assert_eq!(
                sent["spec"]["resourceAttributes"],
                json!({"verb": "create", "group": "hodei.io", "resource": "jobs", "namespace": "jobs"})
            );
            respond.send_response(json(
                201,
                &json!({
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                    "metadata": {}, "spec": {},
                    "status": {"allowed": allowed, "denied": denied},
                }),
            ));
            assert_eq!(review.await.unwrap().unwrap(), expected);
        }
    }
}
