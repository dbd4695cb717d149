//! With the emulator unreachable, ingest answers 503 with `Retry-After` within its retry
//! budget and never 202; once it is back, retrying the same request stores each event once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telemetry_e2e::{OutageProxy, StackOptions, TestStack, emulator_url, scan_all, token};

async fn post(
    stack: &TestStack,
    t: &str,
    body: &Value,
    key: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut req = stack
        .http
        .post(stack.url("/v1/events"))
        .bearer_auth(t)
        .json(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.unwrap();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let (s, b) = telemetry_e2e::read(r).await;
    (s, b, retry_after)
}

#[tokio::test]
async fn outage_gives_503_then_a_retry_stores_each_event_once() {
    let upstream = emulator_url().trim_start_matches("http://").to_string();
    let proxy = OutageProxy::start(upstream).await;
    let stack = TestStack::start_with(StackOptions {
        endpoint: Some(proxy.url()),
        ..StackOptions::default()
    })
    .await;
    let t = token("outage-user", "events:write events:read");
    let with_ids = json!({"events": [{"type": "a", "id": "i1"}, {"type": "a", "id": "i2"}]});
    let without_ids = json!({"events": [{"type": "b"}, {"type": "b"}, {"type": "b"}]});

    proxy.set_down(true);
    for (body, key) in [(&with_ids, None), (&without_ids, Some("req-7"))] {
        let start = Instant::now();
        let (status, answer, retry_after) = post(&stack, &t, body, key).await;
        let took = start.elapsed();
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "service_unavailable");
        assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok()));
        assert!(took < Duration::from_secs(8), "503 took {took:?}");
        assert!(
            took >= Duration::from_secs(4),
            "gave up before the budget: {took:?}"
        );
    }

    proxy.set_down(false);
    let (status, answer, _) = post(&stack, &t, &with_ids, None).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer, _) = post(&stack, &t, &without_ids, Some("req-7")).await;
    assert_eq!(status, 202, "{answer}");
    let first_ids = answer["ids"].clone();
    // The same request again (the client never saw our 202) maps to the same ids.
    let (status, answer, _) = post(&stack, &t, &without_ids, Some("req-7")).await;
    assert_eq!(status, 202);
    assert_eq!(answer["ids"], first_ids);

    let all_stored = telemetry_e2e::eventually(Duration::from_secs(15), || async {
        scan_all(&stack.sdk, &stack.names.events_table).await.len() >= 5
    })
    .await;
    assert!(all_stored);
    stack.settle().await;
    let items = scan_all(&stack.sdk, &stack.names.events_table).await;
    assert_eq!(items.len(), 5, "each event stored once: {items:?}");
}
