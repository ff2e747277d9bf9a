//! Snapshot names are their UTC time to the second, `20261123T101500Z`, so
//! they sort by time as text; `--at` takes such a name or an RFC 3339 time.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The snapshot name of a moment.
pub fn snapshot_name(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Whether `name` has the form of a snapshot name (and is a real time).
pub fn is_snapshot_name(name: &str) -> bool {
    parse_snapshot_name(name).is_some()
}

fn parse_snapshot_name(name: &str) -> Option<OffsetDateTime> {
    let bytes = name.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = name.get(range)?;
        digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok())?
    };
    moment(number(0..4)?, number(4..6)?, number(6..8)?, number(9..11)?, number(11..13)?, number(13..15)?, 0)
}

fn moment(
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    offset_s: i32,
) -> Option<OffsetDateTime> {
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let time = Time::from_hms(u8::try_from(hour).ok()?, u8::try_from(minute).ok()?, u8::try_from(second).ok()?).ok()?;
    let offset = UtcOffset::from_whole_seconds(offset_s).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

/// The latest snapshot name at or before `at`: a snapshot name, or an RFC
/// 3339 time (`2026-11-23T10:15:00Z`, `2026-11-23T19:15:00+09:00`; fractions
/// of a second are ignored). `None` when it is neither.
pub fn parse_at(at: &str) -> Option<String> {
    let at = at.trim();
    if let Some(moment) = parse_snapshot_name(at) {
        return Some(snapshot_name(moment));
    }
    let bytes = at.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = at.get(range)?;
        digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok())?
    };
    let mut rest = &at[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i32 = rest[1..3].parse().ok()?;
            let minutes: i32 = rest[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let moment = moment(
        number(0..4)?,
        number(5..7)?,
        number(8..10)?,
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        offset_s,
    )?;
    Some(snapshot_name(moment))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let moment = moment(2026, 1, 2, 3, 4, 5, 0).expect("a time");
        assert_eq!(snapshot_name(moment), "20260102T030405Z");
        assert_eq!(rfc3339(moment), "2026-01-02T03:04:05Z");
    }
}
