//! Kinesis as a [`ShardSource`], and the `KinesisEvent` Lambda builds from its records.

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::encodings::{Base64Data, SecondTimestamp};
use aws_lambda_events::kinesis::{KinesisEvent, KinesisEventRecord, KinesisRecord};
use aws_lambda_events::streams::KinesisEventResponse;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use futures::future::BoxFuture;
use telemetry_shared::aws::describe;

use super::mapping::{Position, ShardSource, StreamFunction};

/// A Kinesis stream.
pub struct KinesisSource {
    /// The client.
    pub client: Client,
    /// Stream name.
    pub stream: String,
    /// Stream ARN (for `eventSourceARN`).
    pub arn: String,
}

impl KinesisSource {
    /// The stream `stream`, looking up its ARN.
    pub async fn new(client: Client, stream: &str) -> anyhow::Result<Self> {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .with_context(|| format!("describing stream {stream}"))?;
        let arn = summary
            .stream_description_summary()
            .map(|s| s.stream_arn().to_string())
            .unwrap_or_default();
        Ok(Self {
            client,
            stream: stream.to_string(),
            arn,
        })
    }
}

impl ShardSource for KinesisSource {
    type Record = Record;

    async fn shards(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .client
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .with_context(|| format!("listing shards of {}", self.stream))?;
        Ok(out
            .shards()
            .iter()
            .map(|s| s.shard_id().to_string())
            .collect())
    }

    async fn iterator(&self, shard: &str, from: &Position) -> Result<String, String> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard);
        let request = match from {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            Position::At(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
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
        Ok((out.records, next))
    }

    fn sequence_number(record: &Record) -> &str {
        record.sequence_number()
    }
}

/// Builds the `KinesisEvent` Lambda would deliver for these records.
pub fn kinesis_event(records: &[Record], shard: &str, arn: &str) -> KinesisEvent {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let mut event = KinesisEvent::default();
    event.records = records
        .iter()
        .map(|r| {
            let mut data = Base64Data::default();
            *data = r.data().as_ref().to_vec();
            let mut kinesis = KinesisRecord::default();
            kinesis.data = data;
            kinesis.partition_key = r.partition_key().unwrap_or_default().to_string();
            kinesis.sequence_number = r.sequence_number().to_string();
            kinesis.kinesis_schema_version = Some("1.0".into());
            if let Some(t) = r.approximate_arrival_timestamp()
                && let Some(dt) = chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
            {
                kinesis.approximate_arrival_timestamp = SecondTimestamp(dt);
            }
            let mut record = KinesisEventRecord::default();
            record.kinesis = kinesis;
            record.event_source = Some("aws:kinesis".into());
            record.event_name = Some("aws:kinesis:record".into());
            record.event_version = Some("1.0".into());
            record.event_id = Some(format!("{shard}:{}", r.sequence_number()));
            record.event_source_arn = Some(arn.to_string());
            record.aws_region = Some(region.clone());
            record
        })
        .collect();
    event
}

/// A Kinesis-triggered handler as the mapping's function.
pub fn function<F>(arn: String, handler: F) -> StreamFunction<Record>
where
    F: Fn(KinesisEvent) -> BoxFuture<'static, KinesisEventResponse> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |shard: String, records: Vec<Record>| {
        let event = kinesis_event(&records, &shard, &arn);
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            handler(event)
                .await
                .batch_item_failures
                .into_iter()
                .filter_map(|f| f.item_identifier)
                .collect()
        })
    })
}
