//! post-process: the `events` table's DynamoDB stream (INSERT records, tumbling window) →
//! exactly-once counts per (environment, type, granularity, bucket) and the all-types total.
//!
//! The tumbling window is there for one reason: only a window event carries the stream shard
//! id, and the partial counters are kept per shard (see `telemetry_shared::count`). Each batch is
//! counted as it comes; the window's state is not used (it is answered `{}`), and the final
//! invoke of a window, which may hold no records, changes nothing.
//!
//! Only a counts-table failure may fail a batch (the mapping retries without limit, so anything
//! else failing would stop counting for good): a record that does not deserialize, lacks what
//! counting needs, or makes the counting code panic is skipped, logged by sequence number
//! (never its payload) and counted in `RecordsSkipped`.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use aws_lambda_events::dynamodb::{EventRecord, TimeWindowEvent, TimeWindowEventResponse};
use aws_lambda_events::streams::DynamoDbBatchItemFailure;
use futures::StreamExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use telemetry_shared::aws::count_table::CountTable;
use telemetry_shared::aws::event_table;
use telemetry_shared::config::{ConfigError, Env};
use telemetry_shared::count::{self, CountedEvent};
use telemetry_shared::event::StoredEvent;
use telemetry_shared::metrics::{Metric, Metrics};
use telemetry_shared::ports::{CountStore, MarkerStore};
use telemetry_shared::retry::Deadline;
use telemetry_shared::sequence;
use telemetry_shared::users::{self, Marker};

/// Counter updates in flight at once.
pub const CONCURRENT_UPDATES: usize = 16;

/// `STREAM_RETENTION_HOURS` when unset: the template's default Kinesis retention.
pub const DEFAULT_STREAM_RETENTION_HOURS: u32 = 168;

/// `USER_MARKER_CACHE` when unset.
pub const DEFAULT_MARKER_CACHE: usize = 100_000;

/// How long after its period (and lateness window) a user marker must outlive: the Kinesis
/// retention (replays), the table stream's 24 h and a day's margin.
fn replay_horizon(stream_retention_hours: u32) -> chrono::Duration {
    chrono::Duration::hours(i64::from(stream_retention_hours) + 48)
}

/// post-process's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `counts` table (`COUNTS_TABLE`).
    pub counts_table: String,
    /// Days minute partials live after their bucket (`MINUTE_COUNTS_TTL_DAYS`, default 8:
    /// longer than the stream's 24 h retention, so no replay can meet an expired counter).
    pub minute_ttl_days: u32,
    /// The Kinesis retention (`STREAM_RETENTION_HOURS`, default 168): with the table stream's
    /// 24 h and a day's margin, how long after its period a user marker may still be needed
    /// (see `telemetry_shared::users::Marker::expires_at`).
    pub stream_retention_hours: u32,
    /// User markers remembered by a warm function (`USER_MARKER_CACHE`, default 100000): a
    /// user's later events in a period cost no write.
    pub marker_cache: usize,
}

impl Config {
    /// Reads the configuration; the error names the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let minute_ttl_days: u32 = env.parsed_or("MINUTE_COUNTS_TTL_DAYS", 8)?;
        if minute_ttl_days == 0 {
            return Err(ConfigError::invalid(
                "MINUTE_COUNTS_TTL_DAYS",
                "must be at least 1",
            ));
        }
        Ok(Self {
            counts_table: env.required("COUNTS_TABLE")?,
            minute_ttl_days,
            stream_retention_hours: env
                .parsed_or("STREAM_RETENTION_HOURS", DEFAULT_STREAM_RETENTION_HOURS)?,
            marker_cache: env.parsed_or("USER_MARKER_CACHE", DEFAULT_MARKER_CACHE)?,
        })
    }
}

/// The post-process handler.
pub struct PostProcess {
    counts: Arc<dyn CountStore>,
    markers: Arc<dyn MarkerStore>,
    /// Marker → its `by`, as far as this function has learnt them (cleared when full).
    cache: Mutex<HashMap<Marker, String>>,
    cache_capacity: usize,
    /// How long after its period a marker must outlive (see [`Config::stream_retention_hours`]).
    replay_horizon: chrono::Duration,
}

