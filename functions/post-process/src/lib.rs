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
use serde_json::value::RawValue;
use telemetry_shared::aws::count_table::CountTable;
use telemetry_shared::aws::event_table;
use telemetry_shared::aws::metric_table::MetricTable;
use telemetry_shared::config::{ConfigError, Env};
use telemetry_shared::count::{self, CountedEvent};
use telemetry_shared::event::StoredEvent;
use telemetry_shared::metric_def::{self, Dimension, Measure, MetricDefinition, MetricRecord};
use telemetry_shared::metrics::{Metric, Metrics};
use telemetry_shared::ports::{CountStore, MarkerStore, MetricDefinitions, MetricStore};
use telemetry_shared::retry::Deadline;
use telemetry_shared::sequence;
use telemetry_shared::users::{self, Marker, SeenCache};

/// Counter updates in flight at once.
pub const CONCURRENT_UPDATES: usize = 16;

/// `STREAM_RETENTION_HOURS` when unset: the template's default Kinesis retention.
pub const DEFAULT_STREAM_RETENTION_HOURS: u32 = 168;

/// `USER_CACHE_USERS` when unset (see [`Config::user_cache`]).
pub const DEFAULT_USER_CACHE: usize = 250_000;

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
    /// Users whose settled markers a warm function remembers (`USER_CACHE_USERS`, default
    /// 250000, ~170 bytes each: see `telemetry_shared::users::SeenCache`): a user's later events
    /// in a period cost no marker write.
    pub user_cache: usize,
    /// The admin-defined metrics' definitions (`METRICS_TABLE`).
    pub metrics_table: String,
    /// How long a snapshot of the definitions is used (`METRICS_CACHE_SECONDS`, default 60;
    /// with 60 s more, the δ after which a new definition takes effect — the query function
    /// must be given the same value).
    pub metrics_cache_seconds: u32,
    /// Breakdown values admitted per metric (`METRIC_MAX_VALUES`, default 100).
    pub metric_max_values: usize,
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
            user_cache: env.parsed_or("USER_CACHE_USERS", DEFAULT_USER_CACHE)?,
            metrics_table: env.required("METRICS_TABLE")?,
            metrics_cache_seconds: env
                .parsed_or("METRICS_CACHE_SECONDS", metric_def::DEFAULT_CACHE_SECONDS)?,
            metric_max_values: env
                .parsed_or("METRIC_MAX_VALUES", metric_def::DEFAULT_MAX_VALUES)?,
        })
    }
}

/// The post-process handler.
pub struct PostProcess {
    counts: Arc<dyn CountStore>,
    markers: Arc<dyn MarkerStore>,
    /// The markers this function knows are settled (counted by whoever created them).
    cache: Mutex<SeenCache>,
    /// How long after its period a marker must outlive (see [`Config::stream_retention_hours`]).
    replay_horizon: chrono::Duration,
    /// The admin-defined metrics, when configured.
    metrics: Option<MetricsState>,
}

/// What post-process needs for the admin-defined metrics.
struct MetricsState {
    definitions: Arc<dyn MetricDefinitions>,
    store: Arc<dyn MetricStore>,
    /// δ: see `metric_def`.
    delay: chrono::Duration,
    max_values: usize,
    snapshot: Mutex<Option<Arc<metric_def::Snapshot>>>,
    /// metric id → (values known admitted, whether the registry is full).
    registry: Mutex<HashMap<String, (std::collections::HashSet<String>, bool)>>,
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
    /// The stream record's creation time (which metric definitions apply).
    created: chrono::DateTime<chrono::Utc>,
    /// `data`'s JSON text, taken only when a metric of the event's type needs it.
    data: Option<String>,
}

