//! The per-user rate limit holds across concurrently running ingest functions: two handlers
//! share one `counts` table on the emulator.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::{Value, json};
use telemetry_cli::local::resources::{ResourceNames, ensure_stream, ensure_tables};
use telemetry_e2e::{emulator_url, hs256_auth, sdk_config_for, token, unique_prefix};

fn request(bearer: &str, events: usize, first: usize) -> ApiGatewayV2httpRequest {
    let mut req: ApiGatewayV2httpRequest =
        serde_json::from_str(include_str!("../../events/ingest-post-events.json")).unwrap();
    req.headers
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    let list: Vec<Value> = (first..first + events)
        .map(|i| json!({"type": "r", "id": format!("r{i}")}))
        .collect();
    req.body = Some(json!({ "events": list }).to_string());
    req
}

/// Two ingest handlers (two execution environments: separate clients) limited to `limit`
/// events per user per minute, sharing one new stack's `counts` table.
async fn two_handlers(limit: u64) -> (Arc<ingest::Ingest>, Arc<ingest::Ingest>, String) {
    let sdk = sdk_config_for(&emulator_url()).await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    ensure_stream(&aws_sdk_kinesis::Client::new(&sdk), &names.stream, 1)
        .await
        .unwrap();
    ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &names)
        .await
        .unwrap();
    let config = ingest::Config {
        stream: names.stream.clone(),
        auth: hs256_auth(),
        retry_budget: Duration::from_secs(5),
        rate_limit_per_user: Some(limit),
        counts_table: Some(names.counts_table.clone()),
        rejected_queue_url: None,
    };
    let a = Arc::new(ingest::from_config(&config, &sdk).await.unwrap());
    let b = Arc::new(
        ingest::from_config(&config, &sdk_config_for(&emulator_url()).await)
            .await
            .unwrap(),
    );
    (a, b, names.counts_table)
}

#[tokio::test]
async fn a_limit_split_over_several_items_still_holds_in_total() {
    // 2,000 a minute: four items of 500 each (no single hot counter per user).
    let (a, b, counts_table) = two_handlers(2000).await;
    let user = token("sliced-user", "events:write");
    let minute = || chrono::Utc::now().timestamp() / 60;
    let started = minute();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let handler = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let req = request(&user, 100, i * 100);
            tokio::spawn(async move { handler.handle(&req).await.status_code })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            202 => accepted += 100,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    // Never more than the limit (unless the minute turned during the test); a request is
    // refused early only when both slices it tried were full.
    let ceiling = if minute() == started { 2000 } else { 4000 };
    assert!((1500..=ceiling).contains(&accepted), "accepted {accepted}");
    let sdk = sdk_config_for(&emulator_url()).await;
    let items = telemetry_e2e::scan_all(&sdk, &counts_table).await;
    let slices: Vec<_> = items
        .iter()
        .filter(|i| i["pk"].as_s().unwrap().starts_with("rate#sliced-user#"))
        .collect();
    assert!(
        slices.len() > 1 && slices.len() <= 4 * 2,
        "{} slice items",
        slices.len()
    );
    for item in slices {
        let used: u64 = item["used"].as_n().unwrap().parse().unwrap();
        assert!(used <= 500, "a slice holds more than its share: {used}");
    }
}

