//! Plays Lambda's stream event source mappings against the emulator.
//!
//! One poller per shard, from `TRIM_HORIZON`; each non-empty page of up to `batch_size` records
//! goes to the function. The answer's `batchItemFailures` are honoured as Lambda does: the
//! shard is re-read from the lowest failed sequence number (everything before it is done), after
//! a backoff, for as long as it takes (Lambda's default for streams). A failure naming a record
//! that is not in the batch fails the whole batch, as in Lambda. The stream-specific parts (how
//! to read a shard, what event to build) are a [`ShardSource`] and a [`StreamFunction`].

use std::cmp::Ordering;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use telemetry_shared::retry::Backoff;
use telemetry_shared::sequence;
use tokio::task::JoinHandle;

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The oldest record.
    TrimHorizon,
    /// Just after this sequence number.
    After(String),
    /// At this sequence number.
    At(String),
}

/// A stream whose shards can be read (Kinesis, DynamoDB Streams).
pub trait ShardSource: Send + Sync + 'static {
    /// A record as the stream's API returns it.
    type Record: Send + 'static;

    /// The shard ids.
    fn shards(&self) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;
    /// A shard iterator at `from`.
    fn iterator(
        &self,
        shard: &str,
        from: &Position,
    ) -> impl Future<Output = Result<String, String>> + Send;
    /// One page of records and the next iterator (`None`: the shard is closed).
    fn read(
        &self,
        iterator: &str,
        limit: i32,
    ) -> impl Future<Output = Result<(Vec<Self::Record>, Option<String>), String>> + Send;
    /// A record's sequence number.
    fn sequence_number(record: &Self::Record) -> &str;
}

/// The function behind a mapping: gets a shard's records, answers the failed sequence numbers.
pub type StreamFunction<R> =
    Arc<dyn Fn(String, Vec<R>) -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// What the mappings have done, so a test can wait until they have nothing left to do.
///
/// Idle means: every shard of every mapping has read an empty page while no batch went to any
/// function. Checked as a whole (a store batch writes what post-process then reads), it is the
/// deterministic "everything sent has gone through" that a fixed sleep only hopes for.
#[derive(Debug, Default)]
pub struct Progress {
    batches: AtomicU64,
    empty_reads: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Progress {
    /// A counter of one shard's empty reads.
    fn shard(&self) -> Arc<AtomicU64> {
        let counter = Arc::new(AtomicU64::new(0));
        self.empty_reads
            .lock()
            .expect("progress lock")
            .push(Arc::clone(&counter));
        counter
    }

    fn snapshot(&self) -> (u64, Vec<u64>) {
        let reads = self.empty_reads.lock().expect("progress lock");
        (
            self.batches.load(AtomicOrdering::SeqCst),
            reads
                .iter()
                .map(|c| c.load(AtomicOrdering::SeqCst))
                .collect(),
        )
    }

    /// Waits until the mappings are idle; `false` if they are still busy after `timeout`.
    pub async fn until_idle(&self, timeout: Duration) -> bool {
        let give_up = tokio::time::Instant::now() + timeout;
        loop {
            let (batches, reads) = self.snapshot();
            // Every shard reads an empty page after this point...
            loop {
                let (_, now) = self.snapshot();
                if now.iter().zip(&reads).all(|(n, r)| n > r) {
                    break;
                }
                if tokio::time::Instant::now() >= give_up {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // ...and no batch ran meanwhile: nothing is left anywhere.
            if self.snapshot().0 == batches {
                return true;
            }
        }
    }
}

/// One event source mapping.
pub struct Mapping<S: ShardSource> {
    /// Function name, for logs.
    pub name: &'static str,
    /// The stream.
    pub source: S,
    /// Records per invocation (Lambda's `BatchSize`).
    pub batch_size: i32,
    /// Wait between polls of an idle shard.
    pub poll_interval: Duration,
    /// The function.
    pub function: StreamFunction<S::Record>,
    /// Where the mapping reports what it did.
    pub progress: Arc<Progress>,
}

impl<S: ShardSource> Mapping<S> {
    /// Starts one poller per shard.
    pub async fn start(self) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let shards = self.source.shards().await?;
        let mapping = Arc::new(self);
        Ok(shards
            .into_iter()
            .map(|shard| {
                let mapping = Arc::clone(&mapping);
                tokio::spawn(async move { mapping.poll_shard(shard).await })
            })
            .collect())
    }

    async fn poll_shard(&self, shard: String) {
        let empty_reads = self.progress.shard();
        let fresh_backoff = || Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        // Where the next read starts when there is no live iterator.
        let mut position = Position::TrimHorizon;
        let mut iterator: Option<String> = None;
        let mut backoff = fresh_backoff();
        loop {
            let Some(current) = iterator.take() else {
                match self.source.iterator(&shard, &position).await {
                    Ok(it) => iterator = Some(it),
                    Err(e) => {
                        tracing::warn!(mapping = self.name, shard, error = %e, "no shard iterator");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                continue;
            };
            let (records, next) = match self.source.read(&current, self.batch_size).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(mapping = self.name, shard, error = %e, "reading the shard failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue; // re-acquire an iterator at `position`
                }
            };
            if records.is_empty() {
                empty_reads.fetch_add(1, AtomicOrdering::SeqCst);
                if next.is_none() {
                    tracing::info!(mapping = self.name, shard, "shard closed");
                    return;
                }
                iterator = next;
                tokio::time::sleep(self.poll_interval).await;
                continue;
            }
            let batch: Vec<String> = records
                .iter()
                .map(|r| S::sequence_number(r).to_string())
                .collect();
            let failed = (self.function)(shard.clone(), records).await;
            self.progress.batches.fetch_add(1, AtomicOrdering::SeqCst);
            match first_failure(&batch, &failed) {
                None => {
                    position = Position::After(batch.last().cloned().unwrap_or_default());
                    iterator = next;
                    backoff = fresh_backoff();
                }
                Some(from) => {
                    tracing::warn!(
                        mapping = self.name,
                        shard,
                        from = from.as_deref().unwrap_or("batch start"),
                        attempt = backoff.attempts() + 1,
                        "batch item failures; retrying from the first failed record"
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                    if let Some(seq) = from {
                        position = Position::At(seq);
                    }
                    // Else the whole batch failed: `position` still points before it.
                }
            }
        }
    }
}

/// The lowest failed sequence number of a batch: `None` when nothing failed, `Some(None)` when
/// the whole batch counts as failed (an identifier not in the batch).
pub fn first_failure(batch: &[String], failed: &[String]) -> Option<Option<String>> {
    let mut lowest: Option<&str> = None;
    for id in failed {
        if !batch.contains(id) {
            return Some(None);
        }
        if lowest.is_none_or(|l| sequence::cmp(id, l) == Ordering::Less) {
            lowest = Some(id);
        }
    }
    lowest.map(|s| Some(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn retry_starts_at_the_numerically_lowest_failure() {
        let batch = ids(&["9", "10", "11"]);
        assert_eq!(first_failure(&batch, &[]), None);
        assert_eq!(
            first_failure(&batch, &ids(&["11", "10"])),
            Some(Some("10".into()))
        );
        assert_eq!(
            first_failure(&batch, &ids(&["10", "9"])),
            Some(Some("9".into()))
        );
    }

    #[test]
    fn unknown_identifier_fails_the_whole_batch() {
        assert_eq!(first_failure(&ids(&["1", "2"]), &ids(&["7"])), Some(None));
    }
}
