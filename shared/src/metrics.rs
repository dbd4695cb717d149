//! MetricsCollector: counters per invocation, flushed as CloudWatch Embedded Metric Format.
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

/// Counters collected during one invocation.
#[derive(Debug)]
pub struct Metrics {
    function: &'static str,
    counts: BTreeMap<&'static str, u64>,
    rejected: BTreeMap<&'static str, u64>,
}

impl Metrics {
    /// Counters for `function` (the `Function` dimension).
    pub fn new(function: &'static str) -> Self {
        Self {
            function,
            counts: BTreeMap::new(),
            rejected: BTreeMap::new(),
        }
    }

    /// Adds `n` to counter `name`.
    pub fn add(&mut self, name: &'static str, n: u64) {
        *self.counts.entry(name).or_default() += n;
    }

    /// Counts one rejected event (or record) under `reason`, in `EventsRejected`.
    pub fn rejected(&mut self, reason: &'static str) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    /// The value of counter `name` so far.
    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// The EMF documents for these counters (one per dimension set).
    pub fn documents(&self, timestamp_ms: i64) -> Vec<Value> {
        let mut docs = Vec::new();
        if !self.counts.is_empty() {
            let mut doc = envelope(timestamp_ms, &["Function"], self.counts.keys().copied());
            doc.insert("Function".into(), self.function.into());
            for (name, value) in &self.counts {
                doc.insert((*name).into(), (*value).into());
            }
            docs.push(Value::Object(doc));
        }
        for (reason, value) in &self.rejected {
            let mut doc = envelope(timestamp_ms, &["Function", "Reason"], ["EventsRejected"]);
            doc.insert("Function".into(), self.function.into());
            doc.insert("Reason".into(), (*reason).into());
            doc.insert("EventsRejected".into(), (*value).into());
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
        m.add("EventsAccepted", 3);
        m.add("EventsAccepted", 2);
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
}
