//! Every row of the ingest outcome table (README, `POST /v1/events`), over HTTP, through the local
//! stack, against the emulator.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use telemetry_e2e::{
    AUDIENCE, ISSUER, StackOptions, TEST_SECRET, TestStack, batch_with_ids, read, token,
};
use telemetry_shared::auth::{AuthConfig, IssuerConfig, VerificationKey};

const RSA_PRIVATE: &str = include_str!("../fixtures/test-only-rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../fixtures/test-only-rsa-public.pem");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "scope": "events:write events:read"})
}

fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn post_raw(
    stack: &TestStack,
    bearer: Option<&str>,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value, Option<String>) {
    let mut req = stack
        .http
        .post(stack.url("/v1/events"))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let r = req.send().await.unwrap();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let (s, b) = read(r).await;
    (s, b, retry_after)
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn valid_batch_is_accepted_with_202_and_ids() {
    let stack = TestStack::start().await;
    let t = token("alice", "events:write events:read");
    let (status, body) = stack
        .post_events(&t, &batch_with_ids(3, "game.start", "a"))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"accepted": 3, "ids": ["a0", "a1", "a2"], "rejected": []})
    );
    // A single event object is a batch of one, with a generated id.
    let (status, body) = stack.post_events(&t, &json!({"type": "game.end"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["ids"][0].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn one_invalid_event_is_rejected_by_index_and_the_valid_ones_are_stored() {
    let stack = TestStack::start().await;
    let t = token("bob", "events:write events:read");
    let body = json!({"events": [
        {"type": "ok.one", "id": "v1"},
        {"type": "bad type!", "id": "v2"},
        {"type": "ok.three", "id": "v3"},
    ]});
    let (status, answer) = stack.post_events(&t, &body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["ids"], json!(["v1", "v3"]));
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert_eq!(answer["rejected"][0]["code"], "invalid_type");
    let events = stack.wait_for_events(&t, 2, Duration::from_secs(10)).await;
    let mut ids: Vec<_> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["v1", "v3"]);
}

#[tokio::test]
async fn two_events_with_the_same_id_reject_the_second() {
    let stack = TestStack::start().await;
    let t = token("carol", "events:write");
    let body = json!({"events": [{"type": "a", "id": "same"}, {"type": "b", "id": "same"}, {"type": "c", "id": "other"}]});
    let (status, answer) = stack.post_events(&t, &body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["ids"], json!(["same", "other"]));
    assert_eq!(
        answer["rejected"],
        json!([{"index": 1, "code": "duplicate_id", "message": "another event in this request has the same `id`"}])
    );
}

#[tokio::test]
async fn bad_bodies_are_400_with_a_reason() {
    let stack = TestStack::start().await;
    let t = token("dave", "events:write");
    let cases: [(&[u8], &str); 6] = [
        (b"not json", "invalid_json"),
        (b"[{\"type\":\"a\"}]", "invalid_body"),
        (b"{\"events\":[]}", "empty_batch"),
        (
            b"{\"events\":[{\"type\":1},{\"id\":\"x\"}]}",
            "no_valid_events",
        ),
        (b"{\"type\":\"a\",\"data\":\"\xff\"}", "invalid_json"),
        (b"{\"events\":5}", "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, answer, _) =
            post_raw(&stack, Some(&t), "application/json", None, body.to_vec()).await;
        assert_error(status, &answer, 400, code);
    }
    // "None valid" also says why each one failed.
    let (_, answer, _) = post_raw(
        &stack,
        Some(&t),
        "application/json",
        None,
        b"{\"events\":[{\"type\":1},{\"id\":\"x\"}]}".to_vec(),
    )
    .await;
    assert_eq!(answer["rejected"][1]["code"], "missing_type");
}

#[tokio::test]
async fn more_than_500_events_is_400() {
    let stack = TestStack::start().await;
    let t = token("erin", "events:write events:read");
    let (status, body) = stack.post_events(&t, &batch_with_ids(501, "x", "e")).await;
    assert_error(status, &body, 400, "too_many_events");
    let (status, body) = stack.post_events(&t, &batch_with_ids(500, "x", "e")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 500);
}

#[tokio::test]
async fn token_attacks_are_401_without_detail() {
    let stack = TestStack::start().await;
    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("mallory").to_string());
    let alg_none = format!("{header_none}.{payload}.");

    let mut expired = claims("mallory");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_iss = claims("mallory");
    wrong_iss["iss"] = json!("someone-else");
    let mut wrong_aud = claims("mallory");
    wrong_aud["aud"] = json!("another-api");
    let mut no_sub = claims("mallory");
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut bad_sub = claims("mallory");
    bad_sub["sub"] = json!("has spaces and / slashes");
    let mut not_yet = claims("mallory");
    not_yet["nbf"] = json!(now() + 3600);

    let secret = TEST_SECRET.as_bytes();
    let attacks = [
        ("alg none", alg_none),
        (
            "signed with another key",
            sign_hs256(&claims("mallory"), b"another-secret-another-secret-123"),
        ),
        ("expired", sign_hs256(&expired, secret)),
        ("not yet valid", sign_hs256(&not_yet, secret)),
        ("wrong issuer", sign_hs256(&wrong_iss, secret)),
        ("wrong audience", sign_hs256(&wrong_aud, secret)),
        ("missing sub", sign_hs256(&no_sub, secret)),
        ("unusable sub", sign_hs256(&bad_sub, secret)),
        ("garbage", "not.a.token".to_string()),
    ];
    let mut codes = Vec::new();
    for (what, t) in &attacks {
        let (status, body) = stack.post_events(t, &json!({"type": "x"})).await;
        assert_eq!(status, 401, "{what}: {body}");
        codes.push(body["error"].clone());
    }
    // No detail of which check failed: every 401 body is the same.
    assert!(codes.windows(2).all(|w| w[0] == w[1]), "{codes:?}");

    let (status, body, _) = post_raw(
        &stack,
        None,
        "application/json",
        None,
        b"{\"type\":\"x\"}".to_vec(),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
}

#[tokio::test]
async fn rs256_public_key_used_as_hs256_secret_is_401() {
    let stack = TestStack::start_with(StackOptions {
        auth: AuthConfig::one(IssuerConfig::new(
            vec![Algorithm::RS256],
            VerificationKey::PublicKeyPem(RSA_PUBLIC.into()),
            ISSUER,
            AUDIENCE,
        )),
        ..StackOptions::default()
    })
    .await;
    // The genuine RS256 token works, so the refusal below is about the attack.
    let genuine = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims("rita"),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let (status, body) = stack.post_events(&genuine, &json!({"type": "x"})).await;
    assert_eq!(status, 202, "{body}");

    let forged = sign_hs256(&claims("rita"), RSA_PUBLIC.as_bytes());
    let (status, body) = stack.post_events(&forged, &json!({"type": "x"})).await;
    assert_error(status, &body, 401, "unauthorized");
}

#[tokio::test]
async fn missing_scope_is_403() {
    let stack = TestStack::start().await;
    let read_only = token("frank", "events:read counts:read");
    let (status, body) = stack.post_events(&read_only, &json!({"type": "x"})).await;
    assert_error(status, &body, 403, "forbidden");
    // Write tokens ship inside clients and must not read anything back.
    let write_only = token("frank", "events:write");
    let (status, body) = stack.get(&write_only, "/v1/events").await;
    assert_error(status, &body, 403, "forbidden");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let stack = TestStack::start().await;
    let t = token("gina", "events:write");
    for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let (status, body, _) =
            post_raw(&stack, Some(&t), ct, None, b"{\"type\":\"x\"}".to_vec()).await;
        assert_error(status, &body, 415, "unsupported_media_type");
    }
    let (status, body, _) = post_raw(
        &stack,
        Some(&t),
        "application/json; charset=utf-8",
        None,
        b"{\"type\":\"x\"}".to_vec(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body, _) = post_raw(
        &stack,
        Some(&t),
        "application/json",
        Some("br"),
        b"{\"type\":\"x\"}".to_vec(),
    )
    .await;
    assert_error(status, &body, 415, "unsupported_media_type");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_bombs_are_413() {
    let stack = TestStack::start().await;
    let t = token("hank", "events:write events:read");
    let body = batch_with_ids(50, "gz.event", "g").to_string();
    let (status, answer, _) = post_raw(
        &stack,
        Some(&t),
        "application/json",
        Some("gzip"),
        gzip(body.as_bytes()),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 50);

    // 64 MiB of spaces inside a valid JSON document, ~64 KiB compressed.
    let mut bomb = b"{\"type\":\"x\",\"data\":{}".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 64 * 1024 * 1024));
    bomb.push(b'}');
    let compressed = gzip(&bomb);
    assert!(compressed.len() < 200 * 1024);
    let (status, answer, _) = post_raw(
        &stack,
        Some(&t),
        "application/json",
        Some("gzip"),
        compressed,
    )
    .await;
    assert_error(status, &answer, 413, "payload_too_large");

    let g = gzip(body.as_bytes());
    let (status, answer, _) = post_raw(
        &stack,
        Some(&t),
        "application/json",
        Some("gzip"),
        g[..g.len() / 2].to_vec(),
    )
    .await;
    assert_error(status, &answer, 400, "invalid_body");
}

#[tokio::test]
async fn body_over_one_mib_is_413() {
    let stack = TestStack::start().await;
    let t = token("ivan", "events:write");
    let big = json!({"type": "x", "data": {"s": "y".repeat(1024 * 1024)}}).to_string();
    let (status, body, _) =
        post_raw(&stack, Some(&t), "application/json", None, big.into_bytes()).await;
    assert_error(status, &body, 413, "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let stack = TestStack::start().await;
    let r = stack
        .http
        .get(stack.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
