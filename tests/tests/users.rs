//! Exact unique users end to end: ingest → store → DynamoDB stream → post-process (first-seen
//! markers in the counts table, on the emulator) → `GET /v1/users`, compared with figures this
//! test computes itself from what it sent — and a revenue metric by currency beside them
//! (`/v1/metrics/{id}/values`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};
use telemetry_e2e::{TestStack, token};
use telemetry_shared::aws::count_table::CountTable;
use telemetry_shared::ports::MarkerStore;
use telemetry_shared::users::{Marker, Period};

const TYPES: [&str; 4] = ["game.start", "game.end", "shop.view", "shop.buy"];
const ENVIRONMENTS: [&str; 2] = ["prod", "staging"];

fn day(t: DateTime<Utc>) -> NaiveDate {
    t.date_naive()
}

/// The bucket start of `t`, computed here with chrono, not with the code under test.
fn start(t: DateTime<Utc>, granularity: &str) -> String {
    let d = day(t);
    let first = match granularity {
        "day" => d,
        "week" => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
        _ => NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap(),
    };
    Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).unwrap())
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `GET /v1/users` as {bucket start: (active, new)}.
async fn users(stack: &TestStack, query: &str) -> BTreeMap<String, (u64, Option<u64>)> {
    let reader = token("analyst", "counts:read");
    let (status, body) = stack.get(&reader, &format!("/v1/users?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().to_string(),
                (b["active"].as_u64().unwrap(), b["new"].as_u64()),
            )
        })
        .collect()
}

/// One event sent: (user, environment, type, timestamp, body).
struct Sent {
    user: String,
    environment: &'static str,
    kind: &'static str,
    at: DateTime<Utc>,
    event: Value,
    /// The amount of a purchase, in cents, and its currency.
    cents: u64,
    currency: &'static str,
}

/// Cents as the decimal the API answers: `12.3`, `12`.
fn decimal(cents: u64) -> String {
    match cents % 100 {
        0 => format!("{}", cents / 100),
        c if c % 10 == 0 => format!("{}.{}", cents / 100, c / 10),
        c => format!("{}.{c:02}", cents / 100),
    }
}

/// Revenue per day: {day: (count, sum, {currency: (count, sum)})}, from the metric's answer.
type Revenue = BTreeMap<String, (u64, String, BTreeMap<String, (u64, String)>)>;

async fn revenue(stack: &TestStack, range: &str) -> Revenue {
    let reader = token("analyst", "counts:read");
    let path = format!("/v1/metrics/revenue/values?granularity=day&{range}");
    let (status, body) = stack.get(&reader, &path).await;
    assert_eq!(status, 200, "{body}");
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["skipped"], 0, "{b}");
            let values = b["values"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        (v["count"].as_u64().unwrap(), v["sum"].to_string()),
                    )
                })
                .collect();
            (
                b["start"].as_str().unwrap().to_string(),
                (b["count"].as_u64().unwrap(), b["sum"].to_string(), values),
            )
        })
        .collect()
}

/// The same, computed here from what was sent.
fn expected_revenue(sent: &[Sent]) -> Revenue {
    type Cents = (u64, u64, BTreeMap<String, (u64, u64)>);
    let mut days: BTreeMap<String, Cents> = BTreeMap::new();
    for s in sent
        .iter()
        .filter(|s| s.environment == "prod" && s.kind == "shop.buy")
    {
        let d = days.entry(start(s.at, "day")).or_default();
        d.0 += 1;
        d.1 += s.cents;
        let c = d.2.entry(format!("\"{}\"", s.currency)).or_default();
        c.0 += 1;
        c.1 += s.cents;
    }
    days.into_iter()
        .map(|(day, (n, cents, by))| {
            let by = by
                .into_iter()
                .map(|(k, (n, c))| (k, (n, decimal(c))))
                .collect();
            (day, (n, decimal(cents), by))
        })
        .collect()
}

