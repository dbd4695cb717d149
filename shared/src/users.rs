//! Unique users, exactly: active users per (environment, type or `*`, UTC day | ISO week |
//! calendar month) by the event's counted time, and new users per (environment, type or `*`,
//! UTC receive day).
//!
//! Each (environment, type or `*`, period, bucket, user) has one *first-seen marker*, written
//! once with a conditional put (`attribute_not_exists`) that records `by = <shard>#<sequence>`,
//! the stream record that created it; a marker that exists already answers with its `by`.
//! A record of the batch being handled adds 1 for a marker exactly when the marker's `by` names
//! that record (same shard, same sequence), whether the answer came from the write, from the
//! existing item or from the warm function's cache — so however often a record is re-delivered,
//! and whichever shard sees a user first, each marker is counted by one record only. That 1 goes
//! to the partial counter of (environment, type or `*`, `users-<period>` or `new-day`, bucket,
//! shard) at the record's sequence number, under the counters' existing watermark
//! ([`crate::count::count_after`]): a re-delivered record adds nothing twice.
//!
//! New users: the "ever" marker (no period) of (environment, type or `*`, user) counts on the
//! receive day of the record that created it — the first of the user's events post-process
//! applies, which is stable under replays but can be later than the user's true first receipt
//! when ingest shards or store lags.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::count::{ALL_TYPES, CounterId, CounterUpdate, format_bucket};

/// The periods active users are counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// UTC day.
    Day,
    /// ISO week (Monday 00:00 UTC to the next Monday).
    Week,
    /// Calendar month (UTC).
    Month,
}

impl Period {
    /// Every period.
    pub const ALL: [Period; 3] = [Self::Day, Self::Week, Self::Month];

    /// The name used in keys and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// Parses `day`, `week` or `month`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Start of the period holding `t`.
    pub fn start(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t.date_naive();
        let first = match self {
            Self::Day => day,
            Self::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Self::Month => day.with_day(1).unwrap_or(day),
        };
        midnight(first)
    }

    /// The start of the period after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Day => start + Duration::days(1),
            Self::Week => start + Duration::days(7),
            Self::Month => {
                let d = start.date_naive();
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1).map_or(start + Duration::days(31), midnight)
            }
        }
    }

    /// The partition key of the period's partial counters.
    pub fn counter_key(self, environment: &str, kind: &str) -> String {
        format!("{environment}#{kind}#users-{}", self.as_str())
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The partition key of the new-users partial counters (per receive day).
pub fn new_users_key(environment: &str, kind: &str) -> String {
    format!("{environment}#{kind}#new-day")
}

/// The all-types figure a partial counter holds, with its environment: `Some((env, false))`
/// for active users per day, `Some((env, true))` for new users, `None` for any other counter.
pub fn all_types_daily(pk: &str) -> Option<(&str, bool)> {
    let active = format!("#{ALL_TYPES}#users-{}", Period::Day.as_str());
    let new = new_users_key("", ALL_TYPES);
    pk.strip_suffix(active.as_str())
        .map(|env| (env, false))
        .or_else(|| pk.strip_suffix(new.as_str()).map(|env| (env, true)))
}

/// What a marker stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Marker {
    /// Environment.
    pub environment: String,
    /// Event type, or [`ALL_TYPES`].
    pub kind: String,
    /// The period and its bucket start; `None`: the "ever" marker of new users.
    pub period: Option<(Period, String)>,
    /// The user.
    pub user: String,
}

impl Marker {
    /// The marker's partition key in the counts table: one item per marker, so no key is hot.
    /// The user comes last: it is the only part that may hold `#`.
    pub fn key(&self) -> String {
        match &self.period {
            Some((p, bucket)) => format!(
                "seen#{}#{}#{}#{bucket}#{}",
                self.environment,
                self.kind,
                p.as_str(),
                self.user
            ),
            None => format!("seen#{}#{}#ever#{}", self.environment, self.kind, self.user),
        }
    }

