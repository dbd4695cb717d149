//! ingest → Kinesis → store → DynamoDB → query, end to end on the emulator.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use serde_json::{Value, json};
use telemetry_e2e::{StackOptions, TestStack, batch_with_ids, scan_all, stream_records, token};

#[tokio::test]
async fn hundred_events_are_readable_within_five_seconds() {
    let stack = TestStack::start().await;
    let t = token("player-100", "events:write events:read");
    let (status, answer) = stack
        .post_events(&t, &batch_with_ids(100, "game.level_completed", "lvl"))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["ids"].as_array().unwrap().len(), 100);
    let posted = Instant::now();

    let mut page = Value::Null;
    let mut arrived = false;
    while posted.elapsed() < Duration::from_secs(5) {
        let (status, body) = stack.get(&t, "/v1/events?limit=100").await;
        assert_eq!(status, 200, "{body}");
        page = body;
        if page["events"].as_array().unwrap().len() == 100 {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        arrived,
        "only {} events after 5 s",
        page["events"].as_array().unwrap().len()
    );
    eprintln!(
        "100 events readable {} ms after the 202",
        posted.elapsed().as_millis()
    );

    let events = page["events"].as_array().unwrap();
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let expected: HashSet<String> = (0..100).map(|i| format!("lvl{i}")).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect());
    assert!(events.iter().all(|e| e["userId"] == "player-100"));
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "game.level_completed" && e["environment"] == "prod")
    );
    assert!(page["cursor"].is_null(), "{}", page["cursor"]);
}

#[tokio::test]
async fn events_are_newest_first_paginated_and_private() {
    let stack = TestStack::start().await;
    let alice = token("alice", "events:write events:read");
    let bob = token("bob", "events:write events:read");
    let events: Vec<Value> = (0..7)
        .map(|i| json!({"type": "t", "id": format!("e{i}"), "timestamp": format!("2026-01-01T00:00:0{i}Z")}))
        .collect();
    assert_eq!(
        stack
            .post_events(&alice, &json!({"events": events}))
            .await
            .0,
        202
    );
    assert_eq!(
        stack
            .post_events(&bob, &json!({"type": "t", "id": "bobs"}))
            .await
            .0,
        202
    );
    assert_eq!(
        stack
            .wait_for_events(&alice, 7, Duration::from_secs(10))
            .await
            .len(),
        7
    );

    let (_, first) = stack.get(&alice, "/v1/events?limit=3").await;
    let ids: Vec<&str> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e6", "e5", "e4"]);
    let cursor = first["cursor"].as_str().expect("a next page");
    let (_, second) = stack
        .get(&alice, &format!("/v1/events?limit=3&cursor={cursor}"))
        .await;
    let ids: Vec<&str> = second["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e3", "e2", "e1"]);

    let (_, ranged) = stack
        .get(
            &alice,
            "/v1/events?from=2026-01-01T00:00:02Z&to=2026-01-01T00:00:03Z",
        )
        .await;
    assert_eq!(ranged["events"].as_array().unwrap().len(), 2);

    // Alice never sees Bob's events, and cannot ask for them; an admin can.
    let all = stack.all_events(&alice).await;
    assert!(all.iter().all(|e| e["userId"] == "alice"));
    let (status, _) = stack.get(&alice, "/v1/events?userId=bob").await;
    assert_eq!(status, 403);
    let admin = token("ops", "admin");
    stack
        .wait_for_events(&bob, 1, Duration::from_secs(10))
        .await;
    let (status, body) = stack.get(&admin, "/v1/events?userId=bob").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["id"], "bobs");

    for bad in [
        "limit=0",
        "limit=101",
        "from=yesterday",
        "cursor=abc",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
    ] {
        let (status, body) = stack.get(&alice, &format!("/v1/events?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn resend_without_timestamp_does_not_make_a_second_item() {
    let stack = TestStack::start().await;
    let t = token("resender", "events:write events:read");
    let event = json!({"type": "purchase", "id": "order-1"});
    assert_eq!(stack.post_events(&t, &event).await.0, 202);
    stack.wait_for_events(&t, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later receive time
    assert_eq!(stack.post_events(&t, &event).await.0, 202);
    stack.settle().await;
    let items = scan_all(&stack.sdk, &stack.names.events_table).await;
    assert_eq!(items.len(), 1, "{items:?}");
}

#[tokio::test]
async fn replayed_records_leave_one_item_per_event() {
    let stack = TestStack::start().await;
    let t = token("replayer", "events:write events:read");
    assert_eq!(
        stack.post_events(&t, &batch_with_ids(30, "r", "r")).await.0,
        202
    );
    assert_eq!(
        stack
            .wait_for_events(&t, 30, Duration::from_secs(10))
            .await
            .len(),
        30
    );

    // Replay: put every record of the stream on it again, as a re-drive would.
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk);
    let mut replayed = 0;
    for (_, records) in stream_records(&kinesis, &stack.names.stream).await {
        for r in &records {
            kinesis
                .put_record()
                .stream_name(&stack.names.stream)
                .partition_key(r.partition_key().unwrap())
                .data(r.data().clone())
                .send()
                .await
                .unwrap();
            replayed += 1;
        }
    }
    assert_eq!(replayed, 30);
    // Once the replayed records have gone through store, count items.
    stack.settle().await;
    let items = scan_all(&stack.sdk, &stack.names.events_table).await;
    assert_eq!(items.len(), 30);
}

#[tokio::test]
async fn data_nested_40_deep_round_trips_verbatim() {
    let stack = TestStack::start().await;
    let t = token("nester", "events:write events:read");
    let mut data = json!({"leaf": 12345678901234567890123456789012345678901234567890_f64});
    for depth in 0..39 {
        data = json!({ format!("level{depth}"): data, "list": [1, [2, [3]]] });
    }
    // Numbers beyond f64 and 38 digits survive because `data` is kept as text.
    let raw = format!(
        r#"{{"type":"deep","id":"d1","data":{{"big":123456789012345678901234567890123456789012345,"tree":{data}}}}}"#
    );
    let r = stack
        .http
        .post(stack.url("/v1/events"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let events = stack.wait_for_events(&t, 1, Duration::from_secs(10)).await;
    let (_, page) = telemetry_e2e::read(
        stack
            .http
            .get(stack.url("/v1/events"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["tree"], data);
    // The raw text keeps the 45-digit integer exactly.
    let text = page.to_string();
    assert!(
        text.contains("123456789012345678901234567890123456789012345")
            || events[0]["data"]["big"].is_number()
    );
    let items = scan_all(&stack.sdk, &stack.names.events_table).await;
    let stored = items[0]["data"].as_s().unwrap();
    assert!(
        stored.contains("\"big\":123456789012345678901234567890123456789012345"),
        "{stored}"
    );
}

#[tokio::test]
async fn undecodable_record_does_not_block_the_records_after_it() {
    let stack = TestStack::start_with(StackOptions {
        shards: 1,
        ..StackOptions::default()
    })
    .await;
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk);
    kinesis
        .put_record()
        .stream_name(&stack.names.stream)
        .partition_key("poison")
        .data(Blob::new(b"\x00 this is not an event".to_vec()))
        .send()
        .await
        .unwrap();
    let t = token("after-poison", "events:write events:read");
    assert_eq!(
        stack.post_events(&t, &batch_with_ids(5, "ok", "p")).await.0,
        202
    );
    assert_eq!(
        stack
            .wait_for_events(&t, 5, Duration::from_secs(10))
            .await
            .len(),
        5
    );
}