#[tokio::test]
async fn the_limit_holds_across_two_concurrent_ingest_handlers() {
    let (a, b, _) = two_handlers(100).await;

    let limited_user = token("busy-user", "events:write");
    let minute = || chrono::Utc::now().timestamp() / 60;
    let started = minute();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let handler = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let req = request(&limited_user, 10, i * 10);
        tasks.push(tokio::spawn(async move { handler.handle(&req).await }));
    }
    let mut accepted = 0;
    let mut limited = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status_code {
            202 => accepted += 10,
            429 => {
                limited += 1;
                let retry: u32 = r
                    .headers
                    .get("retry-after")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry));
            }
            other => panic!("unexpected {other}"),
        }
    }
    // 100 events a minute: exactly 10 requests of 10 fit, whichever function served them
    // (unless the minute turned during the test, which allows some more as it slides).
    if minute() == started {
        assert_eq!(accepted, 100);
    } else {
        assert!((100..=200).contains(&accepted), "accepted {accepted}");
    }
    assert_eq!(limited, 30 - accepted / 10);

    // Another user has an allowance of their own.
    let other = a
        .handle(&request(&token("quiet-user", "events:write"), 10, 0))
        .await;
    assert_eq!(other.status_code, 202);
    // One request larger than the whole allowance can never pass: a 413 saying so, not a
    // 429 inviting a retry that would fail forever.
    let too_big = a
        .handle(&request(&token("big-user", "events:write"), 101, 0))
        .await;
    assert_eq!(too_big.status_code, 413);
    assert!(too_big.headers.get("retry-after").is_none());
}

fn invalid_request(bearer: &str, events: usize) -> ApiGatewayV2httpRequest {
    let mut req = request(bearer, 0, 0);
    let list: Vec<Value> = (0..events).map(|_| json!({"type": "not a type"})).collect();
    req.body = Some(json!({ "events": list }).to_string());
    req
}

#[tokio::test]
async fn invalid_events_count_against_the_limit_too() {
    let (a, _, _) = two_handlers(20).await;
    let user = token("invalid-sender", "events:write");
    // 10 invalid events twice: refused as invalid, and counted.
    for _ in 0..2 {
        assert_eq!(a.handle(&invalid_request(&user, 10)).await.status_code, 400);
    }
    // The allowance of 20 is spent: the third request is limited before it is read.
    assert_eq!(a.handle(&invalid_request(&user, 10)).await.status_code, 429);
}

#[tokio::test]
async fn the_limit_slides_across_the_minute_boundary() {
    use telemetry_shared::aws::rate_limit::DynamoRateLimiter;
    use telemetry_shared::ports::{RateDecision, RateLimiter};
    let (_, _, counts_table) = two_handlers(100).await;
    let sdk = sdk_config_for(&emulator_url()).await;
    let limiter = DynamoRateLimiter::new(aws_sdk_dynamodb::Client::new(&sdk), counts_table, 100);
    let at = |s: &str| telemetry_shared::time::parse(s).unwrap();
    let allowed = |d: RateDecision| matches!(d, RateDecision::Allowed);
    // The whole allowance at the last second of a minute...
    assert!(allowed(
        limiter
            .acquire("edge", 100, at("2026-11-26T12:00:59.000Z"))
            .await
            .unwrap()
    ));
    // ...leaves none a second later: a fixed minute would allow another 100 here.
    assert!(!allowed(
        limiter
            .acquire("edge", 1, at("2026-11-26T12:01:00.500Z"))
            .await
            .unwrap()
    ));
    // Three quarters into the minute, a quarter of the previous one still counts.
    assert!(allowed(
        limiter
            .acquire("edge", 75, at("2026-11-26T12:01:45.000Z"))
            .await
            .unwrap()
    ));
    assert!(!allowed(
        limiter
            .acquire("edge", 1, at("2026-11-26T12:01:45.000Z"))
            .await
            .unwrap()
    ));
}

#[tokio::test]
async fn a_compressed_request_is_counted_before_it_is_opened() {
    let (a, _, _) = two_handlers(20).await;
    let user = token("gzip-sender", "events:write");
    let broken = || {
        let mut req = request(&user, 0, 0);
        req.headers
            .insert("content-encoding", "gzip".parse().unwrap());
        req.body = Some("bm90IGd6aXAgYXQgYWxs".into()); // "not gzip at all"
        req.is_base64_encoded = true;
        req
    };
    // Each costs the work of opening it, so each counts (one event), whatever it holds.
    for _ in 0..20 {
        assert_eq!(a.handle(&broken()).await.status_code, 400);
    }
    assert_eq!(a.handle(&broken()).await.status_code, 429);
}
