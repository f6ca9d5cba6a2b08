//! The live event feed behind `GET /api/events`: numbered events (`state`,
//! `check`, `verdict`, `incident`, `pipeline`) kept in a ring buffer for
//! `Last-Event-ID` resumes and broadcast to the open streams. It knows event
//! names and JSON only: `component.rs` and `alert/` publish here, the SSE
//! handler (`http/events.rs`) serves it, so nobody imports anybody in a circle.
//!
//! Ids grow by one per event from a base taken from the start time (unix
//! milliseconds × 1000): an id a browser kept from an earlier depwatch process
//! is always below the ring of this one, so its resume falls back to the full
//! current state instead of replaying the wrong events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// Events kept for resumes (and the broadcast channel's depth): at 20
/// components checked every 15 s, about a quarter of an hour of history.
pub const RING: usize = 1024;

/// One published event, its SSE frame formatted once for every stream.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub name: &'static str,
    /// `id: …\nevent: …\ndata: …\n\n`.
    pub frame: Bytes,
}

/// Formats one SSE frame. `data` is compact JSON: it has no line breaks
/// (serde_json escapes them inside strings), so one `data:` line holds it.
pub fn frame(id: u64, name: &str, data: &Value) -> Bytes {
    frame_raw(id, name, &data.to_string())
}

/// [`frame`] of data already serialized (compact JSON: one line).
pub fn frame_raw(id: u64, name: &str, data: &str) -> Bytes {
    // Sized once: a check event carries a component's whole JSON.
    let mut n = itoa::Buffer::new();
    let parts: [&[u8]; 7] = [
        b"id: ",
        n.format(id).as_bytes(),
        b"\nevent: ",
        name.as_bytes(),
        b"\ndata: ",
        data.as_bytes(),
        b"\n\n",
    ];
    Bytes::from(parts.concat())
}

/// Where a new stream starts.
pub enum Start {
    /// The client's `Last-Event-ID` is in the ring: these events follow it.
    Replay(Vec<Arc<Event>>),
    /// No id, or one the ring no longer (or never) had: the client needs the
    /// current state, marked with this id (the newest so far).
    Snapshot(u64),
}

/// The overall verdict as last announced, and since when it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub status: &'static str,
    pub since_ms: i64,
    /// The components it covers (configuration order): a reload that adds or
    /// removes one is announced too, so open pages can reload themselves.
    pub components: Arc<[String]>,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    last_id: u64,
    verdict: Option<Verdict>,
    /// What the verdict was worked out from (see [`Hub::verdict`]).
    verdict_key: Option<VerdictKey>,
    /// Whether a stream has subscribed yet. Until one has, nobody can
    /// resume from the ring (an id from an earlier process falls back to a
    /// snapshot), so events take an id and are counted, but their data is
    /// not even written: at 10,000 components, 667 frames of a component's
    /// JSON a second that no page would ever read.
    kept: bool,
}

/// What a verdict is worked out from, as its caller knows it (a set of
/// components and a count of their status changes): the same key, the
/// same verdict.
pub type VerdictKey = (u64, u64);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

/// The hub: publish, subscribe, count streams.
pub struct Hub {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
    closed: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
    streams: Gauge,
    rejected: Counter,
    dropped: Counter,
    published: Family<EventLabel, Counter>,
    /// Told of every `state` event (the verdict's task waits on it rather
    /// than on every event: at 10,000 components, 667 checks a second
    /// would each wake it).
    states: tokio::sync::Notify,
}

