//! Go-style durations as services log them (`time.Duration.String()`):
//! `"1m37.535505102s"`, `"250ms"`, `"1.5µs"`, `"2h0m0s"`. Parsing follows Go's
//! `time.ParseDuration` (units ns, us/µs/μs, ms, s, m, h; fractions; a sign);
//! the formatter mirrors `Duration.String()` so that the two can be tested
//! against each other.

/// Parses a Go duration into nanoseconds. Negative durations and overflow are
/// errors: a latency cannot be negative.
pub fn parse_nanos(s: &str) -> Option<u64> {
    let mut rest = s.as_bytes();
    if let Some((b'+', r)) = rest.split_first() {
        rest = r;
    }
    if rest == b"0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        // The integer part.
        let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut int: u64 = 0;
        for &d in &rest[..int_len] {
            int = int.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        rest = &rest[int_len..];
        // The fraction, kept as digits over a power of ten (Go does the same).
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some((b'.', r)) = rest.split_first() {
            rest = r;
            frac_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let mut overflow = false;
            for &d in &rest[..frac_len] {
                if overflow {
                    continue;
                }
                match frac
                    .checked_mul(10)
                    .and_then(|f| f.checked_add(u64::from(d - b'0')))
                {
                    Some(f) => {
                        frac = f;
                        scale *= 10.0;
                    }
                    // Digits beyond u64 precision do not matter.
                    None => overflow = true,
                }
            }
            rest = &rest[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return None;
        }
        let unit_len = rest
            .iter()
            .take_while(|b| !(b.is_ascii_digit() || **b == b'.'))
            .count();
        let unit: u64 = match &rest[..unit_len] {
            b"ns" => 1,
            // "µs" (micro sign) and "μs" (Greek mu), as UTF-8.
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let mut v = int.checked_mul(unit)?;
        if frac > 0 {
            v = v.checked_add((frac as f64 * (unit as f64 / scale)) as u64)?;
        }
        total = total.checked_add(v)?;
    }
    Some(total)
}

#[cfg(any(test, fuzzing))]
/// Formats nanoseconds like Go's `Duration.String()`: `"1h2m3.5s"`,
/// `"1.5ms"`, `"12µs"`, `"0s"`.
pub fn format_nanos(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        // Below a second: one unit with a fraction.
        let (unit, size) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", frac(ns / size, ns % size, size));
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(s, sub, 1_000_000_000));
    out.push('s');
    out
}

#[cfg(any(test, fuzzing))]
/// `whole.fraction` without trailing zeros (and without the dot when none).
fn frac(whole: u64, part: u64, size: u64) -> String {
    if part == 0 {
        return whole.to_string();
    }
    let width = size.ilog10() as usize;
    let digits = format!("{part:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_examples() {
        assert_eq!(parse_nanos("1m37.535505102s"), Some(97_535_505_102));
        assert_eq!(parse_nanos("250ms"), Some(250_000_000));
        assert_eq!(parse_nanos("1.5µs"), Some(1_500));
        assert_eq!(parse_nanos("1.5μs"), Some(1_500));
        assert_eq!(parse_nanos("3us"), Some(3_000));
        assert_eq!(parse_nanos("42ns"), Some(42));
        assert_eq!(parse_nanos("2h45m"), Some(9_900_000_000_000));
        assert_eq!(parse_nanos("1h0m0s"), Some(3_600_000_000_000));
        assert_eq!(parse_nanos(".5s"), Some(500_000_000));
        assert_eq!(parse_nanos("1.s"), Some(1_000_000_000));
        assert_eq!(parse_nanos("+5s"), Some(5_000_000_000));
        assert_eq!(parse_nanos("0"), Some(0));
        for bad in [
            "",
            "5",
            "-5s",
            "s",
            ".s",
            "5x",
            "1.2.3s",
            "1e3ms",
            "99999999999999h",
        ] {
            assert_eq!(parse_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_formatting() {
        assert_eq!(format_nanos(0), "0s");
        assert_eq!(format_nanos(97_535_505_102), "1m37.535505102s");
        assert_eq!(format_nanos(1_500), "1.5µs");
        assert_eq!(format_nanos(42), "42ns");
        assert_eq!(format_nanos(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_nanos(1_500_000_000), "1.5s");
        assert_eq!(format_nanos(250_000_000), "250ms");
    }

    proptest! {
        /// What Go prints, Go (and we) parse back exactly.
        #[test]
        fn round_trip(ns in 0u64..(1u64 << 62)) {
            prop_assert_eq!(parse_nanos(&format_nanos(ns)), Some(ns));
        }

        /// Hand-built combinations sum their parts.
        #[test]
        fn components_add_up(h in 0u64..1000, m in 0u64..600, ms in 0u64..100_000, us in 0u64..100_000) {
            let s = format!("{h}h{m}m{ms}ms{us}us");
            let want = h * 3_600_000_000_000 + m * 60_000_000_000 + ms * 1_000_000 + us * 1_000;
            prop_assert_eq!(parse_nanos(&s), Some(want));
        }

        /// Millisecond fractions are exact to the nanosecond.
        #[test]
        fn ms_fractions(whole in 0u64..1_000_000, part in 0u64..1_000_000) {
            let s = format!("{whole}.{part:06}ms");
            prop_assert_eq!(parse_nanos(&s), Some(whole * 1_000_000 + part));
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_nanos(&s);
        }
    }
}
