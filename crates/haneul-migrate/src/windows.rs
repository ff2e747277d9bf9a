//! Time windows: how many associations a migration may use at each time of
//! day (e.g. full speed 20:00–07:00, two during clinic hours).

use std::sync::OnceLock;

/// Minutes in a day.
const DAY: u16 = 24 * 60;

/// From `from` (inclusive) to `to` (exclusive), minutes after local midnight;
/// a window whose end comes before its start runs over midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: u16,
    pub to: u16,
    /// Associations allowed inside the window (0: none, the migration waits).
    pub parallel: usize,
}

impl Window {
    /// `"HH:MM-HH:MM"` (24:00 allowed as an end).
    pub fn parse(span: &str, parallel: usize) -> Result<Window, String> {
        let (from, to) = span.split_once('-').ok_or_else(|| format!("{span:?} is not a time window (HH:MM-HH:MM)"))?;
        let from = minutes(from.trim()).ok_or_else(|| format!("{from:?} is not a time of day (HH:MM)"))?;
        let to = minutes(to.trim()).ok_or_else(|| format!("{to:?} is not a time of day (HH:MM)"))?;
        if from == to {
            return Err(format!("{span:?} is empty: its start and end are the same"));
        }
        Ok(Window { from, to, parallel })
    }

    pub fn contains(&self, minute: u16) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

fn minutes(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
    match (hours, minutes) {
        (24, 0) => Some(DAY),
        (0..=23, 0..=59) => Some(hours * 60 + minutes),
        _ => None,
    }
}

/// Associations allowed at `minute` of the day: the first window holding it,
/// else `default`.
pub fn parallel_at(windows: &[Window], default: usize, minute: u16) -> usize {
    windows.iter().find(|window| window.contains(minute % DAY)).map_or(default, |window| window.parallel)
}

static LOCAL_OFFSET: OnceLock<time::UtcOffset> = OnceLock::new();

/// Take the local time zone's offset while the process has one thread (the
/// `time` crate reads it only then); windows are in local time. Later calls
/// keep the first value.
pub fn capture_local_offset() {
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let _ = LOCAL_OFFSET.set(offset);
}

/// The local time zone's offset (UTC if it was never captured).
pub fn local_offset() -> time::UtcOffset {
    LOCAL_OFFSET.get().copied().unwrap_or(time::UtcOffset::UTC)
}

/// Minutes after local midnight now.
pub fn local_minute_now() -> u16 {
    let now = time::OffsetDateTime::now_utc().to_offset(local_offset());
    u16::from(now.hour()) * 60 + u16::from(now.minute())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_over_midnight_and_within_a_day() {
        let night = Window::parse("20:00-07:00", 8).unwrap();
        let day = Window::parse("07:00-20:00", 2).unwrap();
        assert!(
            night.contains(20 * 60) && night.contains(23 * 60 + 59) && night.contains(0) && night.contains(6 * 60 + 59)
        );
        assert!(!night.contains(7 * 60) && !night.contains(12 * 60));
        assert!(day.contains(7 * 60) && !day.contains(20 * 60));
        let windows = [night, day];
        assert_eq!(parallel_at(&windows, 4, 3 * 60), 8);
        assert_eq!(parallel_at(&windows, 4, 9 * 60), 2);
        assert_eq!(parallel_at(&[day], 4, 21 * 60), 4, "outside every window: the default");
        let whole_day = Window::parse("00:00-24:00", 0).unwrap();
        assert!((0..DAY).all(|minute| whole_day.contains(minute)));
    }

    #[test]
    fn bad_windows_are_refused_with_the_offending_text() {
        assert!(Window::parse("7:00-20:00", 1).unwrap_err().contains("7:00"));
        assert!(Window::parse("07:00-25:00", 1).unwrap_err().contains("25:00"));
        assert!(Window::parse("07:00", 1).unwrap_err().contains("HH:MM-HH:MM"));
        assert!(Window::parse("08:00-08:00", 1).unwrap_err().contains("empty"));
    }
}
