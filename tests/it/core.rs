//! The core exporter end to end: the real binary, its endpoints, the process
//! probe, thresholds, the health cache and reload.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn default_probe_metrics_and_health() {
    let dw = Depwatch::start(
        "probes:\n  - name: self\n    kind: process\n    self: true\n    interval: 1s\n    timeout: 500ms\n    jitter: 0s\n",
    )
    .await;
    let m = dw
        .wait_metrics("the first check", Duration::from_secs(10), |m| {
            m.get("depwatch_up", &[("component", "self"), ("kind", "process")])
                .is_some()
        })
        .await;
    assert_eq!(
        m.value("depwatch_up", &[("component", "self"), ("kind", "process")]),
        1.0
    );
    promtool_check_metrics(&m.text);
    let (code, h) = dw.health("").await;
    assert_eq!(code, 200);
    assert_eq!(h["status"], "healthy");
}
