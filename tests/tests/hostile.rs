//! Hostile HTTP input at the local stack's front door: each gets its documented status and
//! nothing is stored.

use std::time::Duration;

use serde_json::Value;
use telemetry_e2e::{TestStack, read, scan_all, token};

async fn post(
    stack: &TestStack,
    bearer: Option<&str>,
    url_suffix: &str,
    body: Vec<u8>,
    extra: &[(&str, String)],
) -> (u16, Value) {
    let mut req = stack
        .http
        .post(stack.url(&format!("/v1/events{url_suffix}")))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, v);
    }
    read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn hostile_requests_get_their_status_and_store_nothing() {
    let stack = TestStack::start().await;
    let t = token("mallory", "events:write");
    let deep = format!(
        r#"{{"type":"a","data":{}1{}}}"#,
        "{\"x\":".repeat(5000),
        "}".repeat(5000)
    );
    let deep_field = format!(
        r#"{{"type":"a","origin":{}1{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let deep_batch = format!(
        r#"{{"events":[{{"type":"a","data":{}1{}}}]}}"#,
        "{\"x\":".repeat(200),
        "}".repeat(200)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "data nested 5,000 deep",
            deep.into_bytes(),
            400,
            "no_valid_events",
        ),
        (
            "a field nested 5,000 deep",
            deep_field.into_bytes(),
            400,
            "no_valid_events",
        ),
        (
            "data nested 200 deep inside a batch",
            deep_batch.into_bytes(),
            400,
            "no_valid_events",
        ),
        (
            "duplicate keys",
            br#"{"type":"a","type":"b"}"#.to_vec(),
            400,
            "no_valid_events",
        ),
        (
            "duplicate keys inside data (strict parsers refuse them downstream)",
            br#"{"type":"a","data":{"k":1,"k":2}}"#.to_vec(),
            400,
            "no_valid_events",
        ),
        (
            "a lone surrogate escape inside data",
            br#"{"type":"a","data":{"s":"\ud800"}}"#.to_vec(),
            400,
            "no_valid_events",
        ),
        (
            "duplicate events key",
            br#"{"events":[{"type":"a"}],"events":[{"type":"b"}]}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "invalid UTF-8",
            b"{\"type\":\"a\xc3\x28\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "escaped NUL in type",
            br#"{"type":"a\u0000b"}"#.to_vec(),
            400,
            "no_valid_events",
        ),
        (
            "raw NUL byte",
            b"{\"type\":\"a\x00b\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "type of 129 chars",
            format!(r#"{{"type":"{}"}}"#, "t".repeat(129)).into_bytes(),
            400,
            "no_valid_events",
        ),
        (
            "type of 1 MB",
            format!(r#"{{"type":"{}"}}"#, "t".repeat(900_000)).into_bytes(),
            400,
            "no_valid_events",
        ),
        (
            "id of 65 chars",
            format!(r#"{{"type":"a","id":"{}"}}"#, "i".repeat(65)).into_bytes(),
            400,
            "no_valid_events",
        ),
        (
            "an array of arrays",
            br#"[[{"type":"a"}]]"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "a bare string",
            br#""events""#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "trailing garbage",
            br#"{"type":"a"} {"type":"b"}"#.to_vec(),
            400,
            "invalid_json",
        ),
        ("empty body", Vec::new(), 400, "invalid_json"),
        (
            "server fields only",
            br#"{"userId":"admin","receivedAt":"2020-01-01T00:00:00Z"}"#.to_vec(),
            400,
            "no_valid_events",
        ),
    ];
    for (what, body, status, code) in cases {
        let (got, answer) = post(&stack, Some(&t), "", body, &[]).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
    }

    // A token in the query string is not a credential.
    let (status, _) = post(
        &stack,
        None,
        &format!("?access_token={t}&token={t}"),
        br#"{"type":"a"}"#.to_vec(),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    // Oversize headers are refused by the gateway, as API Gateway does (10 KiB).
    let (status, _) = post(
        &stack,
        Some(&t),
        "",
        br#"{"type":"a"}"#.to_vec(),
        &[("x-padding", "p".repeat(12 * 1024))],
    )
    .await;
    assert_eq!(status, 431);
    // A bearer token of 8 KiB of garbage.
    let (status, _) = post(
        &stack,
        Some(&"A".repeat(8 * 1024)),
        "",
        br#"{"type":"a"}"#.to_vec(),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    // An Idempotency-Key with control characters.
    let (status, answer) = post(
        &stack,
        Some(&t),
        "",
        br#"{"type":"a"}"#.to_vec(),
        &[("idempotency-key", "a\tb".into())],
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );

    stack.settle().await;
    assert!(
        scan_all(&stack.sdk, &stack.names.events_table)
            .await
            .is_empty(),
        "a hostile request stored something"
    );
}

#[tokio::test]
async fn huge_numbers_and_odd_but_valid_json_are_kept_verbatim() {
    let stack = TestStack::start().await;
    let t = token("numbers", "events:write events:read");
    let body = r#"{"type":"n","id":"n1","data":{"big":1e999999,"long":123456789012345678901234567890123456789012345678901234567890,"neg":-0.0,"uni":"\ud83d\ude00 é","esc":"a\"b\\c"}}"#;
    let (status, answer) = post(&stack, Some(&t), "", body.as_bytes().to_vec(), &[]).await;
    assert_eq!(status, 202, "{answer}");
    // (Read from the table: the test's own JSON client cannot hold 1e999999 in a Value.)
    let stored = telemetry_e2e::eventually(Duration::from_secs(10), || async {
        !scan_all(&stack.sdk, &stack.names.events_table)
            .await
            .is_empty()
    })
    .await;
    assert!(stored);
    let items = scan_all(&stack.sdk, &stack.names.events_table).await;
    let data = items[0]["data"].as_s().unwrap();
    assert_eq!(
        data,
        r#"{"big":1e999999,"long":123456789012345678901234567890123456789012345678901234567890,"neg":-0.0,"uni":"\ud83d\ude00 é","esc":"a\"b\\c"}"#
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = TestStack::start().await;
    let mut conn = tokio::net::TcpStream::connect(stack.stack.addr)
        .await
        .unwrap();
    // Slowloris: a request line and one header, then nothing.
    conn.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        telemetry_cli::local::gateway::HEADER_TIMEOUT + Duration::from_secs(5),
        conn.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the connection was still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= telemetry_cli::local::gateway::HEADER_TIMEOUT - Duration::from_secs(1)
    );
}
