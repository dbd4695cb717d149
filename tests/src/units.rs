//! DynamoDB units per event and post-process's ceiling per shard, by simulation (`perf units`,
//! run by `make bench`).
//!
//! The emulator bills nothing and answers in its own time, so the figures are taken from the
//! real handlers run in-process against the in-memory ports behind a simulated round trip:
//! every port call is counted and sleeps [`RTT`] on tokio's paused clock, so a batch's virtual
//! time is exactly its sequential round trips under the handler's real concurrency, and the
//! wall time is its CPU. Units follow DynamoDB's rules: a write is one unit per started KB of
//! the larger of the item before and after (a refused conditional write still bills), an index
//! write bills again for the index entry, a strongly consistent read one unit per 4 KB.
//!
//! The mix (issue "Answers", item 6): 1,000 users × 100 events a day over 10 types, 5 %
//! purchases, two admin-defined metrics (revenue by currency, completed levels by platform).
//! Three scenarios:
//! * **the mix as it arrives**: 100,000 events over a real day on one shard (a table this small
//!   has one partition), batches formed as Lambda forms them (100 records, the template's
//!   10 s batching window, or the end of the minute's tumbling window);
//! * **100 M events a day**: one of 4 shards (~290 records/s each), as a scale model — 2,500
//!   users with a cache of 2,500 users stand for the shard's 250,000 users and the default
//!   `USER_CACHE_USERS` of 250,000 (the same ratio, so the same misses), their day compressed
//!   into the 862 s it takes the shard to receive 250,000 records, so batches are full, as they
//!   are then.
//!
//! * **the same with a cold start at midday**: the instance replaced (Lambda recycles them),
//!   so its cache starts empty and every user's markers are written again, refused.
//!
//! All start with no markers: every marker of the day is written once (and again, refused but
//! billed, whenever the cache has dropped it), so the marker figure is that of a first day, an
//! upper bound for the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use telemetry_shared::aws::event_table;
use telemetry_shared::count::CounterUpdate;
use telemetry_shared::event::{Data, SCHEMA_VERSION, StoredEvent};
use telemetry_shared::metric_def::{MetricDefinition, MetricInput, MetricUpdate};
use telemetry_shared::ports::memory::{
    MemoryCounts, MemoryMarkers, MemoryMetricDefinitions, MemoryMetrics,
};
use telemetry_shared::ports::{
    Admission, CountStore, MarkerStore, MetricDefinitions, MetricStore, StoreError,
};
use telemetry_shared::retry::Deadline;
use telemetry_shared::users::Marker;

/// The simulated round trip of one DynamoDB call from Lambda in the same region (AWS:
/// "single-digit millisecond"; an assumption, printed beside the ceiling).
pub const RTT: Duration = Duration::from_millis(5);

/// The ten types of the mix; the last is the purchase (5 %).
const TYPES: [&str; 10] = [
    "session.start",
    "session.end",
    "level.start",
    "level.complete",
    "level.fail",
    "ui.click",
    "ad.view",
    "app.error",
    "shop.view",
    "shop.purchase",
];

/// Calls that reached the simulated table, by kind.
#[derive(Debug, Default)]
struct Calls {
    counter_updates: AtomicU64,
    marker_puts: AtomicU64,
    marker_refused: AtomicU64,
    metric_updates: AtomicU64,
    admissions: AtomicU64,
    definition_scans: AtomicU64,
}

/// The in-memory ports as one remote table: each call counted and a round trip away.
#[derive(Debug, Default)]
struct Remote {
    counts: MemoryCounts,
    markers: MemoryMarkers,
    metrics: MemoryMetrics,
    definitions: MemoryMetricDefinitions,
    calls: Calls,
}

impl Remote {
    async fn call(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RTT).await;
    }
}

#[async_trait::async_trait]
impl CountStore for Remote {
    async fn apply(&self, shard: &str, update: &CounterUpdate) -> Result<u64, StoreError> {
        self.call(&self.calls.counter_updates).await;
        self.counts.apply(shard, update).await
    }
}

#[async_trait::async_trait]
impl MarkerStore for Remote {
    async fn first_seen(
        &self,
        marker: &Marker,
        by: &str,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        self.call(&self.calls.marker_puts).await;
        let found = self.markers.first_seen(marker, by, expires_at).await?;
        if found != by {
            self.calls.marker_refused.fetch_add(1, Ordering::Relaxed);
        }
        Ok(found)
    }
}

