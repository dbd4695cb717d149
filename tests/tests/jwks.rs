//! Tokens verified against a JWKS URL: fetched at cold start, cached, fetched again on an
//! unknown `kid` at most once per interval.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use telemetry_e2e::{AUDIENCE, ISSUER, StackOptions, TestStack};
use telemetry_shared::auth::{AuthConfig, AuthError, IssuerConfig, VerificationKey, Verifier};

const RSA_PRIVATE: &str = include_str!("../fixtures/test-only-rsa-private.pem");
const JWKS: &str = include_str!("../fixtures/test-only-jwks.json");

#[derive(Clone, Default)]
struct Server {
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

async fn serve_jwks() -> (String, Server) {
    let server = Server {
        body: Arc::new(Mutex::new(JWKS.to_string())),
        fetches: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/.well-known/jwks.json",
            get(|State(s): State<Server>| async move {
                s.fetches.fetch_add(1, Ordering::SeqCst);
                let body = s.body.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }),
        )
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, server)
}

fn config(url: &str) -> AuthConfig {
    AuthConfig::one(IssuerConfig::new(
        vec![Algorithm::RS256],
        VerificationKey::JwksUrl(url.to_string()),
        ISSUER,
        AUDIENCE,
    ))
}

fn token(kid: &str, sub: &str) -> String {
    signed(Algorithm::RS256, kid, sub)
}

/// A token of `sub` signed with the test key, as `alg`, naming `kid`.
fn signed(alg: Algorithm, kid: &str, sub: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "scope": "events:write"});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn keys_are_fetched_once_and_again_on_rotation_at_most_once_per_interval() {
    let (url, server) = serve_jwks().await;
    let mut verifier = Verifier::connect(&config(&url)).await.unwrap();
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);

    let bearer = |t: String| format!("Bearer {t}");
    let p = verifier
        .authenticate(Some(&bearer(token("test-only-key-1", "j1"))))
        .await
        .unwrap();
    assert_eq!(p.sub, "j1");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "cached");

    // The provider rotates to a new key id.
    let mut rotated: Value = serde_json::from_str(JWKS).unwrap();
    rotated["keys"][0]["kid"] = "test-only-key-2".into();
    *server.body.lock().unwrap() = rotated.to_string();

    // Within the interval an unknown kid does not trigger a fetch (no fetch storms).
    let rotated_token = bearer(token("test-only-key-2", "j2"));
    assert_eq!(
        verifier.authenticate(Some(&rotated_token)).await,
        Err(AuthError::Unauthorized)
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);

    // Past the interval, the unknown kid fetches the new keys once.
    verifier.set_jwks_refetch_interval(Duration::ZERO);
    assert_eq!(
        verifier
            .authenticate(Some(&rotated_token))
            .await
            .unwrap()
            .sub,
        "j2"
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_jwks_that_cannot_be_fetched_stops_start_up_naming_the_variable() {
    let err = Verifier::connect(&config("http://127.0.0.1:9/jwks.json"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JWT_JWKS_URL"), "{err}");
    let err = Verifier::connect(&config("ftp://example.com/jwks.json"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JWT_JWKS_URL"), "{err}");
}

#[tokio::test]
async fn the_stack_accepts_tokens_signed_by_a_jwks_key() {
    let (url, _server) = serve_jwks().await;
    let stack = TestStack::start_with(StackOptions {
        auth: config(&url),
        ..StackOptions::default()
    })
    .await;
    let (status, body) = stack
        .post_events(
            &token("test-only-key-1", "jwks-user"),
            &json!({"type": "x"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = stack
        .post_events(&token("unknown-kid", "jwks-user"), &json!({"type": "x"}))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn algorithms_of_several_families_work_together() {
    // RS256 and ES256 both named: jsonwebtoken takes one family per validation, so a single
    // validation of both refused every token.
    let (url, _) = serve_jwks().await;
    let mut both = config(&url);
    both.issuers[0].algorithms = vec![Algorithm::RS256, Algorithm::ES256];
    let verifier = Verifier::connect(&both).await.unwrap();
    assert!(
        verifier
            .verify(&signed(Algorithm::RS256, "test-only-key-1", "u"))
            .is_ok()
    );
}

#[tokio::test]
async fn a_jwk_that_declares_its_algorithm_verifies_only_that_one() {
    // The JWKS key says `"alg": "RS256"`; RS384 is configured too, but not for this key.
    let (url, _) = serve_jwks().await;
    let mut wider = config(&url);
    wider.issuers[0].algorithms = vec![Algorithm::RS256, Algorithm::RS384];
    let verifier = Verifier::connect(&wider).await.unwrap();
    assert!(
        verifier
            .verify(&signed(Algorithm::RS256, "test-only-key-1", "u"))
            .is_ok()
    );
    assert_eq!(
        verifier
            .verify(&signed(Algorithm::RS384, "test-only-key-1", "u"))
            .map(|p| p.sub),
        Err(AuthError::Unauthorized)
    );
}
