//! Admin-defined metrics: count, exact sum, min and max of a numeric field of one event type,
//! optionally broken down by one dimension, per minute, hour and day — exactly once, like counts.
//!
//! * A **definition** (`PUT /v1/metrics/{id}`) names the event `type`, an optional `sum` path
//!   inside `data`, an optional `by` dimension (`origin`, `environment` or a path inside `data`)
//!   and an optional `environment` (absent: every environment). It applies to the records whose
//!   stream creation time lies in [`effectiveAt`, `retiredAt`): `effectiveAt` is its creation
//!   time + δ, δ being the definitions' cache lifetime in post-process + 60 s, so every
//!   post-process snapshot that may be used for a record already holds every definition in
//!   force for it (see [`Snapshot`]). A retired id stays as a tombstone and is never reused.
//! * **Sums are exact decimals** ([`Decimal`]): a value is summed only with at most 15 integer and
//!   12 fractional digits, so a partial of fewer than 10^8 values stays within a DynamoDB
//!   number's 38 digits; anything else is counted as `skipped`, never dropped silently.
//! * **Breakdowns** admit at most `METRIC_MAX_VALUES` values per metric, decided once per metric
//!   by a registry item (see `aws::count_table`); every other value, and any value that is
//!   missing, not a scalar or longer than [`MAX_VALUE_BYTES`], is counted under [`OTHER`].
//!
//! Partials live in the `counts` table beside the counts: `pk = metric#<id>#<granularity>`,
//! `sk = <bucket>#<shard>` for the totals, and `pk = metric#<id>#<granularity>#by`,
//! `sk = <bucket>#<value>#<shard>` for the breakdown, each with `count`, `skipped`, `sum`, `min`,
//! `max` and the shard's watermark `seq`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::count::{self, Granularity};
use crate::event::{is_valid_environment, is_valid_type};

/// The breakdown value every value beyond the admitted ones is counted under.
pub const OTHER: &str = "(other)";
/// Longest breakdown value (its JSON text), in bytes.
pub const MAX_VALUE_BYTES: usize = 64;
/// `METRIC_MAX_VALUES` when unset: values admitted per breakdown.
pub const DEFAULT_MAX_VALUES: usize = 100;
/// Integer digits a summed value may have.
pub const MAX_INTEGER_DIGITS: usize = 15;
/// Fractional digits a summed value may have.
pub const MAX_FRACTION_DIGITS: u32 = 12;
/// The margin added to the definitions' cache lifetime to make δ (clock skew between the query
/// function that stamps `effectiveAt` and the stream's creation times).
pub const EFFECTIVE_MARGIN: Duration = Duration::seconds(60);
/// `METRICS_CACHE_SECONDS` when unset: how long post-process keeps a snapshot of definitions.
pub const DEFAULT_CACHE_SECONDS: u32 = 60;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// δ: from a definition's creation (or retirement) to when it takes (or stops taking) effect.
pub fn delay(cache_seconds: u32) -> Duration {
    Duration::seconds(i64::from(cache_seconds)) + EFFECTIVE_MARGIN
}

/// An exact decimal with at most 12 fractional digits, in units of 10^-12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Decimal(pub i128);

impl Decimal {
    /// A summable value from its JSON number text (`19.99`, `-3`, `1.5e2`): `None` when it is
    /// not a number or has more than [`MAX_INTEGER_DIGITS`] integer or [`MAX_FRACTION_DIGITS`]
    /// fractional digits (leading and trailing zeros aside). Decided from the text alone.
    pub fn parse_value(text: &str) -> Option<Self> {
        let (negative, digits, point) = parse_number(text)?;
        // Significant digits only: a leading zero moves the point, a trailing one changes nothing.
        let lead = digits.len() - digits.trim_start_matches('0').len();
        let digits = digits[lead..].trim_end_matches('0');
        let point = point - lead as i64;
        if digits.is_empty() {
            return Some(Self(0));
        }
        let int_digits = point.max(0);
        let frac_digits = (digits.len() as i64 - point).max(0);
        if int_digits > MAX_INTEGER_DIGITS as i64 || frac_digits > i64::from(MAX_FRACTION_DIGITS) {
            return None;
        }
        // At most 27 digits: well within an i128.
        let mut units: i128 = 0;
        for b in digits.bytes() {
            units = units * 10 + i128::from(b - b'0');
        }
        // Scaled to 10^-12 units (the point may lie beyond the last digit: `15e1`).
        units *= 10i128.pow((i64::from(MAX_FRACTION_DIGITS) + point - digits.len() as i64) as u32);
        Some(Self(if negative { -units } else { units }))
    }

