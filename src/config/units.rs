//! Values written the way operators write them: durations (`15s`, `5m`,
//! `1h30m`, `7d`), sizes (`512MiB`, `1GiB`, `10GB`) and secrets.

use std::fmt;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer};

use super::de::hinted;

/// A duration or size that cannot be read, with what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty duration")]
    EmptyDuration,
    #[error("duration `{0}` has no unit")]
    NoUnit(String),
    #[error("invalid duration `{0}`")]
    InvalidDuration(String),
    #[error("unknown unit `{unit}` in duration `{text}`")]
    UnknownDurationUnit { unit: String, text: String },
    #[error("duration `{0}` is out of range (at most {max})", max = format_duration(MAX_DURATION))]
    DurationOutOfRange(String),
    #[error("invalid size `{0}`")]
    InvalidSize(String),
    #[error("unknown unit `{unit}` in size `{text}`")]
    UnknownSizeUnit { unit: String, text: String },
    #[error("size `{0}` is out of range (at most 1PiB)")]
    SizeOutOfRange(String),
}

impl UnitError {
    pub fn hint(&self) -> &'static str {
        match self {
            UnitError::InvalidSize(_)
            | UnitError::UnknownSizeUnit { .. }
            | UnitError::SizeOutOfRange(_) => "write it like 512MiB, 1GiB or 10GB",
            _ => "write it like 500ms, 15s, 5m, 1h30m or 7d",
        }
    }
}

/// A duration written with units. Deserializes from `15s`, `500ms`, `1h30m`, `7d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

/// The longest duration any key accepts. Keys with a tighter sane range
/// check it in stage two; this bound keeps every later addition to an
/// `Instant` or a `SystemTime` far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// The largest size any key accepts (1 PiB); keys check their own range.
pub const MAX_SIZE: u64 = 1 << 50;

pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(UnitError::EmptyDuration);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| UnitError::NoUnit(s.into()))?;
        if num_end == 0 {
            return Err(UnitError::InvalidDuration(s.into()));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| UnitError::InvalidDuration(s.into()))?;
        let after = &rest[num_end..];
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let secs = match &after[..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            u => {
                return Err(UnitError::UnknownDurationUnit {
                    unit: u.into(),
                    text: s.into(),
                });
            }
        };
        total += n * secs;
        rest = &after[unit_end..];
    }
    // `Duration::from_secs_f64` panics beyond u64 seconds: bound first.
    match Duration::try_from_secs_f64(total) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(UnitError::DurationOutOfRange(s.into())),
    }
}

/// Formats a duration the way it would be written in the config.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == super::de::POISON {
            return Ok(Dur(Duration::ZERO));
        }
        parse_duration(&s)
            .map(Dur)
            .map_err(|e| hinted(&e, e.hint()))
    }
}

/// A size in bytes. Deserializes from `512MiB`, `1GiB`, `10GB`, `4096`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| UnitError::InvalidSize(s.into()))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024f64.powi(2),
        "GiB" => 1024f64.powi(3),
        "TiB" => 1024f64.powi(4),
        u => {
            return Err(UnitError::UnknownSizeUnit {
                unit: u.into(),
                text: s.into(),
            });
        }
    };
    let bytes = (n * mult).round();
    // `as u64` would saturate silently: a size past the bound is refused.
    if !bytes.is_finite() || bytes > MAX_SIZE as f64 {
        return Err(UnitError::SizeOutOfRange(s.into()));
    }
    Ok(bytes as u64)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == super::de::POISON {
            return Ok(Size(0));
        }
        parse_size(&s).map(Size).map_err(|e| hinted(&e, e.hint()))
    }
}

/// A secret string: never printed, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        let err = |s| parse_duration(s).unwrap_err().to_string();
        assert_eq!(err("15"), "duration `15` has no unit");
        assert_eq!(err("15x"), "unknown unit `x` in duration `15x`");
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn out_of_range_durations_are_refused_not_panics() {
        for s in [
            "18446744073709551616s",
            "9999999999999999d",
            "367d",
            "53w",
            "1e400s",
            "99999999999999999999999999999999999999999999999ms",
        ] {
            let e = parse_duration(s).unwrap_err().to_string();
            assert!(
                e.contains("out of range") || e.contains("unknown unit"),
                "{s}: {e}"
            );
        }
        assert_eq!(parse_duration("366d"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("18446744073709551616s")
                .unwrap_err()
                .to_string(),
            "duration `18446744073709551616s` is out of range (at most 366d)"
        );
    }

    #[test]
    fn out_of_range_sizes_are_refused() {
        assert!(parse_size("1PiB").is_err());
        assert_eq!(parse_size("1024TiB"), Ok(1 << 50));
        assert_eq!(
            parse_size("1025TiB"),
            Err(UnitError::SizeOutOfRange("1025TiB".into()))
        );
        assert!(parse_size("99999999999999999999999999TB").is_err());
    }

    #[test]
    fn durations_format_back() {
        for s in ["15s", "5m", "7d", "250ms", "2h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn secret_is_not_printed() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }
}
