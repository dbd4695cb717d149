//! Exactly-once counts end to end: ingest → store → DynamoDB stream → post-process → counts.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lambda_events::dynamodb::TimeWindowEvent;
use chrono::{DateTime, DurationRound, Utc};
use serde_json::{Value, json};
use telemetry_cli::local::resources::{ResourceNames, ensure_tables};
use telemetry_e2e::{TestStack, emulator_url, eventually, sdk_config_for, token, unique_prefix};

const TYPES: [&str; 5] = [
    "game.start",
    "game.end",
    "shop.view",
    "shop.buy",
    "net.error",
];

fn bucket(t: DateTime<Utc>, granularity: &str) -> String {
    let len = match granularity {
        "minute" => chrono::Duration::minutes(1),
        "hour" => chrono::Duration::hours(1),
        _ => chrono::Duration::days(1),
    };
    t.duration_trunc(len)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `GET /v1/counts` as {bucket start: count}.
async fn counts(stack: &TestStack, t: &str, query: &str) -> BTreeMap<String, u64> {
    let (status, body) = stack.get(t, &format!("/v1/counts?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().to_string(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn deadline() -> telemetry_shared::retry::Deadline {
    telemetry_shared::retry::Deadline::after(std::time::Duration::from_secs(30))
}

#[tokio::test]
async fn thousand_events_over_five_types_and_three_hours_are_counted_exactly() {
    let stack = TestStack::start().await;
    let writer = token("counter-1", "events:write");
    let reader = token("analyst", "counts:read");
    let end = Utc::now() - chrono::Duration::minutes(1);
    let start = end - chrono::Duration::hours(3);

    // Independent expectation: (type or "*", granularity) → bucket → count.
    let mut expected: BTreeMap<(String, &str), BTreeMap<String, u64>> = BTreeMap::new();
    let mut events = Vec::new();
    for i in 0..1000u64 {
        let kind = TYPES[(i * 7 % 5) as usize];
        let at = start + chrono::Duration::seconds((i * 10_799 / 999) as i64);
        events.push(json!({"type": kind, "id": format!("c{i}"), "timestamp": at.to_rfc3339()}));
        for g in ["minute", "hour", "day"] {
            for k in [kind, "*"] {
                *expected
                    .entry((k.to_string(), g))
                    .or_default()
                    .entry(bucket(at, g))
                    .or_default() += 1;
            }
        }
    }
    for chunk in events.chunks(250) {
        let (status, body) = stack.post_events(&writer, &json!({"events": chunk})).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["accepted"], 250);
    }
    // Noise in another environment must not change the prod counts.
    let staging: Vec<Value> = (0..50)
        .map(|i| json!({"type": "game.start", "id": format!("s{i}"), "environment": "staging", "timestamp": end.to_rfc3339()}))
        .collect();
    assert_eq!(
        stack
            .post_events(&writer, &json!({"events": staging}))
            .await
            .0,
        202
    );

    let range = format!(
        "from={}&to={}",
        urlencode(&start.to_rfc3339()),
        urlencode(&end.to_rfc3339())
    );
    let all_counted = eventually(Duration::from_secs(60), || async {
        let day = counts(&stack, &reader, &format!("granularity=day&{range}")).await;
        day.values().sum::<u64>() == 1000
    })
    .await;
    assert!(all_counted, "the day total never reached 1000");

    assert_counts(&stack, &reader, &range, &expected, "").await;
    let staging_day = counts(
        &stack,
        &reader,
        &format!("granularity=day&environment=staging&{range}"),
    )
    .await;
    assert_eq!(staging_day.values().sum::<u64>(), 50);

    // A client re-sending the same events, with and without timestamps, changes nothing.
    let resend: Vec<Value> = events[..100]
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut e = e.clone();
            if i % 2 == 0 {
                e.as_object_mut().unwrap().remove("timestamp");
            }
            e
        })
        .collect();
    assert_eq!(
        stack
            .post_events(&writer, &json!({"events": resend}))
            .await
            .0,
        202
    );
    stack.settle().await;
    assert_counts(&stack, &reader, &range, &expected, "after the re-send").await;
}

