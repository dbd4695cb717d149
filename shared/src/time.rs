//! Timestamps as the pipeline stores them.
//!
//! Every timestamp is kept as an RFC 3339 UTC string with exactly three fractional digits
//! (`2026-11-26T13:44:16.123Z`): fixed width, so string order is time order, which the
//! `events` table's time index and the counts' bucket keys rely on.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats `t` in the canonical stored form (UTC, milliseconds, `Z`).
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 timestamp (any offset, any precision) into UTC.
///
/// Years outside 0000..=9999 cannot be written in RFC 3339 and are refused by the parser.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses `s` and returns it in canonical form; `None` when it is not RFC 3339.
pub fn normalize(s: &str) -> Option<String> {
    parse(s).map(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_normalized_to_utc_millis() {
        assert_eq!(
            normalize("2026-11-26T14:00:00+01:00").as_deref(),
            Some("2026-11-26T13:00:00.000Z")
        );
        assert_eq!(
            normalize("2026-11-26T13:00:00.123456Z").as_deref(),
            Some("2026-11-26T13:00:00.123Z")
        );
    }

    #[test]
    fn non_rfc3339_is_refused() {
        for bad in [
            "",
            "yesterday",
            "2026-11-26",
            "2026-11-26 13:00:00",
            "1700000000",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn canonical_strings_sort_in_time_order() {
        let a = normalize("2026-01-01T00:00:00.9Z").unwrap();
        let b = normalize("2026-01-01T00:00:01Z").unwrap();
        assert!(a < b);
    }
}
