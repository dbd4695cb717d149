//! The I/O the handlers need, one narrow capability per trait.
//!
//! The traits are object-safe (`#[async_trait]`: one boxed future per call, per batch or
//! request, not per event), so a handler holds `Arc<dyn Port>` and has one concrete type: no
//! type parameters, no null types for what is not configured (`Option` says that).
//!
//! Each port has one AWS adapter in [`crate::aws`] and, where it makes handler tests simpler,
//! an in-memory implementation in [`memory`].

use serde_json::value::RawValue;

use crate::count::CounterUpdate;
use crate::delivery::QueueMessage;
use crate::event::StoredEvent;
use crate::metric_def::{MetricDefinition, MetricUpdate, StoredPartial};
use crate::record::EventRecord;
use crate::retry::Deadline;
use crate::route::Route;
use crate::users::Marker;

/// Why a dependency (the stream, a table, a queue) did not do what was asked: the one failure
/// vocabulary of every port — whether the same request may succeed if tried again. Adapters
/// classify SDK errors into it once (`aws::is_retryable`); handlers map it once: HTTP answers
/// through [`crate::http::ApiError::dependency`], stream functions by reporting the records
/// (transient) or dead-lettering / skipping them (permanent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Throttling, 5xx, timeouts, unprocessed items, outages: retrying may help.
    #[error("unavailable: {0}")]
    Transient(String),
    /// Missing resource, access denied, a refused message or item: retrying cannot help.
    #[error("refused: {0}")]
    Permanent(String),
}

impl Failure {
    /// Whether the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Why records could not be put on the stream.
pub type SinkError = Failure;

/// Puts encoded events on the event stream.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    /// Puts every record durably on the stream, or fails; never a silent partial success.
    /// Returns how many records had to be re-sent (throttles, partial failures).
    async fn put_records(&self, records: Vec<EventRecord>) -> Result<usize, SinkError>;
}

/// Why the event store (or another table) failed.
pub type StoreError = Failure;

/// What part of a write failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    /// Indices (into the input) of events that are not known to be written.
    pub failed: Vec<usize>,
    /// The last error seen, when anything failed.
    pub error: Option<StoreError>,
    /// Items re-sent (unprocessed items, throttled calls).
    pub retried: usize,
}

impl WriteOutcome {
    /// Whether every event was written.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Writes events to the `events` table, idempotently: the key is (user, id) only.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Writes `events`; duplicates of one key within the input are written once, the **last**
    /// occurrence winning (callers order the input by stream sequence number). What is not
    /// written by `deadline` is reported as failed.
    async fn write_events(&self, events: &[StoredEvent<'_>], deadline: Deadline) -> WriteOutcome;
}

/// A page request for a user's events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// Whose events.
    pub user_id: String,
    /// Inclusive lower bound on `timestamp`, canonical form.
    pub from: Option<String>,
    /// Inclusive upper bound on `timestamp`, canonical form.
    pub to: Option<String>,
    /// Only this event type.
    pub kind: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
    /// Most bytes the page's events may take in the response, escaped
    /// ([`crate::http::MAX_LIST_RESPONSE_BYTES`]; see [`crate::http::ResponseBudget`]).
    pub max_bytes: usize,
}

/// One page of events.
#[derive(Debug, Default)]
pub struct EventPage {
    /// Stored events as JSON, newest first.
    pub events: Vec<Box<RawValue>>,
    /// Cursor of the next page, `None` on the last page.
    pub cursor: Option<String>,
}

/// Why events could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The cursor was not made by us for this query (HTTP 400).
    #[error("cursor is invalid")]
    InvalidCursor,
    /// The store failed (HTTP 503 when retryable, else 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads a user's events back in time order.
#[async_trait::async_trait]
pub trait EventReader: Send + Sync {
    /// One page of `query`.
    async fn list_events(&self, query: &EventQuery) -> Result<EventPage, ReadError>;
}

/// Why a message could not be sent to a queue.
pub type SendError = Failure;

/// Sends messages to SQS queues.
#[async_trait::async_trait]
pub trait QueueSink: Send + Sync {
    /// The queue's `MaximumMessageSize` in bytes.
    async fn max_message_size(&self, queue_url: &str) -> Result<usize, SendError>;