/// Checks `GET /v1/counts` for every (type, granularity) of `expected`.
async fn assert_counts(
    stack: &TestStack,
    reader: &str,
    range: &str,
    expected: &BTreeMap<(String, &str), BTreeMap<String, u64>>,
    when: &str,
) {
    for ((kind, g), want) in expected {
        let type_param = if kind == "*" {
            String::new()
        } else {
            format!("&type={kind}")
        };
        let got = counts(
            stack,
            reader,
            &format!("granularity={g}&{range}{type_param}"),
        )
        .await;
        assert_eq!(&got, want, "{when}: type {kind}, granularity {g}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn counts_parameters_are_checked() {
    let stack = TestStack::start().await;
    let reader = token("analyst", "counts:read");
    let (status, body) = stack.get(&reader, "/v1/counts?granularity=hour").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["buckets"], json!([]));
    assert_eq!(body["environment"], "prod");
    for (q, code) in [
        ("granularity=week", "invalid_granularity"),
        (
            "granularity=minute&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:01Z",
            "range_too_large",
        ),
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "invalid_range",
        ),
        ("from=yesterday", "invalid_from"),
        ("type=bad%20type", "invalid_type"),
        ("environment=PROD", "invalid_environment"),
    ] {
        let (status, body) = stack.get(&reader, &format!("/v1/counts?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"]["code"], code, "{q}");
    }
    let (status, _) = stack.get(&token("w", "events:write"), "/v1/counts").await;
    assert_eq!(status, 403);
}

/// A window event of `n` INSERT records for type `kind`, as Lambda would deliver them: each
/// image is the `events` item store writes.
fn window_event(first_seq: u64, n: u64, kind: &str, at: &str) -> TimeWindowEvent {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let id = format!("e{i}");
            let event = telemetry_shared::event::StoredEvent {
                schema_version: telemetry_shared::event::SCHEMA_VERSION,
                id: id.as_str().into(),
                kind: kind.into(),
                user_id: "u".into(),
                timestamp: at.into(),
                received_at: at.into(),
                environment: "prod".into(),
                origin: None,
                session_id: None,
                data: None,
            };
            let image =
                serde_json::to_value(telemetry_shared::aws::event_table::to_image(&event, None))
                    .unwrap();
            json!({
                "eventID": format!("e{i}"), "eventName": "INSERT", "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                "dynamodb": {
                    "SequenceNumber": (first_seq + i).to_string(), "SizeBytes": 100,
                    "StreamViewType": "NEW_IMAGE",
                    "Keys": {"pk": image["pk"], "sk": image["sk"]},
                    "NewImage": image,
                }
            })
        })
        .collect();
    serde_json::from_value(json!({
        "Records": records,
        "window": {"start": "2026-11-26T13:00:00Z", "end": "2026-11-26T13:01:00Z"},
        "state": {}, "shardId": "shardId-00000001-aaaa", "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/t/stream/s",
        "isFinalInvokeForWindow": false, "isWindowTerminatedEarly": false
    }))
    .unwrap()
}

#[tokio::test]
async fn replayed_and_bisected_window_batches_leave_counts_unchanged_on_the_emulator() {
    let sdk = sdk_config_for(&emulator_url()).await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &names)
        .await
        .unwrap();
    let handler = post_process::from_config(
        &post_process::Config::from_env(&telemetry_shared::config::Env::from_map([
            ("COUNTS_TABLE", names.counts_table.as_str()),
            ("METRICS_TABLE", names.metrics_table.as_str()),
        ]))
        .unwrap(),
        &sdk,
    );
    let at = telemetry_shared::time::format(Utc::now() - chrono::Duration::hours(1));
    let whole = window_event(5_000, 40, "replay.me", &at);
    assert!(
        handler
            .handle(whole.clone(), deadline())
            .await
            .batch_item_failures
            .is_empty()
    );

    let read = || async {
        let store = telemetry_shared::aws::count_table::CountTable::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            names.counts_table.clone(),
            8,
        );
        let t = telemetry_shared::time::parse(&at).unwrap();
        let mut totals = Vec::new();
        for (kind, g) in [("replay.me", "minute"), ("replay.me", "hour"), ("*", "day")] {
            let granularity = telemetry_shared::count::Granularity::parse(g).unwrap();
            let b = telemetry_shared::count::format_bucket(granularity.bucket_start(t));
            let pk = telemetry_shared::count::partition_key("prod", kind, granularity);
            let partials = telemetry_shared::ports::CountReader::read_partials(&store, &pk, &b, &b)
                .await
                .unwrap();
            totals.push(partials.iter().map(|(_, c)| c).sum::<u64>());
        }
        totals
    };
    assert_eq!(read().await, [40, 40, 40]);

    // The same window event again.
    handler.handle(whole.clone(), deadline()).await;
    assert_eq!(read().await, [40, 40, 40]);
    // Bisected into halves, the later half first.
    let (mut first, mut second) = (whole.clone(), whole.clone());
    first.dynamo_db_event.records.truncate(20);
    second.dynamo_db_event.records.drain(..20);
    handler.handle(second.clone(), deadline()).await;
    handler.handle(first.clone(), deadline()).await;
    assert_eq!(read().await, [40, 40, 40]);
    // And a batch overlapping the end of the first with new records adds only the new ones.
    handler
        .handle(window_event(5_030, 20, "replay.me", &at), deadline())
        .await;
    assert_eq!(read().await, [50, 50, 50]);
}