#[async_trait::async_trait]
impl MetricStore for Remote {
    async fn apply_metric(&self, shard: &str, update: &MetricUpdate) -> Result<u64, StoreError> {
        self.call(&self.calls.metric_updates).await;
        self.metrics.apply_metric(shard, update).await
    }

    async fn admit(&self, id: &str, value: &str, max: usize) -> Result<Admission, StoreError> {
        self.call(&self.calls.admissions).await;
        self.metrics.admit(id, value, max).await
    }
}

#[async_trait::async_trait]
impl MetricDefinitions for Remote {
    async fn list_metrics(&self) -> Result<Vec<MetricDefinition>, StoreError> {
        self.call(&self.calls.definition_scans).await;
        self.definitions.list_metrics().await
    }
    async fn get_metric(&self, id: &str) -> Result<Option<MetricDefinition>, StoreError> {
        self.definitions.get_metric(id).await
    }
    async fn create_metric(&self, def: &MetricDefinition) -> Result<bool, StoreError> {
        self.definitions.create_metric(def).await
    }
    async fn describe_metric(
        &self,
        id: &str,
        description: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.definitions.describe_metric(id, description).await
    }
    async fn retire_metric(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        self.definitions.retire_metric(id, at).await
    }
}

/// One scenario of the simulation.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name in the table.
    pub name: &'static str,
    /// Users, each sending `per_user` events.
    pub users: usize,
    /// Events per user.
    pub per_user: usize,
    /// Seconds over which the events arrive (and are timestamped).
    pub seconds: u32,
    /// Users whose markers a warm post-process remembers (`USER_CACHE_USERS`).
    pub user_cache: usize,
    /// Lambda's batching window for post-process (`CountsBatchingWindowSeconds`).
    pub batching_seconds: u32,
    /// Whether the function instance is replaced (a cold start, its cache empty) halfway.
    pub cold_start_halfway: bool,
}

/// post-process's batching window in the template (`CountsBatchingWindowSeconds`' default).
const BATCHING_SECONDS: u32 = 10;

/// The scenarios of the module docs.
pub fn scenarios() -> [Scenario; 3] {
    let scale = Scenario {
        name: "100 M events/day: one of 4 shards (scale model)",
        users: 2_500,
        per_user: 100,
        seconds: 862,
        user_cache: 2_500,
        batching_seconds: BATCHING_SECONDS,
        cold_start_halfway: false,
    };
    [
        Scenario {
            name: "mix: 1,000 users x 100 events/day, one shard",
            users: 1_000,
            per_user: 100,
            seconds: 86_400,
            user_cache: post_process::DEFAULT_USER_CACHE,
            batching_seconds: BATCHING_SECONDS,
            cold_start_halfway: false,
        },
        scale.clone(),
        Scenario {
            name: "the same, the instance replaced at midday",
            cold_start_halfway: true,
            ..scale
        },
    ]
}

/// One event of the mix: (arrival second, user, type, data).
fn mix(s: &Scenario, rng: &mut fastrand::Rng) -> Vec<(u32, usize, &'static str, String)> {
    let mut events = Vec::with_capacity(s.users * s.per_user);
    for user in 0..s.users {
        let platform = ["ios", "android"][user % 2];
        for _ in 0..s.per_user {
            let kind = if rng.u8(0..100) < 5 {
                TYPES[9]
            } else {
                TYPES[rng.usize(0..9)]
            };
            let data = if kind == "shop.purchase" {
                let amount = ["0.99", "4.99", "9.99", "19.99", "49.99"][rng.usize(0..5)];
                let currency = ["USD", "EUR", "GBP"][rng.usize(0..3)];
                format!(r#"{{"amount":{amount},"currency":"{currency}","sku":"gems_{amount}"}}"#)
            } else {
                format!(
                    r#"{{"level":{},"platform":"{platform}","build":"1.4.{}","screen":"main_menu"}}"#,
                    rng.u32(1..60),
                    rng.u32(0..9)
                )
            };
            events.push((rng.u32(0..s.seconds), user, kind, data));
        }
    }
    events.sort_by_key(|e| e.0);
    events
}

/// What a scenario cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    /// The scenario.
    pub name: String,
    /// Events.
    pub events: u64,
    /// post-process invocations.
    pub batches: u64,
    /// Write units per event: store (table + `byTime` index).
    pub store_wru: f64,
    /// Write units per event: counter updates (counts and users).
    pub counter_wru: f64,
    /// Write units per event: first-seen markers (created or refused).
    pub marker_wru: f64,
    /// Write units per event: metric partials and registry admissions.
    pub metric_wru: f64,
    /// Read units per event: the definitions' scans.
    pub definition_rru: f64,
    /// Marker writes refused (they existed: written again after the cache dropped them).
    pub markers_refused: u64,
    /// Users and markers the warm cache held at the end, and its approximate bytes per user.
    pub cache_users: usize,
    /// See `cache_users`.
    pub cache_markers: usize,
    /// See `cache_users`.
    pub cache_bytes_per_user: f64,
    /// Average virtual (round-trip) milliseconds per batch.
    pub round_trip_ms_per_batch: f64,
    /// Average CPU milliseconds per batch (wall time of the in-memory run).
    pub cpu_ms_per_batch: f64,
    /// Records per batch.
    pub records_per_batch: f64,
    /// Records per second one shard can take: records per batch / (round trips + CPU).
    pub ceiling_per_shard: f64,
}