    /// When the marker may expire (Unix seconds): once no record that could recreate it can
    /// arrive any more — the period's end, plus the 30 days a client timestamp may lag
    /// ([`crate::count::MAX_PAST`]), plus `replay_horizon` (how long a record can still be
    /// re-delivered or replayed: the Kinesis retention, the table stream's 24 h and a day's
    /// margin). `None` for "ever" markers, which never expire.
    pub fn expires_at(&self, replay_horizon: Duration) -> Option<i64> {
        let (period, bucket) = self.period.as_ref()?;
        let start = crate::time::parse(bucket)?;
        Some((period.next(start) + crate::count::MAX_PAST + replay_horizon).timestamp())
    }
}

/// A stream record as unique users need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent<'a> {
    /// Stream sequence number, zero-padded ([`crate::sequence::padded`]).
    pub seq: String,
    /// Environment.
    pub environment: &'a str,
    /// Event type.
    pub kind: &'a str,
    /// The user.
    pub user: &'a str,
    /// The time it is counted under ([`crate::count::counted_time`]).
    pub at: DateTime<Utc>,
    /// When ingest received it (new users count on its day).
    pub received_at: DateTime<Utc>,
}

/// A batch's markers, each once, with the lowest sequence number among its records (the
/// record a new marker is written `by`). Per event: per type and `*`, one per period and the
/// "ever" one. Deduplicated on borrowed parts first, so a marker is built (and its bucket
/// formatted) once per batch, not once per record.
pub fn batch_markers(events: &[SeenEvent<'_>]) -> BTreeMap<Marker, String> {
    type Parts<'a> = (&'a str, &'a str, Option<(Period, DateTime<Utc>)>, &'a str);
    let mut lowest: HashMap<Parts<'_>, &str> = HashMap::with_capacity(events.len() * 2);
    for e in events {
        let periods = Period::ALL.map(|p| Some((p, p.start(e.at))));
        for kind in [e.kind, ALL_TYPES] {
            for period in periods.into_iter().chain([None]) {
                lowest
                    .entry((e.environment, kind, period, e.user))
                    .and_modify(|seq| {
                        if e.seq.as_str() < *seq {
                            *seq = &e.seq;
                        }
                    })
                    .or_insert(&e.seq);
            }
        }
    }
    lowest
        .into_iter()
        .map(|((environment, kind, period, user), seq)| {
            let marker = Marker {
                environment: environment.to_string(),
                kind: kind.to_string(),
                period: period.map(|(p, start)| (p, format_bucket(start))),
                user: user.to_string(),
            };
            (marker, seq.to_string())
        })
        .collect()
}

/// The `by` of a marker created by record `seq` of `shard`.
pub fn by(shard: &str, seq: &str) -> String {
    format!("{shard}#{seq}")
}

/// The receive time of each record of a batch, by padded sequence number.
pub fn received_by_seq(events: &[SeenEvent<'_>]) -> BTreeMap<String, DateTime<Utc>> {
    events
        .iter()
        .map(|e| (e.seq.clone(), e.received_at))
        .collect()
}

/// The counter updates of a batch of `shard` (its records' receive times by sequence number,
/// [`received_by_seq`]): every resolved marker (marker → `by`) whose `by` names a record of
/// this batch adds that record's sequence number to its partial counter. Only records below
/// `cut` count (the first record with an unresolved marker, when there is one: the batch
/// reports it, and everything from it is re-delivered and counted then).
pub fn user_updates(
    shard: &str,
    received: &BTreeMap<String, DateTime<Utc>>,
    resolved: &BTreeMap<Marker, String>,
    cut: Option<&str>,
) -> Vec<CounterUpdate> {
    let prefix = format!("{shard}#");
    let mut counters: BTreeMap<CounterId, Vec<String>> = BTreeMap::new();
    for (marker, by) in resolved {
        let Some((seq, received_at)) = named_record(&prefix, received, by) else {
            continue; // created by another shard or an earlier batch: counted there or then
        };
        if cut.is_some_and(|cut| seq >= cut) {
            continue;
        }
        let id = match &marker.period {
            Some((p, bucket)) => CounterId {
                pk: p.counter_key(&marker.environment, &marker.kind),
                bucket: bucket.clone(),
                expires: false,
            },
            None => CounterId {
                pk: new_users_key(&marker.environment, &marker.kind),
                bucket: format_bucket(Period::Day.start(received_at)),
                expires: false,
            },
        };
        counters.entry(id).or_default().push(seq.to_string());
    }
    crate::count::updates(counters)
}

/// The markers of `resolved` (marker → `by`) that a warm function may remember as settled
/// once the batch of `shard` (its records' receive times by sequence number,
/// [`received_by_seq`]) has been answered with `failed_from` (the first record reported
/// failed, padded; `None`: none): every marker another shard or an earlier batch created,
/// and those created by a record of this batch below `failed_from` — its count is applied.
/// A marker created by a record that is re-delivered is not settled: the re-delivery must
/// find its `by` again (from the store) to count it.
pub fn settled<'a>(
    shard: &str,
    received: &'a BTreeMap<String, DateTime<Utc>>,
    resolved: &'a BTreeMap<Marker, String>,
    failed_from: Option<&str>,
) -> impl Iterator<Item = &'a Marker> {
    let prefix = format!("{shard}#");
    let failed_from = failed_from.map(str::to_string);
    resolved.iter().filter_map(move |(marker, by)| {
        match (named_record(&prefix, received, by), &failed_from) {
            (Some((seq, _)), Some(failed)) if seq >= failed.as_str() => None,
            _ => Some(marker),
        }
    })
}

