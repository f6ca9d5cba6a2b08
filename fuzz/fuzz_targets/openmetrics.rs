//! The OpenMetrics → text 0.0.4 converter used for every scraper that does
//! not ask for OpenMetrics: any input text, no panic, no growth beyond a
//! small factor (it only drops or renames).
#![no_main]
use depwatch::metrics::text::{openmetrics_to_text, scrub_controls};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let out = openmetrics_to_text(s);
    assert!(
        out.len() <= s.len() * 2 + 64,
        "{} bytes from {}",
        out.len(),
        s.len()
    );
    let _ = scrub_controls(s.to_string());
});