    /// A figure read back from DynamoDB (a number attribute this module wrote), in units of
    /// 10^-12, of any size: the query adds partials in arbitrary precision.
    pub fn parse_stored(text: &str) -> Option<num_bigint::BigInt> {
        let (negative, digits, point) = parse_number(text)?;
        let digits = digits.trim_end_matches('0');
        if digits.is_empty() {
            return Some(num_bigint::BigInt::from(0));
        }
        let zeros = i64::from(MAX_FRACTION_DIGITS) + point - digits.len() as i64;
        if !(0..=4096).contains(&zeros) {
            return None;
        }
        let text = format!(
            "{}{digits}{}",
            if negative { "-" } else { "" },
            "0".repeat(zeros as usize)
        );
        text.parse().ok()
    }

    /// The sum of two partial figures (within a batch: at most 10^8 values, far from overflow).
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl fmt::Display for Decimal {
    /// Plain notation, no trailing fractional zeros: `19.99`, `-3`, `0.000000000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_big(&num_bigint::BigInt::from(self.0)))
    }
}

/// A JSON number's sign, digits (integer and fraction, without the point) and the position of
/// the decimal point counted from the left of those digits, or `None` when `text` is not a
/// JSON number.
fn parse_number(text: &str) -> Option<(bool, String, i64)> {
    let t = text.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => {
            let e = &t[i + 1..];
            let (sign, e) = match e.strip_prefix('-') {
                Some(e) => (-1, e),
                None => (1, e.strip_prefix('+').unwrap_or(e)),
            };
            if e.is_empty() || e.len() > 6 || !e.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (&t[..i], sign * e.parse::<i64>().ok()?)
        }
        None => (t, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((_, "")) => return None,
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || !digits_only(int)
        || !digits_only(frac)
        || (int.len() > 1 && int.starts_with('0'))
    {
        return None;
    }
    Some((
        negative,
        format!("{int}{frac}"),
        int.len() as i64 + exponent,
    ))
}

/// The sum of a bucket's partials, in units of 10^-12, written as a plain decimal.
pub fn format_big(units: &num_bigint::BigInt) -> String {
    let negative = units.sign() == num_bigint::Sign::Minus;
    let digits = units.magnitude().to_string();
    let scale = MAX_FRACTION_DIGITS as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let frac = frac.trim_end_matches('0');
    let sign = if negative { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// A metric as stored in the `metrics` table and answered by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricDefinition {
    /// The metric's id (its key).
    pub id: String,
    /// The event type it measures.
    #[serde(rename = "type")]
    pub kind: String,
    /// The numeric path inside `data` it sums (`data.amount`); absent: counts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<String>,
    /// Its breakdown dimension: `origin`, `environment` or a path inside `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The only environment it measures; absent: every environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was defined (RFC 3339, ms).
    pub created_at: String,
    /// From when it applies (stream creation time of the record).
    pub effective_at: String,
    /// Until when it applies, once deleted (a tombstone: the id is never reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

/// The body of `PUT /v1/metrics/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricInput {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The numeric path inside `data` to sum.
    #[serde(default)]
    pub sum: Option<String>,
    /// The breakdown dimension.
    #[serde(default)]
    pub by: Option<String>,
    /// The only environment measured.
    #[serde(default)]
    pub environment: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Why a definition is refused: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMetric {
    /// Machine-readable code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> InvalidMetric {
    InvalidMetric {
        code,
        message: message.into(),
    }
}

/// Whether `id` is a metric id: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The keys of a `data.<key>(.<key>)*` path (at most 8, each non-empty), or `None`.
pub fn data_path(path: &str) -> Option<Vec<&str>> {
    let keys: Vec<&str> = path.strip_prefix("data.")?.split('.').collect();
    (keys.len() <= 8 && keys.iter().all(|k| !k.is_empty() && k.len() <= 64)).then_some(keys)
}

/// A breakdown dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension<'a> {
    /// The event's `origin`.
    Origin,
    /// The event's `environment`.
    Environment,
    /// A path inside `data`.
    Data(Vec<&'a str>),
}

impl<'a> Dimension<'a> {
    /// Parses `origin`, `environment` or `data.<path>`.
    pub fn parse(by: &'a str) -> Option<Self> {
        match by {
            "origin" => Some(Self::Origin),
            "environment" => Some(Self::Environment),
            _ => data_path(by).map(Self::Data),
        }
    }
}

impl MetricInput {
    /// The definition of a new metric `id` created at `now`, taking effect after `delay`.
    pub fn into_definition(
        self,
        id: &str,
        now: DateTime<Utc>,
        delay: Duration,
    ) -> Result<MetricDefinition, InvalidMetric> {
        if !is_valid_id(id) {
            return Err(invalid(
                "invalid_metric_id",
                "a metric id is 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if !is_valid_type(&self.kind) {
            return Err(invalid("invalid_type", "`type` is not a valid event type"));
        }
        if let Some(sum) = &self.sum
            && data_path(sum).is_none()
        {
            return Err(invalid(
                "invalid_sum",
                "`sum` must be a path inside data: `data.<key>`, at most 8 keys",
            ));
        }
        if let Some(by) = &self.by
            && Dimension::parse(by).is_none()
        {
            return Err(invalid(
                "invalid_by",
                "`by` must be `origin`, `environment` or a path inside data (`data.<key>`)",
            ));
        }
        if let Some(env) = &self.environment
            && !is_valid_environment(env)
        {
            return Err(invalid(
                "invalid_environment",
                "`environment` is not a valid environment",
            ));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            return Err(invalid(
                "invalid_description",
                format!("`description` is at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        Ok(MetricDefinition {
            id: id.to_string(),
            kind: self.kind,
            sum: self.sum,
            by: self.by,
            environment: self.environment,
            description: self.description,
            created_at: crate::time::format(now),
            effective_at: crate::time::format(now + delay),
            retired_at: None,
        })
    }
}

impl MetricDefinition {
    /// Whether `other` measures the same thing (type, sum, by and environment): only the
    /// description of an existing metric may change.
    pub fn same_measure(&self, other: &MetricDefinition) -> bool {
        self.kind == other.kind
            && self.sum == other.sum
            && self.by == other.by
            && self.environment == other.environment
    }

    /// Whether it applies to an event of `kind` in `environment` whose stream record was
    /// created at `created`.
    pub fn applies(&self, environment: &str, kind: &str, created: DateTime<Utc>) -> bool {
        self.kind == kind
            && self.environment.as_deref().is_none_or(|e| e == environment)
            && crate::time::parse(&self.effective_at).is_some_and(|e| created >= e)
            && self
                .retired_at
                .as_deref()
                .and_then(crate::time::parse)
                .is_none_or(|r| created < r)
    }

    /// Whether reading it needs the event's `data`.
    pub fn needs_data(&self) -> bool {
        self.sum.is_some() || self.by.as_deref().is_some_and(|b| b.starts_with("data."))
    }
}

/// The definitions as read at `fetched` (strongly consistent), usable for records created
/// before `fetched + delay`: a definition created later takes effect only after that.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When they were read.
    pub fetched: DateTime<Utc>,
    /// Every definition, retired ones too.
    pub definitions: Vec<MetricDefinition>,
}

impl Snapshot {
    /// Whether it may be used for a record created at `created`.
    pub fn covers(&self, created: DateTime<Utc>, delay: Duration) -> bool {
        created < self.fetched + delay
    }
}

/// The JSON text of the value at `keys` inside the `data` object text, if there is one.
pub fn lookup<'a>(data: &'a RawValue, keys: &[&str]) -> Option<&'a RawValue> {
    let mut current = data;
    for key in keys {
        let object: HashMap<String, &'a RawValue> = serde_json::from_str(current.get()).ok()?;
        current = object.get(*key)?;
    }
    Some(current)
}

/// The breakdown value of a JSON value: its JSON text (strings re-written canonically), or
/// [`OTHER`] when it is missing, an object or array, or longer than [`MAX_VALUE_BYTES`].
pub fn breakdown_value(value: Option<&RawValue>) -> String {
    let Some(v) = value else {
        return OTHER.to_string();
    };
    let text = v.get().trim();
    let canonical = if text.starts_with('"') {
        match serde_json::from_str::<String>(text) {
            Ok(s) => serde_json::to_string(&s).unwrap_or_default(),
            Err(_) => return OTHER.to_string(),
        }
    } else if text.starts_with(['{', '[']) {
        return OTHER.to_string();
    } else {
        text.to_string()
    };
    if canonical.len() > MAX_VALUE_BYTES {
        OTHER.to_string()
    } else {
        canonical
    }
}

/// A string field's breakdown value (`origin`, `environment`).
pub fn string_value(value: Option<&str>) -> String {
    match value {
        Some(s) => breakdown_value(serde_json::value::to_raw_value(s).ok().as_deref()),
        None => OTHER.to_string(),
    }
}

/// What one record adds to a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The metric counts only.
    Count,
    /// A summable value.
    Value(Decimal),
    /// A value that is not summable (missing, not a number, too many digits).
    Skipped,
}

impl Measure {
    /// The measure of an event for a metric with `sum` keys (`None`: counts only).
    pub fn of(data: Option<&RawValue>, sum: Option<&[&str]>) -> Self {
        let Some(keys) = sum else {
            return Self::Count;
        };
        match data
            .and_then(|d| lookup(d, keys))
            .and_then(|v| Decimal::parse_value(v.get()))
        {
            Some(d) => Self::Value(d),
            None => Self::Skipped,
        }
    }
}

/// One record of a batch as a metric sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRecord {
    /// Padded stream sequence number.
    pub seq: String,
    /// The time it is counted under (as counts).
    pub at: DateTime<Utc>,
    /// What it adds.
    pub measure: Measure,
    /// Its breakdown value once resolved against the registry (`None`: no breakdown).
    pub value: Option<String>,
}

/// One partial of a metric: its key and the sort key before `#<shard>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartialId {
    /// `metric#<id>#<granularity>` (totals) or with `#by` (breakdown).
    pub pk: String,
    /// `<bucket>` or `<bucket>#<value>`.
    pub prefix: String,
    /// The bucket start.
    pub bucket: String,
    /// Whether it expires (minute partials, like counts).
    pub expires: bool,
}

/// What one batch adds to one partial: its records' measures, by ascending sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricUpdate {
    /// Which partial.
    pub id: PartialId,
    /// (padded sequence number, measure), ascending, each sequence once.
    pub entries: Vec<(String, Measure)>,
}