/// The record of this batch a marker's `by` names (`prefix`: the batch's `<shard>#`): its
/// sequence number and receive time; `None` when another shard or an earlier batch made it.
fn named_record<'b>(
    prefix: &str,
    received: &BTreeMap<String, DateTime<Utc>>,
    by: &'b str,
) -> Option<(&'b str, DateTime<Utc>)> {
    let seq = by.strip_prefix(prefix)?;
    received.get(seq).map(|at| (seq, *at))
}

/// The markers a warm function knows to be settled (see [`settled`]): a hit costs no write and
/// counts nothing. Sized in users, not markers, so that a shard's users fit: per user
/// (`<environment>#<user>`) one 8-byte entry per event type it sent (and `*`) holding the
/// latest day, ISO week and month bucket whose marker is settled and whether its "ever"
/// marker is — about 170 bytes a user (`perf units` prints the figure). Only the latest bucket
/// of each period is kept: a late event for an earlier one costs a (refused) write.
///
/// Two generations: when the newer holds `capacity` users it becomes the older one and the
/// older is dropped; a user found in the older moves to the newer. So the `capacity` users seen
/// most recently are always remembered (a shard whose active users fit never writes a settled
/// marker again) and at most twice as many are held.
#[derive(Debug, Default)]
pub struct SeenCache {
    capacity: usize,
    current: HashMap<Box<str>, Vec<u64>>,
    previous: HashMap<Box<str>, Vec<u64>>,
    /// Event types (and `*`) by number.
    kinds: HashMap<Box<str>, u64>,
}

/// An entry: the type's number in the top 15 bits, the "ever" flag, then the day numbers
/// (days since 1970-01-01; 0: none) of the latest settled day, week and month buckets.
const KIND_SHIFT: u32 = 49;
const EVER: u64 = 1 << 48;
/// Types a cache numbers; markers of further types are not cached.
const MAX_KINDS: usize = 1 << 15;
/// Types a cache keeps per user; markers of further types are not cached.
const PER_USER: usize = 64;

fn slot_shift(p: Period) -> u32 {
    match p {
        Period::Day => 32,
        Period::Week => 16,
        Period::Month => 0,
    }
}