impl Hub {
    /// A hub whose ids start after `base`, its series registered in `r`
    /// (the `depwatch_` registry).
    pub fn new(r: &mut Registry, base: u64) -> Hub {
        let hub = Hub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(RING),
                last_id: base,
                verdict: None,
                verdict_key: None,
                kept: false,
            }),
            tx: broadcast::channel(RING).0,
            closed: watch::channel(false).0,
            open: Arc::new(AtomicUsize::new(0)),
            streams: Gauge::default(),
            rejected: Counter::default(),
            dropped: Counter::default(),
            published: Family::default(),
            states: tokio::sync::Notify::new(),
        };
        r.register(
            "events_streams",
            "Open /api/events streams",
            hub.streams.clone(),
        );
        r.register(
            "events_streams_rejected",
            "/api/events requests answered 503 because events.max_streams streams were open",
            hub.rejected.clone(),
        );
        r.register(
            "events_streams_dropped",
            "/api/events streams closed because the client did not read its events",
            hub.dropped.clone(),
        );
        r.register(
            "events_published",
            "Events published to /api/events, by event",
            hub.published.clone(),
        );
        hub
    }

    /// The base for ids: this instant in unix milliseconds × 1000.
    pub fn base_now() -> u64 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ms.saturating_mul(1000)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes one event to every open stream and to the ring; its id.
    pub fn publish(&self, name: &'static str, data: &Value) -> u64 {
        self.publish_with(name, || data.to_string())
    }

    /// [`Hub::publish`] of data that `data` serializes as compact JSON (no
    /// newline), as a component's check events are: from the JSON
    /// `/api/health` shows, not serialized a second time. `data` runs only
    /// once a stream has subscribed (under the ring's lock: it should only
    /// copy).
    pub fn publish_with(&self, name: &'static str, data: impl FnOnce() -> String) -> u64 {
        let mut ring = self.lock();
        ring.last_id += 1;
        let id = ring.last_id;
        if ring.kept {
            let data = data();
            debug_assert!(!data.contains('\n'));
            let ev = Arc::new(Event {
                id,
                name,
                frame: frame_raw(id, name, &data),
            });
            if ring.events.len() == RING {
                ring.events.pop_front();
            }
            ring.events.push_back(ev.clone());
            // Sent under the lock: streams see events in id order. No
            // receiver (every stream closed) is not an error.
            let _ = self.tx.send(ev);
        }
        drop(ring);
        if name == "state" {
            self.states.notify_one();
        }
        self.published
            .get_or_create(&EventLabel { event: name })
            .inc();
        id
    }

    /// Returns after a `state` event was published (one since the last
    /// call returned, if any was).
    pub async fn state_changed(&self) {
        self.states.notified().await;
    }

    /// Subscribes to what is published from now on, and says where the
    /// stream starts: after `last` when the ring still holds what followed
    /// it, else at a snapshot of the current state.
    pub fn subscribe(&self, last: Option<u64>) -> (broadcast::Receiver<Arc<Event>>, Start) {
        let mut ring = self.lock();
        ring.kept = true;
        let rx = self.tx.subscribe();
        let newest = ring.last_id;
        let oldest = ring.events.front().map_or(newest + 1, |e| e.id);
        let start = match last {
            // Everything after `last` is still here (or nothing came since).
            Some(l) if l <= newest && l + 1 >= oldest => {
                Start::Replay(ring.events.iter().filter(|e| e.id > l).cloned().collect())
            }
            _ => Start::Snapshot(newest),
        };
        (rx, start)
    }

    /// Takes a stream slot unless `cap` streams are open (then counts a
    /// rejection). The slot is given back when dropped.
    pub fn open_stream(&self, cap: usize) -> Option<StreamSlot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.rejected.inc();
            return None;
        }
        self.streams.inc();
        Some(StreamSlot {
            open: self.open.clone(),
            gauge: self.streams.clone(),
        })
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a stream closed because its client did not keep up.
    pub fn count_dropped(&self) {
        self.dropped.inc();
    }

    /// Ends every stream (shutdown): they finish their answer and close.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Turns true when the hub closes.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// The verdict last noted, when it was worked out from `key`.
    pub fn verdict_of(&self, key: VerdictKey) -> Option<Verdict> {
        let ring = self.lock();
        ring.verdict
            .clone()
            .filter(|_| ring.verdict_key == Some(key))
    }

    /// Notes the overall verdict over `components`, worked out from `key`;
    /// announces a `verdict` event when the status or the set of
    /// components changed. Answers the verdict with the time since which
    /// it holds.
    pub fn verdict<'a, I>(
        &self,
        key: VerdictKey,
        status: &'static str,
        components: I,
        now_ms: i64,
    ) -> Verdict
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        let components = components.into_iter();
        let mut ring = self.lock();
        ring.verdict_key = Some(key);
        let last = ring.verdict.as_ref();
        // The same components as last time (nearly always): compared, not
        // copied, as this runs every second over every component.
        let same = last.filter(|v| {
            v.components
                .iter()
                .map(String::as_str)
                .eq(components.clone())
        });
        if let Some(v) = same.filter(|v| v.status == status) {
            return v.clone();
        }
        let next = Verdict {
            status,
            since_ms: last
                .filter(|v| v.status == status)
                .map_or(now_ms, |v| v.since_ms),
            components: match same {
                Some(v) => v.components.clone(),
                None => components.map(str::to_string).collect(),
            },
        };
        ring.verdict = Some(next.clone());
        drop(ring);
        self.publish("verdict", &verdict_json(&next));
        next
    }

    /// The verdict as last noted, if any.
    pub fn last_verdict(&self) -> Option<Verdict> {
        self.lock().verdict.clone()
    }
}

/// The data of a `verdict` event.
pub fn verdict_json(v: &Verdict) -> Value {
    json!({
        "status": v.status,
        "since": crate::util::time::rfc3339_ms(v.since_ms),
        "components": &*v.components,
    })
}

