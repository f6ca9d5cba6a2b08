//! Go's duration syntax (`1h2m3.5s`, `250µs`): any text parses or not, and
//! what parses formats back to a value that parses to the same nanoseconds.
#![no_main]
use depwatch::probe::log::godur::{format_nanos, parse_nanos};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ns) = parse_nanos(s) {
        let again = format_nanos(ns);
        assert_eq!(parse_nanos(&again), Some(ns), "{s:?} → {ns} → {again:?}");
    }
});
