//! The promise, under faults: an event acknowledged with 202 is stored exactly once, counted
//! exactly once, delivered to every matching route at least once (FIFO: exactly once), and
//! nothing rejected is stored.
//!
//! Concurrent clients that retry on 503/429 (honouring `Retry-After`, reusing their
//! `Idempotency-Key`) send events through the local stack, which reaches the emulator through
//! an outage proxy (one 5-second outage) and a fault proxy (~10% of AWS requests: throttles,
//! 500s, partial batch failures, connection resets before and after the request was applied).
//! `SOAK_EVENTS` sets the size (default 2,000 in `make test`; `make soak` runs 20,000).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telemetry_e2e::aws_proxy::{FaultPlan, start_proxy};
use telemetry_e2e::{
    OutageProxy, QueueSubscriber, StackOptions, TestStack, emulator_url, patient_sdk_config_for,
    scan_all, token,
};
use telemetry_shared::count::{self, Granularity};

const TYPES: [&str; 4] = ["game.start", "game.end", "net.error", "shop.view"];

struct Client {
    acked: Vec<String>,
    rejected: Vec<String>,
    retries: u64,
    requests: u64,
}

/// One client: `batches` requests of `size` events; every 50th event is invalid. `done` counts
/// the requests through, across clients.
async fn client(
    url: String,
    bearer: String,
    worker: usize,
    batches: usize,
    size: usize,
    start: chrono::DateTime<chrono::Utc>,
    done: Arc<AtomicUsize>,
) -> Client {
    let http = reqwest::Client::new();
    let mut out = Client {
        acked: Vec::new(),
        rejected: Vec::new(),
        retries: 0,
        requests: 0,
    };
    for b in 0..batches {
        let ids: Vec<String> = (0..size).map(|i| format!("w{worker}-b{b}-e{i}")).collect();
        let events: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let n = worker * 7919 + b * 131 + i;
                let kind = if n.is_multiple_of(50) {
                    "bad type!"
                } else {
                    TYPES[n % TYPES.len()]
                };
                // Spread over the last two hours, so minute, hour and day buckets all matter.
                let at = start - chrono::Duration::seconds((n % 7200) as i64);
                json!({"type": kind, "id": id, "timestamp": at.to_rfc3339(), "data": {"n": n}})
            })
            .collect();
        let body = json!({ "events": events });
        let key = format!("soak-{worker}-{b}");
        out.requests += 1;
        for attempt in 0.. {
            assert!(attempt < 60, "request {key} never got through");
            let sent = http
                .post(format!("{url}/v1/events"))
                .bearer_auth(&bearer)
                .header("idempotency-key", &key)
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(_) => {
                    out.retries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            if status == 202 {
                let answer: Value = resp.json().await.expect("202 body");
                out.acked.extend(
                    answer["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string()),
                );
                for r in answer["rejected"].as_array().unwrap() {
                    out.rejected
                        .push(ids[r["index"].as_u64().unwrap() as usize].clone());
                }
                done.fetch_add(1, Ordering::SeqCst);
                break;
            }
            assert!(
                matches!(status, 429 | 503),
                "unexpected {status}: {}",
                resp.text().await.unwrap_or_default()
            );
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            out.retries += 1;
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_under_faults_keeps_every_promise() {
    let events: usize = std::env::var("SOAK_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let emulator = emulator_url();
    let faults = start_proxy(&emulator).await;
    let outage = OutageProxy::start(faults.url.trim_start_matches("http://").to_string()).await;
    let stack = TestStack::start_with(StackOptions {
        endpoint: Some(outage.url()),
        ..StackOptions::default()
    })
    .await;
    let direct = patient_sdk_config_for(&emulator).await;
    let sqs = aws_sdk_sqs::Client::new(&direct);
    let game_q = stack.queue("game").await;
    let errors_q = stack.queue("errors.fifo").await;
    let admin = token("ops", "admin");
    for (id, pattern, queue) in [
        ("game", "game.*", &game_q),
        ("errors", "*.error", &errors_q),
    ] {
        let (status, body) = stack
            .put(
                &admin,
                &format!("/v1/routes/{id}"),
                &json!({"match": pattern, "queueUrl": queue}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // route cache (1 s in tests)
    let game_subscriber = QueueSubscriber::start(sqs.clone(), game_q.clone());
    let errors_subscriber = QueueSubscriber::start(sqs.clone(), errors_q.clone());

    faults.set_plan(FaultPlan {
        rate: 0.10,
        ..FaultPlan::default()
    });
    let started = Instant::now();
    let now = chrono::Utc::now();
    let workers = 8;
    let size = 25;
    let batches = events.div_ceil(workers * size);
    let user = token("soak-user", "events:write");
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..workers)
        .map(|w| {
            let done = Arc::clone(&done);
            tokio::spawn(client(
                stack.stack.url(),
                user.clone(),
                w,
                batches,
                size,
                now,
                done,
            ))
        })
        .collect();
    // One 5-second outage once a fifth of the requests are through, while clients are busy.
    while done.load(Ordering::SeqCst) < workers * batches / 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outage.set_down(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    outage.set_down(false);
    let mut acked = BTreeSet::new();
    let mut rejected = BTreeSet::new();
    let (mut retries, mut requests) = (0, 0);
    for c in clients {
        let c = c.await.expect("client");
        acked.extend(c.acked);
        rejected.extend(c.rejected);
        retries += c.retries;
        requests += c.requests;
    }
    let sent = workers * batches * size;
    let send_time = started.elapsed();
    eprintln!(
        "soak: {sent} events sent in {:.0} s, {} acknowledged; waiting for the pipeline",
        send_time.as_secs_f64(),
        acked.len()
    );

    // 1. Every acknowledged event is stored exactly once (the key is the event); nothing rejected is.
    let ddb_items = |table: String| {
        let direct = direct.clone();
        async move { scan_all(&direct, &table).await }
    };
    // Bounded: the pipeline must drain within this (the emulator is far slower than AWS).
    let deadline = Instant::now() + Duration::from_secs(300 + (events / 20) as u64);
    // Wait on the table's item count (cheap), then scan once: a scan of the whole table on the
    // single-threaded emulator per poll would slow the pipeline it waits for.
    let ddb = aws_sdk_dynamodb::Client::new(&direct);
    let mut last_report = Instant::now();
    loop {
        let count = ddb
            .describe_table()
            .table_name(&stack.names.events_table)
            .send()
            .await
            .ok()
            .and_then(|t| t.table.and_then(|t| t.item_count))
            .unwrap_or(0) as usize;
        if count >= acked.len() || Instant::now() > deadline {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "soak: {count} of {} acknowledged events stored after {:.0} s",
                acked.len(),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Faults stayed on while the events were stored (and, meanwhile, counted and forwarded);
    // off now, so that the checks read a settled pipeline.
    let injected = faults.faults_injected();
    let requests_under_faults: u64 = faults.counts.lock().unwrap().values().sum();
    faults.set_plan(FaultPlan::default());
    let stored: BTreeMap<String, HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> =
        ddb_items(stack.names.events_table.clone())
            .await
            .into_iter()
            .map(|i| (i["id"].as_s().unwrap().clone(), i))
            .collect();
    let stored_ids: BTreeSet<String> = stored.keys().cloned().collect();
    let missing: Vec<_> = acked.difference(&stored_ids).take(5).collect();
    let extra: Vec<_> = stored_ids.difference(&acked).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored events differ from the acknowledged ones: {} acknowledged, {} stored; missing e.g. {missing:?}, not acknowledged e.g. {extra:?}",
        acked.len(),
        stored_ids.len()
    );
    assert!(
        rejected.is_disjoint(&stored_ids),
        "a rejected event was stored"
    );

    // 2. Counts equal the distinct stored events, for every key.
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for item in stored.values() {
        let kind = item["type"].as_s().unwrap();
        let at = count::counted_time(
            telemetry_shared::time::parse(item["timestamp"].as_s().unwrap()).unwrap(),
            telemetry_shared::time::parse(item["receivedAt"].as_s().unwrap()).unwrap(),
        );
        for g in Granularity::ALL {
            for k in [kind.as_str(), count::ALL_TYPES] {
                *expected
                    .entry((
                        count::partition_key("prod", k, g),
                        count::format_bucket(g.bucket_start(at)),
                    ))
                    .or_default() += 1;
            }
        }
    }
    let counted = loop {
        let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
        for item in ddb_items(stack.names.counts_table.clone()).await {
            let pk = item["pk"].as_s().unwrap().clone();
            // Event counters only: not the rate limiter's windows, nor unique users' markers
            // and counters (`seen#...`, `...#users-<period>`, `...#new-day`).
            if !["#minute", "#hour", "#day"].iter().any(|g| pk.ends_with(g)) {
                continue;
            }
            let bucket = item["sk"]
                .as_s()
                .unwrap()
                .split('#')
                .next()
                .unwrap()
                .to_string();
            *got.entry((pk, bucket)).or_default() +=
                item["count"].as_n().unwrap().parse::<u64>().unwrap();
        }
        if got == expected || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(counted, expected, "counts differ from the stored events");

    // 3. Every routed event reached its queue: the standard one at least once, FIFO exactly once.
    let routed = |pred: fn(&str) -> bool| -> BTreeSet<String> {
        stored
            .values()
            .filter(|i| pred(i["type"].as_s().unwrap()))
            .map(|i| {
                format!(
                    "{}/{}",
                    i["userId"].as_s().unwrap(),
                    i["id"].as_s().unwrap()
                )
            })
            .collect()
    };
    let want_game = routed(|t| t.starts_with("game."));
    let want_errors = routed(|t| t.ends_with(".error"));
    let game = game_subscriber.finish(&want_game, deadline).await;
    let errors = errors_subscriber.finish(&want_errors, deadline).await;
    let got_game: BTreeSet<String> = game.keys().cloned().collect();
    let got_errors: BTreeSet<String> = errors.keys().cloned().collect();
    assert_eq!(got_game, want_game, "standard queue misses events");
    assert_eq!(got_errors, want_errors, "FIFO queue misses events");
    let fifo_dupes = errors.values().filter(|n| **n > 1).count();
    assert_eq!(fifo_dupes, 0, "the FIFO queue received duplicates");
    let standard_dupes: u32 = game.values().map(|n| n - 1).sum();

    let forwarded = game.values().sum::<u32>() + errors.values().sum::<u32>();
    println!(
        "soak: sent {sent} events in {requests} requests ({} invalid), acknowledged {}, stored {}, counted {}, \
         forwarded {forwarded} ({} standard duplicates, 0 FIFO duplicates), client retries {retries}, \
         AWS requests {}, faults injected {injected} in {requests_under_faults} requests while on ({:.1}%) {:?}, one 5 s outage; sending took {:.1} s, all invariants held after {:.1} s",
        rejected.len(),
        acked.len(),
        stored.len(),
        counted
            .get(&(
                count::partition_key("prod", "*", Granularity::Day),
                count::format_bucket(Granularity::Day.bucket_start(now))
            ))
            .copied()
            .unwrap_or(0)
            + counted
                .iter()
                .filter(|((pk, b), _)| pk.ends_with("#*#day")
                    && *b != count::format_bucket(Granularity::Day.bucket_start(now)))
                .map(|(_, c)| c)
                .sum::<u64>(),
        standard_dupes,
        faults.counts.lock().unwrap().values().sum::<u64>(),
        100.0 * injected as f64 / requests_under_faults.max(1) as f64,
        faults.faults.lock().unwrap(),
        send_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        injected > 0,
        "no fault was injected: the soak proved nothing"
    );
    assert!(retries > 0, "the outage made no client retry");
}
