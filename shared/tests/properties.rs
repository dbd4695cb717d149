//! Property tests: hostile input never panics the parsers, codecs round-trip, and the counting
//! and routing arithmetic agree with naive references.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use telemetry_shared::batch::{self, Enrichment};
use telemetry_shared::count::{self, CountedEvent, Granularity};
use telemetry_shared::event::{IncomingEvent, RejectCode};
use telemetry_shared::route::glob_matches;
use telemetry_shared::{record, sequence};

fn who() -> Enrichment<'static> {
    Enrichment {
        user_id: "prop-user",
        received_at: Utc.with_ymd_and_hms(2026, 11, 26, 13, 0, 0).unwrap(),
        idempotency_key: Some("prop-key"),
    }
}

/// What serde's derive reads from an event object: the reference for the hand-written reader.
#[derive(Debug, serde::Deserialize)]
struct ReferenceEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    environment: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    origin: Option<Cow<'a, str>>,
    #[serde(rename = "sessionId", borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{0,8}|type|id|timestamp|data|events", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_ingest_parser(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = batch::prepare(text, &who());
        }
        let _ = record::decode(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_and_every_event_is_accounted_for(value in json_value()) {
        let text = value.to_string();
        if let Ok(prepared) = batch::prepare(&text, &who()) {
            let n = match value.get("events").and_then(|e| e.as_array()) {
                Some(events) => events.len(),
                None => 1,
            };
            // Each event is either accepted or rejected with a reason, never lost.
            prop_assert_eq!(prepared.records.len() + prepared.rejected.len(), n);
            prop_assert_eq!(prepared.records.len(), prepared.ids.len());
            for r in &prepared.records {
                let e = record::decode(&r.data).expect("accepted events decode");
                prop_assert_eq!(e.user_id.as_ref(), "prop-user");
            }
        }
    }

    #[test]
    fn the_event_reader_agrees_with_serde(
        fields in prop::collection::vec(
            ("type|id|timestamp|environment|origin|sessionId|data|other", json_value()),
            0..8,
        ),
        pretty in any::<bool>(),
        escaped_key in any::<bool>(),
    ) {
        // Built by hand so that keys may repeat, as clients may send them.
        let members: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), if pretty { serde_json::to_string_pretty(v).unwrap() } else { v.to_string() }))
            .collect();
        let mut text = format!("{{{}}}", members.join(if pretty { " ,\n " } else { "," }));
        if escaped_key {
            text = text.replace("\"type\":", "\"t\\u0079pe\":");
        }
        let reference = serde_json::from_str::<ReferenceEvent<'_>>(&text);
        match (IncomingEvent::from_json(&text), reference) {
            (Ok(got), Ok(want)) => {
                prop_assert_eq!(got.kind, want.kind);
                prop_assert_eq!(got.id, want.id);
                prop_assert_eq!(got.timestamp, want.timestamp);
                prop_assert_eq!(got.environment, want.environment);
                prop_assert_eq!(got.origin, want.origin);
                prop_assert_eq!(got.session_id, want.session_id);
                prop_assert_eq!(got.data, want.data.map(serde_json::value::RawValue::get));
            }
            (Err(got), Err(_)) => prop_assert_eq!(got.code, RejectCode::InvalidEvent),
            (got, want) => prop_assert!(false, "{text}: reader {got:?}, serde {want:?}"),
        }
    }

    #[test]
    fn valid_events_round_trip_through_the_record_codec(
        kind in "[A-Za-z0-9_.:-]{1,128}",
        id in "[A-Za-z0-9_-]{1,64}",
        env in "[a-z0-9_-]{1,32}",
        data in json_value(),
    ) {
        let data = serde_json::json!({ "payload": data });
        let data_text = data.to_string();
        let body = serde_json::json!({"type": kind, "id": id, "environment": env, "data": data}).to_string();
        let prepared = batch::prepare(&body, &who()).unwrap();
        prop_assert_eq!(prepared.records.len(), 1);
        let e = record::decode(&prepared.records[0].data).unwrap();
        prop_assert_eq!(e.kind.as_ref(), kind.as_str());
        prop_assert_eq!(e.id.as_ref(), id.as_str());
        prop_assert_eq!(e.environment.as_ref(), env.as_str());
        // `data` is kept as the client's text, byte for byte.
        prop_assert_eq!(e.data.unwrap().get(), data_text.as_str());
    }

    #[test]
    fn buckets_contain_their_time_and_start_on_a_boundary(secs in 0i64..4_102_444_800, g in 0usize..3) {
        let g = Granularity::ALL[g];
        let t = DateTime::from_timestamp(secs, 0).unwrap();
        let start = g.bucket_start(t);
        prop_assert!(start <= t && t < start + g.length());
        prop_assert_eq!(start.timestamp() % g.length().num_seconds(), 0);
        prop_assert_eq!(count::bucket_span(g, start, t), 1);
    }

    #[test]
    fn aggregation_equals_a_naive_count(
        events in prop::collection::vec((0usize..4, 0i64..200_000, 0usize..2), 0..60)
    ) {
        let types = ["a", "b", "c", "d"];
        let envs = ["prod", "dev"];
        let base = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        let counted: Vec<CountedEvent<'_>> = events
            .iter()
            .enumerate()
            .map(|(i, &(t, s, e))| CountedEvent {
                seq: sequence::padded(&(i + 1).to_string()).unwrap(),
                environment: envs[e],
                kind: types[t],
                at: base + chrono::Duration::seconds(s),
            })
            .collect();
        let mut naive: BTreeMap<(String, String), u64> = BTreeMap::new();
        for e in &counted {
            for g in Granularity::ALL {
                let bucket = count::format_bucket(g.bucket_start(e.at));
                for kind in [e.kind, count::ALL_TYPES] {
                    *naive.entry((count::partition_key(e.environment, kind, g), bucket.clone())).or_default() += 1;
                }
            }
        }
        let mut aggregated: BTreeMap<(String, String), u64> = BTreeMap::new();
        for u in count::aggregate(&counted) {
            aggregated.insert((u.id.pk.clone(), u.id.bucket.clone()), u.seqs.len() as u64);
        }
        prop_assert_eq!(aggregated, naive);
    }

    #[test]
    fn glob_matching_agrees_with_a_reference(pattern in "[ab.*]{0,8}", text in "[ab.]{0,10}") {
        prop_assert_eq!(glob_matches(&pattern, &text), reference_glob(pattern.as_bytes(), text.as_bytes()));
    }

    #[test]
    fn sequence_order_is_numeric_order(a in any::<u128>(), b in any::<u128>()) {
        let (sa, sb) = (a.to_string(), b.to_string());
        prop_assert_eq!(sequence::cmp(&sa, &sb), a.cmp(&b));
        let (pa, pb) = (sequence::padded(&sa).unwrap(), sequence::padded(&sb).unwrap());
        prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
    }
}

/// Exponential but obviously right: `*` tries every split.
fn reference_glob(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|i| reference_glob(rest, &t[i..])),
        Some((c, rest)) => t.first() == Some(c) && reference_glob(rest, &t[1..]),
    }
}
