//! store: Kinesis event source → decode → `BatchWriteItem` into the `events` table.
//!
//! Idempotent (the item key is user + event id), reports partial batch failures with
//! `batchItemFailures` (the lowest record not written: Lambda re-delivers from there, and the
//! records after it overwrite themselves), and never lets an undecodable record block its
//! shard: such a record is logged, counted as rejected and skipped.

use std::sync::Arc;

use aws_lambda_events::kinesis::KinesisEvent;
use aws_lambda_events::streams::KinesisEventResponse;
use telemetry_shared::aws::event_table::{self, EventTable};
use telemetry_shared::config::{ConfigError, Env};
use telemetry_shared::event::StoredEvent;
use telemetry_shared::metrics::{Metric, Metrics};
use telemetry_shared::ports::EventStore;
use telemetry_shared::record;
use telemetry_shared::retry::Deadline;

/// store's allocator, in every binary that links store (its Lambda binary, its bench, the CLI's
/// local stack): mimalloc. Under glibc's malloc, a 1,000-record batch spent a third of its time in
/// `malloc_consolidate` and heap trimming (its ~1 KiB `data` copies and 13 small strings per
/// item), and took 5 or 10 ms depending on what the heap held before; with mimalloc it takes about
/// 3 ms, steadily (docs/PERFORMANCE.md). Declared here, not in `main.rs`, so the bench measures
/// the allocator that ships. The other functions keep glibc's: with mimalloc, forward and
/// post-process moved within noise, and ingest's floor (a `serde_json::Value` parse, nearly all
/// allocation) sped up more than ingest did, which put its ratio below its 1.00 target.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// store's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `events` table (`EVENTS_TABLE`).
    pub table: String,
    /// Days before an event expires (`EVENT_TTL_DAYS`; unset or 0: never).
    pub ttl_days: Option<u32>,
}

impl Config {
    /// Reads the configuration; the error names the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let ttl_days: u32 = env.parsed_or("EVENT_TTL_DAYS", 0)?;
        Ok(Self {
            table: env.required("EVENTS_TABLE")?,
            ttl_days: (ttl_days > 0).then_some(ttl_days),
        })
    }
}

/// The store handler.
pub struct Store {
    store: Arc<dyn EventStore>,
}

impl Store {
    /// A handler writing to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    /// Handles one batch of Kinesis records; what is not stored by `deadline` is reported as
    /// failed (Lambda retries it) rather than left to a killed invocation.
    pub async fn handle(&self, event: &KinesisEvent, deadline: Deadline) -> KinesisEventResponse {
        let mut metrics = Metrics::new("store");
        let mut events: Vec<StoredEvent<'_>> = Vec::with_capacity(event.records.len());
        let mut sequence_numbers: Vec<&str> = Vec::with_capacity(event.records.len());
        for r in &event.records {
            match record::decode(&r.kinesis.data) {
                Ok(e) if too_large_for_dynamodb(r.kinesis.data.len(), &e) => {
                    // One such item fails its whole BatchWriteItem and blocks its neighbours
                    // until Lambda bisects down to it; it can never be written. (Only something
                    // other than ingest, whose events are at most 64 KiB, can put it here.)
                    tracing::error!(
                        sequence_number = %r.kinesis.sequence_number,
                        bytes = r.kinesis.data.len(),
                        "record skipped: its item would exceed DynamoDB's 400 KB"
                    );
                    metrics.rejected("oversized");
                }
                Ok(e) => {
                    events.push(e);
                    sequence_numbers.push(&r.kinesis.sequence_number);
                }
                Err(e) => {
                    // Poison: retrying cannot fix it, and reporting it would block the shard.
                    tracing::error!(
                        sequence_number = %r.kinesis.sequence_number,
                        error = %e,
                        "undecodable record skipped"
                    );
                    metrics.rejected("undecodable");
                }
            }
        }
        let mut response = KinesisEventResponse::default();
        if !events.is_empty() {
            let outcome = self.store.write_events(&events, deadline).await;
            metrics.add(
                Metric::RecordsStored,
                (events.len() - outcome.failed.len()) as u64,
            );
            if outcome.retried > 0 {
                metrics.add(Metric::Retries, outcome.retried as u64);
            }
            if let Some(error) = &outcome.error {
                tracing::warn!(failed = outcome.failed.len(), %error, "some records not stored");
                metrics.add(Metric::RecordsFailed, outcome.failed.len() as u64);
            }
            // Lambda re-delivers the shard from the lowest failed record: report that one
            // (records are in shard order). What was written after it is written again, to the
            // same keys: idempotent.
            if let Some(&lowest) = outcome.failed.iter().min() {
                response.add_failure(sequence_numbers[lowest]);
            }
        }
        metrics.add(Metric::BatchSize, event.records.len() as u64);
        tracing::info!(
            records = event.records.len(),
            failed = response.batch_item_failures.len(),
            "batch stored"
        );
        metrics.flush();
        response
    }
}

