use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};

use super::*;

fn bearer(token: &str) -> PresentedCredentials {
    PresentedCredentials {
        bearer: Some(token.to_owned()),
        certificate: None,
    }
}

fn certificate(cn: &str, orgs: &[&str]) -> PresentedCredentials {
    PresentedCredentials {
        bearer: None,
        certificate: Some(CertificateIdentity {
            common_name: cn.to_owned(),
            organizations: orgs.iter().map(|&o| o.to_owned()).collect(),
        }),
    }
}

async fn all_actions(identity: &Identity) -> Vec<Action> {
    let mut allowed = Vec::new();
    for action in [
        Action::Submit,
        Action::Get,
        Action::List,
        Action::CancelAny,
        Action::SeeEnv,
    ] {
        if identity.may(action).await.unwrap() {
            allowed.push(action);
        }
    }
    allowed
}

#[tokio::test]
async fn an_open_authenticator_lets_everyone_in_as_anonymous_admin() {
    let auth = Authenticator::open();
    assert!(!auth.is_configured());
    for credentials in [PresentedCredentials::default(), bearer("anything")] {
        let identity = auth.authenticate(&credentials).await.unwrap();
        assert_eq!(identity.name(), ANONYMOUS);
        assert_eq!(all_actions(&identity).await.len(), 5);
    }
}

#[test]
fn roles_grant_their_rights() {
    assert_eq!(
        Permissions::from_roles([Role::Submit]),
        Permissions {
            submit: true,
            ..Permissions::default()
        }
    );
    assert_eq!(
        Permissions::from_roles([Role::Read]),
        Permissions {
            read_all: true,
            ..Permissions::default()
        }
    );
    assert_eq!(
        Permissions::from_roles([Role::Read, Role::Admin]),
        Permissions::ALL
    );
    assert!("writer".parse::<Role>().is_err());
}

#[tokio::test]
async fn tokens_from_the_file_authenticate_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(
        &path,
        format!(
            "{}\n{}\n",
            token_line("alice-token", "alice", &[Role::Submit]),
            token_line("root-token", "root", &[Role::Admin])
        ),
    )
    .unwrap();
    let auth = Authenticator::builder()
        .tokens_file(&path)
        .build()
        .await
        .unwrap();
    assert!(auth.is_configured());
    let alice = auth.authenticate(&bearer("alice-token")).await.unwrap();
    assert_eq!(alice.name(), "alice");
    assert_eq!(all_actions(&alice).await, [Action::Submit]);
    let root = auth.authenticate(&bearer("root-token")).await.unwrap();
    assert_eq!(all_actions(&root).await.len(), 5);
    for refused in [
        bearer("wrong"),
        bearer(&"x".repeat(MAX_TOKEN_LEN + 1)),
        PresentedCredentials::default(),
        // Certificates are not accepted unless enabled.
        certificate("alice", &["admin"]),
    ] {
        let error = auth.authenticate(&refused).await.unwrap_err();
        let AuthError::Unauthenticated(message) = error else {
            panic!("{refused:?} must be unauthenticated, got {error:?}");
        };
        assert!(message.contains("HODEI_TOKEN"), "{message}");
    }
}

#[tokio::test]
async fn a_missing_or_broken_tokens_file_stops_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Authenticator::builder()
        .tokens_file(dir.path().join("none"))
        .build()
        .await;
    assert!(matches!(
        missing,
        Err(AuthSetupError::TokensFile {
            source: TokenFileError::Io(_),
            ..
        })
    ));
    let path = dir.path().join("tokens");
    std::fs::write(&path, "sha256:00 alice submit\n").unwrap();
    let error = Authenticator::builder()
        .tokens_file(&path)
        .build()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("HODEI_AUTH_TOKENS_FILE"), "{text}");
    assert!(
        crate_error_chain(&error).contains("line 1: hash"),
        "{error:?}"
    );
}

