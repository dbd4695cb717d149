//! [`Metrics`]: counters per invocation, flushed as CloudWatch Embedded Metric Format (the
//! original service's `MetricsCollector`).
//!
//! One JSON line per flush on stdout, namespace `Telemetry`, dimension `Function`; rejections
//! carry a second dimension, `Reason`. CloudWatch Logs turns these lines into metrics without a
//! `PutMetricData` call on the hot path. Outside Lambda (`AWS_LAMBDA_FUNCTION_NAME` unset) the
//! figures go to the debug log instead, so the local stack's output stays readable.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Map, Value, json};

/// CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Telemetry";

/// Every metric the functions emit (the dashboard and alarms may use no other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// ingest: events written to the stream.
    EventsAccepted,
    /// Events (ingest) or records (stream functions) refused, with a `Reason` dimension.
    EventsRejected,
    /// ingest: requests answered with an error.
    RequestsFailed,
    /// Events or records per invocation.
    BatchSize,
    /// store: records written to the `events` table.
    RecordsStored,
    /// Stream functions: records reported in `batchItemFailures` (Lambda retries them).
    RecordsFailed,
    /// forward: messages delivered to route queues.
    RecordsForwarded,
    /// forward: deliveries sent to the dead-letter queue.
    ForwardDeadLettered,
    /// Entries resent after a throttle or partial failure (PutRecords, BatchWriteItem,
    /// SendMessageBatch).
    Retries,
    /// post-process: INSERT records aggregated.
    RecordsCounted,
    /// post-process: counter increments applied.
    CountIncrements,
    /// post-process: conditional `UpdateItem`s made (one per partial counter per batch).
    CounterUpdates,
    /// post-process: record-counter pairs already applied before (replays).
    DuplicatesSkipped,
    /// post-process: stream records not counted — not INSERTs, or unreadable (skipped and
    /// logged by sequence number, never failing the batch).
    RecordsSkipped,
    /// post-process: users added to a day's active users (all types), per `Environment`:
    /// increments of the exact counters, applied once, so a day's sum is that day's active
    /// users (by when they were counted).
    ActiveUsers,
    /// post-process: new users (all types), per `Environment`, the same way.
    NewUsers,
}

impl Metric {
    /// All metrics.
    pub const ALL: [Metric; 16] = [
        Self::EventsAccepted,
        Self::EventsRejected,
        Self::RequestsFailed,
        Self::BatchSize,
        Self::RecordsStored,
        Self::RecordsFailed,
        Self::RecordsForwarded,
        Self::ForwardDeadLettered,
        Self::Retries,
        Self::RecordsCounted,
        Self::CountIncrements,
        Self::CounterUpdates,
        Self::DuplicatesSkipped,
        Self::RecordsSkipped,
        Self::ActiveUsers,
        Self::NewUsers,
    ];

    /// The CloudWatch metric name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EventsAccepted => "EventsAccepted",
            Self::EventsRejected => "EventsRejected",
            Self::RequestsFailed => "RequestsFailed",
            Self::BatchSize => "BatchSize",
            Self::RecordsStored => "RecordsStored",
            Self::RecordsFailed => "RecordsFailed",
            Self::RecordsForwarded => "RecordsForwarded",
            Self::ForwardDeadLettered => "ForwardDeadLettered",
            Self::Retries => "Retries",
            Self::RecordsCounted => "RecordsCounted",
            Self::CountIncrements => "CountIncrements",
            Self::CounterUpdates => "CounterUpdates",
            Self::DuplicatesSkipped => "DuplicatesSkipped",
            Self::RecordsSkipped => "RecordsSkipped",
            Self::ActiveUsers => "ActiveUsers",
            Self::NewUsers => "NewUsers",
        }
    }
}

/// Counters collected during one invocation.
#[derive(Debug)]
pub struct Metrics {
    function: &'static str,
    counts: BTreeMap<Metric, u64>,
    rejected: BTreeMap<&'static str, u64>,
    by_environment: BTreeMap<String, BTreeMap<Metric, u64>>,
}

impl Metrics {
    /// Counters for `function` (the `Function` dimension).
    pub fn new(function: &'static str) -> Self {
        Self {
            function,
            counts: BTreeMap::new(),
            rejected: BTreeMap::new(),
            by_environment: BTreeMap::new(),
        }
    }

