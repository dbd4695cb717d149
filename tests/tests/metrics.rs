//! An admin-defined metric end to end on the emulator: a breakdown with 150 distinct values
//! keeps 100 of them (the registry item decides, across both shards) and counts the rest under
//! `(other)`; its hours sum to its day, value by value; a string `sum` value is counted as
//! skipped; only `admin` defines; events stored before `effectiveAt` are not measured.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use telemetry_e2e::{TestStack, token};

/// (count, sum) per breakdown value, or for the totals under the key `""`, per bucket start.
type Figures = BTreeMap<String, BTreeMap<String, (u64, u64)>>;

/// `GET /v1/metrics/crashes/values` per bucket: totals under `""`, and the skipped total.
async fn values(stack: &TestStack, granularity: &str, range: &str) -> (Figures, u64) {
    let reader = token("analyst", "counts:read");
    let path = format!("/v1/metrics/crashes/values?granularity={granularity}&{range}");
    let (status, body) = stack.get(&reader, &path).await;
    assert_eq!(status, 200, "{body}");
    let figure = |f: &Value| {
        // The sums are of whole milliseconds: integers, exactly.
        let sum = f["sum"].to_string().parse::<u64>().expect("an integer sum");
        (f["count"].as_u64().unwrap(), sum)
    };
    let mut skipped = 0;
    let mut out = Figures::new();
    for b in body["buckets"].as_array().unwrap() {
        skipped += b["skipped"].as_u64().unwrap();
        let mut figures: BTreeMap<String, (u64, u64)> = b["values"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(v, f)| (v.clone(), figure(f)))
            .collect();
        figures.insert(String::new(), figure(b));
        out.insert(b["start"].as_str().unwrap().to_string(), figures);
    }
    (out, skipped)
}

/// Adds the hours' figures per day, value by value.
fn hours_per_day(hours: &Figures) -> Figures {
    let mut days = Figures::new();
    for (start, figures) in hours {
        let day = format!("{}T00:00:00Z", &start[..10]);
        for (value, (count, sum)) in figures {
            let d = days
                .entry(day.clone())
                .or_default()
                .entry(value.clone())
                .or_default();
            d.0 += count;
            d.1 += sum;
        }
    }
    days
}

