//! The real ingest binary under a fake Lambda Runtime API: its logs are JSON, carry the request
//! id, and never contain the token or the event payloads; its metrics are EMF lines.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use telemetry_e2e::runtime::{FakeRuntime, build_binary, lambda_env};
use telemetry_e2e::{emulator_url, sdk_config_for, unique_prefix};
use tokio::io::AsyncReadExt;

const FIXTURE: &str = include_str!("../../events/ingest-post-events.json");

#[tokio::test]
async fn ingest_logs_are_json_with_the_request_id_and_never_the_token_or_payload() {
    ingest_logs_at(&[("RUST_LOG", "debug")]).await;
}

/// At the most verbose settings, too: the level applies to this workspace's crates, and no
/// setting lets `lambda_runtime` log the raw invocation or the SDK the stored events.
#[tokio::test]
async fn no_log_level_lets_a_token_or_a_payload_into_the_logs() {
    ingest_logs_at(&[("RUST_LOG", "trace")]).await;
    ingest_logs_at(&[("AWS_LAMBDA_LOG_LEVEL", "TRACE")]).await;
    ingest_logs_at(&[(
        "RUST_LOG",
        "trace,lambda_runtime=trace,aws_smithy_runtime=trace",
    )])
    .await;
}

async fn ingest_logs_at(levels: &[(&str, &str)]) {
    let endpoint = emulator_url();
    let sdk = sdk_config_for(&endpoint).await;
    let stream = format!("{}-events", unique_prefix());
    telemetry_cli::local::resources::ensure_stream(&aws_sdk_kinesis::Client::new(&sdk), &stream, 1)
        .await
        .unwrap();

    let binary = build_binary("ingest");
    let runtime = FakeRuntime::start().await;
    let mut child = tokio::process::Command::new(binary)
        .envs(lambda_env(&runtime, "ingest"))
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("EVENTS_STREAM", &stream)
        .env("JWT_ALGORITHMS", "HS256")
        .env(
            "JWT_SECRET",
            "dev-only-secret-for-sam-local-invoke-do-not-deploy",
        )
        .env("JWT_ISSUER", "telemetry-local")
        .env("JWT_AUDIENCE", "telemetry")
        .envs(levels.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ingest");

    let event: Value = serde_json::from_str(FIXTURE).unwrap();
    let token = event["headers"]["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    runtime.invoke("req-4f1c2d", FIXTURE.as_bytes().to_vec());
    // And a request with a bad token, whose refusal is logged too.
    let mut bad = event.clone();
    bad["headers"]["authorization"] = format!("Bearer {token}x").into();
    runtime.invoke("req-bad-token", serde_json::to_vec(&bad).unwrap());

    let answer = runtime
        .answer("req-4f1c2d", Duration::from_secs(30))
        .await
        .expect("an answer");
    assert!(answer.ok, "{}", String::from_utf8_lossy(&answer.body));
    let response: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(response["statusCode"], 202, "{response}");
    let refused = runtime
        .answer("req-bad-token", Duration::from_secs(30))
        .await
        .unwrap();
    let refused: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(refused["statusCode"], 401);

    child.start_kill().unwrap();
    let _ = child.wait().await;
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let output = format!("{stdout}{stderr}");

    assert!(
        !output.contains(&token),
        "a token reached the logs at {levels:?}"
    );
    assert!(
        !output.contains(&token[token.len() - 20..]),
        "part of a token reached the logs"
    );
    for payload in ["gem_pack_small", "\"score\"", "ios-app", "s-42"] {
        assert!(
            !output.contains(payload),
            "payload `{payload}` reached the logs at {levels:?}"
        );
    }

    let lines: Vec<Value> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let logs: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_none()).collect();
    let accepted = logs
        .iter()
        .find(|l| l["fields"]["message"] == "events accepted")
        .expect("an `events accepted` log line");
    assert_eq!(accepted["span"]["requestId"], "req-4f1c2d", "{accepted}");
    assert_eq!(accepted["fields"]["accepted"], 2);
    let refusal = logs
        .iter()
        .find(|l| l["fields"]["message"] == "request refused")
        .expect("a `request refused` log line");
    assert_eq!(refusal["span"]["requestId"], "req-bad-token");

    let emf: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert!(
        emf.iter()
            .any(|m| m["EventsAccepted"] == 2 && m["Function"] == "ingest"),
        "{emf:?}"
    );
    assert!(
        emf.iter()
            .any(|m| m["Reason"] == "invalid_type" && m["EventsRejected"] == 1)
    );
}
