//! Sample events of realistic size, for benchmarks and load generation.

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::kinesis::{KinesisEvent, KinesisEventRecord, KinesisRecord};
use serde_json::json;

/// Event types the samples cycle through.
pub const TYPES: [&str; 5] = [
    "game.level_completed",
    "game.purchase",
    "app.screen_view",
    "app.error",
    "net.latency",
];

/// One client event of about `bytes` bytes of JSON (`data` padded with a string).
pub fn client_event(i: usize, bytes: usize) -> serde_json::Value {
    let mut event = json!({
        "type": TYPES[i % TYPES.len()],
        "id": format!("evt-{i:08}"),
        "timestamp": "2026-11-26T13:44:16.123Z",
        "origin": "ios-app/4.2.0",
        "sessionId": format!("session-{}", i / 50),
        "data": {"level": i % 40, "score": i * 17, "device": {"model": "iPhone15,2", "os": "17.1"}, "tags": ["a", "b", "c"]},
    });
    let len = event.to_string().len();
    if bytes > len + 12 {
        event["data"]["pad"] = "x".repeat(bytes - len - 12).into();
    }
    event
}

/// A `POST /v1/events` body of `n` events of about `bytes` bytes each.
pub fn request_body(n: usize, bytes: usize) -> String {
    let events: Vec<_> = (0..n).map(|i| client_event(i, bytes)).collect();
    json!({ "events": events }).to_string()
}

/// A Kinesis batch of `n` stored events (about `bytes` bytes each) from 10 users.
pub fn kinesis_event(n: usize, bytes: usize) -> KinesisEvent {
    let received = chrono::Utc::now();
    let mut event = KinesisEvent::default();
    for i in 0..n {
        let user = format!("user-{}", i % 10);
        let who = crate::batch::Enrichment {
            user_id: &user,
            received_at: received,
            idempotency_key: None,
        };
        let body = client_event(i, bytes).to_string();
        let prepared = crate::batch::prepare(&body, &who).expect("sample event is valid");
        let r = prepared.records.into_iter().next().expect("one record");
        let mut data = Base64Data::default();
        *data = r.data;
        let mut kinesis = KinesisRecord::default();
        kinesis.data = data;
        kinesis.partition_key = r.partition_key;
        kinesis.sequence_number =
            format!("4959033827149025660855969253836157109592157598913{i:07}");
        let mut record = KinesisEventRecord::default();
        record.kinesis = kinesis;
        record.event_source = Some("aws:kinesis".into());
        event.records.push(record);
    }
    event
}

/// The JSON of a DynamoDB stream tumbling-window event with `n` INSERT records.
pub fn window_event_json(n: usize) -> String {
    let records: Vec<_> = (0..n)
        .map(|i| {
            let minute = i % 180;
            let (id, user) = (format!("evt-{i:08}"), format!("user-{}", i % 10));
            let timestamp = format!(
                "2026-11-26T{:02}:{:02}:16.123Z",
                10 + minute / 60,
                minute % 60
            );
            let data = client_event(i, 900)["data"].to_string();
            let data = serde_json::value::RawValue::from_string(data).expect("sample data is JSON");
            let event = crate::event::StoredEvent {
                schema_version: crate::event::SCHEMA_VERSION,
                id: id.as_str().into(),
                kind: TYPES[i % TYPES.len()].into(),
                user_id: user.as_str().into(),
                timestamp: timestamp.as_str().into(),
                received_at: "2026-11-26T13:44:16.123Z".into(),
                environment: "prod".into(),
                origin: None,
                session_id: None,
                data: Some(crate::event::Data(&data)),
            };
            let image = serde_json::to_value(crate::aws::event_table::to_image(&event, None))
                .expect("an image is JSON");
            json!({
                "eventID": format!("{i:032x}"), "eventName": "INSERT", "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1795700656,
                    "SequenceNumber": format!("{}", 111_100_000_000_000_000_000u128 + i as u128),
                    "SizeBytes": 1100, "StreamViewType": "NEW_IMAGE",
                    "Keys": {"pk": image["pk"], "sk": image["sk"]},
                    "NewImage": image,
                }
            })
        })
        .collect();
    json!({
        "Records": records,
        "window": {"start": "2026-11-26T13:44:00Z", "end": "2026-11-26T13:45:00Z"},
        "state": {}, "shardId": "shardId-00000001795700000000-0000000a",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/telemetry-events/stream/2026-11-26T00:00:00.000",
        "isFinalInvokeForWindow": false, "isWindowTerminatedEarly": false
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_have_the_asked_size_and_decode() {
        let e = client_event(3, 1024).to_string();
        assert!((1000..=1030).contains(&e.len()), "{}", e.len());
        let k = kinesis_event(1000, 1024);
        assert_eq!(k.records.len(), 1000);
        assert!(
            k.records
                .iter()
                .all(|r| crate::record::decode(&r.kinesis.data).is_ok())
        );
        let w: aws_lambda_events::dynamodb::TimeWindowEvent =
            serde_json::from_str(&window_event_json(10)).unwrap();
        assert_eq!(w.dynamo_db_event.records.len(), 10);
        for r in w.dynamo_db_event.records {
            let e: crate::aws::event_table::StoredItem =
                crate::aws::event_table::from_image(r.change.new_image).unwrap();
            assert!(e.check().is_ok());
        }
    }
}
