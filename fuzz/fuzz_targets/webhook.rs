//! The Alertmanager webhook: any body is refused with a reason or applied
//! to the alerting state, which stays bounded.
#![no_main]
use std::sync::OnceLock;

use depwatch::alert::webhook::parse_payload;
use depwatch::alert::{AlertMetrics, Alerting, MAX_FIRING};
use libfuzzer_sys::fuzz_target;

fn state() -> &'static Alerting {
    static S: OnceLock<Alerting> = OnceLock::new();
    S.get_or_init(|| {
        let mut r = prometheus_client::registry::Registry::default();
        Alerting::new(AlertMetrics::register(&mut r))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = parse_payload(data) {
        let (_, kept) = state().on_webhook(n);
        assert!(kept <= MAX_FIRING + 1);
    }
});