    /// Adds `n` to `metric`.
    pub fn add(&mut self, metric: Metric, n: u64) {
        *self.counts.entry(metric).or_default() += n;
    }

    /// Counts one rejected event (or record) under `reason`, in `EventsRejected`.
    pub fn rejected(&mut self, reason: &'static str) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    /// Adds `n` to `metric` of `environment` (the `Environment` dimension).
    pub fn add_for_environment(&mut self, metric: Metric, environment: &str, n: u64) {
        *self
            .by_environment
            .entry(environment.to_string())
            .or_default()
            .entry(metric)
            .or_default() += n;
    }

    /// The value of `metric` so far.
    pub fn get(&self, metric: Metric) -> u64 {
        self.counts.get(&metric).copied().unwrap_or(0)
    }

    /// The EMF documents for these counters (one per dimension set).
    pub fn documents(&self, timestamp_ms: i64) -> Vec<Value> {
        let mut docs = Vec::new();
        if !self.counts.is_empty() {
            let names = self.counts.keys().map(|m| m.name());
            let mut doc = envelope(timestamp_ms, &["Function"], names);
            doc.insert("Function".into(), self.function.into());
            for (metric, value) in &self.counts {
                doc.insert(metric.name().into(), (*value).into());
            }
            docs.push(Value::Object(doc));
        }
        for (reason, value) in &self.rejected {
            let name = Metric::EventsRejected.name();
            let mut doc = envelope(timestamp_ms, &["Function", "Reason"], [name]);
            doc.insert("Function".into(), self.function.into());
            doc.insert("Reason".into(), (*reason).into());
            doc.insert(name.into(), (*value).into());
            docs.push(Value::Object(doc));
        }
        for (environment, counts) in &self.by_environment {
            let mut doc = envelope(
                timestamp_ms,
                &["Function", "Environment"],
                counts.keys().map(|m| m.name()),
            );
            doc.insert("Function".into(), self.function.into());
            doc.insert("Environment".into(), environment.as_str().into());
            for (metric, value) in counts {
                doc.insert(metric.name().into(), (*value).into());
            }
            docs.push(Value::Object(doc));
        }
        docs
    }

    /// Writes the counters out and clears them.
    pub fn flush(&mut self) {
        let docs = self.documents(chrono::Utc::now().timestamp_millis());
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            let mut out = std::io::stdout().lock();
            for doc in docs {
                let _ = writeln!(out, "{doc}");
            }
        } else {
            for doc in docs {
                tracing::debug!(metrics = %doc, "metrics");
            }
        }
        self.counts.clear();
        self.rejected.clear();
        self.by_environment.clear();
    }
}

fn envelope<'a>(
    timestamp_ms: i64,
    dimensions: &[&str],
    metrics: impl IntoIterator<Item = &'a str>,
) -> Map<String, Value> {
    let metrics: Vec<Value> = metrics
        .into_iter()
        .map(|name| json!({"Name": name, "Unit": "Count"}))
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions],
                "Metrics": metrics,
            }]
        }),
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_documents_declare_every_metric_they_carry() {
        let mut m = Metrics::new("ingest");
        m.add(Metric::EventsAccepted, 3);
        m.add(Metric::EventsAccepted, 2);
        m.rejected("invalid_type");
        let docs = m.documents(1);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["EventsAccepted"], 5);
        assert_eq!(docs[0]["Function"], "ingest");
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "EventsAccepted"
        );
        assert_eq!(docs[1]["Reason"], "invalid_type");
        assert_eq!(docs[1]["EventsRejected"], 1);
        assert_eq!(
            docs[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            json!(["Function", "Reason"])
        );
    }

    #[test]
    fn user_figures_carry_their_environment() {
        let mut m = Metrics::new("post-process");
        m.add_for_environment(Metric::ActiveUsers, "prod", 2);
        m.add_for_environment(Metric::ActiveUsers, "prod", 1);
        m.add_for_environment(Metric::NewUsers, "staging", 4);
        let docs = m.documents(1);
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (&docs[0]["Environment"], &docs[0]["ActiveUsers"]),
            (&json!("prod"), &json!(3))
        );
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            json!(["Function", "Environment"])
        );
        assert_eq!(
            (&docs[1]["Environment"], &docs[1]["NewUsers"]),
            (&json!("staging"), &json!(4))
        );
        assert!(docs[1].get("ActiveUsers").is_none());
    }
}
