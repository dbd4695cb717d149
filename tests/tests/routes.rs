//! Routes and forwarding end to end: the admin API, SQS fan-out (standard and FIFO), and the
//! forward dead-letter queue.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use telemetry_e2e::{TestStack, token};

fn admin() -> String {
    token("ops", "admin")
}

#[tokio::test]
async fn routes_are_admin_only_and_validated() {
    let stack = TestStack::start().await;
    let route = json!({"match": "game.*", "queueUrl": stack.stack.demo_queue_url});
    for t in [
        token("u", "events:write events:read counts:read"),
        token("u", ""),
    ] {
        assert_eq!(stack.get(&t, "/v1/routes").await.0, 403);
        assert_eq!(stack.put(&t, "/v1/routes/r1", &route).await.0, 403);
        assert_eq!(stack.delete(&t, "/v1/routes/r1").await.0, 403);
    }
    assert_eq!(stack.get("not-a-token", "/v1/routes").await.0, 401);

    for (body, code) in [
        (
            json!({"match": "game .*", "queueUrl": stack.stack.demo_queue_url}),
            "invalid_match",
        ),
        (
            json!({"match": "game.*", "queueUrl": "not a url"}),
            "invalid_queue_url",
        ),
        (json!({"match": "game.*"}), "invalid_route"),
        (
            json!({"match": "game.*", "queueUrl": stack.stack.demo_queue_url, "extra": 1}),
            "invalid_route",
        ),
    ] {
        let (status, answer) = stack.put(&admin(), "/v1/routes/r1", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}");
    }

    let (status, saved) = stack.put(&admin(), "/v1/routes/r1", &route).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["enabled"], true);
    let (_, list) = stack.get(&admin(), "/v1/routes").await;
    let ids: BTreeSet<&str> = list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["demo", "r1"]));
    assert_eq!(stack.delete(&admin(), "/v1/routes/r1").await.0, 204);
    assert_eq!(stack.delete(&admin(), "/v1/routes/r1").await.0, 404);
}

fn ids(messages: &[Value]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["body"]["userId"].as_str().unwrap(),
                m["body"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn matching_events_reach_standard_and_fifo_queues_and_dead_letters_keep_the_rest() {
    let stack = TestStack::start().await;
    let standard = stack.queue("game").await;
    let fifo = stack.queue("all.fifo").await;
    let missing = standard.replace("-game", "-no-such-queue");
    for (id, pattern, queue) in [
        ("game", "game.*", &standard),
        ("all", "*", &fifo),
        ("broken", "shop.*", &missing),
    ] {
        let (status, body) = stack
            .put(
                &admin(),
                &format!("/v1/routes/{id}"),
                &json!({"match": pattern, "queueUrl": queue}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // The route cache of the test stack refreshes every second (the template's: 60 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Two users with the same event id: both must be delivered, also to the FIFO queue.
    let alice = token("alice", "events:write");
    let bob = token("bob", "events:write");
    let batch = json!({"events": [
        {"type": "game.start", "id": "same-id"},
        {"type": "shop.buy", "id": "buy-1"},
        {"type": "net.error", "id": "err-1"},
    ]});
    assert_eq!(stack.post_events(&alice, &batch).await.0, 202);
    assert_eq!(
        stack
            .post_events(&bob, &json!({"type": "game.start", "id": "same-id"}))
            .await
            .0,
        202
    );

    let to_game = stack.drain(&standard, 2, Duration::from_secs(15)).await;
    assert_eq!(
        ids(&to_game),
        BTreeSet::from(["alice/same-id".to_string(), "bob/same-id".to_string()])
    );
    assert!(to_game.iter().all(|m| m["eventType"] == "game.start"));

    let to_all = stack.drain(&fifo, 4, Duration::from_secs(15)).await;
    assert_eq!(
        ids(&to_all),
        ["alice/same-id", "alice/buy-1", "alice/err-1", "bob/same-id"]
            .map(String::from)
            .into()
    );

    let letters = stack
        .drain(&stack.stack.dlq_url, 1, Duration::from_secs(15))
        .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0]["body"];
    assert_eq!(letter["routeId"], "broken");
    assert_eq!(letter["queueUrl"], missing);
    assert_eq!(letter["event"]["id"], "buy-1");
    assert!(!letter["reason"].as_str().unwrap().is_empty());

    // Nothing was delivered twice in the meantime (no batch was retried).
    stack.settle().await;
    assert!(
        stack
            .drain(&standard, 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_route_created_through_the_api_takes_effect_without_a_restart() {
    let stack = TestStack::start().await;
    let queue = stack.queue("late").await;
    let t = token("carol", "events:write");
    // Before the route exists: nothing for this queue.
    assert_eq!(
        stack
            .post_events(&t, &json!({"type": "late.one", "id": "before"}))
            .await
            .0,
        202
    );
    // forward has seen it before the route exists.
    stack.settle().await;
    let (status, _) = stack
        .put(
            &admin(),
            "/v1/routes/late",
            &json!({"match": "late.*", "queueUrl": queue}),
        )
        .await;
    assert_eq!(status, 200);
    let mut delivered = Vec::new();
    for i in 0..20 {
        assert_eq!(
            stack
                .post_events(&t, &json!({"type": "late.one", "id": format!("after-{i}")}))
                .await
                .0,
            202
        );
        delivered.extend(stack.drain(&queue, 1, Duration::from_millis(500)).await);
        if !delivered.is_empty() {
            break;
        }
    }
    assert!(!delivered.is_empty(), "the new route never took effect");
    assert!(ids(&delivered).iter().all(|id| id != "carol/before"));
}

#[tokio::test]
async fn the_demo_route_forwards_demo_events() {
    let stack = TestStack::start().await;
    let t = token("dora", "events:write");
    assert_eq!(
        stack
            .post_events(&t, &json!({"type": "demo.hello", "id": "d1"}))
            .await
            .0,
        202
    );
    let got = stack
        .drain(&stack.stack.demo_queue_url, 1, Duration::from_secs(15))
        .await;
    assert_eq!(ids(&got), BTreeSet::from(["dora/d1".to_string()]));
}

#[tokio::test]
async fn an_event_holding_characters_sqs_refuses_is_delivered_as_the_same_json() {
    // The emulator refuses such bodies as SQS does (InvalidMessageContents).
    let stack = TestStack::start().await;
    let queue = stack.queue("odd").await;
    let (status, body) = stack
        .put(
            &admin(),
            "/v1/routes/odd",
            &json!({"match": "odd.*", "queueUrl": queue}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The route cache of the test stack refreshes every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = token("dave", "events:write");
    let event = json!({"type": "odd.chars", "id": "odd-1", "origin": "a\u{FFFF}b",
        "data": {"k\u{FFFE}": "v\u{FFFF}"}});
    assert_eq!(stack.post_events(&t, &event).await.0, 202);
    let got = stack.drain(&queue, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "not delivered: {got:?}");
    assert_eq!(got[0]["body"]["origin"], "a\u{FFFF}b");
    assert_eq!(got[0]["body"]["data"]["k\u{FFFE}"], "v\u{FFFF}");
    stack.settle().await;
    assert!(
        stack
            .drain(&stack.stack.dlq_url, 1, Duration::from_millis(300))
            .await
            .is_empty(),
        "nothing dead-lettered"
    );
}