#[tokio::test]
async fn a_breakdown_of_150_values_keeps_100_and_its_hours_sum_to_its_day() {
    let stack = TestStack::start().await;
    let definition = json!({"type": "app.crash", "sum": "data.ms", "by": "data.build"});
    // Only admin defines.
    for scope in ["counts:read", "events:write events:read counts:read"] {
        let (status, body) = stack
            .put(&token("someone", scope), "/v1/metrics/crashes", &definition)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
    }
    let (status, body) = stack
        .delete(&token("someone", "counts:read"), "/v1/metrics/crashes")
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, metric) = stack
        .put(&token("ops", "admin"), "/v1/metrics/crashes", &definition)
        .await;
    assert_eq!(status, 201, "{metric}");
    let effective = telemetry_shared::time::parse(metric["effectiveAt"].as_str().unwrap()).unwrap();

    // Stored before `effectiveAt`: not measured (their value would otherwise be admitted).
    let sender = token("tester", "events:write");
    let early: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("early-{i}"), "type": "app.crash", "data": {"build": "early", "ms": 1}}))
        .collect();
    let (status, body) = stack
        .post_events(&sender, &json!({ "events": early }))
        .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(20)),
        "{body}"
    );
    stack.settle().await;
    assert!(
        Utc::now() < effective,
        "the early events were stored before effectiveAt"
    );
    let range = format!(
        "from={}&to={}",
        telemetry_shared::time::format(Utc::now() - Duration::days(2)),
        telemetry_shared::time::format(Utc::now() + Duration::days(1))
    );
    assert_eq!(values(&stack, "day", &range).await, (Figures::new(), 0));

    // The stream's creation times have whole seconds: send a second after `effectiveAt`.
    let wait = (effective + Duration::seconds(1) - Utc::now()).max(Duration::zero());
    tokio::time::sleep(wait.to_std().unwrap()).await;
    let now = Utc::now();
    let mut rng = fastrand::Rng::with_seed(150);
    // 150 builds × 3 crashes with a whole number of ms each, over the last three hours, plus 30
    // crashes whose `ms` is a string (skipped: counted, never summed).
    let mut events = Vec::new();
    let mut sent: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let at = |rng: &mut fastrand::Rng| {
        let t: DateTime<Utc> = now - Duration::minutes(rng.i64(0..180));
        telemetry_shared::time::format(t)
    };
    for k in 0..150 {
        for j in 0..3 {
            let ms = rng.u64(1..100_000);
            let build = format!("b-{k}");
            let s = sent.entry(format!("\"{build}\"")).or_default();
            s.0 += 1;
            s.1 += ms;
            events.push(json!({"id": format!("c-{k}-{j}"), "type": "app.crash",
                "timestamp": at(&mut rng), "data": {"build": build, "ms": ms}}));
        }
    }
    for i in 0..30 {
        events.push(
            json!({"id": format!("s-{i}"), "type": "app.crash", "timestamp": at(&mut rng),
            "data": {"build": format!("b-{}", i * 5), "ms": "12"}}),
        );
    }
    rng.shuffle(&mut events);
    for chunk in events.chunks(100) {
        let (status, body) = stack
            .post_events(&sender, &json!({ "events": chunk }))
            .await;
        assert_eq!(
            (status, body["accepted"].as_u64()),
            (202, Some(chunk.len() as u64)),
            "{body}"
        );
    }
    stack.settle().await;

    // The registry admitted exactly 100 of the 150 values, once for both shards.
    let registry = aws_sdk_dynamodb::Client::new(&stack.sdk)
        .get_item()
        .table_name(&stack.names.counts_table)
        .key("pk", AttributeValue::S("metric#crashes#values".into()))
        .key("sk", AttributeValue::S("values".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let admitted: BTreeSet<String> = match registry.item().and_then(|i| i.get("vals")) {
        Some(AttributeValue::Ss(v)) => v.iter().cloned().collect(),
        other => panic!("no registry: {other:?}"),
    };
    assert_eq!(admitted.len(), 100, "{admitted:?}");
    assert!(
        admitted.iter().all(|v| sent.contains_key(v)),
        "only values sent: {admitted:?}"
    );

    // What the day's figures must be: each admitted value as sent, the rest under (other).
    let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (value, (count, sum)) in &sent {
        let key = if admitted.contains(value) {
            value.as_str()
        } else {
            "(other)"
        };
        let w = want.entry(key.to_string()).or_default();
        w.0 += count;
        w.1 += sum;
        let t = want.entry(String::new()).or_default();
        t.0 += count;
        t.1 += sum;
    }
    assert_eq!(want[""].0, 450);
    assert_eq!(want["(other)"].0, 150, "50 values × 3 under (other)");

    let (days, skipped) = values(&stack, "day", &range).await;
    assert_eq!(skipped, 30, "the string values are skipped, not summed");
    let mut all_days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for figures in days.values() {
        for (value, (count, sum)) in figures {
            let a = all_days.entry(value.clone()).or_default();
            a.0 += count;
            a.1 += sum;
        }
    }
    assert_eq!(all_days, want, "day figures as sent");
    assert!(!all_days.contains_key("\"early\""));

    let (hours, hour_skipped) = values(&stack, "hour", &range).await;
    assert!(
        hours.len() >= 3,
        "three hours of crashes: {:?}",
        hours.keys()
    );
    assert_eq!(hour_skipped, 30);
    assert_eq!(
        hours_per_day(&hours),
        days,
        "hours sum to their day, value by value"
    );
}
