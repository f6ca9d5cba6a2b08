//! Wall-clock time as depwatch shows and stores it.

use std::time::SystemTime;

/// `2026-11-28T02:32:13Z`: whole seconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A time shown as [`rfc3339`] does, written where it goes (no `String`):
/// the components' JSON holds three per check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(pub SystemTime);

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_seconds(self.0).fmt(f)
    }
}

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Seconds since the Unix epoch (0 for a time before it).
/// Milliseconds since the epoch (as stored; negative is clamped) as RFC 3339.
pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    unix(SystemTime::now())
}

/// Milliseconds since the Unix epoch (0 for a time before it), as the
/// state store keeps them.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_297_133_500);
        assert_eq!(rfc3339(t), "2025-11-28T02:32:13Z");
        assert_eq!(unix(t), 1_764_297_133.5);
        assert_eq!(unix_ms(t), 1_764_297_133_500);
        assert_eq!(unix_ms(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
