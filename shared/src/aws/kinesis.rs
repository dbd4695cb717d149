//! [`EventSink`] on Kinesis `PutRecords`.
//!
//! Records are split only past Kinesis's limits (500 records, 5 MiB per call), the calls run
//! concurrently, every per-record error code is read, and only the failed records are retried,
//! with jittered backoff, until the time budget runs out.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::ports::{EventSink, SinkError};
use crate::record::EventRecord;
use crate::retry::{Attempt, Deadline, RetryPolicy, retry};

/// Most records in one `PutRecords` call.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes (data + partition keys) in one `PutRecords` call.
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;

/// Puts events on a Kinesis stream.
#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: Client,
    stream: String,
    budget: Duration,
}

impl KinesisSink {
    /// A sink on `stream` that gives up after `budget` (ingest uses ~5 s, well inside API
    /// Gateway's 30 s, so the client gets our 503 rather than the gateway's).
    pub fn new(client: Client, stream: impl Into<String>, budget: Duration) -> Self {
        Self {
            client,
            stream: stream.into(),
            budget,
        }
    }

    async fn put_chunk(
        &self,
        chunk: Vec<EventRecord>,
        deadline: Deadline,
    ) -> Result<usize, SinkError> {
        let pending: Vec<PutRecordsRequestEntry> = chunk.into_iter().map(entry).collect();
        let done = retry(
            PUT_RECORDS_RETRIES,
            deadline,
            pending,
            Vec::len,
            || SinkError::Transient("PutRecords timed out".into()),
            |pending: Vec<PutRecordsRequestEntry>| async move {
                let sent = self
                    .client
                    .put_records()
                    .stream_name(&self.stream)
                    .set_records(Some(pending.clone()))
                    .customize()
                    .config_override(
                        aws_sdk_kinesis::config::Builder::default()
                            .retry_config(super::attempt_once()),
                    )
                    .send()
                    .await;
                match sent {
                    Err(e) if !super::is_retryable(&e) => {
                        Attempt::Stop(pending, SinkError::Permanent(super::describe(&e)))
                    }
                    Err(e) => Attempt::Retry(pending, SinkError::Transient(super::describe(&e))),
                    Ok(output) => {
                        let (failed, reason) = failed_entries(pending, &output);
                        if failed.is_empty() {
                            return Attempt::Done;
                        }
                        tracing::warn!(failed = failed.len(), %reason, "PutRecords partial failure, retrying the failed records");
                        Attempt::Retry(failed, SinkError::Transient(reason))
                    }
                }
            },
        )
        .await;
        match done.left {
            None => Ok(done.retried),
            Some((left, SinkError::Transient(reason))) => Err(SinkError::Transient(format!(
                "{} records still failing after the retry budget: {reason}",
                left.len()
            ))),
            Some((_, refused)) => Err(refused),
        }
    }
}

/// PutRecords: failed entries again, 50 ms doubling to 1 s, until ingest's budget (~5 s).
pub const PUT_RECORDS_RETRIES: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(50),
    cap: Duration::from_secs(1),
    max_attempts: None,
};

#[async_trait::async_trait]
impl EventSink for KinesisSink {
    async fn put_records(&self, records: Vec<EventRecord>) -> Result<usize, SinkError> {
        let deadline = Deadline::after(self.budget);
        let calls = chunks(records)
            .into_iter()
            .map(|chunk| self.put_chunk(chunk, deadline));
        futures::future::try_join_all(calls)
            .await
            .map(|retried| retried.into_iter().sum())
    }
}

fn entry(record: EventRecord) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .partition_key(record.partition_key)
        .data(Blob::new(record.data))
        .build()
        .expect("data and partition key are set")
}

/// Splits records into calls of at most [`MAX_RECORDS_PER_CALL`] records and
/// [`MAX_BYTES_PER_CALL`] bytes, keeping their order.
pub fn chunks(records: Vec<EventRecord>) -> Vec<Vec<EventRecord>> {
    let mut out: Vec<Vec<EventRecord>> = Vec::new();
    let mut bytes = 0usize;
    for record in records {
        let size = record.size();
        let fits = out
            .last()
            .is_some_and(|c| c.len() < MAX_RECORDS_PER_CALL && bytes + size <= MAX_BYTES_PER_CALL);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        out.last_mut().expect("pushed above").push(record);
    }
    out
}