/// One open stream's place under the cap.
pub struct StreamSlot {
    open: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(&mut Registry::default(), 1000)
    }

    fn ids(s: &Start) -> Vec<u64> {
        match s {
            Start::Replay(v) => v.iter().map(|e| e.id).collect(),
            Start::Snapshot(at) => vec![0, *at],
        }
    }

    #[test]
    fn resume_replays_what_followed_or_falls_back_to_a_snapshot() {
        let h = hub();
        assert_eq!(ids(&h.subscribe(None).1), vec![0, 1000]);
        // Nothing published yet: resuming at the newest id replays nothing.
        assert_eq!(ids(&h.subscribe(Some(1000)).1), Vec::<u64>::new());
        for i in 0..(RING as u64 + 10) {
            assert_eq!(h.publish("state", &json!({ "n": i })), 1001 + i);
        }
        let newest = 1000 + RING as u64 + 10;
        let oldest = newest - RING as u64 + 1;
        assert_eq!(
            ids(&h.subscribe(Some(newest - 2)).1),
            vec![newest - 1, newest]
        );
        assert_eq!(ids(&h.subscribe(Some(newest)).1), Vec::<u64>::new());
        assert_eq!(ids(&h.subscribe(Some(oldest - 1)).1).len(), RING);
        // Fell out of the ring, from an earlier process, or from the future.
        assert_eq!(ids(&h.subscribe(Some(oldest - 2)).1), vec![0, newest]);
        assert_eq!(ids(&h.subscribe(Some(5)).1), vec![0, newest]);
        assert_eq!(ids(&h.subscribe(Some(newest + 1)).1), vec![0, newest]);
    }

    #[test]
    fn events_before_the_first_stream_are_counted_not_kept() {
        let h = hub();
        let mut made = 0;
        for _ in 0..3 {
            h.publish_with("check", || {
                made += 1;
                "{}".into()
            });
        }
        assert_eq!(made, 0, "no stream has subscribed: no data written");
        assert_eq!(
            h.published
                .get_or_create(&EventLabel { event: "check" })
                .get(),
            3
        );
        // Ids went on: a resume from before falls back to the state now.
        assert_eq!(ids(&h.subscribe(Some(1001)).1), vec![0, 1003]);
        let (mut rx, start) = h.subscribe(Some(1003));
        assert!(ids(&start).is_empty());
        assert_eq!(h.publish_with("check", || "{\"n\":1}".into()), 1004);
        let ev = rx.try_recv().expect("kept once a stream subscribed");
        assert_eq!(ev.id, 1004);
        assert_eq!(ids(&h.subscribe(Some(1003)).1), vec![1004]);
    }

    #[test]
    fn frames_are_one_data_line() {
        let f = frame(7, "state", &json!({ "error": "a\nb\r\n\nc" }));
        assert_eq!(
            std::str::from_utf8(&f).unwrap(),
            "id: 7\nevent: state\ndata: {\"error\":\"a\\nb\\r\\n\\nc\"}\n\n"
        );
    }

    #[test]
    fn the_cap_counts_open_slots() {
        let h = hub();
        let a = h.open_stream(2).expect("first");
        let _b = h.open_stream(2).expect("second");
        assert!(h.open_stream(2).is_none());
        drop(a);
        assert!(h.open_stream(2).is_some());
        assert_eq!(h.rejected.get(), 1);
    }

    #[test]
    fn verdict_is_announced_on_change_only() {
        let h = hub();
        let (mut rx, _) = h.subscribe(None);
        let names = || ["a"];
        assert!(h.verdict_of((1, 0)).is_none());
        let v = h.verdict((1, 0), "healthy", names(), 10);
        assert_eq!(v.since_ms, 10);
        // Known for its key only.
        assert_eq!(h.verdict_of((1, 0)).map(|v| v.since_ms), Some(10));
        assert!(h.verdict_of((1, 1)).is_none());
        assert!(h.verdict_of((2, 0)).is_none());
        assert_eq!(h.verdict((1, 1), "healthy", names(), 20).since_ms, 10);
        assert!(h.verdict_of((1, 0)).is_none());
        assert_eq!(h.verdict((1, 2), "unhealthy", names(), 30).since_ms, 30);
        assert_eq!(h.verdict_of((1, 2)).map(|v| v.status), Some("unhealthy"));
        assert_eq!(h.verdict((2, 2), "unhealthy", [], 40).since_ms, 30);
        assert_eq!(
            &*h.verdict((2, 2), "unhealthy", [], 50).components,
            &[] as &[String]
        );
        let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok().map(|e| e.id)).collect();
        assert_eq!(got, vec![1001, 1002, 1003]);
    }
}