    /// Sends one `SendMessageBatch` (at most 10 messages; entry ids are their indices) and
    /// returns the outcome of each message, in order. A failed call fails every message.
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[&QueueMessage],
    ) -> Vec<Result<(), SendError>>;
}

/// Reads the routes.
#[async_trait::async_trait]
pub trait RouteSource: Send + Sync {
    /// Every route, enabled or not.
    async fn list_routes(&self) -> Result<Vec<Route>, StoreError>;
}

/// Manages the routes.
#[async_trait::async_trait]
pub trait RouteStore: RouteSource {
    /// Creates or replaces a route.
    async fn put_route(&self, route: &Route) -> Result<(), StoreError>;
    /// Deletes a route; `false` when there was none.
    async fn delete_route(&self, id: &str) -> Result<bool, StoreError>;
}

/// Applies counter updates exactly once.
#[async_trait::async_trait]
pub trait CountStore: Send + Sync {
    /// Applies `update` to its partial counter for `shard`: only sequence numbers beyond the
    /// counter's watermark count. Returns how many were added.
    async fn apply(&self, shard: &str, update: &CounterUpdate) -> Result<u64, StoreError>;
}

/// Keeps the first-seen markers of unique users ([`crate::users`]).
#[async_trait::async_trait]
pub trait MarkerStore: Send + Sync {
    /// Creates `marker` with `by` unless it exists (expiring at `expires_at`, Unix seconds),
    /// and returns the `by` it holds: `by` itself when this call created it.
    async fn first_seen(
        &self,
        marker: &Marker,
        by: &str,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError>;
}

/// Reads partial counters.
#[async_trait::async_trait]
pub trait CountReader: Send + Sync {
    /// `(bucket start, count)` of every partial counter of `pk` with a bucket in
    /// `from_bucket..=to_bucket` (all shards).
    async fn read_partials(
        &self,
        pk: &str,
        from_bucket: &str,
        to_bucket: &str,
    ) -> Result<Vec<(String, u64)>, StoreError>;
}

/// The admin-defined metrics' definitions (the `metrics` table).
#[async_trait::async_trait]
pub trait MetricDefinitions: Send + Sync {
    /// Every definition, retired ones too, read strongly consistent.
    async fn list_metrics(&self) -> Result<Vec<MetricDefinition>, StoreError>;
    /// One definition, read strongly consistent.
    async fn get_metric(&self, id: &str) -> Result<Option<MetricDefinition>, StoreError>;
    /// Creates `def` unless its id exists; `false` when it does.
    async fn create_metric(&self, def: &MetricDefinition) -> Result<bool, StoreError>;
    /// Sets a live metric's description; `false` when it is missing or retired.
    async fn describe_metric(
        &self,
        id: &str,
        description: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Retires a live metric from `at` (RFC 3339); `false` when it is missing or retired.
    async fn retire_metric(&self, id: &str, at: &str) -> Result<bool, StoreError>;
}

/// A breakdown value's admission: whether it is admitted, and every value the registry holds
/// (so the caller can decide the others without asking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Whether the value is (now) admitted.
    pub admitted: bool,
    /// Every admitted value, as far as the answer said.
    pub values: Vec<String>,
}

/// Keeps metric partials exactly once, and each breakdown's registry of admitted values.
#[async_trait::async_trait]
pub trait MetricStore: Send + Sync {
    /// Applies `update` to its partial for `shard`: only records beyond the partial's
    /// watermark count, and `min`/`max` move only by them. Returns how many were added.
    async fn apply_metric(&self, shard: &str, update: &MetricUpdate) -> Result<u64, StoreError>;
    /// Admits `value` to metric `id`'s breakdown unless `max` others are admitted already.
    async fn admit(&self, id: &str, value: &str, max: usize) -> Result<Admission, StoreError>;
}

/// Reads metric partials.
#[async_trait::async_trait]
pub trait MetricReader: Send + Sync {
    /// Every partial of `pk` (all shards) with a bucket in `from_bucket..=to_bucket`;
    /// `breakdown` says whether its sort keys carry a value.
    async fn read_metric(
        &self,
        pk: &str,
        from_bucket: &str,
        to_bucket: &str,
        breakdown: bool,
    ) -> Result<Vec<StoredPartial>, StoreError>;
}

/// What a rate limiter decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Over the limit: answer 429 with `Retry-After`.
    Limited {
        /// Seconds until the window resets.
        retry_after_secs: u32,
    },
    /// More events in one request than the limit ever allows at once: retrying cannot help
    /// (answer 413, not a retryable 429).
    TooLarge {
        /// The most events one request may carry.
        most: u64,
    },
}

