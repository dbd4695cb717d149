//! Count: exactly-once event counts per (environment, type, granularity, bucket).
//!
//! Every count is kept as partial counters, one per (key, bucket, stream shard), each holding
//! its `count` and `seq` — the last stream sequence number applied from that shard, zero-padded
//! to 40 digits. A batch of stream records becomes one [`CounterUpdate`] per partial counter,
//! listing the sequence numbers it adds; the store applies only those beyond `seq`
//! ([`count_after`]), so a replayed or bisected batch never counts twice, and shards never
//! contend on one item. `GET /v1/counts` sums the partials of each bucket.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Serialize;

/// The type part of the all-types total's key.
pub const ALL_TYPES: &str = "*";

/// How far in the past a client `timestamp` may lie and still be counted under itself: offline
/// clients upload late, for days. Older ones are counted under the receive time.
pub const MAX_PAST: Duration = Duration::days(30);
/// How far in the future a client `timestamp` may lie (clock skew). Later ones are counted under
/// the receive time.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// Bucket sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One-minute buckets (their partials expire by TTL).
    Minute,
    /// One-hour buckets.
    Hour,
    /// One-day buckets (UTC days).
    Day,
}

impl Granularity {
    /// All granularities, smallest first.
    pub const ALL: [Granularity; 3] = [Self::Minute, Self::Hour, Self::Day];

    /// The name used in keys and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// Parses `minute`, `hour` or `day`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// The bucket length.
    pub fn length(self) -> Duration {
        match self {
            Self::Minute => Duration::minutes(1),
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::days(1),
        }
    }

    /// Start of the bucket holding `t` (UTC).
    pub fn bucket_start(self, t: DateTime<Utc>) -> DateTime<Utc> {
        // Buckets divide the Unix epoch evenly (minutes, hours and UTC days all do).
        t.duration_trunc(self.length()).unwrap_or(t)
    }
}

/// A bucket start as it appears in keys and in the API: `2026-11-26T13:44:00Z`.
pub fn format_bucket(start: DateTime<Utc>) -> String {
    start.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The partition key of a count: `<environment>#<type or *>#<granularity>`.
pub fn partition_key(environment: &str, kind: &str, granularity: Granularity) -> String {
    format!("{environment}#{kind}#{}", granularity.as_str())
}

/// The time an event is counted under: its `timestamp` when plausible, else its receive time
/// (see [`MAX_PAST`], [`MAX_FUTURE`]).
pub fn counted_time(timestamp: DateTime<Utc>, received_at: DateTime<Utc>) -> DateTime<Utc> {
    // Checked: a receive time at the edge of chrono's range must not panic (it is data).
    let earliest = received_at.checked_sub_signed(MAX_PAST);
    let latest = received_at.checked_add_signed(MAX_FUTURE);
    if earliest.is_none_or(|e| timestamp < e) || latest.is_none_or(|l| timestamp > l) {
        received_at
    } else {
        timestamp
    }
}

/// One counted event as read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedEvent<'a> {
    /// Stream sequence number, zero-padded to 40 digits (see [`crate::sequence::padded`]).
    pub seq: String,
    /// Environment.
    pub environment: &'a str,
    /// Event type.
    pub kind: &'a str,
    /// The time it is counted under ([`counted_time`]).
    pub at: DateTime<Utc>,
}

/// One partial counter: (key, bucket) of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterId {
    /// [`partition_key`].
    pub pk: String,
    /// [`format_bucket`] of the bucket start.
    pub bucket: String,
    /// Whether it expires (minute partials, `MINUTE_COUNTS_TTL_DAYS` after their bucket).
    pub expires: bool,
}

/// What one batch adds to one partial counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterUpdate {
    /// Which counter.
    pub id: CounterId,
    /// The padded sequence numbers of the records it counts, ascending.
    pub seqs: Vec<String>,
}

impl CounterUpdate {
    /// The first (lowest) sequence number.
    pub fn first(&self) -> &str {
        self.seqs.first().map(String::as_str).unwrap_or("")
    }

