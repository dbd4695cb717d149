//! `telemetry metrics`: the admin-defined metrics API (`/v1/metrics`) from the command line —
//! the requests' bodies and the answers as tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The body of `PUT /v1/metrics/{id}`: only the fields given.
pub fn definition_body(
    kind: &str,
    sum: Option<&str>,
    by: Option<&str>,
    environment: Option<&str>,
    description: Option<&str>,
) -> Value {
    let mut body = json!({ "type": kind });
    for (name, value) in [
        ("sum", sum),
        ("by", by),
        ("environment", environment),
        ("description", description),
    ] {
        if let Some(v) = value {
            body[name] = v.into();
        }
    }
    body
}

/// `GET /v1/metrics`'s answer as a table: id, what it measures, and since/until when.
pub fn definitions_table(answer: &Value) -> String {
    let metrics = answer["metrics"].as_array().map_or(&[][..], |m| &m[..]);
    if metrics.is_empty() {
        return "  (no metrics defined)\n".into();
    }
    let mut out = format!(
        "  {:<24}  {:<24}  {:<16}  {:<16}  {:<12}  {}\n",
        "id", "type", "sum", "by", "environment", "in force"
    );
    for m in metrics {
        let text = |name: &str| m[name].as_str().unwrap_or("-").to_string();
        let since = format!("from {}", text("effectiveAt"));
        let force = match m["retiredAt"].as_str() {
            Some(until) => format!("{since} until {until} (deleted)"),
            None => since,
        };
        let environment = m["environment"].as_str().unwrap_or("all");
        let _ = writeln!(
            out,
            "  {:<24}  {:<24}  {:<16}  {:<16}  {:<12}  {force}",
            text("id"),
            text("type"),
            text("sum"),
            text("by"),
            environment
        );
    }
    out
}

/// `GET /v1/metrics/{id}/values`'s answer, its numbers kept as the API wrote them (exact
/// decimals of any length: an `f64` would round them).
#[derive(Debug, Deserialize)]
pub struct ValuesAnswer {
    /// The buckets.
    #[serde(default)]
    pub buckets: Vec<Figures>,
}

/// A bucket's figures, or (without `start`, `skipped` and `values`) one breakdown value's.
/// Its fields are written out: `RawValue` cannot sit under `flatten`.
#[derive(Debug, Deserialize)]
pub struct Figures {
    /// Bucket start (empty for a breakdown value).
    #[serde(default)]
    pub start: String,
    /// Records.
    pub count: u64,
    /// Their exact sum.
    #[serde(default)]
    pub sum: Option<Box<RawValue>>,
    /// Smallest value.
    #[serde(default)]
    pub min: Option<Box<RawValue>>,
    /// Largest value.
    #[serde(default)]
    pub max: Option<Box<RawValue>>,
    /// Records whose value could not be summed.
    #[serde(default)]
    pub skipped: u64,
    /// The breakdown.
    #[serde(default)]
    pub values: Option<BTreeMap<String, Figures>>,
}

/// The values answer as a table: one line per bucket (count, sum, min, max, skipped), then one
/// indented line per breakdown value, numbers exactly as the API wrote them.
pub fn values_table(answer: &ValuesAnswer) -> String {
    if answer.buckets.is_empty() {
        return "  (nothing measured in this range)\n".into();
    }
    let mut out = format!(
        "  {:<24}  {:>10}  {:>18}  {:>12}  {:>12}  {:>8}\n",
        "start", "count", "sum", "min", "max", "skipped"
    );
    for b in &answer.buckets {
        row(&mut out, "  ", &b.start, b, Some(b.skipped));
        for (value, f) in b.values.iter().flatten() {
            row(&mut out, "    ", value, f, None);
        }
    }
    out
}

/// One line of [`values_table`]: `label` after `indent`, the figures in their columns.
fn row(out: &mut String, indent: &str, label: &str, f: &Figures, skipped: Option<u64>) {
    let text = |v: &Option<Box<RawValue>>| v.as_ref().map_or("", |v| v.get()).to_string();
    let _ = write!(
        out,
        "{indent}{label:<width$}  {:>10}  {:>18}  {:>12}  {:>12}",
        f.count,
        text(&f.sum),
        text(&f.min),
        text(&f.max),
        width = 26 - indent.len()
    );
    if let Some(n) = skipped {
        let _ = write!(out, "  {n:>8}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_body_holds_only_what_was_given() {
        assert_eq!(
            definition_body(
                "game.purchase",
                Some("data.amount"),
                None,
                Some("prod"),
                None
            ),
            json!({"type": "game.purchase", "sum": "data.amount", "environment": "prod"})
        );
    }

    #[test]
    fn values_are_printed_exactly_with_their_breakdown() {
        // A sum longer than an f64 holds: printed as the API wrote it.
        let answer: ValuesAnswer = serde_json::from_str(
            r#"{"buckets":[{"start":"2026-12-01T00:00:00Z","count":3,
                "sum":123456789012345.000000000001,"min":0.99,"max":99,"skipped":1,
                "values":{"EUR":{"count":2,"sum":1.5,"min":0.5,"max":1},"(other)":{"count":1}}}]}"#,
        )
        .unwrap();
        let table = values_table(&answer);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("skipped"));
        assert!(
            lines[1].contains("2026-12-01T00:00:00Z")
                && lines[1].contains("123456789012345.000000000001")
                && lines[1].trim_end().ends_with('1'),
            "{table}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with("EUR") && l.contains("1.5"))
        );
        assert!(lines.iter().any(|l| l.trim_start().starts_with("(other)")));
        assert_eq!(
            values_table(&serde_json::from_str(r#"{"buckets": []}"#).unwrap()),
            "  (nothing measured in this range)\n"
        );
    }

    #[test]
    fn definitions_say_what_they_measure_and_when() {
        let table = definitions_table(&json!({"metrics": [
            {"id": "revenue", "type": "game.purchase", "sum": "data.amount",
             "effectiveAt": "2026-12-01T00:02:00.000Z"},
            {"id": "crashes", "type": "app.crash", "by": "data.build", "environment": "prod",
             "effectiveAt": "2026-12-01T00:02:00.000Z", "retiredAt": "2026-12-02T00:00:00.000Z"}
        ]}));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[1].contains("revenue") && lines[1].contains(" all "),
            "{table}"
        );
        assert!(
            lines[2].contains("until 2026-12-02T00:00:00.000Z (deleted)"),
            "{table}"
        );
    }
}
