//! The configuration loader: any bytes, as a file would give them. It must
//! answer a `Config` or positioned problems; never panic, hang or blow up.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = depwatch::config::from_str(
        text,
        "fuzz.yml",
        None,
        std::path::Path::new("/nonexistent"),
        &|k| (k == "FUZZ").then(|| "x".to_string()),
    );
    // The same bytes as an exporter-toolkit web configuration file.
    let _ = depwatch::config::web_from_str(text, "web.yml");
});