/// Whether `event`'s item would exceed DynamoDB's item limit; measured only for records near it.
fn too_large_for_dynamodb(record_bytes: usize, event: &StoredEvent<'_>) -> bool {
    record_bytes + event_table::ITEM_OVER_RECORD_BYTES > event_table::MAX_ITEM_BYTES
        // The TTL attribute counted too, whatever the configuration.
        && event_table::item_size(&event_table::to_item(event, Some(0))) > event_table::MAX_ITEM_BYTES
}

/// Builds the production handler.
pub fn from_config(config: &Config, sdk: &aws_config::SdkConfig) -> Store {
    Store::new(Arc::new(EventTable::new(
        aws_sdk_dynamodb::Client::new(sdk),
        config.table.clone(),
        config.ttl_days,
    )))
}

#[cfg(test)]
mod tests {
    use telemetry_shared::ports::memory::MemoryStore;

    use super::*;

    /// A deadline no test comes near: the template's 30 s timeout.
    fn ample() -> Deadline {
        Deadline::after(std::time::Duration::from_secs(30))
    }

    fn fixture() -> KinesisEvent {
        serde_json::from_str(include_str!("../../../events/kinesis-batch.json")).unwrap()
    }

    #[tokio::test]
    async fn fixture_is_stored_and_the_undecodable_record_skipped() {
        let memory = Arc::new(MemoryStore::default());
        let store = Store::new(memory.clone());
        let response = store.handle(&fixture(), ample()).await;
        assert!(response.batch_item_failures.is_empty());
        let items = memory.items.lock().unwrap();
        assert_eq!(items.len(), 2);
        assert!(items.contains_key(&("fixture-user".into(), "fixture-1".into())));
    }

    /// The fixture stored with writes of `ids` failing; the sequence numbers reported.
    async fn reported_when_failing(ids: &[&str]) -> Vec<String> {
        let memory = Arc::new(MemoryStore::default());
        let store = Store::new(memory.clone());
        memory
            .fail_ids
            .lock()
            .unwrap()
            .extend(ids.iter().map(|id| id.to_string()));
        let response = store.handle(&fixture(), ample()).await;
        response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier.unwrap())
            .collect()
    }

    #[tokio::test]
    async fn failed_writes_are_reported_by_sequence_number() {
        assert_eq!(
            reported_when_failing(&["fixture-2"]).await,
            ["49590338271490256608559692538361571095921575989136588881"]
        );
    }

    #[tokio::test]
    async fn only_the_lowest_failed_record_is_reported() {
        let first_decodable = fixture()
            .records
            .into_iter()
            .find(|r| record::decode(&r.kinesis.data).is_ok())
            .unwrap();
        assert_eq!(
            reported_when_failing(&["fixture-1", "fixture-2"]).await,
            [first_decodable.kinesis.sequence_number]
        );
    }

    #[tokio::test]
    async fn redelivered_batch_leaves_one_item_per_event() {
        let memory = Arc::new(MemoryStore::default());
        let store = Store::new(memory.clone());
        store.handle(&fixture(), ample()).await;
        store.handle(&fixture(), ample()).await;
        assert_eq!(memory.items.lock().unwrap().len(), 2);
    }
}
