//! The exposition writer every scrape goes through: any text, in any
//! pieces, to either format: no panic, no growth beyond a small factor
//! (it only drops, renames, repeats a name, or replaces control
//! characters), and no control character but the line break in what it
//! writes.
#![no_main]
use std::fmt::Write as _;

use depwatch::metrics::exposition::{Format, Writer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // The first byte chooses where the text is cut in two pieces.
    let cut = s
        .char_indices()
        .map(|(i, _)| i)
        .nth(usize::from(data.first().copied().unwrap_or(0)) % 7)
        .unwrap_or(0);
    for format in Format::ALL {
        let mut w = Writer::new(format, 64);
        let _ = w.write_str(&s[..cut]);
        let _ = w.write_str(&s[cut..]);
        let out = w.finish();
        // A control character becomes U+FFFD (3 bytes), and in the text
        // format a family's name is written twice (its HELP and its TYPE).
        assert!(
            out.len() <= s.len() * 6 + 64,
            "{} bytes from {}",
            out.len(),
            s.len()
        );
        assert!(
            !out.chars().any(|c| c != '\n' && c.is_control()),
            "a control character in {out:?}"
        );
    }
});