/// A partial's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    /// Records counted (with a summable value, when the metric sums).
    pub count: u64,
    /// Records whose value could not be summed.
    pub skipped: u64,
    /// Their sum.
    pub sum: Decimal,
    /// Smallest value.
    pub min: Option<Decimal>,
    /// Largest value.
    pub max: Option<Decimal>,
}

impl Figures {
    /// The figures of `entries` with sequence numbers beyond `applied`, and the last of them.
    pub fn after<'a>(
        entries: &'a [(String, Measure)],
        applied: Option<&str>,
    ) -> (Self, Option<&'a str>) {
        let mut f = Self::default();
        let mut last = None;
        for (seq, m) in entries {
            if applied.is_some_and(|w| seq.as_str() <= w) {
                continue;
            }
            last = Some(seq.as_str());
            match m {
                Measure::Count => f.count += 1,
                Measure::Skipped => f.skipped += 1,
                Measure::Value(v) => {
                    f.count += 1;
                    f.sum = f.sum.checked_add(*v).unwrap_or(f.sum);
                    f.min = Some(f.min.map_or(*v, |m| m.min(*v)));
                    f.max = Some(f.max.map_or(*v, |m| m.max(*v)));
                }
            }
        }
        (f, last)
    }

    /// These figures with `more` added: counts and sums add, extremes widen.
    pub fn plus(self, more: Figures) -> Figures {
        Figures {
            count: self.count + more.count,
            skipped: self.skipped + more.skipped,
            sum: self.sum.checked_add(more.sum).unwrap_or(self.sum),
            min: [self.min, more.min].into_iter().flatten().min(),
            max: [self.max, more.max].into_iter().flatten().max(),
        }
    }
}