/// Reads what counting needs from a stream record, taking its image (uncopied).
fn counted(record: &mut EventRecord, wants_data: &dyn Fn(&str) -> bool) -> Result<Read, Skip> {
    if record.event_name != "INSERT" {
        return Err(Skip::NotInsert);
    }
    let seq = record
        .change
        .sequence_number
        .as_deref()
        .and_then(sequence::padded)
        .ok_or(Skip::Undecodable("sequence number"))?;
    let mut image = std::mem::take(&mut record.change.new_image);
    let wanted =
        matches!(image.get("type"), Some(serde_dynamo::AttributeValue::S(t)) if wants_data(t));
    let data = match wanted.then(|| image.remove("data")).flatten() {
        Some(serde_dynamo::AttributeValue::S(d)) => Some(d),
        _ => None,
    };
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
        created: record.change.approximate_creation_date_time,
        data,
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
    /// What each applicable metric definition (by index) reads from each record; the
    /// breakdown value still to be admitted.
    pub metric_records: Vec<(usize, MetricRecord)>,
}

/// Reads a batch's records (taking their images) and aggregates them per partial counter.
pub fn aggregate(records: &mut [EventRecord]) -> Aggregated {
    aggregate_with(records, &[])
}

/// The same, also reading what `definitions` measure.
pub fn aggregate_with(records: &mut [EventRecord], definitions: &[MetricDefinition]) -> Aggregated {
    let wants_data = |kind: &str| definitions.iter().any(|d| d.kind == kind && d.needs_data());
    let mut read = Vec::with_capacity(records.len());
    let mut original: HashMap<String, String> = HashMap::with_capacity(records.len());
    let (mut not_inserts, mut undecodable) = (0, Vec::new());
    for r in records {
        // A panic on one record's values (a bug) must not fail the batch: see the module docs.
        let result = catch_unwind(AssertUnwindSafe(|| counted(r, &wants_data))).unwrap_or(Err(
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
    // Each definition's paths, parsed once per batch, not per record.
    let parsed: Vec<_> = definitions
        .iter()
        .map(|d| {
            (
                d.sum.as_deref().and_then(metric_def::data_path),
                d.by.as_deref().and_then(Dimension::parse),
            )
        })
        .collect();
    let mut metric_records = Vec::new();
    for r in &read {
        let data = r
            .data
            .as_deref()
            .and_then(|d| serde_json::from_str::<&RawValue>(d).ok());
        for (i, (def, (sum, by))) in definitions.iter().zip(&parsed).enumerate() {
            if !def.applies(&r.event.environment, &r.event.kind, r.created) {
                continue;
            }
            let value = by.as_ref().map(|by| match by {
                Dimension::Origin => metric_def::string_value(r.event.origin.as_deref()),
                Dimension::Environment => metric_def::string_value(Some(&r.event.environment)),
                Dimension::Data(keys) => {
                    metric_def::breakdown_value(data.and_then(|d| metric_def::lookup(d, keys)))
                }
            });
            metric_records.push((
                i,
                MetricRecord {
                    seq: r.seq.clone(),
                    at: r.at,
                    measure: Measure::of(data, sum.as_deref()),
                    value,
                },
            ));
        }
    }
    Aggregated {
        metric_records,
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
            cache: Mutex::new(SeenCache::new(DEFAULT_USER_CACHE)),
            replay_horizon: replay_horizon(DEFAULT_STREAM_RETENTION_HOURS),
            metrics: None,
        }
    }

    /// The same handler keeping the metrics defined in `definitions` in `store`, using a
    /// snapshot of the definitions for `cache_seconds` and admitting `max_values` breakdown
    /// values per metric.
    pub fn with_metrics(
        mut self,
        definitions: Arc<dyn MetricDefinitions>,
        store: Arc<dyn MetricStore>,
        cache_seconds: u32,
        max_values: usize,
    ) -> Self {
        self.metrics = Some(MetricsState {
            definitions,
            store,
            delay: metric_def::delay(cache_seconds),
            max_values,
            snapshot: Mutex::new(None),
            registry: Mutex::new(HashMap::new()),
        });
        self
    }

    /// The same handler remembering the markers of at most `users` users, keeping period
    /// markers for `stream_retention_hours` (+ 48 h) beyond their period's lateness window.
    pub fn with_markers(mut self, users: usize, stream_retention_hours: u32) -> Self {
        self.cache = Mutex::new(SeenCache::new(users));
        self.replay_horizon = replay_horizon(stream_retention_hours);
        self
    }

    /// What the warm cache holds: (users, markers, approximate bytes).
    pub fn cache_size(&self) -> (usize, usize, usize) {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        (cache.users(), cache.markers(), cache.approx_bytes())
    }

    /// Each marker not known settled, with its `by`: written (or found) in the store. Returns
    /// the resolved markers and, when some could not be resolved, the lowest sequence number
    /// among their records (the batch is cut there: see `users::user_updates`). A settled
    /// marker counts nothing, so it is left out.
    async fn resolve_markers(
        &self,
        shard: &str,
        markers: &BTreeMap<Marker, String>,
        deadline: Deadline,
    ) -> (BTreeMap<Marker, String>, Option<String>, usize) {
        let mut resolved = BTreeMap::new();
        let mut pending = Vec::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for (marker, seq) in markers {
                if !cache.contains(marker) {
                    pending.push((marker, seq));
                }
            }
        }
        let writes: Vec<_> = pending
            .into_iter()
            .map(|(marker, seq)| async move {
                let by = users::by(shard, seq);
                let expires_at = marker.expires_at(self.replay_horizon);
                let result =
                    within(deadline, self.markers.first_seen(marker, &by, expires_at)).await;
                (marker, seq, result)
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(writes)
            .buffer_unordered(CONCURRENT_UPDATES)
            .collect()
            .await;
        let written = results.len();
        let mut cut: Option<String> = None;
        for (marker, seq, result) in results {
            match result {
                Ok(by) => {
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

    /// The definitions to use for records created up to `latest`: the snapshot, read again
    /// (strongly consistent) first when it does not cover them. `None` without metrics.
    async fn metric_snapshot(
        &self,
        latest: Option<chrono::DateTime<chrono::Utc>>,
        deadline: Deadline,
    ) -> Result<Option<Arc<metric_def::Snapshot>>, telemetry_shared::ports::StoreError> {
        let (Some(m), Some(latest)) = (&self.metrics, latest) else {
            return Ok(None);
        };
        if let Some(s) = m
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && s.covers(latest, m.delay)
        {
            return Ok(Some(s.clone()));
        }
        // Taken before the read: a definition created after it is not in it.
        let fetched = chrono::Utc::now();
        let definitions = within(deadline, m.definitions.list_metrics()).await?;
        let snapshot = Arc::new(metric_def::Snapshot {
            fetched,
            definitions,
        });
        *m.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        Ok(Some(snapshot))
    }

    /// Admits the batch's breakdown values (from the cache where it knows them) and sets each
    /// record's value: admitted, or `(other)`. Returns the lowest sequence number among records
    /// whose value could not be decided (the batch's metrics are cut there).
    async fn resolve_values(
        &self,
        m: &MetricsState,
        definitions: &[MetricDefinition],
        records: &mut [(usize, MetricRecord)],
        deadline: Deadline,
    ) -> Option<String> {
        let mut pending: BTreeMap<(usize, String), String> = BTreeMap::new();
        {
            let registry = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            for (i, r) in records.iter_mut() {
                let Some(value) = &r.value else { continue };
                if value == metric_def::OTHER {
                    continue;
                }
                match registry.get(&definitions[*i].id) {
                    Some((admitted, _)) if admitted.contains(value) => {}
                    Some((_, true)) => r.value = Some(metric_def::OTHER.to_string()),
                    _ => {
                        let lowest = pending.entry((*i, value.clone())).or_insert(r.seq.clone());
                        if r.seq < *lowest {
                            *lowest = r.seq.clone();
                        }
                    }
                }
            }
        }
        // In the order the values first appear, one at a time: the first values seen are the
        // ones admitted, and each answer lists the admitted values, so later ones often need no
        // call (a cold function pays one call per new value, once).
        let mut pending: Vec<((usize, String), String)> = pending.into_iter().collect();
        pending.sort_by(|a, b| a.1.cmp(&b.1));
        let mut cut: Option<String> = None;
        let mut refused: std::collections::HashSet<(String, String)> = Default::default();
        for ((i, value), seq) in pending {
            let id = &definitions[i].id;
            let known = {
                let registry = m.registry.lock().unwrap_or_else(|p| p.into_inner());
                registry.get(id).and_then(|(admitted, full)| {
                    if admitted.contains(&value) {
                        Some(true)
                    } else if *full {
                        Some(false)
                    } else {
                        None
                    }
                })
            };
            let admitted = match known {
                Some(admitted) => admitted,
                None => match within(deadline, m.store.admit(id, &value, m.max_values)).await {
                    Ok(admission) => {
                        let mut registry = m.registry.lock().unwrap_or_else(|p| p.into_inner());
                        let entry = registry.entry(id.clone()).or_default();
                        entry.0.extend(admission.values);
                        if admission.admitted {
                            entry.0.insert(value.clone());
                        } else {
                            // Values are never removed: a full registry stays full.
                            entry.1 = true;
                        }
                        admission.admitted
                    }
                    Err(e) => {
                        tracing::warn!(metric = %id, error = %e, "breakdown value not admitted");
                        // Records from here on are cut from this batch's metrics: admitting
                        // later values now would admit them out of stream order.
                        cut = Some(seq.clone());
                        break;
                    }
                },
            };
            if !admitted {
                refused.insert((id.clone(), value));
            }
        }
        for (i, r) in records.iter_mut() {
            if let Some(v) = &r.value
                && refused.contains(&(definitions[*i].id.clone(), v.clone()))
            {
                r.value = Some(metric_def::OTHER.to_string());
            }
        }
        cut
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

        // The metric definitions in force for these records (see `metric_def::Snapshot`).
        let latest = records
            .iter()
            .map(|r| r.change.approximate_creation_date_time)
            .max();
        let (snapshot, definitions_failed) = match self.metric_snapshot(latest, deadline).await {
            Ok(snapshot) => (snapshot, false),
            Err(e) => {
                tracing::warn!(error = %e, "metric definitions not read");
                (None, true)
            }
        };
        let definitions: &[MetricDefinition] =
            snapshot.as_ref().map_or(&[], |s| &s.definitions[..]);
        let Aggregated {
            counted,
            mut updates,
            markers,
            received,
            original,
            not_inserts,
            undecodable,
            mut metric_records,
        } = aggregate_with(records, definitions);
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
            .map(|u| async move { (u, within(deadline, self.counts.apply(shard, u)).await) })
            .collect();
        // Built up front: a closure inside the stream would trip rustc's Send inference.
        let results: Vec<_> = futures::stream::iter(applies)
            .buffer_unordered(CONCURRENT_UPDATES)
            .collect()
            .await;

        // Admin-defined metrics: values admitted, then every partial once. Without the
        // definitions, the whole batch is re-delivered (from its first counted record).
        let mut metric_cut: Option<String> = if definitions_failed {
            original.keys().min().cloned()
        } else {
            None
        };
        let mut metric_updates = Vec::new();
        if let Some(m) = &self.metrics
            && !metric_records.is_empty()
        {
            if let Some(cut) = self
                .resolve_values(m, definitions, &mut metric_records, deadline)
                .await
                && metric_cut.as_ref().is_none_or(|c| cut < *c)
            {
                metric_cut = Some(cut);
            }
            let mut by_metric: BTreeMap<usize, Vec<MetricRecord>> = BTreeMap::new();
            for (i, r) in metric_records {
                if metric_cut.as_ref().is_none_or(|c| r.seq < *c) {
                    by_metric.entry(i).or_default().push(r);
                }
            }
            for (i, records) in by_metric {
                metric_updates.extend(metric_def::metric_updates(&definitions[i].id, &records));
            }
        }
        let metric_store = self.metrics.as_ref().map(|m| &m.store);
        let metric_applies: Vec<_> = metric_updates
            .iter()
            .filter_map(|u| {
                let store = metric_store?;
                Some(async move { (u, within(deadline, store.apply_metric(shard, u)).await) })
            })
            .collect();
        let metric_results: Vec<_> = futures::stream::iter(metric_applies)
            .buffer_unordered(CONCURRENT_UPDATES)
            .collect()
            .await;
        for (update, result) in &metric_results {
            if let Err(e) = result {
                tracing::warn!(partial = %update.id.pk, bucket = %update.id.bucket, error = %e, "metric update failed");
                let first = update
                    .entries
                    .first()
                    .map(|(s, _)| s.clone())
                    .unwrap_or_default();
                if metric_cut.as_ref().is_none_or(|c| first < *c) {
                    metric_cut = Some(first);
                }
            }
        }

        let mut first_failed: Option<&str> = None;
        let mut applied = 0u64;
        for (update, result) in results {
            match result {
                Ok(n) => {
                    applied += n;
                    if let Some((environment, new)) = users::all_types_daily(&update.id.pk)
                        && n > 0
                    {
                        let metric = if new {
                            Metric::NewUsers
                        } else {
                            Metric::ActiveUsers
                        };
                        metrics.add_for_environment(metric, environment, n);
                    }
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
        for cut in [cut.as_deref(), metric_cut.as_deref()]
            .into_iter()
            .flatten()
        {
            if first_failed.is_none_or(|f| cut < f) {
                first_failed = Some(cut);
            }
        }
        {
            // What this answer settles is remembered: a cache hit costs no write next time.
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for marker in users::settled(shard, &received, &resolved, first_failed) {
                cache.insert(marker);
            }
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

/// `call`, or a transient failure once `deadline` is reached (what is not done is reported and
/// re-delivered, never left to a killed invocation).
async fn within<T>(
    deadline: Deadline,
    call: impl std::future::Future<Output = Result<T, telemetry_shared::ports::StoreError>>,
) -> Result<T, telemetry_shared::ports::StoreError> {
    tokio::time::timeout(deadline.remaining(), call)
        .await
        .unwrap_or_else(|_| {
            Err(telemetry_shared::ports::StoreError::Transient(
                "invocation deadline reached".into(),
            ))
        })
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
    let definitions = Arc::new(MetricTable::new(
        aws_sdk_dynamodb::Client::new(sdk),
        config.metrics_table.clone(),
    ));
    PostProcess::new(table.clone(), table.clone())
        .with_markers(config.user_cache, config.stream_retention_hours)
        .with_metrics(
            definitions,
            table,
            config.metrics_cache_seconds,
            config.metric_max_values,
        )
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

    /// Counts that refuse one update of `pk`, once.
    struct FlakyCounts {
        inner: Arc<MemoryCounts>,
        fail_once: Mutex<Option<String>>,
    }

    #[async_trait::async_trait]
    impl CountStore for FlakyCounts {
        async fn apply(
            &self,
            shard: &str,
            update: &telemetry_shared::count::CounterUpdate,
        ) -> Result<u64, telemetry_shared::ports::StoreError> {
            let fail = {
                let mut pk = self.fail_once.lock().unwrap();
                pk.take_if(|pk| *pk == update.id.pk).is_some()
            };
            if fail {
                return Err(telemetry_shared::ports::StoreError::Transient(
                    "throttled".into(),
                ));
            }
            self.inner.apply(shard, update).await
        }
    }

    #[tokio::test]
    async fn a_warm_function_counts_a_re_delivered_user_whose_counter_failed() {
        let h = handler();
        let flaky = Arc::new(FlakyCounts {
            inner: h.counts.clone(),
            fail_once: Mutex::new(Some("prod#*#users-day".into())),
        });
        let warm = PostProcess::new(flaky, h.markers.clone());
        let a = users_batch("shard-a", 400, &["u1", "u2"]);
        let r = warm.handle(a.clone(), ample()).await;
        assert_eq!(
            r.batch_item_failures.len(),
            1,
            "the failed partial is reported"
        );
        assert_eq!(users(&h)[0], 0);
        // Lambda re-delivers the batch to the same warm instance: the markers its records
        // created were not remembered as settled, so they are found again and counted.
        let calls = *h.markers.calls.lock().unwrap();
        let r = warm.handle(a, ample()).await;
        assert!(r.batch_item_failures.is_empty());
        assert_eq!(users(&h), [2, 2, 2, 2]);
        assert!(*h.markers.calls.lock().unwrap() > calls);
        // Now settled: the next batch of the same users writes no marker of that day.
        let calls = *h.markers.calls.lock().unwrap();
        warm.handle(users_batch("shard-a", 402, &["u1", "u2"]), ample())
            .await;
        assert_eq!(*h.markers.calls.lock().unwrap(), calls);
        assert_eq!(users(&h), [2, 2, 2, 2]);
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

    mod metrics {
        use telemetry_shared::metric_def::MetricDefinition;
        use telemetry_shared::ports::memory::{MemoryMetricDefinitions, MemoryMetrics};

        use super::*;

        struct MetricsFixture {
            handler: PostProcess,
            metrics: Arc<MemoryMetrics>,
            definitions: Arc<MemoryMetricDefinitions>,
        }

        fn revenue(effective_at: &str) -> MetricDefinition {
            MetricDefinition {
                id: "revenue".into(),
                kind: "game.purchase".into(),
                sum: Some("data.amount".into()),
                by: Some("data.currency".into()),
                environment: Some("prod".into()),
                description: None,
                created_at: "2026-11-26T00:00:00.000Z".into(),
                effective_at: effective_at.into(),
                retired_at: None,
            }
        }

        fn with_metrics(defs: Vec<MetricDefinition>, max_values: usize) -> MetricsFixture {
            let definitions = Arc::new(MemoryMetricDefinitions::default());
            for d in defs {
                definitions
                    .definitions
                    .lock()
                    .unwrap()
                    .insert(d.id.clone(), d);
            }
            let metrics = Arc::new(MemoryMetrics::default());
            let handler = PostProcess::new(
                Arc::new(MemoryCounts::default()),
                Arc::new(MemoryMarkers::default()),
            )
            .with_metrics(definitions.clone(), metrics.clone(), 60, max_values);
            MetricsFixture {
                handler,
                metrics,
                definitions,
            }
        }

        /// Purchases with these `data` objects, sequence numbers from `first`.
        fn purchases(first: u64, data: &[&str]) -> TimeWindowEvent {
            let mut e = batch("shard-1", first, data.len() as u64, "game.purchase");
            for (r, d) in e.dynamo_db_event.records.iter_mut().zip(data) {
                r.change
                    .new_image
                    .insert("data".into(), serde_dynamo::AttributeValue::S((*d).into()));
            }
            e
        }

        /// (count, skipped, sum) of a partial, summed over shards.
        fn figures(h: &MetricsFixture, pk: &str, prefix: &str) -> (u64, u64, String) {
            let partials = h.metrics.partials.lock().unwrap();
            let mut out = (0, 0, telemetry_shared::metric_def::Decimal(0));
            for ((p, x, _), (f, _)) in partials.iter() {
                if p == pk && x == prefix {
                    out.0 += f.count;
                    out.1 += f.skipped;
                    out.2 = telemetry_shared::metric_def::Decimal(out.2.0 + f.sum.0);
                }
            }
            (out.0, out.1, out.2.to_string())
        }

        const DAY: &str = "2026-11-26T00:00:00Z";
        const HOUR: &str = "2026-11-26T13:00:00Z";

        fn sample() -> Vec<&'static str> {
            vec![
                r#"{"amount":19.99,"currency":"USD"}"#,
                r#"{"amount":5,"currency":"EUR"}"#,
                r#"{"amount":0.01,"currency":"GBP"}"#,
                r#"{"amount":"7","currency":"USD"}"#,
                r#"{"amount":100.5,"currency":"USD"}"#,
                r#"{"amount":1,"currency":{"code":"JPY"}}"#,
            ]
        }

        fn check_figures(h: &MetricsFixture) {
            for (g, bucket) in [("day", DAY), ("hour", HOUR)] {
                let total = format!("metric#revenue#{g}");
                let by = format!("metric#revenue#{g}#by");
                // The string amount is skipped, never summed nor dropped.
                assert_eq!(figures(h, &total, bucket), (5, 1, "126.5".into()), "{g}");
                assert_eq!(
                    figures(h, &by, &format!("{bucket}#\"USD\"")),
                    (2, 0, "120.49".into())
                );
                assert_eq!(
                    figures(h, &by, &format!("{bucket}#\"EUR\"")),
                    (1, 0, "5".into())
                );
                // Two values admitted: GBP, and the object, count under "(other)".
                assert_eq!(
                    figures(h, &by, &format!("{bucket}#(other)")),
                    (2, 0, "1.01".into())
                );
            }
        }

        #[tokio::test]
        async fn metrics_are_exact_under_replays_and_bisects_with_a_capped_breakdown() {
            let h = with_metrics(vec![revenue("2026-11-26T00:00:00.000Z")], 2);
            let data = sample();
            let r = h.handler.handle(purchases(1, &data), ample()).await;
            assert!(r.batch_item_failures.is_empty());
            check_figures(&h);
            // Replayed whole, then bisected: nothing changes.
            h.handler.handle(purchases(1, &data), ample()).await;
            h.handler.handle(purchases(1, &data[..3]), ample()).await;
            h.handler.handle(purchases(4, &data[3..]), ample()).await;
            check_figures(&h);
            assert_eq!(
                h.metrics.registry.lock().unwrap()["revenue"].len(),
                2,
                "at most METRIC_MAX_VALUES values"
            );
            // The definitions were read once: the snapshot covers these records.
            assert_eq!(*h.definitions.lists.lock().unwrap(), 1);
        }

        #[tokio::test]
        async fn a_failed_admission_fails_the_record_and_a_redelivery_completes_the_figures() {
            let h = with_metrics(vec![revenue("2026-11-26T00:00:00.000Z")], 2);
            h.metrics.fail_values.lock().unwrap().push("\"EUR\"".into());
            let data = sample();
            let r = h.handler.handle(purchases(1, &data), ample()).await;
            let reported: Vec<_> = r
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone().unwrap())
                .collect();
            assert_eq!(reported, ["2"], "the EUR record, never a later one");
            h.metrics.fail_values.lock().unwrap().clear();
            // Lambda re-delivers from the reported record.
            h.handler.handle(purchases(2, &data[1..]), ample()).await;
            check_figures(&h);
        }

        #[tokio::test]
        async fn a_metric_counts_only_records_created_after_it_takes_effect() {
            // The fixture's records were created at 13:44:16.
            let later = revenue("2026-11-26T13:44:17.000Z");
            let h = with_metrics(vec![later], 100);
            h.handler.handle(purchases(1, &sample()), ample()).await;
            assert_eq!(figures(&h, "metric#revenue#day", DAY).0, 0);
            let h = with_metrics(vec![revenue("2026-11-26T13:44:16.000Z")], 100);
            h.handler.handle(purchases(1, &sample()), ample()).await;
            assert_eq!(
                figures(&h, "metric#revenue#day", DAY),
                (5, 1, "126.5".into())
            );
            // Other environments are not measured.
            let h = with_metrics(vec![revenue("2026-11-26T00:00:00.000Z")], 100);
            let mut dev = purchases(1, &sample());
            for r in &mut dev.dynamo_db_event.records {
                r.change.new_image.insert(
                    "environment".into(),
                    serde_dynamo::AttributeValue::S("dev".into()),
                );
            }
            h.handler.handle(dev, ample()).await;
            assert!(h.metrics.partials.lock().unwrap().is_empty());
        }
    }
}
