//! `GET /api/events`: Server-Sent Events for the status page and anyone
//! watching — `state` (a component's status changed), `check` (any other
//! check ended), `verdict`, `incident` (opened / reminded / resolved) and
//! `pipeline`, each with its JSON, and a `: heartbeat` comment every
//! `events.heartbeat`. A new client first gets the current state (every
//! component, the verdict, the pipeline, the open incidents); a client that
//! sends `Last-Event-ID` gets what it missed from the hub's ring instead,
//! when the ring still has it. At most `events.max_streams` streams are open
//! (503 beyond). A client that stops reading is dropped once its queue is
//! full — it is never buffered without bound — and its connection closed.
//! On shutdown every stream ends.
//!
//! [`start`] runs the task that announces the verdict (it follows `state`
//! events and reloads) and closes the hub on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, watch};

use super::error::ApiError;
use super::serve::Hangup;
use super::shared::{AppState, Shared};
use crate::component::{Components, verdict};
use crate::events::{Event, Hub, Start, StreamSlot, Verdict, frame, frame_raw, verdict_json};
use crate::util::time::unix_ms;

/// Frames queued for one client beyond what its connection has taken: a
/// client further behind than this is too slow and is dropped. Room for a
/// reload's burst of checks; each frame is shared with the ring (a count).
pub const QUEUE: usize = 512;

/// How long a browser waits before reconnecting (the `retry:` field).
const RETRY_MS: u32 = 2000;

pub(super) async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    hangup: Option<Extension<Hangup>>,
) -> Result<Response, ApiError> {
    let rt = s.current();
    let cfg = &rt.config.events;
    let hub = s.metrics.events.clone();
    let Some(slot) = hub.open_stream(cfg.max_streams) else {
        let mut resp = ApiError::Unavailable(format!(
            "{} event streams are open, the most events.max_streams allows; try again later",
            cfg.max_streams
        ))
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        return Ok(resp);
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (rx, start) = hub.subscribe(last);
    let mut first = vec![Bytes::from(format!("retry: {RETRY_MS}\n\n"))];
    match start {
        Start::Replay(evs) => first.extend(evs.iter().map(|e| e.frame.clone())),
        Start::Snapshot(at) => first.extend(snapshot(&s, &rt, at)),
    }
    let (tx, mut queue) = mpsc::channel::<Bytes>(QUEUE);
    let dropped = Arc::new(AtomicBool::new(false));
    tokio::spawn(forward(Forward {
        rx,
        tx,
        slot,
        hub,
        heartbeat: cfg.heartbeat,
        hangup: hangup.map(|Extension(h)| h),
        dropped: dropped.clone(),
    }));
    let live = futures_util::stream::poll_fn(move |cx| {
        // A dropped client's connection is being closed: end with an error
        // (hyper aborts the answer) rather than as if it were complete.
        if dropped.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(std::io::Error::other(
                "the client did not read its events",
            ))));
        }
        queue.poll_recv(cx).map(|b| b.map(Ok))
    });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::iter(first.into_iter().map(Ok::<_, std::io::Error>)),
        live,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            // nginx and friends: pass the stream through, do not buffer it.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The current state as events, each marked with `at` (the newest id when
/// the client subscribed): the verdict, every component, the pipeline and
/// the open incidents.
fn snapshot(s: &Shared, rt: &Components, at: u64) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(rt.components.len() + 4);
    out.push(frame(at, "verdict", &verdict_json(&current_verdict(s, rt))));
    for c in &rt.components {
        out.push(frame_raw(at, "state", &c.event_data(&c.latest(), None)));
    }
    out.push(frame(at, "pipeline", &s.alert.pipeline_json()));
    for mut inc in s.alert.open_incidents() {
        if let Value::Object(m) = &mut inc {
            m.insert("action".into(), Value::from("open"));
        }
        out.push(frame(at, "incident", &inc));
    }
    out
}

/// The overall verdict of the components in force, noted in the hub (which
/// keeps since when it holds and announces a change). Worked out over
/// every component only when a status changed or a reload replaced them
/// since it last was: at 10,000 components that walk costs milliseconds
/// of cache misses, and this runs every second.
pub(super) fn current_verdict(s: &Shared, rt: &Components) -> Verdict {
    let hub = &s.metrics.events;
    // Read before the statuses: a change during the walk moves it again.
    let key = (rt.generation(), crate::component::status_changes());
    if let Some(v) = hub.verdict_of(key) {
        return v;
    }
    let status = verdict(
        rt.components
            .iter()
            .map(|c| (c.cfg.critical, c.latest().status)),
    );
    let names = rt.components.iter().map(|c| c.name());
    hub.verdict(key, status.as_str(), names, unix_ms(SystemTime::now()))
}

struct Forward {
    rx: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Bytes>,
    slot: StreamSlot,
    hub: Arc<Hub>,
    heartbeat: Duration,
    hangup: Option<Hangup>,
    dropped: Arc<AtomicBool>,
}

/// Moves one client's events from the hub to its queue, with heartbeats;
/// ends with the client, on shutdown, or when the client fell behind.
async fn forward(f: Forward) {
    let Forward {
        mut rx,
        tx,
        slot: _slot,
        hub,
        heartbeat,
        hangup,
        dropped,
    } = f;
    let mut closing = hub.closing();
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            biased;
            // Shutdown: the queue drains and the answer ends.
            _ = closing.wait_for(|c| *c) => return,
            () = tx.closed() => return,
            r = rx.recv() => match r {
                Ok(ev) => ev.frame.clone(),
                // Missed events cannot be sent in order any more: end, and the
                // client resumes from its Last-Event-ID.
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return,
            },
            _ = beat.tick() => Bytes::from_static(b": heartbeat\n\n"),
        };
        match tx.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(_)) => break,
        }
    }
    dropped.store(true, Ordering::Release);
    hub.count_dropped();
    tracing::info!(
        queued = QUEUE,
        "Event stream closed: the client did not read its events."
    );
    if let Some(h) = hangup {
        h.now();
    }
}

/// Starts the task that announces the verdict — on every `state` event,
/// and each second for reloads and first checks — and closes the hub's
/// streams when `stop` turns true.
pub fn start(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let hub = shared.metrics.events.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = hub.state_changed() => {}
                _ = tick.tick() => {}
            }
            current_verdict(&shared, &shared.current());
        }
        hub.close();
    })
}