/// The partial key of a metric's totals or breakdown.
pub fn partition_key(id: &str, granularity: Granularity, breakdown: bool) -> String {
    format!(
        "metric#{id}#{}{}",
        granularity.as_str(),
        if breakdown { "#by" } else { "" }
    )
}

/// The registry item's key of a metric's admitted breakdown values.
pub fn registry_key(id: &str) -> String {
    format!("metric#{id}#values")
}

/// A batch's records of one metric → one update per partial (totals and, where the metric has
/// a breakdown, per value), for every granularity. Skipped values count in the totals only.
pub fn metric_updates(id: &str, records: &[MetricRecord]) -> Vec<MetricUpdate> {
    let mut partials: BTreeMap<PartialId, Vec<(String, Measure)>> = BTreeMap::new();
    for r in records {
        for g in Granularity::ALL {
            let bucket = count::format_bucket(g.bucket_start(r.at));
            let expires = g == Granularity::Minute;
            partials
                .entry(PartialId {
                    pk: partition_key(id, g, false),
                    prefix: bucket.clone(),
                    bucket: bucket.clone(),
                    expires,
                })
                .or_default()
                .push((r.seq.clone(), r.measure));
            if let Some(value) = &r.value
                && r.measure != Measure::Skipped
            {
                partials
                    .entry(PartialId {
                        pk: partition_key(id, g, true),
                        prefix: format!("{bucket}#{value}"),
                        bucket,
                        expires,
                    })
                    .or_default()
                    .push((r.seq.clone(), r.measure));
            }
        }
    }
    partials
        .into_iter()
        .map(|(id, mut entries)| {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|a, b| a.0 == b.0);
            MetricUpdate { id, entries }
        })
        .collect()
}