    /// The last (highest) sequence number.
    pub fn last(&self) -> &str {
        self.seqs.last().map(String::as_str).unwrap_or("")
    }
}

/// Aggregates a batch of events from one shard into one update per partial counter: each event
/// counts once under its type and once under [`ALL_TYPES`], for every granularity.
pub fn aggregate(events: &[CountedEvent<'_>]) -> Vec<CounterUpdate> {
    // Grouped on borrowed parts first: a counter's key and bucket are built once per batch.
    type Parts<'a> = (&'a str, &'a str, Granularity, DateTime<Utc>);
    let mut grouped: std::collections::HashMap<Parts<'_>, Vec<&str>> =
        std::collections::HashMap::new();
    for e in events {
        for g in Granularity::ALL {
            let start = g.bucket_start(e.at);
            for kind in [e.kind, ALL_TYPES] {
                grouped
                    .entry((e.environment, kind, g, start))
                    .or_default()
                    .push(&e.seq);
            }
        }
    }
    let counters: BTreeMap<CounterId, Vec<String>> = grouped
        .into_iter()
        .map(|((environment, kind, g, start), seqs)| {
            let id = CounterId {
                pk: partition_key(environment, kind, g),
                bucket: format_bucket(start),
                expires: g == Granularity::Minute,
            };
            (id, seqs.into_iter().map(str::to_string).collect())
        })
        .collect();
    updates(counters)
}

/// One update per counter, its sequence numbers ascending and each once.
pub fn updates(counters: BTreeMap<CounterId, Vec<String>>) -> Vec<CounterUpdate> {
    counters
        .into_iter()
        .map(|(id, mut seqs)| {
            // Padded numbers: string order is numeric order.
            seqs.sort();
            seqs.dedup();
            CounterUpdate { id, seqs }
        })
        .collect()
}

/// What an update adds to a counter whose watermark is `applied` (`None`: a new counter):
/// the number of sequence numbers beyond it, and the new watermark.
pub fn count_after<'a>(seqs: &'a [String], applied: Option<&str>) -> (u64, Option<&'a str>) {
    let fresh: Vec<&String> = seqs
        .iter()
        .filter(|s| applied.is_none_or(|w| s.as_str() > w))
        .collect();
    (fresh.len() as u64, fresh.last().map(|s| s.as_str()))
}

/// One bucket of a count answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketCount {
    /// Bucket start, RFC 3339.
    pub start: String,
    /// Events in it.
    pub count: u64,
}

/// Sums partial counters `(bucket, count)` per bucket, ordered by bucket start.
pub fn sum_partials(partials: impl IntoIterator<Item = (String, u64)>) -> Vec<BucketCount> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for (bucket, count) in partials {
        *sums.entry(bucket).or_default() += count;
    }
    sums.into_iter()
        .filter(|(_, c)| *c > 0)
        .map(|(start, count)| BucketCount { start, count })
        .collect()
}

