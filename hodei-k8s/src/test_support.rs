//! Mock API server plumbing for tests that go through `kube::Client`: a client whose
//! requests land on a [`Handle`], and JSON responses to answer them with.
//!
//! Built for this crate's tests and, with the `test-support` feature, for the tests of
//! crates that use it; not part of the stable API.

use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{self, SendResponse};

/// The test side of the mock API server.
pub type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// Longest a test waits for the code under test to do something.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A client whose every request lands on the returned handle.
pub fn mock_client() -> (Client, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default-ns"), handle)
}

/// The next request, failing the test if none comes.
pub async fn next_request(handle: &mut Handle) -> (Request<Body>, SendResponse<Response<Body>>) {
    tokio::time::timeout(PATIENCE, handle.next_request())
        .await
        .expect("a request within the patience")
        .expect("the client is still alive")
}

/// A response with a JSON body.
pub fn json(status: u16, body: &Value) -> Response<Body> {
    raw(status, serde_json::to_vec(body).expect("json serializes"))
}

/// A response with raw bytes, e.g. newline-delimited watch events.
pub fn raw(status: u16, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("valid response")
}

/// A Kubernetes `Status` failure body.
pub fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json(
        code,
        &serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

/// The request's body parsed as JSON.
pub async fn body_json(request: Request<Body>) -> Value {
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body readable");
    serde_json::from_slice(&bytes).expect("request body is JSON")
}

/// The query string's `key=value` pairs, still percent-encoded.
pub fn query(request: &Request<Body>) -> Vec<String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}
