//! Tokens of a real OpenID provider (panva's `oidc-provider`, OpenID Certified, run by Node
//! from `node_modules/`, which `make test` installs), with nothing configured but the issuer:
//! the keys are found by OpenID discovery, and followed through a key rotation.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telemetry_e2e::{StackOptions, TestStack};
use telemetry_shared::auth::{AuthConfig, Verifier};
use telemetry_shared::config::Env;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The provider's client (a game server with the client-credentials grant). TEST ONLY.
const CLIENT_ID: &str = "test-only-game-server";
const CLIENT_SECRET: &str = "test-only-client-secret";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The provider, running until dropped (killed by its PID).
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    /// Starts the provider on `port` with the keys in `keys` (`rotate`: a new signing key first).
    async fn start(port: u16, keys: &Path, rotate: bool) -> Self {
        assert!(
            root().join("node_modules/oidc-provider").is_dir(),
            "node_modules/oidc-provider is missing: run `make test` (or `make node_modules/.installed`)"
        );
        let mut command = Command::new("node");
        command
            .arg(root().join("tests/oidc/provider.mjs"))
            .arg(port.to_string())
            .arg(keys)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if rotate {
            command.arg("--rotate");
        }
        let mut child = command
            .spawn()
            .expect("node (Node.js >= 20) runs the OpenID provider");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the provider starts within 30 s")
            .unwrap()
            .expect("the provider prints `ready <issuer>`");
        let issuer = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("unexpected provider output {line:?}"))
            .to_string();
        Self { child, issuer }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }

    /// An access token of the client-credentials grant with these scopes.
    async fn token(&self, scope: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&resource=urn%3Atelemetry&scope={}",
                scope.replace(' ', "+")
            ))
            .send()
            .await
            .expect("POST /token");
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{status} {body}");
        body["access_token"].as_str().unwrap().to_string()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keys_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "telemetry-oidc-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("keys.json")
}

/// What a deployment with only `JwtIssuer` (and the default audience) gives the functions.
fn discovery_only(issuer: &str, audience: &str) -> AuthConfig {
    AuthConfig::from_env(&Env::from_map([
        ("JWT_ISSUER", issuer),
        ("JWT_AUDIENCE", audience),
        ("JWT_JWKS_MIN_REFRESH_SECS", "1"),
    ]))
    .unwrap()
}

#[tokio::test]
async fn the_issuer_alone_verifies_a_real_providers_tokens_through_a_key_rotation() {
    let port = free_port();
    let keys = keys_file();
    let provider = Provider::start(port, &keys, false).await;
    let stack = TestStack::start_with(StackOptions {
        auth: discovery_only(&provider.issuer, "telemetry"),
        ..StackOptions::default()
    })
    .await;

    let old = provider.token("events:write events:read").await;
    let (status, body) = stack
        .post_events(&old, &json!({"type": "oidc.first", "id": "e1"}))
        .await;
    assert_eq!(status, 202, "{body}");
    // A service token is one user: its client id.
    stack.settle().await;
    let events = stack.all_events(&old).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["userId"], CLIENT_ID);
    // Scopes are the token's: a read-only token cannot write.
    let read_only = provider.token("events:read").await;
    let (status, _) = stack
        .post_events(&read_only, &json!({"type": "oidc.refused"}))
        .await;
    assert_eq!(status, 403);

    // The provider rotates: a new signing key first, the old one still published.
    provider.stop().await;
    let provider = Provider::start(port, &keys, true).await;
    let new = provider.token("events:write").await;
    assert_ne!(kid(&new), kid(&old));
    // The unknown kid makes the verifier fetch the JWKS again, at most once a second
    // (JWT_JWKS_MIN_REFRESH_SECS=1): accepted within a few seconds of the rotation.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = stack
            .post_events(&new, &json!({"type": "oidc.rotated"}))
            .await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 401, "{body}");
        assert!(
            Instant::now() < deadline,
            "a token of the new key is still refused 15 s after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The old key is still in the JWKS: its tokens still verify.
    let (status, body) = stack
        .post_events(&old, &json!({"type": "oidc.old-key"}))
        .await;
    assert_eq!(status, 202, "{body}");
    provider.stop().await;
}

#[tokio::test]
async fn tokens_for_another_audience_are_refused() {
    let provider = Provider::start(free_port(), &keys_file(), false).await;
    let verifier = Verifier::connect(&discovery_only(&provider.issuer, "another-api"))
        .await
        .unwrap();
    let token = provider.token("events:write").await;
    assert!(verifier.verify(&token).is_err());
    let verifier = Verifier::connect(&discovery_only(&provider.issuer, "another-api,telemetry"))
        .await
        .unwrap();
    assert!(verifier.verify(&token).is_ok(), "any listed audience");
    provider.stop().await;
}

#[tokio::test]
async fn discovery_requires_the_document_to_name_exactly_the_configured_issuer() {
    let provider = Provider::start(free_port(), &keys_file(), false).await;
    // Same discovery URL (the trailing slash is trimmed to build it), but the document says
    // `http://127.0.0.1:<port>`: OpenID Discovery §4.3 says to refuse it.
    let connected = Verifier::connect(&discovery_only(
        &format!("{}/", provider.issuer),
        "telemetry",
    ))
    .await;
    let Err(err) = connected else {
        panic!("an issuer mismatch must stop start-up");
    };
    let err = err.to_string();
    assert!(
        err.contains("JWT_ISSUER") && err.contains("issuer"),
        "{err}"
    );
    provider.stop().await;
}

/// The `kid` of a token's header.
fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}
