//! The stored event has one definition — `StoredEvent`'s serde attributes — and every codec
//! agrees with it: the Kinesis record (a hand encoder, for ingest's speed), the `events` item
//! and the table's stream image (serde_dynamo), and the API's JSON. Arbitrary events, every
//! field set or absent, must round-trip through each and be written as serde writes them.

use std::borrow::Cow;
use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::value::RawValue;
use telemetry_shared::aws::event_table;
use telemetry_shared::event::{self, Data, SCHEMA_VERSION, StoredEvent};
use telemetry_shared::record;

/// The owned parts of an arbitrary stored event, `Arbitrary` derived: a field added here is
/// generated at once (any value of its type unless it needs a valid one); [`Parts::event`]
/// borrows them.
#[derive(Debug, Clone, proptest_derive::Arbitrary)]
struct Parts {
    #[proptest(regex = "[A-Za-z0-9_-]{1,64}")]
    id: String,
    #[proptest(regex = "[A-Za-z0-9_.:-]{1,128}")]
    kind: String,
    #[proptest(regex = "[A-Za-z0-9_.:@|-]{1,128}")]
    user_id: String,
    #[proptest(strategy = "time()")]
    timestamp: String,
    #[proptest(strategy = "time()")]
    received_at: String,
    #[proptest(regex = "[a-z0-9_-]{1,32}")]
    environment: String,
    origin: Option<String>,
    session_id: Option<String>,
    #[proptest(strategy = "proptest::option::of(data())")]
    data: Option<Box<RawValue>>,
}

impl Parts {
    /// Every field, no `..`: a field added to `StoredEvent` fails to compile here until the
    /// strategy generates it.
    fn event(&self) -> StoredEvent<'_> {
        StoredEvent {
            schema_version: SCHEMA_VERSION,
            id: Cow::Borrowed(&self.id),
            kind: Cow::Borrowed(&self.kind),
            user_id: Cow::Borrowed(&self.user_id),
            timestamp: Cow::Borrowed(&self.timestamp),
            received_at: Cow::Borrowed(&self.received_at),
            environment: Cow::Borrowed(&self.environment),
            origin: self.origin.as_deref().map(Cow::Borrowed),
            session_id: self.session_id.as_deref().map(Cow::Borrowed),
            data: self.data.as_deref().map(Data),
        }
    }
}

/// Canonical times from 1970 to 9999.
fn time() -> impl Strategy<Value = String> {
    (0i64..253_402_300_799, 0u32..1000).prop_map(|(secs, ms)| {
        telemetry_shared::time::format(Utc.timestamp_opt(secs, ms * 1_000_000).unwrap())
    })
}

/// `data` objects: nested JSON, numbers beyond f64, escapes and non-ASCII text.
fn data() -> impl Strategy<Value = Box<RawValue>> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("1e999".to_string()),
        Just("123456789012345678901234567890123456789012".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("\\PC{0,6}", inner), 0..4).prop_map(|kv| {
                let members: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    });
    prop::collection::vec(("\\PC{0,6}", value), 0..4).prop_map(|kv| {
        let members: Vec<String> = kv
            .into_iter()
            .map(|(k, v)| format!("{} : {v}", serde_json::to_string(&k).unwrap()))
            .collect();
        RawValue::from_string(format!("{{ {} }}", members.join(", "))).unwrap()
    })
}

/// The event with `data` as the text DynamoDB keeps.
fn as_text<'a>(e: &StoredEvent<'a>) -> StoredEvent<'a, Cow<'a, str>> {
    e.clone().map_data(|d| Cow::Borrowed(d.get()))
}