impl Figures {
    /// All write units per event.
    pub fn total_wru(&self) -> f64 {
        self.store_wru + self.counter_wru + self.marker_wru + self.metric_wru
    }
}

fn definitions() -> Vec<MetricDefinition> {
    let defined = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    [
        (
            "revenue",
            json!({"type": "shop.purchase", "sum": "data.amount", "by": "data.currency"}),
        ),
        (
            "levels",
            json!({"type": "level.complete", "by": "data.platform"}),
        ),
    ]
    .into_iter()
    .map(|(id, body)| {
        let input: MetricInput = serde_json::from_value(body).expect("a metric body");
        input
            .into_definition(id, defined, chrono::Duration::seconds(120))
            .expect("a valid metric")
    })
    .collect()
}

/// The stream record of one stored event, as Lambda delivers it.
fn stream_record(event: &StoredEvent<'_>, seq: u64, created: i64) -> Value {
    let image = serde_json::to_value(event_table::to_image(event, None)).expect("image is JSON");
    json!({
        "eventID": format!("{seq:032x}"), "eventName": "INSERT", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "SequenceNumber": format!("{}", 100_000_000_000_000_000_000u128 + u128::from(seq)),
            "SizeBytes": 400, "StreamViewType": "NEW_IMAGE",
            "Keys": {"pk": image["pk"], "sk": image["sk"]},
            "NewImage": image,
        }
    })
}