/// Number of buckets of `granularity` from the bucket holding `from` to the one holding `to`.
pub fn bucket_span(granularity: Granularity, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    let (a, b) = (granularity.bucket_start(from), granularity.bucket_start(to));
    (b - a).num_seconds() / granularity.length().num_seconds() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequence::padded;

    fn t(s: &str) -> DateTime<Utc> {
        crate::time::parse(s).unwrap()
    }

    fn ev<'a>(seq: u64, kind: &'a str, at: &str) -> CountedEvent<'a> {
        CountedEvent {
            seq: padded(&seq.to_string()).unwrap(),
            environment: "prod",
            kind,
            at: t(at),
        }
    }

    #[test]
    fn buckets_are_utc_minutes_hours_and_days() {
        let at = t("2026-11-26T13:44:16.789+02:00");
        assert_eq!(
            format_bucket(Granularity::Minute.bucket_start(at)),
            "2026-11-26T11:44:00Z"
        );
        assert_eq!(
            format_bucket(Granularity::Hour.bucket_start(at)),
            "2026-11-26T11:00:00Z"
        );
        assert_eq!(
            format_bucket(Granularity::Day.bucket_start(at)),
            "2026-11-26T00:00:00Z"
        );
    }

    #[test]
    fn each_event_counts_under_its_type_and_the_total_at_every_granularity() {
        let updates = aggregate(&[
            ev(1, "a", "2026-11-26T13:00:10Z"),
            ev(2, "b", "2026-11-26T13:00:20Z"),
            ev(3, "a", "2026-11-26T13:01:00Z"),
        ]);
        let find = |pk: &str, bucket: &str| {
            updates
                .iter()
                .find(|u| u.id.pk == pk && u.id.bucket == bucket)
                .map(|u| u.seqs.len())
        };
        assert_eq!(find("prod#a#minute", "2026-11-26T13:00:00Z"), Some(1));
        assert_eq!(find("prod#a#minute", "2026-11-26T13:01:00Z"), Some(1));
        assert_eq!(find("prod#*#minute", "2026-11-26T13:00:00Z"), Some(2));
        assert_eq!(find("prod#a#hour", "2026-11-26T13:00:00Z"), Some(2));
        assert_eq!(find("prod#*#day", "2026-11-26T00:00:00Z"), Some(3));
        // minute: a×2 b×1 *×2 buckets; hour: a, b, *; day: a, b, *.
        assert_eq!(updates.len(), 5 + 3 + 3);
    }

    #[test]
    fn only_records_beyond_the_watermark_count() {
        let seqs: Vec<String> = [5u64, 6, 9]
            .iter()
            .map(|s| padded(&s.to_string()).unwrap())
            .collect();
        assert_eq!(count_after(&seqs, None), (3, Some(seqs[2].as_str())));
        assert_eq!(
            count_after(&seqs, Some(&padded("5").unwrap())),
            (2, Some(seqs[2].as_str()))
        );
        assert_eq!(count_after(&seqs, Some(&padded("9").unwrap())), (0, None));
        // Numeric, not lexicographic: 10 is beyond 9.
        let later = vec![padded("10").unwrap()];
        assert_eq!(count_after(&later, Some(&padded("9").unwrap())).0, 1);
    }

    #[test]
    fn implausible_client_times_count_under_the_receive_time() {
        let received = t("2026-11-26T12:00:00Z");
        assert_eq!(
            counted_time(t("2026-11-20T00:00:00Z"), received),
            t("2026-11-20T00:00:00Z")
        );
        assert_eq!(
            counted_time(t("2026-11-26T12:04:00Z"), received),
            t("2026-11-26T12:04:00Z")
        );
        assert_eq!(counted_time(t("1970-01-01T00:00:00Z"), received), received);
        assert_eq!(counted_time(t("2027-01-01T00:00:00Z"), received), received);
    }

    #[test]
    fn partials_sum_per_bucket_in_order() {
        let sums = sum_partials([
            ("2026-11-26T13:00:00Z".to_string(), 2),
            ("2026-11-26T12:00:00Z".to_string(), 1),
            ("2026-11-26T13:00:00Z".to_string(), 5),
        ]);
        assert_eq!(
            sums,
            vec![
                BucketCount {
                    start: "2026-11-26T12:00:00Z".into(),
                    count: 1
                },
                BucketCount {
                    start: "2026-11-26T13:00:00Z".into(),
                    count: 7
                },
            ]
        );
    }

    #[test]
    fn spans_count_buckets_inclusively() {
        let (a, b) = (t("2026-11-26T00:00:30Z"), t("2026-11-26T23:59:59Z"));
        assert_eq!(bucket_span(Granularity::Minute, a, b), 1440);
        assert_eq!(bucket_span(Granularity::Hour, a, b), 24);
        assert_eq!(bucket_span(Granularity::Day, a, b), 1);
    }
}