fn crate_error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn the_file_is_reloaded_when_it_changes_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let first = token_line("one", "first", &[Role::Submit]);
    std::fs::write(&path, format!("{first}\n")).unwrap();
    let file = TokenFile::load_checking_every(path.clone(), Duration::ZERO)
        .await
        .unwrap();
    assert!(file.lookup(&digest("two")).await.is_none());
    let second = token_line("two", "second", &[Role::Read]);
    std::fs::write(&path, format!("{first}\n{second}\n")).unwrap();
    assert_eq!(
        file.lookup(&digest("two")).await.unwrap().name(),
        "second",
        "an added line is picked up"
    );
    std::fs::write(&path, format!("{first}\n{second}\nsha256:zz x y\n")).unwrap();
    assert!(file.lookup(&digest("one")).await.is_some());
    assert!(
        file.lookup(&digest("two")).await.is_some(),
        "a broken file keeps the last good tokens"
    );
    std::fs::write(&path, format!("{second}\n")).unwrap();
    assert!(
        file.lookup(&digest("one")).await.is_none(),
        "a removed line is revoked"
    );
}

#[tokio::test(start_paused = true)]
async fn the_file_is_checked_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, "# none yet\n").unwrap();
    let file = TokenFile::load(path.clone()).await.unwrap();
    std::fs::write(
        &path,
        format!("{}\n", token_line("new", "n", &[Role::Submit])),
    )
    .unwrap();
    assert!(file.lookup(&digest("new")).await.is_none());
    tokio::time::advance(RELOAD_CHECK_INTERVAL).await;
    assert!(file.lookup(&digest("new")).await.is_some());
}

#[tokio::test]
async fn a_certificate_names_the_identity_and_its_roles() {
    let auth = Authenticator::builder()
        .client_certificates(true)
        .build()
        .await
        .unwrap();
    assert!(auth.is_configured());
    let ci = auth
        .authenticate(&certificate("ci", &["Example Corp", "read"]))
        .await
        .unwrap();
    assert_eq!(ci.name(), "ci");
    assert_eq!(all_actions(&ci).await, [Action::Get, Action::List]);
    assert!(matches!(
        auth.authenticate(&certificate(" ", &["admin"])).await,
        Err(AuthError::Unauthenticated(_))
    ));
    // A bearer token decides alone: a wrong one is not rescued by a certificate.
    let mut both = certificate("ci", &["admin"]);
    both.bearer = Some("wrong".to_owned());
    assert!(auth.authenticate(&both).await.is_err());
}

#[test]
fn the_bearer_token_is_read_from_the_metadata() {
    let mut metadata = MetadataMap::new();
    assert_eq!(
        PresentedCredentials::from_metadata(&metadata).unwrap(),
        PresentedCredentials::default()
    );
    metadata.insert("authorization", MetadataValue::from_static("Bearer abc"));
    assert_eq!(
        PresentedCredentials::from_metadata(&metadata)
            .unwrap()
            .bearer
            .as_deref(),
        Some("abc")
    );
    for bad in ["Basic abc", "Bearer ", "abc"] {
        metadata.insert("authorization", MetadataValue::from_static(bad));
        assert!(
            PresentedCredentials::from_metadata(&metadata).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn debug_output_shows_no_token() {
    let shown = format!("{:?}", bearer("very-secret"));
    assert!(!shown.contains("very-secret"), "{shown}");
}

#[test]
fn generated_tokens_are_256_random_bits() {
    let token = generate_token();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(token, generate_token());
}

#[tokio::test]
async fn a_token_given_in_code_is_its_identity_and_nothing_else_gets_in() {
    let token = generate_token();
    let auth = Authenticator::builder()
        .token(
            &token,
            Identity::new("host", Permissions::from_roles([Role::Read])),
        )
        .build()
        .await
        .unwrap();
    assert!(auth.is_configured());
    let identity = auth.authenticate(&bearer(&token)).await.unwrap();
    assert_eq!(identity.name(), "host");
    assert_eq!(all_actions(&identity).await, [Action::Get, Action::List]);
    for refused in [
        bearer(&generate_token()),
        bearer(""),
        PresentedCredentials::default(),
    ] {
        assert!(matches!(
            auth.authenticate(&refused).await,
            Err(AuthError::Unauthenticated(_))
        ));
    }
}