/// One stored partial as the query reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPartial {
    /// The bucket start.
    pub bucket: String,
    /// The breakdown value (`None`: a total).
    pub value: Option<String>,
    /// `count`.
    pub count: u64,
    /// `skipped`.
    pub skipped: u64,
    /// `sum`, as stored.
    pub sum: Option<String>,
    /// `min`, as stored.
    pub min: Option<String>,
    /// `max`, as stored.
    pub max: Option<String>,
}

/// Figures of one value in a bucket's breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct ValueFigures {
    /// Records.
    pub count: u64,
    /// Their exact sum (absent when the metric does not sum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<Box<RawValue>>,
    /// Smallest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Box<RawValue>>,
    /// Largest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Box<RawValue>>,
}

/// One bucket of `GET /v1/metrics/{id}/values`.
#[derive(Debug, Clone, Serialize)]
pub struct MetricBucket {
    /// Bucket start.
    pub start: String,
    /// Its count, exact sum (a JSON number of any length), min and max.
    #[serde(flatten)]
    pub figures: ValueFigures,
    /// Records whose value could not be summed.
    pub skipped: u64,
    /// The breakdown, when the metric has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeMap<String, ValueFigures>>,
}

#[derive(Default)]
struct Acc {
    count: u64,
    skipped: u64,
    sum: Option<num_bigint::BigInt>,
    min: Option<num_bigint::BigInt>,
    max: Option<num_bigint::BigInt>,
}