impl SeenCache {
    /// A cache remembering at least the `capacity` users seen last (0: remembers nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// Users remembered.
    pub fn users(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Markers remembered.
    pub fn markers(&self) -> usize {
        let markers = |e: &u64| {
            let periods = Period::ALL
                .into_iter()
                .filter(|p| (e >> slot_shift(*p)) & 0xffff != 0)
                .count();
            periods + usize::from(e & EVER != 0)
        };
        self.current
            .values()
            .chain(self.previous.values())
            .flatten()
            .map(markers)
            .sum()
    }

    /// Roughly the heap the cache holds: keys, entries, and the maps' slots.
    pub fn approx_bytes(&self) -> usize {
        let maps = self.current.capacity() + self.previous.capacity();
        let slots = maps * (std::mem::size_of::<(Box<str>, Vec<u64>)>() + 1);
        let heap: usize = self
            .current
            .iter()
            .chain(self.previous.iter())
            .map(|(k, v)| k.len() + v.capacity() * 8)
            .sum();
        slots + heap + self.kinds.keys().map(|k| k.len() + 24).sum::<usize>()
    }

    /// The type's number (numbered now when `number`), and what `m` needs of its entry:
    /// the slot's shift and day number, or `None` for the "ever" marker.
    fn locate(&mut self, m: &Marker, number: bool) -> Option<(u64, Option<(u32, u64)>)> {
        let kind = match self.kinds.get(m.kind.as_str()) {
            Some(k) => *k,
            None if number && self.kinds.len() < MAX_KINDS => {
                let k = self.kinds.len() as u64;
                self.kinds.insert(m.kind.as_str().into(), k);
                k
            }
            None => return None,
        };
        let slot = match &m.period {
            Some((p, bucket)) => {
                let day = u16::try_from(bucket_day(bucket)?).ok()?;
                Some((slot_shift(*p), u64::from(day)))
            }
            None => None,
        };
        Some((kind, slot))
    }

    fn user_key(m: &Marker) -> String {
        format!("{}#{}", m.environment, m.user)
    }

    /// Whether `m` is known settled (its user becomes one of the most recently used).
    pub fn contains(&mut self, m: &Marker) -> bool {
        let Some((kind, slot)) = self.locate(m, false) else {
            return false;
        };
        let key = Self::user_key(m);
        let holds = |entries: &[u64]| {
            entries
                .iter()
                .find(|e| *e >> KIND_SHIFT == kind)
                .is_some_and(|e| match slot {
                    Some((shift, day)) => (e >> shift) & 0xffff == day,
                    None => e & EVER != 0,
                })
        };
        if let Some(entries) = self.current.get(key.as_str()) {
            return holds(entries);
        }
        match self.previous.remove_entry(key.as_str()) {
            Some((key, entries)) => {
                let hit = holds(&entries);
                self.promote(key, entries);
                hit
            }
            None => false,
        }
    }

    /// Remembers `m` as settled (a bucket earlier than the one its period holds is not kept).
    pub fn insert(&mut self, m: &Marker) {
        if self.capacity == 0 {
            return;
        }
        let Some((kind, slot)) = self.locate(m, true) else {
            return;
        };
        let key = Self::user_key(m);
        if !self.current.contains_key(key.as_str()) {
            let (user, entries) = self
                .previous
                .remove_entry(key.as_str())
                .unwrap_or_else(|| (key.as_str().into(), Vec::new()));
            self.promote(user, entries);
        }
        let Some(entries) = self.current.get_mut(key.as_str()) else {
            return;
        };
        let entry = match entries.iter().position(|e| *e >> KIND_SHIFT == kind) {
            Some(i) => &mut entries[i],
            None if entries.len() < PER_USER => {
                entries.reserve_exact(1);
                entries.push(kind << KIND_SHIFT);
                let last = entries.len() - 1;
                &mut entries[last]
            }
            None => return,
        };
        match slot {
            Some((shift, day)) if (*entry >> shift) & 0xffff < day => {
                *entry = (*entry & !(0xffff << shift)) | (day << shift);
            }
            Some(_) => {}
            None => *entry |= EVER,
        }
    }

    /// Puts a user in the newer generation, turning it into the older one first when full.
    fn promote(&mut self, key: Box<str>, entries: Vec<u64>) {
        if self.current.len() >= self.capacity {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, entries);
    }
}

/// The day number (days since 1970-01-01) of a bucket's start.
fn bucket_day(bucket: &str) -> Option<u32> {
    u32::try_from(crate::time::parse(bucket)?.timestamp().div_euclid(86_400)).ok()
}

/// One bucket of a users answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsersBucket {
    /// Bucket start, RFC 3339.
    pub start: String,
    /// Distinct users active in it.
    pub active: u64,
    /// Users first seen on that day (day buckets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<u64>,
}

