//! Timestamps as the pipeline stores them.
//!
//! Every timestamp is kept as an RFC 3339 UTC string with exactly three fractional digits
//! (`2026-11-26T13:44:16.123Z`): fixed width, so string order is time order, which the
//! `events` table's time index and the counts' bucket keys rely on.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

/// Formats `t` in the canonical stored form (UTC, milliseconds, `Z`).
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 timestamp (any offset, any precision) into UTC.
///
/// Years outside 0000..=9999 cannot be written in RFC 3339 and are refused by the parser —
/// in UTC too: `0000-01-01T00:00:00+01:00` is in year -1 once in UTC, and
/// `9999-12-31T23:30:00-01:00` in year 10000; neither has a canonical form, so both are
/// refused (an event accepted with one could never be stored). Timestamps in the canonical
/// shape (what the pipeline writes, and what most clients send) take a fast path.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    if has_canonical_shape(s) {
        return parse_canonical(s.as_bytes());
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| (0..=9999).contains(&t.year()))
}

fn parse_canonical(b: &[u8]) -> Option<DateTime<Utc>> {
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0, 4) as i32, num(5, 7), num(8, 10))?;
    // A leap second (:60) is written as 59 s + 1,000+ ms, as chrono's RFC 3339 parser does.
    let (sec, extra_ms) = match num(17, 19) {
        60 => (59, 1000),
        s => (s, 0),
    };
    let time = chrono::NaiveTime::from_hms_milli_opt(
        num(11, 13),
        num(14, 16),
        sec,
        num(20, 23) + extra_ms,
    )?;
    Some(date.and_time(time).and_utc())
}

/// Whether `s` has the canonical shape `YYYY-MM-DDTHH:MM:SS.mmmZ` (digits where digits go).
/// A string of that shape that [`parse`] accepts is already canonical.
pub fn has_canonical_shape(s: &str) -> bool {
    const SHAPE: &[u8; 24] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == 24
        && s.bytes().zip(SHAPE).all(|(b, &want)| match want {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        })
}

/// Parses `s` and returns it in canonical form; `None` when it is not RFC 3339.
pub fn normalize(s: &str) -> Option<String> {
    parse(s).map(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_whose_utc_year_has_no_four_digits_are_refused() {
        assert_eq!(parse("0000-01-01T00:00:00+01:00"), None);
        assert_eq!(parse("9999-12-31T23:30:00-01:00"), None);
        assert!(parse("0000-01-01T00:00:00-01:00").is_some());
        assert!(parse("9999-12-31T23:30:00+01:00").is_some());
        assert_eq!(
            normalize("9999-12-31T23:59:59.999Z").as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
    }

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
    fn the_fast_path_agrees_with_chrono() {
        for s in [
            "2026-11-26T13:44:16.123Z",
            "2024-02-29T23:59:59.999Z",
            "0001-01-01T00:00:00.000Z",
            "2016-12-31T23:59:60.500Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
            assert_eq!(parse(s), Some(chrono), "{s}");
        }
        for bad in [
            "2026-13-01T00:00:00.000Z",
            "2025-02-29T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T00:61:00.000Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
            assert!(DateTime::parse_from_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_shape_is_recognised() {
        assert!(has_canonical_shape("2026-11-26T13:44:16.123Z"));
        assert!(!has_canonical_shape("2026-11-26T13:44:16Z"));
        assert!(!has_canonical_shape("2026-11-26T13:44:16.123+00:00"));
        assert!(!has_canonical_shape("2026-11-26 13:44:16.123Z"));
        let s = "2026-11-26T13:44:16.123Z";
        assert_eq!(normalize(s).as_deref(), Some(s));
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
