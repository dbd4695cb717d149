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

/// The owned parts of an arbitrary stored event; [`Parts::event`] borrows them.
#[derive(Debug, Clone)]
struct Parts {
    id: String,
    kind: String,
    user_id: String,
    timestamp: String,
    received_at: String,
    environment: String,
    origin: Option<String>,
    session_id: Option<String>,
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

fn parts() -> impl Strategy<Value = Parts> {
    (
        "[A-Za-z0-9_-]{1,64}",
        "[A-Za-z0-9_.:-]{1,128}",
        "[A-Za-z0-9_.:@|-]{1,128}",
        time(),
        time(),
        "[a-z0-9_-]{1,32}",
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(data()),
    )
        .prop_map(
            |(id, kind, user_id, timestamp, received_at, environment, origin, session_id, data)| {
                Parts {
                    id,
                    kind,
                    user_id,
                    timestamp,
                    received_at,
                    environment,
                    origin,
                    session_id,
                    data,
                }
            },
        )
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
    fn the_kinesis_record_is_serdes_bytes_and_round_trips(p in parts()) {
        let e = p.event();
        let encoded = record::encode(&e);
        prop_assert_eq!(&encoded.data, &serde_json::to_vec(&e).unwrap());
        prop_assert_eq!(record::decode(&encoded.data).unwrap(), e);
    }

    #[test]
    fn the_dynamodb_item_and_stream_image_round_trip_every_field(p in parts(), ttl in proptest::option::of(1i64..10_000_000)) {
        let e = p.event();
        let item = event_table::to_item(&e, ttl);
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
    fn the_api_answers_what_the_stream_carries(p in parts()) {
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
