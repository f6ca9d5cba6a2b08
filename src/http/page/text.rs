//! Text helpers of the status page: the short human forms of numbers,
//! sizes, latencies and ages (HTML escaping is `util::html`, re-exported).

pub use crate::util::html::{Esc, EscText, escape};

/// Milliseconds as people read them: `0.42 ms`, `12.5 ms`, `1.84 s`.
pub fn ms(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v < 1.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else if v < 1000.0 {
        format!("{v:.0} ms")
    } else if v < 60_000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{:.1} min", v / 60_000.0)
    }
}

/// Bytes in binary units: `512 B`, `3.4 MiB`, `1.21 TiB`.
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b.abs();
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let sign = if b < 0.0 { "-" } else { "" };
    if i == 0 {
        format!("{sign}{v:.0} B")
    } else if v < 10.0 {
        format!("{sign}{v:.2} {}", UNITS[i])
    } else {
        format!("{sign}{v:.1} {}", UNITS[i])
    }
}

/// A count with thousands separated: `1 204 332`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// A number from JSON, compact: integers as counts, others with up to 2 decimals.
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        if v < 0.0 {
            format!("-{}", count(v.abs() as u64))
        } else {
            count(v as u64)
        }
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A duration in seconds, short: `42 s`, `3 min`, `2 h 5 min`, `3 d 4 h`.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 1.0 {
        "now".into()
    } else if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 86_400.0 {
        let h = (s / 3600.0).floor();
        format!("{h:.0} h {:.0} min", (s - h * 3600.0) / 60.0)
    } else {
        let d = (s / 86_400.0).floor();
        format!("{d:.0} d {:.0} h", (s - d * 86_400.0) / 3600.0)
    }
}

/// A percentage of a ratio (0..1): `91.7%`.
pub fn pct(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & '"><img onerror=1>"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;&quot;&gt;&lt;img onerror=1&gt;"
        );
        assert_eq!(escape("plain é ✓"), "plain é ✓");
        assert_eq!(
            EscText(r#"{"a": "</pre><script>&"}"#).to_string(),
            r#"{"a": "&lt;/pre&gt;&lt;script&gt;&amp;"}"#
        );
    }

    #[test]
    fn human_forms() {
        assert_eq!(ms(0.4219), "0.42 ms");
        assert_eq!(ms(12.54), "12.5 ms");
        assert_eq!(ms(1840.0), "1.84 s");
        assert_eq!(bytes(3.5 * 1048576.0), "3.50 MiB");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(count(1204332), "1\u{202f}204\u{202f}332");
        assert_eq!(age(7500.0), "2 h 5 min");
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.126), "0.13");
    }
}