/// Limits how many events one user may send per window, across every running function.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes `events` from `user_id`'s allowance for the window holding `now`.
    async fn acquire(
        &self,
        user_id: &str,
        events: u64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<RateDecision, StoreError>;

    /// The most events one request may carry (`None`: any number).
    fn most_per_request(&self) -> Option<u64> {
        None
    }
}

/// In-memory implementations of the ports, for fast handler tests.
#[cfg(any(test, feature = "test-support"))]
pub mod memory {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::record;

    /// Collects records; can be told to fail.
    #[derive(Debug, Default)]
    pub struct MemorySink {
        /// Every record put so far.
        pub records: Mutex<Vec<EventRecord>>,
        /// When set, every call fails with this error.
        pub fail_with: Mutex<Option<SinkError>>,
    }

    #[async_trait::async_trait]
    impl EventSink for MemorySink {
        async fn put_records(&self, records: Vec<EventRecord>) -> Result<usize, SinkError> {
            if let Some(e) = self.fail_with.lock().expect("lock").clone() {
                return Err(e);
            }
            self.records.lock().expect("lock").extend(records);
            Ok(0)
        }
    }

    impl MemorySink {
        /// The decoded events put so far, as JSON values.
        pub fn events(&self) -> Vec<serde_json::Value> {
            self.records
                .lock()
                .expect("lock")
                .iter()
                .map(|r| serde_json::from_slice(&r.data).expect("sink holds JSON"))
                .collect()
        }
    }

