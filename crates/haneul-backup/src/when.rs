//! Snapshot names are their UTC time to the second, `20261123T101500Z`, so
//! they sort by time as text; `--at` takes such a name or an RFC 3339 time.

use time::format_description::well_known::Rfc3339;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The form of a snapshot name.
const SNAPSHOT_NAME: &[BorrowedFormatItem<'static>] = format_description!("[year][month][day]T[hour][minute][second]Z");

/// The snapshot name of a moment.
pub fn snapshot_name(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC).format(SNAPSHOT_NAME).unwrap_or_default()
}

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    at.replace_nanosecond(0).unwrap_or(at).format(&Rfc3339).unwrap_or_default()
}

/// Whether `name` has the form of a snapshot name (and is a real time).
pub fn is_snapshot_name(name: &str) -> bool {
    parse_snapshot_name(name).is_some()
}

fn parse_snapshot_name(name: &str) -> Option<OffsetDateTime> {
    // Exactly the form written: four-digit year, no sign.
    if name.len() != 16 || !name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    PrimitiveDateTime::parse(name, SNAPSHOT_NAME).ok().map(PrimitiveDateTime::assume_utc)
}

/// The latest snapshot name at or before `at`: a snapshot name, or an RFC
/// 3339 time (`2026-11-23T10:15:00Z`, `2026-11-23T19:15:00+09:00`; fractions
/// of a second are ignored). `None` when it is neither.
pub fn parse_at(at: &str) -> Option<String> {
    let at = at.trim();
    let moment = parse_snapshot_name(at).or_else(|| OffsetDateTime::parse(at, &Rfc3339).ok())?;
    Some(snapshot_name(moment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn names_and_times_agree() {
        assert_eq!(parse_at("20261123T101500Z").as_deref(), Some("20261123T101500Z"));
        assert_eq!(parse_at("2026-11-23T10:15:00Z").as_deref(), Some("20261123T101500Z"));
        assert_eq!(parse_at("2026-11-23T19:15:00.250+09:00").as_deref(), Some("20261123T101500Z"));
        assert_eq!(parse_at("2026-11-23T00:15:00-01:30").as_deref(), Some("20261123T014500Z"));
        for bad in ["", "yesterday", "20261323T101500Z", "2026-11-23", "2026-11-23T10:15:00", "2026-11-23T10:15:00+9"] {
            assert_eq!(parse_at(bad), None, "{bad:?}");
        }
        assert!(is_snapshot_name("20000229T235959Z"));
        assert!(!is_snapshot_name("20010229T235959Z"));
        let moment = datetime!(2026-01-02 03:04:05.678 UTC);
        assert_eq!(snapshot_name(moment), "20260102T030405Z");
        assert_eq!(rfc3339(moment), "2026-01-02T03:04:05Z");
    }
}