#[tokio::test]
async fn two_thousand_events_from_150_users_give_exact_active_and_new_users() {
    let stack = TestStack::start().await;
    // Revenue by currency in prod, defined before anything is sent; it takes effect at
    // `effectiveAt` (60 s on the test stack), so events are sent after that.
    let admin = token("ops", "admin");
    let (status, metric) = stack
        .put(
            &admin,
            "/v1/metrics/revenue",
            &json!({"type": "shop.buy", "sum": "data.amount", "by": "data.currency", "environment": "prod"}),
        )
        .await;
    assert_eq!(status, 201, "{metric}");
    let effective = telemetry_shared::time::parse(metric["effectiveAt"].as_str().unwrap()).unwrap();
    // The stream's creation times have whole seconds: start a second after it.
    let wait = (effective + Duration::seconds(1) - Utc::now()).max(Duration::zero());
    tokio::time::sleep(wait.to_std().unwrap()).await;
    let now = Utc::now();
    let mut rng = fastrand::Rng::with_seed(12);
    let mut sent = Vec::new();
    for i in 0..2000 {
        let user = format!("player-{}", rng.usize(0..150));
        let environment = ENVIRONMENTS[usize::from(rng.u8(0..10) < 3)];
        let kind = TYPES[rng.usize(0..TYPES.len())];
        // Three days: today, yesterday and the day before, by the client's timestamp.
        let at = now - Duration::days(rng.i64(0..3)) - Duration::minutes(rng.i64(0..60));
        let at = at.min(now);
        let cents = rng.u64(1..100_000);
        let currency = ["USD", "EUR"][rng.usize(0..2)];
        let mut event = json!({
            "id": format!("u-{i}"), "type": kind, "environment": environment,
            "timestamp": telemetry_shared::time::format(at),
        });
        if kind == "shop.buy" {
            event["data"] = json!({"amount": cents as f64 / 100.0, "currency": currency});
        }
        sent.push(Sent {
            cents,
            currency,
            event,
            user,
            environment,
            kind,
            at,
        });
    }
    // Each user sends their own events (the user is the token's subject).
    let mut by_user: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for s in &sent {
        by_user.entry(&s.user).or_default().push(&s.event);
    }
    for (user, events) in &by_user {
        let t = token(user, "events:write");
        for chunk in events.chunks(100) {
            let (status, body) = stack.post_events(&t, &json!({ "events": chunk })).await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(
                body["accepted"].as_u64(),
                Some(chunk.len() as u64),
                "{body}"
            );
        }
    }
    // ~12,000 first-seen markers, one PutItem each, on a single-threaded emulator.
    stack
        .settle_within(std::time::Duration::from_secs(300))
        .await;

    // What the figures must be, from what was sent.
    let expected = |kind: Option<&str>, granularity: &str| {
        let mut active: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for s in sent
            .iter()
            .filter(|s| s.environment == "prod" && kind.is_none_or(|k| k == s.kind))
        {
            active
                .entry(start(s.at, granularity))
                .or_default()
                .insert(&s.user);
        }
        let users: BTreeSet<&str> = active.values().flatten().copied().collect();
        let today = start(now, "day");
        active
            .into_iter()
            .map(|(bucket, set)| {
                // Everything was received today: every user is new today, nobody before.
                let new = (granularity == "day").then(|| {
                    if bucket == today {
                        users.len() as u64
                    } else {
                        0
                    }
                });
                (bucket, (set.len() as u64, new))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let range = format!(
        "from={}&to={}",
        telemetry_shared::time::format(now - Duration::days(40)),
        telemetry_shared::time::format(now)
    );
    let query_for = |kind: Option<&str>, granularity: &str| match kind {
        Some(k) => format!("environment=prod&type={k}&granularity={granularity}&{range}"),
        None => format!("environment=prod&granularity={granularity}&{range}"),
    };
    let all = [
        (None, "day"),
        (None, "week"),
        (None, "month"),
        (Some("shop.buy"), "day"),
        (Some("game.start"), "week"),
    ];
    for (kind, granularity) in all {
        let query = query_for(kind, granularity);
        let got = users(&stack, &query).await;
        assert_eq!(got, expected(kind, granularity), "{query}");
    }
    let want = expected_revenue(&sent);
    assert_eq!(revenue(&stack, &range).await, want);
    assert_eq!(want.len(), 3, "three days of purchases");
    let day_totals: u64 = expected(None, "day").values().map(|v| v.0).sum();
    assert!(day_totals > 150, "three days of many users: {day_totals}");

    // A client re-sends 100 of its events, some without `timestamp` (received now, so counted
    // now): the same ids are stored once and no figure moves.
    let (user, events) = by_user.iter().max_by_key(|(_, e)| e.len()).unwrap();
    let again: Vec<Value> = events
        .iter()
        .take(100)
        .enumerate()
        .map(|(i, e)| {
            let mut e = (*e).clone();
            if i % 2 == 0 {
                e.as_object_mut().unwrap().remove("timestamp");
            }
            e
        })
        .collect();
    let (status, _) = stack
        .post_events(&token(user, "events:write"), &json!({ "events": again }))
        .await;
    assert_eq!(status, 202);
    // ~12,000 first-seen markers, one PutItem each, on a single-threaded emulator.
    stack
        .settle_within(std::time::Duration::from_secs(300))
        .await;
    for (kind, granularity) in all {
        let query = query_for(kind, granularity);
        let got = users(&stack, &query).await;
        assert_eq!(
            got,
            expected(kind, granularity),
            "after the re-send: {query}"
        );
    }
    assert_eq!(revenue(&stack, &range).await, want, "after the re-send");
}

/// The marker write against the emulator: created once; a second writer learns the first
/// `by` (from `ALL_OLD`, or the consistent read when an implementation returns no item).
#[tokio::test]
async fn a_marker_is_created_once_and_answers_with_its_creator() {
    let stack = TestStack::start().await;
    let table = CountTable::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack.names.counts_table.clone(),
        8,
    );
    let marker = Marker {
        environment: "prod".into(),
        kind: "*".into(),
        period: Some((Period::Day, "2026-12-03T00:00:00Z".into())),
        user: "user#with#hashes".into(),
    };
    let first = table
        .first_seen(&marker, "shard-a#01", Some(2_000_000_000))
        .await
        .unwrap();
    assert_eq!(first, "shard-a#01");
    let second = table
        .first_seen(&marker, "shard-b#02", Some(2_000_000_000))
        .await
        .unwrap();
    assert_eq!(second, "shard-a#01", "the marker keeps its creator");
}
