//! Plays Lambda's Kinesis event source mapping against the emulator.
//!
//! One poller per shard, starting at `TRIM_HORIZON`; each non-empty `GetRecords` page of up to
//! `batch_size` records is handed to the function as a real `KinesisEvent`. The response's
//! `batchItemFailures` are honoured as Lambda does: the shard is re-read from the lowest failed
//! sequence number (everything before it counts as done), after a backoff. A failure naming a
//! record that is not in the batch fails the whole batch, as in Lambda.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_lambda_events::encodings::{Base64Data, SecondTimestamp};
use aws_lambda_events::kinesis::{KinesisEvent, KinesisEventRecord, KinesisRecord};
use aws_lambda_events::streams::KinesisEventResponse;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;
use futures::future::BoxFuture;
use telemetry_shared::retry::Backoff;
use telemetry_shared::sequence;
use tokio::task::JoinHandle;

/// A function fed by the mapping.
pub type KinesisFunction =
    Arc<dyn Fn(KinesisEvent) -> BoxFuture<'static, KinesisEventResponse> + Send + Sync>;

/// Settings of one mapping.
#[derive(Clone)]
pub struct KinesisMapping {
    /// Function name, for logs.
    pub name: &'static str,
    /// Kinesis client.
    pub client: Client,
    /// The stream.
    pub stream: String,
    /// Records per invocation (Lambda's `BatchSize`).
    pub batch_size: i32,
    /// Wait between polls of an idle shard.
    pub poll_interval: Duration,
    /// The function.
    pub function: KinesisFunction,
}

impl KinesisMapping {
    /// Starts one poller per shard.
    pub async fn start(self) -> Result<Vec<JoinHandle<()>>> {
        let summary = self
            .client
            .describe_stream_summary()
            .stream_name(&self.stream)
            .send()
            .await
            .with_context(|| format!("describing stream {}", self.stream))?;
        let arn = summary
            .stream_description_summary()
            .map(|s| s.stream_arn().to_string())
            .unwrap_or_default();
        let shards = self
            .client
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .with_context(|| format!("listing shards of {}", self.stream))?;
        let mapping = Arc::new(self);
        Ok(shards
            .shards()
            .iter()
            .map(|shard| {
                let mapping = Arc::clone(&mapping);
                let shard_id = shard.shard_id().to_string();
                let arn = arn.clone();
                tokio::spawn(async move { mapping.poll_shard(shard_id, arn).await })
            })
            .collect())
    }

    async fn iterator(&self, shard: &str, after: Option<&str>, at: Option<&str>) -> Option<String> {
        let mut request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard);
        request = match (at, after) {
            (Some(seq), _) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
            (None, Some(seq)) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            (None, None) => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        match request.send().await {
            Ok(out) => out.shard_iterator().map(str::to_string),
            Err(e) => {
                tracing::warn!(mapping = self.name, shard, error = %telemetry_shared::aws::describe(&e), "GetShardIterator failed");
                None
            }
        }
    }

    async fn poll_shard(&self, shard: String, arn: String) {
        // Last sequence number fully processed; the shard resumes after it.
        let mut checkpoint: Option<String> = None;
        let mut iterator: Option<String> = None;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let Some(current) = iterator.take() else {
                iterator = self.iterator(&shard, checkpoint.as_deref(), None).await;
                if iterator.is_none() {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                continue;
            };
            let page = match self
                .client
                .get_records()
                .shard_iterator(&current)
                .limit(self.batch_size)
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(mapping = self.name, shard, error = %telemetry_shared::aws::describe(&e), "GetRecords failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue; // iterator is None: re-acquire after the checkpoint
                }
            };
            let next = page.next_shard_iterator().map(str::to_string);
            if page.records().is_empty() {
                if next.is_none() {
                    tracing::info!(mapping = self.name, shard, "shard closed");
                    return;
                }
                iterator = next;
                tokio::time::sleep(self.poll_interval).await;
                continue;
            }
            let event = kinesis_event(page.records(), &shard, &arn);
            let sequence_numbers: Vec<String> = event
                .records
                .iter()
                .map(|r| r.kinesis.sequence_number.clone())
                .collect();
            let response = (self.function)(event).await;
            match first_failure(&sequence_numbers, &response) {
                None => {
                    checkpoint = sequence_numbers.last().cloned();
                    iterator = next;
                    backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
                }
                Some(failed) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        mapping = self.name,
                        shard,
                        from = failed.as_deref().unwrap_or("batch start"),
                        attempt = backoff.attempts(),
                        "batch item failures; retrying from the first failed record"
                    );
                    tokio::time::sleep(delay).await;
                    iterator = match failed {
                        Some(seq) => {
                            // Everything before the first failure is done.
                            if let Some(pos) = sequence_numbers.iter().position(|s| *s == seq)
                                && pos > 0
                            {
                                checkpoint = Some(sequence_numbers[pos - 1].clone());
                            }
                            self.iterator(&shard, None, Some(&seq)).await
                        }
                        None => None, // whole batch: resume after the checkpoint
                    };
                }
            }
        }
    }
}

/// The lowest failed sequence number of a batch: `None` when nothing failed,
/// `Some(None)` when the whole batch counts as failed (an identifier not in the batch).
pub fn first_failure(batch: &[String], response: &KinesisEventResponse) -> Option<Option<String>> {
    let mut lowest: Option<&str> = None;
    for failure in &response.batch_item_failures {
        let Some(id) = failure
            .item_identifier
            .as_deref()
            .filter(|id| batch.iter().any(|s| s == id))
        else {
            return Some(None);
        };
        if lowest.is_none_or(|l| sequence::cmp(id, l) == Ordering::Less) {
            lowest = Some(id);
        }
    }
    lowest.map(|s| Some(s.to_string()))
}

/// Builds the `KinesisEvent` Lambda would deliver for these records.
pub fn kinesis_event(
    records: &[aws_sdk_kinesis::types::Record],
    shard: &str,
    arn: &str,
) -> KinesisEvent {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn response(ids: &[&str]) -> KinesisEventResponse {
        let mut r = KinesisEventResponse::default();
        for id in ids {
            r.add_failure(*id);
        }
        r
    }

    #[test]
    fn retry_starts_at_the_numerically_lowest_failure() {
        let batch: Vec<String> = ["9", "10", "11"].map(String::from).to_vec();
        assert_eq!(first_failure(&batch, &response(&[])), None);
        assert_eq!(
            first_failure(&batch, &response(&["11", "10"])),
            Some(Some("10".into()))
        );
        assert_eq!(
            first_failure(&batch, &response(&["10", "9"])),
            Some(Some("9".into()))
        );
    }

    #[test]
    fn unknown_identifier_fails_the_whole_batch() {
        let batch: Vec<String> = ["1", "2"].map(String::from).to_vec();
        assert_eq!(first_failure(&batch, &response(&["7"])), Some(None));
    }
}
