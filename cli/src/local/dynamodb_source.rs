//! DynamoDB Streams as a [`ShardSource`], and the tumbling-window event Lambda builds from its
//! records: only INSERTs pass the filter (as the template's `FilterCriteria`), and the event
//! carries the shard id, which is why post-process is mapped with a tumbling window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_lambda_events::dynamodb::{EventRecord, TimeWindowEvent, TimeWindowEventResponse};
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use telemetry_shared::aws::describe;

use super::mapping::{Position, ShardSource, StreamFunction};

/// The stream of a DynamoDB table.
pub struct DynamoStreamSource {
    /// The client.
    pub client: Client,
    /// Stream ARN.
    pub arn: String,
}

impl DynamoStreamSource {
    /// The latest stream of `table`.
    pub async fn new(
        dynamodb: &aws_sdk_dynamodb::Client,
        client: Client,
        table: &str,
    ) -> anyhow::Result<Self> {
        let out = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .with_context(|| format!("describing table {table}"))?;
        let arn = out
            .table()
            .and_then(|t| t.latest_stream_arn())
            .with_context(|| format!("table {table} has no stream"))?
            .to_string();
        // A new table's stream is ENABLING for a while, as the table is CREATING.
        super::resources::wait_until_ready(&format!("the stream of table {table}"), || async {
            let out = client
                .describe_stream()
                .stream_arn(&arn)
                .send()
                .await
                .with_context(|| format!("describing stream {arn}"))?;
            let status = out
                .stream_description()
                .and_then(|d| d.stream_status())
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            Ok((status != "ENABLED").then_some(status))
        })
        .await?;
        Ok(Self { client, arn })
    }
}

impl ShardSource for DynamoStreamSource {
    type Record = Record;

    async fn shards(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .with_context(|| format!("describing stream {}", self.arn))?;
        Ok(out
            .stream_description()
            .map(|d| {
                d.shards()
                    .iter()
                    .filter_map(|s| s.shard_id().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn iterator(&self, shard: &str, from: &Position) -> Result<String, String> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.arn)
            .shard_id(shard);
        let request = match from {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            Position::At(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(seq),
        };
        let out = request.send().await.map_err(|e| describe(&e))?;
        out.shard_iterator()
            .map(str::to_string)
            .ok_or_else(|| "no iterator returned".to_string())
    }

    async fn read(
        &self,
        iterator: &str,
        limit: i32,
    ) -> Result<(Vec<Record>, Option<String>), String> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let next = out.next_shard_iterator().map(str::to_string);
        Ok((out.records.unwrap_or_default(), next))
    }

    fn sequence_number(record: &Record) -> &str {
        record
            .dynamodb()
            .and_then(|d| d.sequence_number())
            .unwrap_or_default()
    }
}

/// An attribute value in DynamoDB's JSON form (`{"S": "..."}`), as Lambda delivers it.
fn attribute_json(value: &AttributeValue) -> Value {
    let b64 =
        |b: &aws_smithy_types::Blob| base64::engine::general_purpose::STANDARD.encode(b.as_ref());
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(n) => json!({ "NULL": n }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => json!({ "BS": v.iter().map(b64).collect::<Vec<_>>() }),
        AttributeValue::L(v) => json!({ "L": v.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        _ => Value::Null,
    }
}

fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect(),
    )
}

/// A stream record as Lambda delivers it.
pub fn event_record(r: &Record, arn: &str) -> Option<EventRecord> {
    let d = r.dynamodb()?;
    let mut change = serde_json::Map::new();
    if let Some(t) = d.approximate_creation_date_time() {
        change.insert("ApproximateCreationDateTime".into(), json!(t.secs()));
    }
    for (name, image) in [
        ("Keys", d.keys()),
        ("NewImage", d.new_image()),
        ("OldImage", d.old_image()),
    ] {
        if let Some(image) = image {
            change.insert(name.into(), item_json(image));
        }
    }
    change.insert("SequenceNumber".into(), json!(d.sequence_number()));
    change.insert("SizeBytes".into(), json!(d.size_bytes().unwrap_or(0)));
    change.insert(
        "StreamViewType".into(),
        json!(d.stream_view_type().map(|v| v.as_str())),
    );
    let value = json!({
        "eventID": r.event_id(),
        "eventName": r.event_name().map(|n| n.as_str()),
        "eventVersion": r.event_version().unwrap_or("1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": r.aws_region().unwrap_or("us-east-1"),
        "dynamodb": change,
        "eventSourceARN": arn,
    });
    match serde_json::from_value(value) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(error = %e, "stream record not convertible");
            None
        }
    }
}

/// The tumbling-window event for a batch of one shard.
pub fn window_event(
    records: Vec<EventRecord>,
    shard: &str,
    arn: &str,
    window: Duration,
) -> TimeWindowEvent {
    let now = chrono::Utc::now();
    let length = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::seconds(60));
    let start = chrono::DurationRound::duration_trunc(now, length).unwrap_or(now);
    let mut event = TimeWindowEvent::default();
    event.dynamo_db_event.records = records;
    event.time_window_properties.window.start = start;
    event.time_window_properties.window.end = start + length;
    event.time_window_properties.shard_id = Some(shard.to_string());
    event.time_window_properties.event_source_arn = Some(arn.to_string());
    event
}

/// A window-triggered handler as the mapping's function, behind an INSERT-only filter. Records
/// the filter drops count as processed, as with Lambda's `FilterCriteria`.
pub fn function<F>(arn: String, window: Duration, handler: F) -> StreamFunction<Record>
where
    F: Fn(TimeWindowEvent) -> BoxFuture<'static, TimeWindowEventResponse> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |shard: String, records: Vec<Record>| {
        let inserts: Vec<EventRecord> = records
            .iter()
            .filter(|r| r.event_name().is_some_and(|n| n.as_str() == "INSERT"))
            .filter_map(|r| event_record(r, &arn))
            .collect();
        let handler = Arc::clone(&handler);
        let event = (!inserts.is_empty()).then(|| window_event(inserts, &shard, &arn, window));
        Box::pin(async move {
            let Some(event) = event else {
                return Vec::new();
            };
            handler(event)
                .await
                .batch_item_failures
                .into_iter()
                .filter_map(|f| f.item_identifier)
                .collect()
        })
    })
}