    /// Events keyed like the `events` table: (user, id) → JSON.
    #[derive(Debug, Default)]
    pub struct MemoryStore {
        /// (user id, event id) → stored event JSON.
        pub items: Mutex<BTreeMap<(String, String), String>>,
        /// Ids (event id) whose write fails.
        pub fail_ids: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl EventStore for MemoryStore {
        async fn write_events(&self, events: &[StoredEvent<'_>], _: Deadline) -> WriteOutcome {
            let fail_ids = self.fail_ids.lock().expect("lock").clone();
            let mut outcome = WriteOutcome::default();
            let mut items = self.items.lock().expect("lock");
            for (i, e) in events.iter().enumerate() {
                if fail_ids.iter().any(|f| f == e.id.as_ref()) {
                    outcome.failed.push(i);
                    outcome.error = Some(StoreError::Transient("injected".into()));
                    continue;
                }
                let json = String::from_utf8(record::encode(e).data).expect("utf-8");
                items.insert((e.user_id.to_string(), e.id.to_string()), json);
            }
            outcome
        }
    }

    #[async_trait::async_trait]
    impl EventReader for MemoryStore {
        async fn list_events(&self, q: &EventQuery) -> Result<EventPage, ReadError> {
            // Newest first by timestamp; the cursor is the number of events already returned.
            let skip: usize = match &q.cursor {
                None => 0,
                Some(c) => c.parse().map_err(|_| ReadError::InvalidCursor)?,
            };
            let items = self.items.lock().expect("lock");
            let mut events: Vec<(String, &String)> = items
                .iter()
                .filter(|((user, _), _)| *user == q.user_id)
                .filter_map(|(_, json)| {
                    let e = record::decode(json.as_bytes()).ok()?;
                    let in_range = q.from.as_deref().is_none_or(|f| *e.timestamp >= *f)
                        && q.to.as_deref().is_none_or(|t| *e.timestamp <= *t)
                        && q.kind.as_deref().is_none_or(|k| *e.kind == *k);
                    in_range.then(|| (e.timestamp.to_string(), json))
                })
                .collect();
            events.sort_by(|a, b| b.0.cmp(&a.0));
            let page: Vec<Box<RawValue>> = events
                .iter()
                .skip(skip)
                .take(q.limit)
                .filter_map(|(_, json)| RawValue::from_string((*json).clone()).ok())
                .collect();
            let next = skip + page.len();
            Ok(EventPage {
                cursor: (next < events.len()).then(|| next.to_string()),
                events: page,
            })
        }
    }

    /// Queues in memory: messages per queue URL; queues can be missing or flaky.
    #[derive(Debug, Default)]
    pub struct MemoryQueues {
        /// Delivered messages per queue URL.
        pub sent: Mutex<BTreeMap<String, Vec<QueueMessage>>>,
        /// Queue URLs that do not exist (permanent failure).
        pub missing: Mutex<Vec<String>>,
        /// How many upcoming entries fail with a retryable error.
        pub flaky_entries: Mutex<usize>,
        /// `SendMessageBatch` calls made.
        pub calls: Mutex<usize>,
    }

    impl MemoryQueues {
        /// Messages delivered to `queue_url`.
        pub fn messages(&self, queue_url: &str) -> Vec<QueueMessage> {
            self.sent
                .lock()
                .expect("lock")
                .get(queue_url)
                .cloned()
                .unwrap_or_default()
        }

        fn check(&self, queue_url: &str) -> Result<(), SendError> {
            if self
                .missing
                .lock()
                .expect("lock")
                .iter()
                .any(|q| q == queue_url)
            {
                Err(SendError::Permanent("QueueDoesNotExist".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait::async_trait]
    impl QueueSink for MemoryQueues {
        async fn max_message_size(&self, queue_url: &str) -> Result<usize, SendError> {
            self.check(queue_url)?;
            Ok(crate::delivery::MAX_SQS_BYTES)
        }

        async fn send_batch(
            &self,
            queue_url: &str,
            messages: &[&QueueMessage],
        ) -> Vec<Result<(), SendError>> {
            *self.calls.lock().expect("lock") += 1;
            assert!(messages.len() <= crate::delivery::MAX_ENTRIES_PER_BATCH);
            if let Err(e) = self.check(queue_url) {
                return messages.iter().map(|_| Err(e.clone())).collect();
            }
            let mut flaky = self.flaky_entries.lock().expect("lock");
            let mut sent = self.sent.lock().expect("lock");
            messages
                .iter()
                .map(|m| {
                    if *flaky > 0 {
                        *flaky -= 1;
                        return Err(SendError::Transient("InternalError".into()));
                    }
                    sent.entry(queue_url.to_string())
                        .or_default()
                        .push((*m).clone());
                    Ok(())
                })
                .collect()
        }
    }

    /// Routes in memory.
    #[derive(Debug, Default)]
    pub struct MemoryRoutes {
        /// Routes by id.
        pub routes: Mutex<BTreeMap<String, Route>>,
        /// `list_routes` calls made.
        pub reads: Mutex<usize>,
    }

    #[async_trait::async_trait]
    impl RouteSource for MemoryRoutes {
        async fn list_routes(&self) -> Result<Vec<Route>, StoreError> {
            *self.reads.lock().expect("lock") += 1;
            Ok(self
                .routes
                .lock()
                .expect("lock")
                .values()
                .cloned()
                .collect())
        }
    }

    #[async_trait::async_trait]
    impl RouteStore for MemoryRoutes {
        async fn put_route(&self, route: &Route) -> Result<(), StoreError> {
            self.routes
                .lock()
                .expect("lock")
                .insert(route.id.clone(), route.clone());
            Ok(())
        }

        async fn delete_route(&self, id: &str) -> Result<bool, StoreError> {
            Ok(self.routes.lock().expect("lock").remove(id).is_some())
        }
    }

    /// (pk, bucket, shard) of a partial counter.
    pub type PartialKey = (String, String, String);

    /// Partial counters in memory, with the same watermark rule as the `counts` table.
    #[derive(Debug, Default)]
    pub struct MemoryCounts {
        /// (pk, bucket, shard) → (count, seq).
        pub counters: Mutex<BTreeMap<PartialKey, (u64, String)>>,
    }

    impl MemoryCounts {
        /// Sum of the partials of (pk, bucket) over all shards.
        pub fn total(&self, pk: &str, bucket: &str) -> u64 {
            self.counters
                .lock()
                .expect("lock")
                .iter()
                .filter(|((p, b, _), _)| p == pk && b == bucket)
                .map(|(_, (c, _))| *c)
                .sum()
        }
    }

    #[async_trait::async_trait]
    impl CountStore for MemoryCounts {
        async fn apply(&self, shard: &str, update: &CounterUpdate) -> Result<u64, StoreError> {
            let mut counters = self.counters.lock().expect("lock");
            let key = (
                update.id.pk.clone(),
                update.id.bucket.clone(),
                shard.to_string(),
            );
            let current = counters.get(&key).cloned();
            let (n, last) =
                crate::count::count_after(&update.seqs, current.as_ref().map(|(_, s)| s.as_str()));
            if let Some(last) = last {
                let count = current.map_or(0, |(c, _)| c) + n;
                counters.insert(key, (count, last.to_string()));
            }
            Ok(n)
        }
    }

    /// First-seen markers; can be told to fail for some users.
    #[derive(Debug, Default)]
    pub struct MemoryMarkers {
        /// marker key → by.
        pub markers: Mutex<BTreeMap<String, String>>,
        /// Calls that reached the store.
        pub calls: Mutex<usize>,
        /// Markers of these users fail (transiently).
        pub fail_users: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl MarkerStore for MemoryMarkers {
        async fn first_seen(
            &self,
            marker: &Marker,
            by: &str,
            _: Option<i64>,
        ) -> Result<String, StoreError> {
            *self.calls.lock().expect("lock") += 1;
            if self.fail_users.lock().expect("lock").contains(&marker.user) {
                return Err(StoreError::Transient("marker write throttled".into()));
            }
            let mut markers = self.markers.lock().expect("lock");
            Ok(markers
                .entry(marker.key())
                .or_insert_with(|| by.to_string())
                .clone())
        }
    }

    #[async_trait::async_trait]
    impl CountReader for MemoryCounts {
        async fn read_partials(
            &self,
            pk: &str,
            from_bucket: &str,
            to_bucket: &str,
        ) -> Result<Vec<(String, u64)>, StoreError> {
            Ok(self
                .counters
                .lock()
                .expect("lock")
                .iter()
                .filter(|((p, b, _), _)| {
                    p == pk && b.as_str() >= from_bucket && b.as_str() <= to_bucket
                })
                .map(|((_, b, _), (c, _))| (b.clone(), *c))
                .collect())
        }
    }

    /// Metric definitions in memory.
    #[derive(Debug, Default)]
    pub struct MemoryMetricDefinitions {
        /// id → definition.
        pub definitions: Mutex<BTreeMap<String, MetricDefinition>>,
        /// Reads of the whole list.
        pub lists: Mutex<usize>,
    }

    #[async_trait::async_trait]
    impl MetricDefinitions for MemoryMetricDefinitions {
        async fn list_metrics(&self) -> Result<Vec<MetricDefinition>, StoreError> {
            *self.lists.lock().expect("lock") += 1;
            Ok(self
                .definitions
                .lock()
                .expect("lock")
                .values()
                .cloned()
                .collect())
        }

        async fn get_metric(&self, id: &str) -> Result<Option<MetricDefinition>, StoreError> {
            Ok(self.definitions.lock().expect("lock").get(id).cloned())
        }

        async fn create_metric(&self, def: &MetricDefinition) -> Result<bool, StoreError> {
            let mut defs = self.definitions.lock().expect("lock");
            if defs.contains_key(&def.id) {
                return Ok(false);
            }
            defs.insert(def.id.clone(), def.clone());
            Ok(true)
        }

        async fn describe_metric(
            &self,
            id: &str,
            description: Option<&str>,
        ) -> Result<bool, StoreError> {
            let mut defs = self.definitions.lock().expect("lock");
            match defs.get_mut(id) {
                Some(d) if d.retired_at.is_none() => {
                    d.description = description.map(str::to_string);
                    Ok(true)
                }
                _ => Ok(false),
            }
        }

        async fn retire_metric(&self, id: &str, at: &str) -> Result<bool, StoreError> {
            let mut defs = self.definitions.lock().expect("lock");
            match defs.get_mut(id) {
                Some(d) if d.retired_at.is_none() => {
                    d.retired_at = Some(at.to_string());
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    /// Metric partials and registries in memory, with the same rules as the `counts` table.
    #[derive(Debug, Default)]
    pub struct MemoryMetrics {
        /// (pk, sort-key prefix, shard) → (figures, seq).
        pub partials: Mutex<BTreeMap<PartialKey, (crate::metric_def::Figures, String)>>,
        /// metric id → admitted values.
        pub registry: Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
        /// Registry calls that reached the store.
        pub admissions: Mutex<usize>,
        /// Admissions of these values fail (transiently).
        pub fail_values: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl MetricStore for MemoryMetrics {
        async fn apply_metric(
            &self,
            shard: &str,
            update: &MetricUpdate,
        ) -> Result<u64, StoreError> {
            let mut partials = self.partials.lock().expect("lock");
            let key = (
                update.id.pk.clone(),
                update.id.prefix.clone(),
                shard.to_string(),
            );
            let current = partials.get(&key).cloned();
            let (fresh, last) = crate::metric_def::Figures::after(
                &update.entries,
                current.as_ref().map(|(_, s)| s.as_str()),
            );
            let Some(last) = last else { return Ok(0) };
            let f = current.map(|(f, _)| f).unwrap_or_default().plus(fresh);
            partials.insert(key, (f, last.to_string()));
            Ok(fresh.count + fresh.skipped)
        }

        async fn admit(&self, id: &str, value: &str, max: usize) -> Result<Admission, StoreError> {
            *self.admissions.lock().expect("lock") += 1;
            if self
                .fail_values
                .lock()
                .expect("lock")
                .iter()
                .any(|v| v == value)
            {
                return Err(StoreError::Transient("registry write throttled".into()));
            }
            let mut registry = self.registry.lock().expect("lock");
            let values = registry.entry(id.to_string()).or_default();
            let admitted = values.contains(value) || values.len() < max;
            if admitted {
                values.insert(value.to_string());
            }
            Ok(Admission {
                admitted,
                values: values.iter().cloned().collect(),
            })
        }
    }

    #[async_trait::async_trait]
    impl MetricReader for MemoryMetrics {
        async fn read_metric(
            &self,
            pk: &str,
            from_bucket: &str,
            to_bucket: &str,
            breakdown: bool,
        ) -> Result<Vec<StoredPartial>, StoreError> {
            Ok(self
                .partials
                .lock()
                .expect("lock")
                .iter()
                .filter(|((p, _, _), _)| p == pk)
                .filter_map(|((_, prefix, _), (f, _))| {
                    let (bucket, value) = match prefix.split_once('#') {
                        Some((b, v)) if breakdown => (b, Some(v.to_string())),
                        _ => (prefix.as_str(), None),
                    };
                    (bucket >= from_bucket && bucket <= to_bucket).then(|| StoredPartial {
                        bucket: bucket.to_string(),
                        value,
                        count: f.count,
                        skipped: f.skipped,
                        sum: Some(f.sum.to_string()),
                        min: f.min.map(|m| m.to_string()),
                        max: f.max.map(|m| m.to_string()),
                    })
                })
                .collect())
        }
    }
}