/// Why a stream record is not counted.
#[derive(Debug, PartialEq, Eq)]
enum Skip {
    /// MODIFY or REMOVE: a re-send or an expiry, never a new event.
    NotInsert,
    /// The image lacks what counting needs.
    Undecodable(&'static str),
}

/// A tumbling-window event read record by record (see [`read_window`]).
#[derive(Debug, Default)]
pub struct WindowBatch {
    /// The event, holding the records that deserialized.
    pub event: TimeWindowEvent,
    /// Records that did not: their sequence numbers, where they have one.
    pub unreadable: Vec<Option<String>>,
}

/// Reads the invocation payload one record at a time, so that a record the event types cannot
/// represent costs that record, not the batch (whose failure the mapping would retry forever).
/// Fails only when the envelope itself is not a window event.
pub fn read_window(mut payload: serde_json::Value) -> Result<WindowBatch, serde_json::Error> {
    let records = match payload.get_mut("Records") {
        Some(records) => std::mem::replace(records, serde_json::Value::Array(Vec::new())),
        None => serde_json::Value::Array(Vec::new()),
    };
    let mut event: TimeWindowEvent = serde_json::from_value(payload)?;
    let mut unreadable = Vec::new();
    for record in records.as_array().into_iter().flatten() {
        match EventRecord::deserialize(record) {
            Ok(r) => event.dynamo_db_event.records.push(r),
            Err(_) => unreadable.push(
                record["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .map(str::to_string),
            ),
        }
    }
    Ok(WindowBatch { event, unreadable })
}

/// A stream record read for counting: its padded sequence number, the event (decoded with the
/// stored event's one definition; `data` skipped) and the time it is counted under.
struct Read {
    seq: String,
    event: StoredEvent<'static, IgnoredAny>,
    at: chrono::DateTime<chrono::Utc>,
    received: chrono::DateTime<chrono::Utc>,
}

/// Reads what counting needs from a stream record, taking its image (uncopied).
fn counted(record: &mut EventRecord) -> Result<Read, Skip> {
    if record.event_name != "INSERT" {
        return Err(Skip::NotInsert);
    }
    let seq = record
        .change
        .sequence_number
        .as_deref()
        .and_then(sequence::padded)
        .ok_or(Skip::Undecodable("sequence number"))?;
    let image = std::mem::take(&mut record.change.new_image);
    let event = event_table::from_image::<IgnoredAny>(image)
        .map_err(|_| Skip::Undecodable("a stored event"))?;
    // No `check`: store checked the record before writing it (and the times are parsed here).
    let time = |t: &str| telemetry_shared::time::parse(t).ok_or(Skip::Undecodable("timestamp"));
    let received = time(&event.received_at)?;
    let at = count::counted_time(time(&event.timestamp)?, received);
    Ok(Read {
        seq,
        event,
        at,
        received,
    })
}

/// A batch turned into counter updates: the pure part of post-process.
pub struct Aggregated {
    /// INSERT records counted.
    pub counted: usize,
    /// One update per partial counter.
    pub updates: Vec<count::CounterUpdate>,
    /// The batch's user markers, each with the lowest sequence number among its records.
    pub markers: BTreeMap<Marker, String>,
    /// Each counted record's receive time, by padded sequence number.
    pub received: BTreeMap<String, chrono::DateTime<chrono::Utc>>,
    /// Padded sequence number → the stream's own, to report failures.
    original: HashMap<String, String>,
    /// Records that are not INSERTs.
    pub not_inserts: usize,
    /// Records that cannot be counted: (sequence number, why), e.g. a missing attribute, or a
    /// panic while reading it.
    pub undecodable: Vec<(Option<String>, &'static str)>,
}

/// Reads a batch's records (taking their images) and aggregates them per partial counter.
pub fn aggregate(records: &mut [EventRecord]) -> Aggregated {
    let mut read = Vec::with_capacity(records.len());
    let mut original: HashMap<String, String> = HashMap::with_capacity(records.len());
    let (mut not_inserts, mut undecodable) = (0, Vec::new());
    for r in records {
        // A panic on one record's values (a bug) must not fail the batch: see the module docs.
        let result = catch_unwind(AssertUnwindSafe(|| counted(r))).unwrap_or(Err(
            Skip::Undecodable("a readable record (counting it panicked)"),
        ));
        let seq = r.change.sequence_number.clone();
        match result {
            Ok(e) => {
                if let Some(seq) = seq {
                    original.insert(e.seq.clone(), seq);
                }
                read.push(e);
            }
            Err(Skip::NotInsert) => not_inserts += 1,
            Err(Skip::Undecodable(what)) => undecodable.push((seq, what)),
        }
    }
    let events: Vec<CountedEvent<'_>> = read
        .iter()
        .map(|r| CountedEvent {
            seq: r.seq.clone(),
            environment: &r.event.environment,
            kind: &r.event.kind,
            at: r.at,
        })
        .collect();
    let seen: Vec<users::SeenEvent<'_>> = read
        .iter()
        .map(|r| users::SeenEvent {
            seq: r.seq.clone(),
            environment: &r.event.environment,
            kind: &r.event.kind,
            user: &r.event.user_id,
            at: r.at,
            received_at: r.received,
        })
        .collect();
    Aggregated {
        counted: events.len(),
        updates: count::aggregate(&events),
        markers: users::batch_markers(&seen),
        received: users::received_by_seq(&seen),
        original,
        not_inserts,
        undecodable,
    }
}

impl PostProcess {
    /// A handler applying counts to `counts` and keeping user markers in `markers`.
    pub fn new(counts: Arc<dyn CountStore>, markers: Arc<dyn MarkerStore>) -> Self {
        Self {
            counts,
            markers,
            cache: Mutex::new(HashMap::new()),
            cache_capacity: DEFAULT_MARKER_CACHE,
            replay_horizon: replay_horizon(DEFAULT_STREAM_RETENTION_HOURS),
        }
    }

    /// The same handler remembering at most `capacity` markers, keeping period markers for
    /// `stream_retention_hours` (+ 48 h) beyond their period's lateness window.
    pub fn with_markers(mut self, capacity: usize, stream_retention_hours: u32) -> Self {
        self.cache_capacity = capacity;
        self.replay_horizon = replay_horizon(stream_retention_hours);
        self
    }

    /// Each marker's `by`: from the cache, else written (or found) in the store. Returns the
    /// resolved markers and, when some could not be resolved, the lowest sequence number among
    /// their records (the batch is cut there: see `users::user_updates`).
    async fn resolve_markers(
        &self,
        shard: &str,
        markers: &BTreeMap<Marker, String>,
        deadline: Deadline,
    ) -> (BTreeMap<Marker, String>, Option<String>, usize) {
        let mut resolved = BTreeMap::new();
        let mut pending = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for (marker, seq) in markers {
                match cache.get(marker) {
                    Some(by) => {
                        resolved.insert(marker.clone(), by.clone());
                    }
                    None => pending.push((marker, seq)),
                }
            }
        }
        let writes: Vec<_> = pending
            .into_iter()
            .map(|(marker, seq)| async move {
                let by = users::by(shard, seq);
                let expires_at = marker.expires_at(self.replay_horizon);
                let result = tokio::time::timeout(
                    deadline.remaining(),
                    self.markers.first_seen(marker, &by, expires_at),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(telemetry_shared::ports::StoreError::Transient(
                        "invocation deadline reached".into(),
                    ))
                });
                (marker, seq, result)
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(writes)
            .buffer_unordered(CONCURRENT_UPDATES)
            .collect()
            .await;
        let written = results.len();
        let mut cut: Option<String> = None;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() + written > self.cache_capacity {
            cache.clear();
        }
        for (marker, seq, result) in results {
            match result {
                Ok(by) => {
                    cache.insert(marker.clone(), by.clone());
                    resolved.insert(marker.clone(), by);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "user marker not resolved");
                    if cut.as_ref().is_none_or(|c| seq < c) {
                        cut = Some(seq.clone());
                    }
                }
            }
        }
        (resolved, cut, written)
    }

    /// Handles one tumbling-window invocation; counter updates not done by `deadline` are
    /// reported as failed (Lambda retries them; the watermark keeps them exactly once).
    pub async fn handle(
        &self,
        event: TimeWindowEvent,
        deadline: Deadline,
    ) -> TimeWindowEventResponse {
        self.handle_batch(event, Vec::new(), deadline).await
    }

    /// Handles an invocation payload as Lambda delivers it (see [`read_window`]).
    pub async fn handle_payload(
        &self,
        payload: serde_json::Value,
        deadline: Deadline,
    ) -> Result<TimeWindowEventResponse, serde_json::Error> {
        let batch = read_window(payload)?;
        Ok(self
            .handle_batch(batch.event, batch.unreadable, deadline)
            .await)
    }

    async fn handle_batch(
        &self,
        mut event: TimeWindowEvent,
        unreadable: Vec<Option<String>>,
        deadline: Deadline,
    ) -> TimeWindowEventResponse {
        let mut metrics = Metrics::new("post-process");
        for seq in &unreadable {
            tracing::error!(sequence_number = ?seq, "stream record skipped: not a DynamoDB stream record");
        }
        if !unreadable.is_empty() {
            metrics.add(Metric::RecordsSkipped, unreadable.len() as u64);
        }
        // Lambda requires a state in every window response; `{}` is the empty one.
        let mut response = TimeWindowEventResponse::default();
        let records = &mut event.dynamo_db_event.records;
        metrics.add(Metric::BatchSize, (records.len() + unreadable.len()) as u64);
        let Some(shard) = event.time_window_properties.shard_id.as_deref() else {
            // Without the shard id the counters cannot be kept exactly once: refuse to count
            // rather than risk counting twice. The iterator-age alarm will say so.
            tracing::error!(
                "window event without shardId: the mapping needs TumblingWindowInSeconds"
            );
            response.batch_item_failures = records
                .iter()
                .take(1)
                .map(|r| failure(r.change.sequence_number.clone()))
                .collect();
            metrics.flush();
            return response;
        };

        let Aggregated {
            counted,
            mut updates,
            markers,
            received,
            original,
            not_inserts,
            undecodable,
        } = aggregate(records);
        if not_inserts > 0 {
            metrics.add(Metric::RecordsSkipped, not_inserts as u64);
        }
        for (seq, what) in &undecodable {
            tracing::error!(sequence_number = ?seq, missing = what, "stream record skipped: not countable");
        }
        if !undecodable.is_empty() {
            metrics.add(Metric::RecordsSkipped, undecodable.len() as u64);
        }
        // Unique users: resolve the markers, then count those this batch's records created.
        let (resolved, cut, marker_writes) = self.resolve_markers(shard, &markers, deadline).await;
        updates.extend(users::user_updates(
            shard,
            &received,
            &resolved,
            cut.as_deref(),
        ));
        let applies: Vec<_> = updates
            .iter()
            .map(|u| async move {
                let applied =
                    tokio::time::timeout(deadline.remaining(), self.counts.apply(shard, u))
                        .await
                        .unwrap_or_else(|_| {
                            Err(telemetry_shared::ports::StoreError::Transient(
                                "invocation deadline reached".into(),
                            ))
                        });
                (u, applied)
            })
            .collect();
        // Built up front: a closure inside the stream would trip rustc's Send inference.
        let results: Vec<_> = futures::stream::iter(applies)
            .buffer_unordered(CONCURRENT_UPDATES)
            .collect()
            .await;

        let mut first_failed: Option<&str> = None;
        let mut applied = 0u64;
        for (update, result) in results {
            match result {
                Ok(n) => {
                    applied += n;
                    let skipped = update.seqs.len() as u64 - n;
                    if skipped > 0 {
                        metrics.add(Metric::DuplicatesSkipped, skipped);
                    }
                }
                Err(e) => {
                    tracing::warn!(counter = %update.id.pk, bucket = %update.id.bucket, error = %e, "counter update failed");
                    if first_failed.is_none_or(|f| update.first() < f) {
                        first_failed = Some(update.first());
                    }
                }
            }
        }
        if let Some(cut) = cut.as_deref()
            && first_failed.is_none_or(|f| cut < f)
        {
            first_failed = Some(cut);
        }
        if let Some(seq) = first_failed.and_then(|padded| original.get(padded)) {
            // Lambda re-delivers from here; counters already updated skip what they have.
            response
                .batch_item_failures
                .push(failure(Some(seq.to_string())));
            metrics.add(Metric::RecordsFailed, 1);
        }
        metrics.add(Metric::RecordsCounted, counted as u64);
        metrics.add(Metric::CountIncrements, applied);
        metrics.add(Metric::CounterUpdates, updates.len() as u64);
        tracing::info!(
            shard,
            records = records.len(),
            counted,
            counters = updates.len(),
            markers = markers.len(),
            marker_writes,
            final_invoke = event.time_window_properties.is_final_invoke_for_window,
            failed = response.batch_item_failures.len(),
            "batch counted"
        );
        metrics.flush();
        response
    }
}

fn failure(seq: Option<String>) -> DynamoDbBatchItemFailure {
    let mut f = DynamoDbBatchItemFailure::default();
    f.item_identifier = seq;
    f
}

/// Builds the production handler.
pub fn from_config(config: &Config, sdk: &aws_config::SdkConfig) -> PostProcess {
    let table = Arc::new(CountTable::new(
        aws_sdk_dynamodb::Client::new(sdk),
        config.counts_table.clone(),
        config.minute_ttl_days,
    ));
    PostProcess::new(table.clone(), table)
        .with_markers(config.marker_cache, config.stream_retention_hours)
}

#[cfg(test)]
mod tests {
    use telemetry_shared::ports::memory::{MemoryCounts, MemoryMarkers};

    use super::*;

    /// A deadline no test comes near: the template's 30 s timeout.
    fn ample() -> Deadline {
        Deadline::after(std::time::Duration::from_secs(30))
    }

    fn fixture() -> TimeWindowEvent {
        serde_json::from_str(include_str!("../../../events/dynamodb-window-batch.json")).unwrap()
    }

    /// A handler over in-memory counts, and the counts.
    struct Fixture {
        handler: PostProcess,
        counts: Arc<MemoryCounts>,
        markers: Arc<MemoryMarkers>,
    }

    impl std::ops::Deref for Fixture {
        type Target = PostProcess;
        fn deref(&self) -> &PostProcess {
            &self.handler
        }
    }

    fn handler() -> Fixture {
        let counts = Arc::new(MemoryCounts::default());
        let markers = Arc::new(MemoryMarkers::default());
        Fixture {
            handler: PostProcess::new(counts.clone(), markers.clone()),
            counts,
            markers,
        }
    }

    fn total(h: &Fixture, pk: &str, bucket: &str) -> u64 {
        h.counts.total(pk, bucket)
    }

    /// A window event of `n` INSERTs of type `t` with sequence numbers from `first`, on `shard`.
    fn batch(shard: &str, first: u64, n: u64, t: &str) -> TimeWindowEvent {
        let mut e = fixture();
        let template = e.dynamo_db_event.records[0].clone();
        e.dynamo_db_event.records = (0..n)
            .map(|i| {
                let mut r = template.clone();
                r.change.sequence_number = Some((first + i).to_string());
                r.change
                    .new_image
                    .insert("type".into(), serde_dynamo::AttributeValue::S(t.into()));
                r
            })
            .collect();
        e.time_window_properties.shard_id = Some(shard.into());
        e
    }

    /// A window event of records on `shard`, sequence numbers from `first`, one per user.
    fn users_batch(shard: &str, first: u64, users: &[&str]) -> TimeWindowEvent {
        let mut e = batch(shard, first, users.len() as u64, "t");
        for (r, user) in e.dynamo_db_event.records.iter_mut().zip(users) {
            r.change.new_image.insert(
                "userId".into(),
                serde_dynamo::AttributeValue::S((*user).into()),
            );
        }
        e
    }

    /// Active users (type `*` and `t`) and new users of the fixture's day, summed over shards.
    fn users(h: &Fixture) -> [u64; 4] {
        let day = "2026-11-26T00:00:00Z";
        [
            total(h, "prod#*#users-day", day),
            total(h, "prod#t#users-day", day),
            total(h, "prod#*#users-week", "2026-11-23T00:00:00Z"),
            total(h, "prod#*#new-day", day),
        ]
    }

    /// A second function instance over the same tables: a cold cache, as after a restart.
    fn cold(h: &Fixture) -> Fixture {
        Fixture {
            handler: PostProcess::new(h.counts.clone(), h.markers.clone()),
            counts: h.counts.clone(),
            markers: h.markers.clone(),
        }
    }

    #[tokio::test]
    async fn unique_users_are_exact_under_replays_bisects_and_two_shards() {
        let h = handler();
        let a = users_batch("shard-a", 100, &["u1", "u2", "u3", "u1"]);
        let b = users_batch("shard-b", 100, &["u1", "u4"]);
        h.handle(a.clone(), ample()).await;
        h.handle(b.clone(), ample()).await;
        assert_eq!(users(&h), [4, 4, 4, 4], "u1 on both shards is one user");
        // Replayed whole, by a warm and by a cold instance; bisected; the other shard again.
        h.handle(a.clone(), ample()).await;
        let c = cold(&h);
        c.handle(a.clone(), ample()).await;
        let (mut first, mut second) = (a.clone(), a.clone());
        first.dynamo_db_event.records.truncate(2);
        second.dynamo_db_event.records.drain(..2);
        c.handle(first, ample()).await;
        c.handle(second, ample()).await;
        cold(&h).handle(b, ample()).await;
        assert_eq!(users(&h), [4, 4, 4, 4]);
        // The warm function wrote each marker once: a cache hit costs no write.
        let calls = *h.markers.calls.lock().unwrap();
        let c2 = cold(&h);
        c2.handle(users_batch("shard-a", 104, &["u1", "u2"]), ample())
            .await;
        c2.handle(users_batch("shard-a", 106, &["u1", "u2"]), ample())
            .await;
        assert_eq!(
            *h.markers.calls.lock().unwrap() - calls,
            16,
            "8 markers × 2 users, once"
        );
        assert_eq!(users(&h), [4, 4, 4, 4]);
    }

    /// Documents, not endorses: Lambda delivers a shard's batches in order, and the watermark
    /// relies on it. Were a later batch applied first, a user it already holds is still counted
    /// once (by the marker's creator), but a user first seen in the earlier batch is lost: its
    /// sequence number lies below the partial counter's watermark.
    #[tokio::test]
    async fn a_later_batch_applied_first_loses_the_earlier_batchs_new_users() {
        let h = handler();
        h.handle(users_batch("shard-a", 300, &["u1"]), ample())
            .await;
        h.handle(users_batch("shard-a", 200, &["u1", "u5"]), ample())
            .await;
        assert_eq!(users(&h), [1, 1, 1, 1], "u5 is not counted");
        assert_eq!(
            h.markers.markers.lock().unwrap().len(),
            16,
            "yet its markers exist"
        );
    }

    #[tokio::test]
    async fn an_unresolved_marker_cuts_the_batch_at_its_first_record() {
        let h = handler();
        h.markers.fail_users.lock().unwrap().push("u2".into());
        let a = users_batch("shard-a", 200, &["u1", "u2", "u3", "u2"]);
        let r = h.handle(a.clone(), ample()).await;
        let reported: Vec<_> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone().unwrap())
            .collect();
        assert_eq!(reported, ["201"], "u2's first record");
        // Only what lies before the cut counted; the rest comes again.
        assert_eq!(users(&h), [1, 1, 1, 1]);
        h.markers.fail_users.lock().unwrap().clear();
        let mut again = a.clone();
        again.dynamo_db_event.records.drain(..1);
        let r = cold(&h).handle(again, ample()).await;
        assert!(r.batch_item_failures.is_empty());
        assert_eq!(users(&h), [3, 3, 3, 3]);
    }

    #[tokio::test]
    async fn fixture_counts_inserts_under_their_time_and_skips_modifies() {
        let h = handler();
        let r = h.handle(fixture(), ample()).await;
        assert!(r.batch_item_failures.is_empty());
        assert!(r.time_window_event_response_properties.state.is_empty());
        assert_eq!(
            total(&h, "prod#game.level_completed#hour", "2026-11-26T13:00:00Z"),
            1
        );
        assert_eq!(
            total(&h, "prod#game.level_completed#hour", "2026-11-26T12:00:00Z"),
            1
        );
        assert_eq!(total(&h, "prod#*#day", "2026-11-26T00:00:00Z"), 3);
        assert_eq!(
            total(&h, "prod#game.purchase#minute", "2026-11-26T13:41:00Z"),
            1
        );
    }

    #[tokio::test]
    async fn replayed_and_bisected_batches_never_count_twice() {
        let h = handler();
        let whole = batch("shard-a", 1000, 10, "t");
        h.handle(whole.clone(), ample()).await;
        h.handle(whole.clone(), ample()).await;
        let (mut first, mut second) = (whole.clone(), whole.clone());
        first.dynamo_db_event.records.truncate(5);
        second.dynamo_db_event.records.drain(..5);
        h.handle(second, ample()).await;
        h.handle(first, ample()).await;
        assert_eq!(total(&h, "prod#t#day", "2026-11-26T00:00:00Z"), 10);
        assert_eq!(total(&h, "prod#*#minute", "2026-11-26T13:40:00Z"), 10);
    }

    #[tokio::test]
    async fn shards_with_overlapping_sequence_numbers_count_apart() {
        let h = handler();
        // Same sequence range on two shards (DynamoDB numbers per shard), interleaved.
        h.handle(batch("shard-a", 100, 5, "t"), ample()).await;
        h.handle(batch("shard-b", 100, 5, "t"), ample()).await;
        h.handle(batch("shard-a", 103, 5, "t"), ample()).await; // 103..=107: 105..=107 are new
        h.handle(batch("shard-b", 100, 5, "t"), ample()).await; // all seen
        assert_eq!(total(&h, "prod#t#hour", "2026-11-26T13:00:00Z"), 13);
    }

    #[tokio::test]
    async fn a_rotated_shard_starts_its_own_counters() {
        let h = handler();
        h.handle(batch("parent", 500, 3, "t"), ample()).await;
        // The child shard's numbers may be lower than the parent's last one.
        h.handle(batch("child", 200, 3, "t"), ample()).await;
        assert_eq!(total(&h, "prod#t#day", "2026-11-26T00:00:00Z"), 6);
    }

    #[tokio::test]
    async fn without_a_shard_id_nothing_is_counted_and_the_batch_fails() {
        let h = handler();
        let mut e = fixture();
        e.time_window_properties.shard_id = None;
        let r = h.handle(e, ample()).await;
        assert_eq!(r.batch_item_failures.len(), 1);
        assert!(h.counts.counters.lock().unwrap().is_empty());
    }

    /// The fixture as Lambda delivers it, with one record made unreadable by `spoil`.
    fn payload_with(spoil: impl Fn(&mut serde_json::Value)) -> serde_json::Value {
        let mut payload: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/dynamodb-window-batch.json"))
                .unwrap();
        spoil(&mut payload["Records"][0]);
        payload
    }

    #[tokio::test]
    async fn a_record_the_event_types_cannot_read_is_skipped_and_its_neighbours_counted() {
        let h = handler();
        // An attribute value of no DynamoDB type: the whole event would not deserialize.
        let payload = payload_with(|r| {
            r["dynamodb"]["NewImage"]["type"] = serde_json::json!({"Q": "?"});
        });
        assert!(serde_json::from_value::<TimeWindowEvent>(payload.clone()).is_err());
        let r = h.handle_payload(payload, ample()).await.unwrap();
        assert!(r.batch_item_failures.is_empty());
        // The fixture's three INSERTs less the spoiled one.
        assert_eq!(total(&h, "prod#*#day", "2026-11-26T00:00:00Z"), 2);
    }

    #[tokio::test]
    async fn records_with_extreme_times_are_skipped_or_counted_but_never_fail_the_batch() {
        let h = handler();
        for (timestamp, received) in [
            ("-262143-01-01T00:00:00Z", "-262143-01-01T00:00:00Z"),
            ("+262142-12-31T23:59:59Z", "+262142-12-31T23:59:59Z"),
            ("not a time", "2026-11-26T13:44:16.000Z"),
        ] {
            let payload = payload_with(|r| {
                r["dynamodb"]["NewImage"]["timestamp"] = serde_json::json!({"S": timestamp});
                r["dynamodb"]["NewImage"]["receivedAt"] = serde_json::json!({"S": received});
            });
            let r = h.handle_payload(payload, ample()).await.unwrap();
            assert!(r.batch_item_failures.is_empty(), "{timestamp}");
        }
    }

    #[test]
    fn a_payload_that_is_not_a_window_event_is_an_error() {
        assert!(read_window(serde_json::json!("nope")).is_err());
    }

    #[tokio::test]
    async fn the_final_empty_invoke_of_a_window_changes_nothing() {
        let h = handler();
        let mut e = fixture();
        e.dynamo_db_event.records.clear();
        e.time_window_properties.is_final_invoke_for_window = true;
        let r = h.handle(e, ample()).await;
        assert!(r.batch_item_failures.is_empty());
        assert!(h.counts.counters.lock().unwrap().is_empty());
    }
}
