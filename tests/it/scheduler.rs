//! The scheduler on a paused tokio clock: the jitter offset, the interval
//! cadence, the timeout, a reload that keeps a component, and shutdown —
//! exact instants, no waiting on the wall clock.

use std::time::Duration;

use depwatch::probe::Reason;
use depwatch::scheduler::Scheduler;
use tokio::time::Instant;

use crate::support::*;

const S: Duration = Duration::from_secs(1);

fn one_probe(keys: &str) -> App {
    App::new(&format!(
        "probes:\n  - name: a\n    kind: process\n    self: true\n{keys}"
    ))
}

fn secs(s: &[u64]) -> Vec<Duration> {
    s.iter().map(|s| Duration::from_secs(*s)).collect()
}

/// The offsets from `t0` of the checks' starts.
fn offsets(app: &App, t0: Instant) -> Vec<Duration> {
    app.probe("a")
        .started()
        .iter()
        .map(|t| t.duration_since(t0))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn checks_start_at_once_and_then_every_interval() {
    let app = one_probe("    interval: 10s\n    timeout: 2s\n    jitter: 0s\n");
    let t0 = Instant::now();
    let mut scheduler = Scheduler::new();
    scheduler.apply(&app.components());
    tokio::time::sleep(35 * S).await;
    assert_eq!(offsets(&app, t0), secs(&[0, 10, 20, 30]));
    scheduler.shutdown(S).await;
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_the_first_check_then_the_phase_holds() {
    for _ in 0..5 {
        let app = one_probe("    interval: 10s\n    timeout: 2s\n    jitter: 5s\n");
        let t0 = Instant::now();
        let mut scheduler = Scheduler::new();
        scheduler.apply(&app.components());
        tokio::time::sleep(36 * S).await;
        let at = offsets(&app, t0);
        assert!(at.len() >= 4, "{at:?}");
        assert!(at[0] < 5 * S, "first check within the jitter: {at:?}");
        // Then onto the component's phase, at most an interval after the
        // first; an interval apart from there on.
        let to_phase = at[1] - at[0];
        assert!(to_phase > Duration::ZERO && to_phase <= 10 * S, "{at:?}");
        for pair in at[1..].windows(2) {
            assert_eq!(pair[1] - pair[0], 10 * S, "{at:?}");
        }
        scheduler.shutdown(S).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_check_past_its_timeout_fails_with_reason_timeout() {
    let app = one_probe("    interval: 10s\n    timeout: 2s\n    jitter: 0s\n");
    app.probe("a").delay(60 * S);
    let t0 = Instant::now();
    let mut scheduler = Scheduler::new();
    scheduler.apply(&app.components());
    tokio::time::sleep(3 * S).await;
    let c = app.shared.current().component("a").cloned().unwrap();
    let l = c.latest();
    assert_eq!(l.reason, Some(Reason::Timeout), "{l:?}");
    assert_eq!(
        l.error.as_deref(),
        Some("no answer within the timeout of 2s")
    );
    assert_eq!(l.duration, 2 * S, "cut at the timeout");
    assert_eq!(l.finished.map(|f| f - t0), Some(2 * S));
    // The cadence counts from the start of a check, not from its end.
    tokio::time::sleep(10 * S).await;
    assert_eq!(offsets(&app, t0), secs(&[0, 10]));
    scheduler.shutdown(S).await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_an_unchanged_component_on_its_cadence() {
    let app = one_probe("    interval: 10s\n    timeout: 2s\n    jitter: 0s\n");
    let t0 = Instant::now();
    let mut scheduler = Scheduler::new();
    scheduler.apply(&app.components());
    tokio::time::sleep(5 * S).await;
    // The same component (same `Arc`): its task goes on, no extra check.
    scheduler.apply(&app.components());
    tokio::time::sleep(20 * S).await;
    assert_eq!(offsets(&app, t0), secs(&[0, 10, 20]));
    // No component any more: its task stops.
    scheduler.apply(&[]);
    tokio::time::sleep(60 * S).await;
    assert_eq!(app.probe("a").checks(), 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_task_and_lets_a_check_in_flight_end() {
    let app = one_probe("    interval: 10s\n    timeout: 5s\n    jitter: 0s\n");
    app.probe("a").delay(3 * S);
    let t0 = Instant::now();
    let mut scheduler = Scheduler::new();
    scheduler.apply(&app.components());
    tokio::time::sleep(S).await;
    // A check is in flight (0s..3s): the grace lets it end and record.
    scheduler.shutdown(10 * S).await;
    assert_eq!(Instant::now() - t0, 3 * S, "shutdown waited for the check");
    let c = app.shared.current().component("a").cloned().unwrap();
    assert!(c.latest().up, "the check in flight was recorded");
    tokio::time::sleep(60 * S).await;
    assert_eq!(app.probe("a").checks(), 1, "no check after shutdown");
}

/// Log events (`invalidates`) on a paused clock: the first refreshes at
/// once, events inside `cache_ttl` are served by one refresh at its end,
/// `tag:T` reaches every tagged component, and unknown names do nothing.
#[tokio::test(start_paused = true)]
async fn event_refreshes_are_debounced_per_cache_ttl() {
    use depwatch::probe::Trigger;
    let app = App::new(
        "health: { cache_ttl: 10s }\nprobes:\n  - name: a\n    kind: process\n    self: true\n    tags: [partners]\n  - name: b\n    kind: process\n    self: true\n    tags: [partners]\n  - name: c\n    kind: process\n    self: true\n",
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let shared = app.shared.clone();
    let task = tokio::spawn(depwatch::refresh::run(
        rx,
        std::sync::Arc::new(move || shared.current()),
        stop,
    ));
    let send = |targets: &[&str]| {
        tx.send(Trigger {
            from: "app-log".into(),
            rule: "syncs".into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
        })
        .unwrap();
    };
    let t0 = Instant::now();
    let at = |name: &str| -> Vec<Duration> {
        app.probe(name)
            .started()
            .iter()
            .map(|t| t.duration_since(t0))
            .collect()
    };
    send(&["a"]);
    tokio::time::sleep(S).await;
    assert_eq!(at("a"), secs(&[0]));
    // Two more inside the TTL: one refresh at its end (10s after the first).
    send(&["a"]);
    tokio::time::sleep(3 * S).await;
    send(&["a", "nobody"]);
    tokio::time::sleep(10 * S).await;
    assert_eq!(at("a"), secs(&[0, 10]));
    // After the TTL: at once again; a tag reaches both tagged components.
    tokio::time::sleep(10 * S).await;
    send(&["tag:partners"]);
    tokio::time::sleep(S).await;
    assert_eq!(at("a"), secs(&[0, 10, 24]));
    assert_eq!(at("b"), secs(&[24]));
    assert!(at("c").is_empty());
    task.abort();
}
