//! `GET /api/events` with a plain HTTP client against the real depwatch:
//! the current state first, events in order on a state change, heartbeats,
//! `Last-Event-ID` resume without loss, the stream cap (503), a client that
//! never reads is dropped while the others keep receiving, shutdown ends
//! the streams, and the alerting pipeline and incidents are announced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// One parsed SSE event (comments come as event `:`).
#[derive(Debug, Clone)]
struct Ev {
    id: Option<u64>,
    name: String,
    data: Value,
}

/// Reads an event stream with reqwest, event by event.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(dw: &Depwatch, last: Option<u64>) -> Stream {
        // Not `dw.client`: its 30 s request timeout would cut a stream.
        let client = crate::support::http_client()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let mut req = client.get(dw.url("/api/events"));
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("GET /api/events");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream {
            resp,
            buf: String::new(),
        }
    }

    /// The next event or comment; `None` when the stream ended.
    async fn next(&mut self) -> Option<Ev> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Ev {
                    id: None,
                    name: "message".into(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        ev.name = ":".into();
                        ev.data = Value::String(c.trim().into());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.name = v.into();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data = serde_json::from_str(v).expect("data is JSON");
                    } else if line.starts_with("retry: ") {
                        ev.name = "retry".into();
                    }
                }
                return Some(ev);
            }
            match self.resp.chunk().await {
                Ok(Some(b)) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                _ => return None,
            }
        }
    }

    /// Events until `f` accepts one (which is returned last), within `within`.
    async fn until(&mut self, within: Duration, f: impl Fn(&Ev) -> bool) -> Vec<Ev> {
        let mut seen = Vec::new();
        let got = tokio::time::timeout(within, async {
            while let Some(ev) = self.next().await {
                let done = f(&ev);
                seen.push(ev);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(got, Ok(true)),
            "no matching event within {within:?}; saw {seen:#?}"
        );
        seen
    }
}

/// A partner API answering 200 or 500 at the test's word.
async fn switch() -> (u16, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let up = Arc::new(AtomicBool::new(true));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let flag = up.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            let up = flag.load(Ordering::Relaxed);
            async move {
                if up {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, "down")
                }
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (port, up, task)
}

const TOKEN: &str = "events-admin-token";

fn config(port: u16, extra: &str) -> String {
    format!(
        r#"auth:
  admin_token: {TOKEN}
{extra}probes:
  - name: partner
    kind: http
    url: http://127.0.0.1:{port}/
    interval: 300ms
    timeout: 250ms
    jitter: 0s
    failure_threshold: 1
  - name: quiet
    kind: process
    self: true
    interval: 1h
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn state_first_then_changes_in_order_with_heartbeats() {
    let (port, up, _srv) = switch().await;
    let dw = Depwatch::start(&config(port, "events:\n  heartbeat: 1s\n")).await;
    dw.wait_health("checked", Duration::from_secs(10), |c, _| c == 200)
        .await;
    let mut s = Stream::open(&dw, None).await;
    // The current state first: retry hint, verdict, each component, pipeline.
    let first = s
        .until(Duration::from_secs(5), |e| e.name == "pipeline")
        .await;
    let names: Vec<&str> = first.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["retry", "verdict", "state", "state", "pipeline"]);
    assert_eq!(first[1].data["status"], "healthy");
    assert_eq!(first[2].data["component"], "partner");
    assert_eq!(first[2].data["status"], "healthy");
    assert_eq!(first[3].data["component"], "quiet");
    let at = first[1].id.expect("snapshot id");
    assert!(first[1..].iter().all(|e| e.id == Some(at)));

    up.store(false, Ordering::Relaxed);
    let seen = s
        .until(Duration::from_secs(10), |e| {
            e.name == "verdict" && e.data["status"] == "unhealthy"
        })
        .await;
    let state = seen
        .iter()
        .position(|e| e.name == "state")
        .expect("a state event");
    let ev = &seen[state];
    assert_eq!(ev.data["component"], "partner");
    assert_eq!(ev.data["status"], "unhealthy");
    assert_eq!(ev.data["previous"], "healthy");
    assert_eq!(ev.data["reason"], "status");
    assert!(ev.data["since"].is_string() && ev.data["details"].is_object());
    // The verdict follows the state change; ids grow by one, in order.
    assert!(state < seen.len() - 1);
    let ids: Vec<u64> = seen.iter().filter_map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert!(ids[0] == at + 1, "{at} then {ids:?}");
    // Idle streams get heartbeat comments.
    s.until(Duration::from_secs(5), |e| {
        e.name == ":" && e.data == "heartbeat"
    })
    .await;
    up.store(true, Ordering::Relaxed);
    s.until(Duration::from_secs(10), |e| {
        e.name == "state" && e.data["status"] == "healthy"
    })
    .await;
    let m = dw.metrics().await;
    assert_eq!(m.value("depwatch_events_streams", &[]), 1.0);
    assert!(m.value("depwatch_events_published_total", &[("event", "state")]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn last_event_id_resumes_without_loss() {
    let (port, up, _srv) = switch().await;
    let dw = Depwatch::start(&config(port, "")).await;
    dw.wait_health("checked", Duration::from_secs(10), |c, _| c == 200)
        .await;
    let mut s = Stream::open(&dw, None).await;
    let seen = s.until(Duration::from_secs(5), |e| e.name == "check").await;
    let last = seen.last().unwrap().id.unwrap();
    drop(s);
    // Events the client misses while away: a failure and a recovery.
    up.store(false, Ordering::Relaxed);
    dw.wait_health("down", Duration::from_secs(10), |c, _| c == 503)
        .await;
    up.store(true, Ordering::Relaxed);
    dw.wait_health("up", Duration::from_secs(10), |c, _| c == 200)
        .await;
    let mut s = Stream::open(&dw, Some(last)).await;
    let back = s
        .until(Duration::from_secs(10), |e| {
            e.name == "state" && e.data["status"] == "healthy"
        })
        .await;
    // No snapshot: every event after `last`, in order, none missing.
    assert_eq!(back[0].name, "retry");
    let ids: Vec<u64> = back[1..].iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids[0], last + 1, "{back:#?}");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let states: Vec<&Value> = back
        .iter()
        .filter(|e| e.name == "state")
        .map(|e| &e.data["status"])
        .collect();
    assert_eq!(states, ["unhealthy", "healthy"]);
    // An id the ring never had (an earlier process): the full state instead.
    let mut s = Stream::open(&dw, Some(42)).await;
    let first = s
        .until(Duration::from_secs(5), |e| e.name == "pipeline")
        .await;
    assert_eq!(first[1].name, "verdict");
}

/// A GET of `/api/events` on a socket with a small receive buffer; the
/// answer is never read.
async fn stalled_client(port: u16) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect");
    s.write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cap_answers_503_and_a_client_that_never_reads_is_dropped() {
    let (port, _up, _srv) = switch().await;
    let dw = Depwatch::start(&config(port, "events:\n  max_streams: 2\n")).await;
    dw.wait_health("checked", Duration::from_secs(10), |c, _| c == 200)
        .await;
    let mut reader = Stream::open(&dw, None).await;
    reader
        .until(Duration::from_secs(5), |e| e.name == "pipeline")
        .await;
    let mut stalled = stalled_client(dw.port).await;
    wait_for("two streams", Duration::from_secs(5), || async {
        (dw.metrics().await.value("depwatch_events_streams", &[]) == 2.0).then_some(())
    })
    .await;
    // The third is refused while two are open.
    let r = dw.client.get(dw.url("/api/events")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");
    assert!(r.text().await.unwrap().contains("max_streams"));

    // The reader keeps reading in the background. Checks run on demand, in
    // batches the reader takes in full before the next (it reads; the
    // other one does not), until the stalled client's queue is full and it
    // is dropped.
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        while let Some(ev) = reader.next().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let mut runs = 0;
    let mut checks = 0;
    let mut last_id = 0;
    let mut take = async |runs: usize, checks: &mut usize, last_id: &mut u64| {
        let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
            while *checks < runs {
                let Some(ev) = got.recv().await else {
                    panic!("the reader's stream ended after {checks} of {runs} checks")
                };
                if let Some(id) = ev.id {
                    if *last_id > 0 {
                        assert_eq!(id, *last_id + 1, "an event was lost");
                    }
                    *last_id = id;
                }
                if ev.name == "check" && ev.data["component"] == "quiet" {
                    *checks += 1;
                }
            }
        })
        .await;
        assert!(
            caught_up.is_ok(),
            "the reader saw {checks} of {runs} checks"
        );
    };
    let dropped = loop {
        for _ in 0..50 {
            let (code, _) = dw.post("/api/admin/probes/quiet/run", Some(TOKEN)).await;
            assert_eq!(code, 200);
            runs += 1;
        }
        take(runs, &mut checks, &mut last_id).await;
        let m = dw.metrics().await;
        if m.value("depwatch_events_streams_dropped_total", &[]) >= 1.0 {
            break m;
        }
        assert!(runs < 20_000, "the stalled client was never dropped");
    };
    assert_eq!(dropped.value("depwatch_events_streams", &[]), 1.0);
    assert!(dw.log().contains("the client did not read its events"));
    // Its connection is closed: reading it now ends (after what was sent).
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection stayed open");
    // The reader still gets every check, in order.
    let (code, _) = dw.post("/api/admin/probes/quiet/run", Some(TOKEN)).await;
    assert_eq!(code, 200);
    take(runs + 1, &mut checks, &mut last_id).await;
    // A slot is free again.
    let r = dw.client.get(dw.url("/api/events")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    reading.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_the_streams() {
    let (port, _up, _srv) = switch().await;
    let mut dw = Depwatch::start(&config(port, "")).await;
    dw.wait_health("checked", Duration::from_secs(10), |c, _| c == 200)
        .await;
    let mut s = Stream::open(&dw, None).await;
    s.until(Duration::from_secs(5), |e| e.name == "pipeline")
        .await;
    dw.proc.signal("TERM");
    let ended = tokio::time::timeout(Duration::from_secs(4), async {
        while s.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream stayed open after SIGTERM");
    wait_for("depwatch stopped", Duration::from_secs(10), || async {
        dw.log().contains("Stopped.").then_some(())
    })
    .await;
    assert!(
        !dw.log().contains("HTTP requests still open"),
        "{}",
        dw.log()
    );
    dw.proc.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_and_incidents_are_announced() {
    let (port, up, _srv) = switch().await;
    let extra = "alerting:\n  mode: fallback\n  scrape_watchdog: 1s\n  group_wait: 0s\n";
    let dw = Depwatch::start(&config(port, extra)).await;
    let mut s = Stream::open(&dw, None).await;
    // Nobody scrapes /metrics: the pipeline goes down, and says why.
    let seen = s
        .until(Duration::from_secs(10), |e| {
            e.name == "pipeline" && e.data["pipeline"] == "down"
        })
        .await;
    let down = &seen.last().unwrap().data;
    assert_eq!(down["mode"], "fallback");
    assert_eq!(down["reasons"][0]["check"], "scrape", "{down}");
    // A failing component opens an incident; its recovery resolves it.
    up.store(false, Ordering::Relaxed);
    let seen = s
        .until(Duration::from_secs(10), |e| {
            e.name == "incident" && e.data["scope"] == "components"
        })
        .await;
    let opened = &seen.last().unwrap().data;
    assert_eq!(opened["action"], "opened", "{opened}");
    assert_eq!(opened["components"][0], "partner");
    let id = opened["id"].clone();
    // The page lists it while it is open.
    let (_, html) = dw.get("/").await;
    assert!(html.contains("<caption>Open incidents</caption>"), "{html}");
    up.store(true, Ordering::Relaxed);
    let seen = s
        .until(Duration::from_secs(10), |e| {
            e.name == "incident" && e.data["scope"] == "components"
        })
        .await;
    let resolved = &seen.last().unwrap().data;
    assert_eq!(resolved["action"], "resolved", "{resolved}");
    assert_eq!(resolved["id"], id);
    assert!(resolved["resolved_at"].is_string());
    // A scrape brings the pipeline back.
    dw.metrics().await;
    s.until(Duration::from_secs(10), |e| {
        e.name == "pipeline" && e.data["pipeline"] == "ok"
    })
    .await;
}