/// The JSON names serde writes for `e`.
fn serde_names(e: &StoredEvent<'_>) -> BTreeSet<String> {
    // Through raw values: `data` may hold numbers no `serde_json::Value` can.
    let json = serde_json::to_string(e).unwrap();
    let members: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_str(&json).unwrap();
    members.into_keys().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_kinesis_record_is_serdes_bytes_and_round_trips(p in any::<Parts>()) {
        let e = p.event();
        let encoded = record::encode(&e);
        prop_assert_eq!(&encoded.data, &serde_json::to_vec(&e).unwrap());
        prop_assert_eq!(record::decode(&encoded.data).unwrap(), e);
    }

    #[test]
    fn the_dynamodb_item_and_stream_image_round_trip_every_field(p in any::<Parts>(), ttl in proptest::option::of(1i64..10_000_000)) {
        let e = p.event();
        let item = event_table::to_item(&e, ttl);
        // The hand-written item is serde's.
        prop_assert_eq!(&item, &event_table::to_item_by_serde(&e, ttl));
        prop_assert_eq!(event_table::from_item(item.clone()).unwrap(), as_text(&e));
        let image = event_table::to_image(&e, ttl);
        prop_assert_eq!(event_table::from_image::<Cow<str>>(image).unwrap(), as_text(&e));
        // The item holds serde's fields, by serde's names, plus the keys and the TTL.
        let mut names = serde_names(&e);
        names.extend(["pk".to_string(), "sk".to_string()]);
        if ttl.is_some() {
            names.insert("expiresAt".into());
        }
        prop_assert_eq!(item.keys().cloned().collect::<BTreeSet<_>>(), names);
        // `data` is a string attribute holding the JSON text.
        if let Some(d) = &e.data {
            prop_assert_eq!(item["data"].as_s().unwrap(), d.get());
        }
    }

    #[test]
    fn the_api_answers_what_the_stream_carries(p in any::<Parts>()) {
        let e = p.event();
        let back = event_table::from_item(event_table::to_item(&e, None)).unwrap();
        let answered = event_table::to_json(&back).unwrap();
        let carried = record::encode(&e).data;
        prop_assert_eq!(answered.get().as_bytes(), carried.as_slice());
    }
}

#[test]
fn every_field_a_client_sends_is_a_stored_field_of_the_same_name() {
    let data = RawValue::from_string("{}".into()).unwrap();
    let full = Parts {
        id: "i".into(),
        kind: "t".into(),
        user_id: "u".into(),
        timestamp: "2026-11-26T13:00:00.000Z".into(),
        received_at: "2026-11-26T13:00:00.000Z".into(),
        environment: "prod".into(),
        origin: Some("o".into()),
        session_id: Some("s".into()),
        data: Some(data),
    };
    let stored = serde_names(&full.event());
    for name in event::incoming_field_names() {
        assert!(
            stored.contains(name),
            "clients send `{name}`, which is not stored by that name"
        );
    }
}

/// Timestamps a client may send: any year, any offset (to ±23:59), any precision.
fn client_time() -> impl Strategy<Value = String> {
    (
        0u32..=9999,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        prop_oneof![Just(String::new()), "\\.[0-9]{1,9}"],
        prop_oneof![
            Just("Z".to_string()),
            (any::<bool>(), 0u32..24, 0u32..60)
                .prop_map(|(plus, h, m)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
        ],
    )
        .prop_map(|(y, mo, d, h, mi, frac, off)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:00{frac}{off}")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// "202 means stored": every event ingest accepts decodes in store and forward (the
    /// Kinesis record) and in post-process (the item store writes, as its stream image).
    #[test]
    fn whatever_ingest_accepts_every_consumer_reads(
        timestamp in proptest::option::of(prop_oneof![client_time(), Just("0000-01-01T00:00:00+01:00".to_string()), Just("9999-12-31T23:30:00-01:00".to_string())]),
        origin in proptest::option::of(any::<String>()),
        session in proptest::option::of("\\PC{0,10}"),
        environment in proptest::option::of("[a-z0-9_-]{1,32}"),
        data in proptest::option::of(data()),
    ) {
        let mut event = serde_json::json!({"type": "prop.event"});
        if let Some(t) = &timestamp { event["timestamp"] = t.clone().into(); }
        if let Some(o) = &origin { event["origin"] = o.clone().into(); }
        if let Some(s) = &session { event["sessionId"] = s.clone().into(); }
        if let Some(e) = &environment { event["environment"] = e.clone().into(); }
        let mut body = event.to_string();
        if let Some(d) = &data {
            body.pop();
            body = format!("{body},\"data\":{}}}", d.get());
        }
        let who = telemetry_shared::batch::Enrichment {
            user_id: "prop-user",
            received_at: Utc.with_ymd_and_hms(2026, 11, 26, 13, 0, 0).unwrap(),
            idempotency_key: None,
        };
        let Ok(prepared) = telemetry_shared::batch::prepare(&body, &who) else {
            return Ok(());
        };
        for record in &prepared.records {
            let stored = record::decode(&record.data);
            prop_assert!(stored.is_ok(), "accepted, then undecodable: {body} -> {stored:?}");
            let stored = stored.unwrap();
            let image = event_table::to_image(&stored, Some(86_400));
            let read: Result<StoredEvent<'static, serde::de::IgnoredAny>, _> = event_table::from_image(image);
            prop_assert!(read.is_ok(), "post-process cannot read {body}");
            prop_assert!(read.unwrap().check().is_ok());
        }
    }
}