impl Acc {
    fn add(&mut self, p: &StoredPartial) {
        let parse = |t: &Option<String>| t.as_deref().and_then(Decimal::parse_stored);
        self.count += p.count;
        self.skipped += p.skipped;
        if let Some(s) = parse(&p.sum) {
            self.sum = Some(self.sum.take().unwrap_or_default() + s);
        }
        if let Some(m) = parse(&p.min) {
            self.min = Some(self.min.take().map_or(m.clone(), |x| x.min(m)));
        }
        if let Some(m) = parse(&p.max) {
            self.max = Some(self.max.take().map_or(m.clone(), |x| x.max(m)));
        }
    }

    /// The answer's figures; `sums`: whether the metric sums (else only the count). A bucket
    /// with no summed value sums to 0.
    fn figures(&self, sums: bool) -> ValueFigures {
        let number = |units: Option<&num_bigint::BigInt>| {
            units
                .filter(|_| sums)
                .and_then(|u| RawValue::from_string(format_big(u)).ok())
        };
        ValueFigures {
            count: self.count,
            sum: number(Some(self.sum.as_ref().unwrap_or(&num_bigint::BigInt::ZERO))),
            min: number(self.min.as_ref()),
            max: number(self.max.as_ref()),
        }
    }
}

/// Adds a metric's partials per bucket (and per value), ordered by bucket start; `sums` says
/// whether the metric has a `sum` (then `sum`, `min` and `max` are answered), `breakdown`
/// whether it has a `by`.
pub fn sum_metric(partials: &[StoredPartial], sums: bool, breakdown: bool) -> Vec<MetricBucket> {
    let mut totals: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut values: BTreeMap<&str, BTreeMap<&str, Acc>> = BTreeMap::new();
    for p in partials {
        match &p.value {
            None => totals.entry(&p.bucket).or_default().add(p),
            Some(v) => values
                .entry(&p.bucket)
                .or_default()
                .entry(v)
                .or_default()
                .add(p),
        }
    }
    totals
        .into_iter()
        .filter(|(_, a)| a.count + a.skipped > 0)
        .map(|(start, a)| MetricBucket {
            start: start.to_string(),
            figures: a.figures(sums),
            skipped: a.skipped,
            values: breakdown.then(|| {
                values
                    .get(start)
                    .into_iter()
                    .flatten()
                    .map(|(v, a)| (v.to_string(), a.figures(sums)))
                    .collect()
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One unit of a [`Decimal`].
    const SCALE: i128 = 1_000_000_000_000;

    fn d(text: &str) -> Option<String> {
        Decimal::parse_value(text).map(|d| d.to_string())
    }

    #[test]
    fn summable_values_are_exact_decimals_within_their_digits() {
        assert_eq!(d("19.99").as_deref(), Some("19.99"));
        assert_eq!(d("-3").as_deref(), Some("-3"));
        assert_eq!(d("1.5e2").as_deref(), Some("150"));
        assert_eq!(d("25E-3").as_deref(), Some("0.025"));
        assert_eq!(d("0.000000000001").as_deref(), Some("0.000000000001"));
        assert_eq!(
            d("999999999999999.999999999999").as_deref(),
            Some("999999999999999.999999999999")
        );
        assert_eq!(
            d("100.500000000000000").as_deref(),
            Some("100.5"),
            "trailing zeros are not digits"
        );
        // Too many digits, or not a number: skipped.
        assert_eq!(d("1000000000000000"), None);
        assert_eq!(d("0.0000000000001"), None);
        assert_eq!(d("1e15"), None);
        for bad in [
            "\"5\"", "true", "null", "01", "1.", ".5", "1e", "--1", "{}", "NaN",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn stored_sums_add_in_arbitrary_precision() {
        let big = Decimal::parse_stored("99999999999999999999999999.5").unwrap();
        let total = big.clone() + big;
        assert_eq!(format_big(&total), "199999999999999999999999999");
        assert_eq!(
            format_big(&Decimal::parse_stored("-0.25").unwrap()),
            "-0.25"
        );
        assert_eq!(format_big(&Decimal::parse_stored("0").unwrap()), "0");
    }

    #[test]
    fn breakdown_values_are_json_text_and_the_rest_other() {
        let raw = |t: &str| RawValue::from_string(t.to_string()).unwrap();
        assert_eq!(breakdown_value(Some(&raw("\"USD\""))), "\"USD\"");
        assert_eq!(
            breakdown_value(Some(&raw("\"\\u0055SD\""))),
            "\"USD\"",
            "canonical"
        );
        assert_eq!(breakdown_value(Some(&raw("3"))), "3");
        assert_eq!(breakdown_value(Some(&raw("[1]"))), OTHER);
        assert_eq!(breakdown_value(Some(&raw("{\"a\":1}"))), OTHER);
        assert_eq!(
            breakdown_value(Some(&raw(&format!("\"{}\"", "x".repeat(63))))),
            OTHER
        );
        assert_eq!(breakdown_value(None), OTHER);
        // "(other)" as a value is its JSON text, with quotes: never the bucket itself.
        assert_ne!(breakdown_value(Some(&raw("\"(other)\""))), OTHER);
        assert_eq!(string_value(Some("ios")), "\"ios\"");
    }

    #[test]
    fn lookup_follows_a_data_path() {
        let data = RawValue::from_string(r#"{"a":{"b":19.990},"c":"x"}"#.into()).unwrap();
        assert_eq!(
            lookup(&data, &["a", "b"]).map(RawValue::get),
            Some("19.990")
        );
        assert!(lookup(&data, &["c", "d"]).is_none());
        assert_eq!(
            Measure::of(Some(&data), Some(&["a", "b"])),
            Measure::Value(Decimal(19_990_000_000_000))
        );
        assert_eq!(Measure::of(Some(&data), Some(&["c"])), Measure::Skipped);
        assert_eq!(Measure::of(None, None), Measure::Count);
    }

    fn input(json: &str) -> MetricInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn definitions_are_checked_and_take_effect_after_the_delay() {
        let now = crate::time::parse("2026-12-03T10:00:00.000Z").unwrap();
        let def = input(r#"{"type":"game.purchase","sum":"data.amount","by":"data.currency","environment":"prod"}"#)
            .into_definition("revenue", now, delay(60))
            .unwrap();
        assert_eq!(def.effective_at, "2026-12-03T10:02:00.000Z");
        let at = |t: &str| crate::time::parse(t).unwrap();
        assert!(!def.applies("prod", "game.purchase", at("2026-12-03T10:01:59.999Z")));
        assert!(def.applies("prod", "game.purchase", at("2026-12-03T10:02:00.000Z")));
        assert!(!def.applies("dev", "game.purchase", at("2026-12-03T11:00:00.000Z")));
        assert!(!def.applies("prod", "game.start", at("2026-12-03T11:00:00.000Z")));
        let retired = MetricDefinition {
            retired_at: Some("2026-12-03T12:00:00.000Z".into()),
            ..def.clone()
        };
        assert!(!retired.applies("prod", "game.purchase", at("2026-12-03T12:00:00.000Z")));
        assert!(def.needs_data());
        for (id, body, code) in [
            ("bad id!", r#"{"type":"a"}"#, "invalid_metric_id"),
            ("m", r#"{"type":""}"#, "invalid_type"),
            ("m", r#"{"type":"a","sum":"amount"}"#, "invalid_sum"),
            ("m", r#"{"type":"a","sum":"data."}"#, "invalid_sum"),
            ("m", r#"{"type":"a","by":"userId"}"#, "invalid_by"),
            (
                "m",
                r#"{"type":"a","environment":"no spaces"}"#,
                "invalid_environment",
            ),
        ] {
            assert_eq!(
                input(body)
                    .into_definition(id, now, delay(60))
                    .unwrap_err()
                    .code,
                code,
                "{body}"
            );
        }
        assert!(serde_json::from_str::<MetricInput>(r#"{"type":"a","extra":1}"#).is_err());
    }

    fn rec(seq: u32, at: &str, measure: Measure, value: Option<&str>) -> MetricRecord {
        MetricRecord {
            seq: format!("{seq:040}"),
            at: crate::time::parse(at).unwrap(),
            measure,
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn updates_cover_every_granularity_and_skip_skipped_values_in_breakdowns() {
        let v = |x: i128| Measure::Value(Decimal(x * SCALE));
        let records = [
            rec(1, "2026-12-03T10:00:10Z", v(5), Some("\"USD\"")),
            rec(2, "2026-12-03T10:00:20Z", Measure::Skipped, Some("\"USD\"")),
            rec(3, "2026-12-03T10:01:00Z", v(-2), Some(OTHER)),
        ];
        let updates = metric_updates("rev", &records);
        let day: Vec<_> = updates
            .iter()
            .filter(|u| u.id.pk == "metric#rev#day")
            .collect();
        assert_eq!(day.len(), 1);
        let (f, last) = Figures::after(&day[0].entries, None);
        assert_eq!(
            (f.count, f.skipped, f.sum, f.min, f.max),
            (
                2,
                1,
                Decimal(3 * SCALE),
                Some(Decimal(-2 * SCALE)),
                Some(Decimal(5 * SCALE))
            )
        );
        assert_eq!(last, Some(format!("{:040}", 3).as_str()));
        let (replayed, _) = Figures::after(&day[0].entries, Some(&format!("{:040}", 2)));
        assert_eq!((replayed.count, replayed.sum), (1, Decimal(-2 * SCALE)));
        let by: Vec<_> = updates
            .iter()
            .filter(|u| u.id.pk == "metric#rev#day#by")
            .map(|u| (u.id.prefix.as_str(), u.entries.len()))
            .collect();
        assert_eq!(
            by,
            [
                ("2026-12-03T00:00:00Z#\"USD\"", 1),
                ("2026-12-03T00:00:00Z#(other)", 1)
            ]
        );
        assert_eq!(
            updates
                .iter()
                .filter(|u| u.id.pk == "metric#rev#minute")
                .count(),
            2
        );
    }

    #[test]
    fn the_query_adds_partials_per_bucket_and_value() {
        let p = |bucket: &str, value: Option<&str>, count, sum: &str| StoredPartial {
            bucket: bucket.into(),
            value: value.map(str::to_string),
            count,
            skipped: 1,
            sum: Some(sum.into()),
            min: Some("-1".into()),
            max: Some(sum.into()),
        };
        let buckets = sum_metric(
            &[
                p("2026-12-03T00:00:00Z", None, 2, "10.5"),
                p("2026-12-03T00:00:00Z", None, 3, "0.25"),
                p("2026-12-03T00:00:00Z", Some("\"EUR\""), 3, "0.25"),
            ],
            true,
            true,
        );
        let json = serde_json::to_value(&buckets).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"start": "2026-12-03T00:00:00Z", "count": 5, "sum": 10.75, "min": -1, "max": 10.5, "skipped": 2,
                "values": {"\"EUR\"": {"count": 3, "sum": 0.25, "min": -1, "max": 0.25}}}])
        );
    }
}