/// The entries of a call that Kinesis reports as failed (same order), and a summary of why.
pub fn failed_entries(
    sent: Vec<PutRecordsRequestEntry>,
    output: &PutRecordsOutput,
) -> (Vec<PutRecordsRequestEntry>, String) {
    if output.failed_record_count().unwrap_or(0) == 0 {
        return (Vec::new(), String::new());
    }
    let results = output.records();
    let mut reason = String::new();
    let failed: Vec<_> = sent
        .into_iter()
        .enumerate()
        .filter(|(i, _)| {
            // A missing result entry is treated as failed: never assume success.
            match results.get(*i) {
                None => true,
                Some(r) => match r.error_code() {
                    None => false,
                    Some(code) => {
                        if reason.is_empty() {
                            reason = format!("{code}: {}", r.error_message().unwrap_or(""));
                        }
                        true
                    }
                },
            }
        })
        .map(|(_, e)| e)
        .collect();
    (failed, reason)
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::types::PutRecordsResultEntry;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;

    fn record(i: usize, bytes: usize) -> EventRecord {
        EventRecord {
            partition_key: format!("u/{i}"),
            data: vec![b'x'; bytes],
        }
    }

    fn ok() -> PutRecordsResultEntry {
        PutRecordsResultEntry::builder()
            .sequence_number("1")
            .shard_id("shardId-000000000000")
            .build()
    }

    fn throttled() -> PutRecordsResultEntry {
        PutRecordsResultEntry::builder()
            .error_code("ProvisionedThroughputExceededException")
            .error_message("Rate exceeded for shard")
            .build()
    }

    #[test]
    fn chunks_respect_count_and_bytes() {
        let many: Vec<_> = (0..1001).map(|i| record(i, 10)).collect();
        let sizes: Vec<_> = chunks(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, [500, 500, 1]);

        // 6 records of ~1 MiB: 5 MiB holds four of them (with their keys), not five.
        let big: Vec<_> = (0..6).map(|i| record(i, 1024 * 1024 - 16)).collect();
        let c = chunks(big);
        assert!(
            c.iter()
                .all(|c| c.iter().map(EventRecord::size).sum::<usize>() <= MAX_BYTES_PER_CALL)
        );
        assert_eq!(c.iter().map(Vec::len).sum::<usize>(), 6);
        assert!(c.len() >= 2);
    }

    #[test]
    fn only_entries_reported_failed_are_kept_for_retry() {
        let sent: Vec<_> = (0..4).map(|i| entry(record(i, 1))).collect();
        let output = PutRecordsOutput::builder()
            .failed_record_count(2)
            .records(ok())
            .records(throttled())
            .records(ok())
            .records(throttled())
            .build()
            .unwrap();
        let (failed, reason) = failed_entries(sent, &output);
        let keys: Vec<_> = failed.iter().map(|e| e.partition_key()).collect();
        assert_eq!(keys, [Some("u/1"), Some("u/3")]);
        assert!(reason.starts_with("ProvisionedThroughputExceededException"));
    }

    #[tokio::test]
    async fn partial_failures_are_retried_until_all_succeed() {
        let rule = mock!(Client::put_records)
            .sequence()
            .output(|| {
                PutRecordsOutput::builder()
                    .failed_record_count(1)
                    .records(ok())
                    .records(throttled())
                    .build()
                    .unwrap()
            })
            .output(|| {
                PutRecordsOutput::builder()
                    .failed_record_count(0)
                    .records(ok())
                    .build()
                    .unwrap()
            })
            .build();
        let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&rule]);
        let sink = KinesisSink::new(client, "s", Duration::from_secs(5));
        sink.put_records(vec![record(0, 1), record(1, 1)])
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test]
    async fn records_failing_past_the_budget_are_unavailable_not_ok() {
        let rule = mock!(Client::put_records)
            .sequence()
            .output(|| {
                PutRecordsOutput::builder()
                    .failed_record_count(1)
                    .records(throttled())
                    .build()
                    .unwrap()
            })
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&rule]);
        let sink = KinesisSink::new(client, "s", Duration::from_millis(300));
        let err = sink.put_records(vec![record(0, 1)]).await.unwrap_err();
        assert!(matches!(err, SinkError::Transient(_)), "{err:?}");
        assert!(rule.num_calls() >= 2);
    }
}