/// Sums the partials of active (and, for days, new) users per bucket, ordered by start.
pub fn sum_users(
    active: impl IntoIterator<Item = (String, u64)>,
    new: Option<Vec<(String, u64)>>,
) -> Vec<UsersBucket> {
    let mut buckets: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (bucket, n) in active {
        buckets.entry(bucket).or_default().0 += n;
    }
    let with_new = new.is_some();
    for (bucket, n) in new.into_iter().flatten() {
        buckets.entry(bucket).or_default().1 += n;
    }
    buckets
        .into_iter()
        .filter(|(_, (a, n))| *a > 0 || *n > 0)
        .map(|(start, (active, new))| UsersBucket {
            start,
            active,
            new: with_new.then_some(new),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequence::padded;

    #[test]
    fn the_daily_all_types_counters_are_recognised_with_their_environment() {
        let active = Period::Day.counter_key("prod", ALL_TYPES);
        assert_eq!(all_types_daily(&active), Some(("prod", false)));
        assert_eq!(
            all_types_daily(&new_users_key("staging", ALL_TYPES)),
            Some(("staging", true))
        );
        for other in [
            Period::Week.counter_key("prod", ALL_TYPES),
            Period::Day.counter_key("prod", "game.start"),
            new_users_key("prod", "game.start"),
            "prod#*#day".to_string(),
        ] {
            assert_eq!(all_types_daily(&other), None, "{other}");
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        crate::time::parse(s).unwrap()
    }

    #[test]
    fn periods_are_utc_days_iso_weeks_and_calendar_months() {
        // 2026-12-03 is a Thursday.
        let at = t("2026-12-03T23:30:00-02:00"); // 2026-12-04T01:30Z, a Friday
        assert_eq!(format_bucket(Period::Day.start(at)), "2026-12-04T00:00:00Z");
        assert_eq!(
            format_bucket(Period::Week.start(at)),
            "2026-11-30T00:00:00Z"
        );
        assert_eq!(
            format_bucket(Period::Month.start(at)),
            "2026-12-01T00:00:00Z"
        );
        let dec = t("2026-12-01T00:00:00Z");
        assert_eq!(
            format_bucket(Period::Month.next(dec)),
            "2027-01-01T00:00:00Z"
        );
        // ISO week 1 of 2027 starts on Monday 2027-01-04; 2027-01-01 is in 2026's week 53.
        assert_eq!(
            format_bucket(Period::Week.start(t("2027-01-01T12:00:00Z"))),
            "2026-12-28T00:00:00Z"
        );
    }

    #[test]
    fn markers_expire_after_every_record_that_could_recreate_them() {
        let m = Marker {
            environment: "prod".into(),
            kind: "*".into(),
            period: Some((Period::Month, "2026-11-01T00:00:00Z".into())),
            user: "u#1".into(),
        };
        let horizon = Duration::hours(168 + 24 + 24);
        let expected = t("2026-12-01T00:00:00Z") + Duration::days(30) + horizon;
        assert_eq!(m.expires_at(horizon), Some(expected.timestamp()));
        let ever = Marker { period: None, ..m };
        assert_eq!(ever.expires_at(horizon), None);
        assert_eq!(ever.key(), "seen#prod#*#ever#u#1");
    }

    fn ev<'a>(seq: u64, user: &'a str, kind: &'a str, at: &str) -> SeenEvent<'a> {
        SeenEvent {
            seq: padded(&seq.to_string()).unwrap(),
            environment: "prod",
            kind,
            user,
            at: t(at),
            received_at: t(at),
        }
    }

    #[test]
    fn a_marker_counts_once_for_the_record_it_names() {
        let events = [
            ev(5, "a", "x", "2026-12-03T10:00:00Z"),
            ev(7, "a", "y", "2026-12-03T11:00:00Z"),
            ev(9, "b", "x", "2026-12-03T12:00:00Z"),
        ];
        let markers = batch_markers(&events);
        // a: x and y each 3 periods + ever = 8, `*` shared: 4; b: x 4 + `*` 4 (its own user).
        assert_eq!(markers.len(), 8 + 4 + 8);
        // The lowest record represents a shared marker.
        let all_day_a = Marker {
            environment: "prod".into(),
            kind: "*".into(),
            period: Some((Period::Day, "2026-12-03T00:00:00Z".into())),
            user: "a".into(),
        };
        assert_eq!(markers[&all_day_a], padded("5").unwrap());

        // Every marker created by this batch on shard s1.
        let created: BTreeMap<Marker, String> = markers
            .iter()
            .map(|(m, seq)| (m.clone(), by("s1", seq)))
            .collect();
        let updates = user_updates("s1", &received_by_seq(&events), &created, None);
        let count = |pk: &str, bucket: &str| {
            updates
                .iter()
                .find(|u| u.id.pk == pk && u.id.bucket == bucket)
                .map_or(0, |u| u.seqs.len())
        };
        assert_eq!(count("prod#*#users-day", "2026-12-03T00:00:00Z"), 2);
        assert_eq!(count("prod#x#users-week", "2026-11-30T00:00:00Z"), 2);
        assert_eq!(count("prod#y#users-month", "2026-12-01T00:00:00Z"), 1);
        assert_eq!(count("prod#*#new-day", "2026-12-03T00:00:00Z"), 2);

        // The same batch seen by another shard, or after an earlier batch made the markers,
        // counts nothing.
        assert!(user_updates("s2", &received_by_seq(&events), &created, None).is_empty());
        let earlier: BTreeMap<Marker, String> = markers
            .keys()
            .map(|m| (m.clone(), by("s1", &padded("1").unwrap())))
            .collect();
        assert!(user_updates("s1", &received_by_seq(&events), &earlier, None).is_empty());
        // A cut leaves out what is re-delivered.
        let cut = padded("7").unwrap();
        let before_cut = user_updates("s1", &received_by_seq(&events), &created, Some(&cut));
        assert!(
            before_cut
                .iter()
                .all(|u| u.seqs == vec![padded("5").unwrap()])
        );
    }

    fn marker(kind: &str, period: Option<(Period, &str)>, user: &str) -> Marker {
        Marker {
            environment: "prod".into(),
            kind: kind.into(),
            period: period.map(|(p, b)| (p, b.to_string())),
            user: user.into(),
        }
    }

    #[test]
    fn only_markers_whose_count_is_applied_are_settled() {
        let events = [
            ev(5, "a", "x", "2026-12-03T10:00:00Z"),
            ev(7, "b", "x", "2026-12-03T11:00:00Z"),
        ];
        let received = received_by_seq(&events);
        let day = Some((Period::Day, "2026-12-03T00:00:00Z"));
        let resolved: BTreeMap<Marker, String> = [
            (marker("x", day, "a"), by("s1", &padded("5").unwrap())),
            (marker("x", day, "b"), by("s1", &padded("7").unwrap())),
            (marker("x", day, "c"), by("s2", &padded("7").unwrap())), // another shard's
            (marker("x", day, "d"), by("s1", &padded("2").unwrap())), // an earlier batch's
        ]
        .into_iter()
        .collect();
        let users = |failed: Option<&str>| -> Vec<String> {
            settled("s1", &received, &resolved, failed)
                .map(|m| m.user.clone())
                .collect()
        };
        assert_eq!(users(None), ["a", "b", "c", "d"]);
        // Record 7 is re-delivered: the marker it created must be found again, not cached.
        assert_eq!(users(Some(&padded("7").unwrap())), ["a", "c", "d"]);
        assert_eq!(users(Some(&padded("5").unwrap())), ["c", "d"]);
    }

    #[test]
    fn the_cache_knows_each_marker_it_was_told_and_nothing_else() {
        let mut cache = SeenCache::new(10);
        let day = marker("x", Some((Period::Day, "2026-12-03T00:00:00Z")), "a#1");
        assert!(!cache.contains(&day));
        cache.insert(&day);
        assert!(cache.contains(&day));
        for other in [
            marker("y", Some((Period::Day, "2026-12-03T00:00:00Z")), "a#1"),
            marker("x", Some((Period::Week, "2026-12-03T00:00:00Z")), "a#1"),
            marker("x", Some((Period::Day, "2026-12-04T00:00:00Z")), "a#1"),
            marker("x", None, "a#1"),
            marker("x", Some((Period::Day, "2026-12-03T00:00:00Z")), "a#2"),
            Marker {
                environment: "staging".into(),
                ..day.clone()
            },
        ] {
            assert!(!cache.contains(&other), "{other:?}");
        }
        assert_eq!((cache.users(), cache.markers()), (1, 1));
        assert!(!SeenCache::new(0).contains(&day));
        let mut none = SeenCache::new(0);
        none.insert(&day);
        assert!(!none.contains(&day), "capacity 0 remembers nothing");
    }

    #[test]
    fn the_cache_keeps_its_recent_users_within_its_capacity() {
        let mut cache = SeenCache::new(2);
        let m = |user: &str| marker("x", None, user);
        for user in ["u1", "u2", "u3", "u4", "u5"] {
            cache.insert(&m(user));
            assert!(cache.users() <= 4, "at most twice the capacity");
        }
        // The two seen last (and u5) are known; the oldest are gone.
        assert!(!cache.contains(&m("u1")) && !cache.contains(&m("u2")));
        assert!(cache.contains(&m("u4")) && cache.contains(&m("u5")));
        // Using u3 keeps it through the next turns, while u4 goes.
        assert!(cache.contains(&m("u3")));
        cache.insert(&m("u6"));
        cache.insert(&m("u7"));
        assert!(cache.contains(&m("u3")) && cache.contains(&m("u7")));
        assert!(!cache.contains(&m("u4")));
        assert!(cache.users() <= 4);
    }

    #[test]
    fn a_user_keeps_its_latest_bucket_per_period_and_its_ever_markers() {
        let mut cache = SeenCache::new(4);
        let day = |d: &str| marker("x", Some((Period::Day, d)), "a");
        let (dec3, dec4) = ("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z");
        let ever = marker("x", None, "a");
        let week = marker("x", Some((Period::Week, "2026-11-30T00:00:00Z")), "a");
        for m in [&ever, &day(dec3), &week] {
            cache.insert(m);
        }
        assert!(cache.contains(&ever) && cache.contains(&day(dec3)) && cache.contains(&week));
        cache.insert(&day(dec4));
        assert!(
            cache.contains(&day(dec4)),
            "the later day replaces the earlier"
        );
        assert!(!cache.contains(&day(dec3)));
        cache.insert(&day(dec3));
        assert!(
            cache.contains(&day(dec4)),
            "a late event does not take the place back"
        );
        assert!(cache.contains(&ever) && cache.contains(&week));
        assert_eq!((cache.users(), cache.markers()), (1, 3));
        // One entry per type, up to PER_USER types.
        for k in 0..PER_USER + 3 {
            cache.insert(&marker(&format!("t{k}"), None, "a"));
        }
        assert!(cache.contains(&marker("t0", None, "a")));
        assert!(!cache.contains(&marker(&format!("t{}", PER_USER + 2), None, "a")));
        assert!(cache.approx_bytes() >= PER_USER * 8);
        assert_eq!(bucket_day("1970-01-02T00:00:00Z"), Some(1));
        assert_eq!(bucket_day("not a bucket"), None);
    }

    #[test]
    fn partials_sum_per_bucket_with_new_users_on_days() {
        let b = |s: &str| s.to_string();
        let days = sum_users(
            [
                (b("2026-12-03T00:00:00Z"), 2),
                (b("2026-12-03T00:00:00Z"), 3),
            ],
            Some(vec![(b("2026-12-03T00:00:00Z"), 1)]),
        );
        assert_eq!(
            days,
            vec![UsersBucket {
                start: b("2026-12-03T00:00:00Z"),
                active: 5,
                new: Some(1)
            }]
        );
        let weeks = sum_users([(b("2026-11-30T00:00:00Z"), 4)], None);
        assert_eq!(weeks[0].new, None);
    }
}