/// Runs one scenario through store's item layout and post-process's handler.
pub async fn run(s: &Scenario) -> Figures {
    let mut rng = fastrand::Rng::with_seed(2026);
    let day: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
    let events = mix(s, &mut rng);
    let remote = Arc::new(Remote::default());
    for def in definitions() {
        remote
            .definitions
            .create_metric(&def)
            .await
            .expect("memory");
    }
    let instance = || {
        post_process::PostProcess::new(remote.clone(), remote.clone())
            .with_markers(s.user_cache, 168)
            .with_metrics(remote.clone(), remote.clone(), 60, 100)
    };
    let mut handler = instance();
    let mut cold_start = s.cold_start_halfway.then_some(s.seconds / 2);

    let mut store_wru = 0u64;
    let mut batches = 0u64;
    let mut cpu = Duration::ZERO;
    let virtual_start = tokio::time::Instant::now();
    let mut pending: Vec<Value> = Vec::new();
    let mut window_start = 0u32;
    for (seq, (second, user, kind, data)) in events.iter().enumerate() {
        let at =
            telemetry_shared::time::format(day + chrono::Duration::seconds(i64::from(*second)));
        let (id, user_id) = (format!("e-{seq}"), format!("player-{user:07}"));
        let raw = serde_json::value::RawValue::from_string(data.clone()).expect("data is JSON");
        let event = StoredEvent {
            schema_version: SCHEMA_VERSION,
            id: id.as_str().into(),
            kind: (*kind).into(),
            user_id: user_id.as_str().into(),
            timestamp: at.as_str().into(),
            received_at: at.as_str().into(),
            environment: "prod".into(),
            origin: None,
            session_id: None,
            data: Some(Data(&raw)),
        };
        // store: the item (with a 90-day TTL) in the table and again in the `byTime` index.
        let size = event_table::item_size(&event_table::to_item(&event, Some(90 * 86_400)));
        store_wru += 2 * size.div_ceil(1024) as u64;
        // Lambda invokes once 100 records are waiting, the batching window after the first
        // one arrived, or when the tumbling window (a minute) ends.
        if !pending.is_empty()
            && (pending.len() == 100
                || *second >= window_start + s.batching_seconds
                || *second / 60 != window_start / 60)
        {
            batches += 1;
            cpu += invoke(
                &handler,
                window(day, window_start, std::mem::take(&mut pending)),
            )
            .await;
        }
        if pending.is_empty() {
            window_start = *second;
            if cold_start.is_some_and(|at| *second >= at) {
                cold_start = None;
                handler = instance();
            }
        }
        let created = day.timestamp() + i64::from(*second);
        pending.push(stream_record(&event, seq as u64, created));
    }
    if !pending.is_empty() {
        batches += 1;
        cpu += invoke(
            &handler,
            window(day, window_start, std::mem::take(&mut pending)),
        )
        .await;
    }
    let round_trips = virtual_start.elapsed();
    let (cache_users, cache_markers, cache_bytes) = handler.cache_size();

    let n = events.len() as f64;
    let calls = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    let c = &remote.calls;
    let per_batch = |d: Duration| d.as_secs_f64() * 1000.0 / batches as f64;
    let records_per_batch = n / batches as f64;
    let batch_seconds = (round_trips + cpu).as_secs_f64() / batches as f64;
    Figures {
        name: s.name.to_string(),
        events: events.len() as u64,
        batches,
        store_wru: store_wru as f64 / n,
        counter_wru: calls(&c.counter_updates) / n,
        marker_wru: calls(&c.marker_puts) / n,
        // The registries hold a few short values: under 1 KB, one unit per call.
        metric_wru: (calls(&c.metric_updates) + calls(&c.admissions)) / n,
        // The metrics table is a few definitions: under 4 KB, one unit per consistent scan.
        definition_rru: calls(&c.definition_scans) / n,
        markers_refused: c.marker_refused.load(Ordering::Relaxed),
        cache_users,
        cache_markers,
        cache_bytes_per_user: cache_bytes as f64 / cache_users.max(1) as f64,
        round_trip_ms_per_batch: per_batch(round_trips),
        cpu_ms_per_batch: per_batch(cpu),
        records_per_batch,
        ceiling_per_shard: records_per_batch / batch_seconds,
    }
}

/// A tumbling-window invocation of `records`, the first of which arrived `first` seconds into
/// `day`.
fn window(day: DateTime<Utc>, first: u32, records: Vec<Value>) -> Value {
    let minute = day + chrono::Duration::seconds(i64::from(first / 60 * 60));
    json!({
        "Records": records,
        "window": {
            "start": telemetry_shared::time::format(minute),
            "end": telemetry_shared::time::format(minute + chrono::Duration::seconds(60)),
        },
        "state": {}, "shardId": "shardId-00000001796000000000-00000001",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/telemetry-events/stream/2026-01-01T00:00:00.000",
        "isFinalInvokeForWindow": false, "isWindowTerminatedEarly": false
    })
}

/// One invocation: its CPU time (the round trips pass on the paused clock, not the wall's).
async fn invoke(handler: &post_process::PostProcess, payload: Value) -> Duration {
    let started = std::time::Instant::now();
    let response = handler
        .handle_payload(payload, Deadline::after(Duration::from_secs(900)))
        .await
        .expect("a window event");
    assert!(
        response.batch_item_failures.is_empty(),
        "the simulated table never fails"
    );
    started.elapsed()
}

/// Every scenario, on a paused clock.
pub fn run_all() -> Vec<Figures> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    scenarios()
        .iter()
        .map(|s| runtime.block_on(run(s)))
        .collect::<Vec<_>>()
}

/// The figures as `perf units` writes them.
pub fn report(figures: &[Figures]) -> Value {
    json!({
        "rtt_ms": RTT.as_secs_f64() * 1000.0,
        "scenarios": figures.iter().map(|f| json!({"figures": f, "total_wru": f.total_wru()})).collect::<Vec<_>>(),
    })
}
