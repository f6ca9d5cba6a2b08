//! `GET /api/health`: the verdict, served from cached results. A result
//! older than `health.cache_ttl` (or invalidated) is a miss and is checked
//! anew; concurrent misses of one component share one check.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{Api, ApiError};
use super::performance::{Section, Slowest, performance};
use super::shared::AppState;
use super::shared::Shared;
use crate::component::{Component, Components, Latest, verdict};
use crate::config::PerfConfig;
use crate::perf;
use crate::probe::Status;
use crate::util::time::Stamp;

#[derive(Deserialize)]
pub(super) struct ComponentQuery {
    component: Option<String>,
}

pub(super) async fn health(
    State(s): State<AppState>,
    Api(Query(q)): Api<Query<ComponentQuery>>,
) -> Result<Response, ApiError> {
    let rt = s.current();
    let ttl = rt.config.health.cache_ttl;
    let selection = select(&rt, q.component.as_deref())?;
    let selected = selection.of(&rt);
    let results = latest_of(&s, selected, ttl).await;

    let status = verdict(
        selected
            .iter()
            .zip(&results)
            .map(|(c, l)| (c.cfg.critical, l.status)),
    );
    let performance = match &q.component {
        Some(_) => Arc::new(Section::of(&component_perf(
            &selected[0],
            &rt.config.health.performance,
        ))),
        None => performance(&s.perf_memo, &rt),
    };
    let valid = rt.components.iter().filter(|c| c.is_fresh(ttl)).count();
    let hits = s.cache_hits.load(std::sync::atomic::Ordering::Relaxed);
    let misses = s.cache_misses.load(std::sync::atomic::Ordering::Relaxed);
    let head = Head {
        status: status.as_str(),
        timestamp: Stamp(SystemTime::now()),
        uptime_seconds: perf::round2(s.started.elapsed().as_secs_f64()),
        version: crate::util::build::VERSION,
    };
    let cache = CacheView {
        hits,
        misses,
        hit_rate: if hits + misses == 0 {
            0.0
        } else {
            (hits as f64 / (hits + misses) as f64 * 1e4).round() / 1e4
        },
        entries: valid,
        valid,
        expired: rt.components.len() - valid,
        ttl_seconds: ttl.as_secs_f64(),
    };
    let code = if status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    // {head,"components":{…},middle,"cache":{cache,"components":{…}},tail}:
    // the text around the two lists of components, written into one buffer.
    let mut text = Vec::with_capacity(1024 + performance.raw.get().len());
    text.push(b'{');
    fields(&mut text, &head)?;
    text.extend_from_slice(b",\"components\":{");
    let head_end = text.len();
    text.extend_from_slice(b"},\"performance\":");
    text.extend_from_slice(performance.raw.get().as_bytes());
    text.extend_from_slice(b",\"state_store\":");
    s.store.write_status(&mut text);
    text.extend_from_slice(b",\"cache\":{");
    fields(&mut text, &cache)?;
    text.extend_from_slice(b",\"components\":{");
    let middle_end = text.len();
    text.extend_from_slice(b"}},\"alerting\":");
    s.alert.write_health(&mut text);
    text.push(b'}');
    let mut body = Streamed::new(text, [head_end, middle_end], rt.clone(), selection, results);
    // An answer of one piece goes whole, with its length.
    let first = body.piece();
    let body = if body.is_done() {
        axum::body::Body::from(first)
    } else {
        body.first = Some(first);
        axum::body::Body::new(body)
    };
    Ok((
        code,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// The first fields of the answer, in its order.
#[derive(Serialize)]
struct Head {
    status: &'static str,
    timestamp: Stamp,
    uptime_seconds: f64,
    version: &'static str,
}

/// The fields of `v` (a struct with fields) as JSON, without the braces
/// around them, after what `out` holds.
fn fields(out: &mut Vec<u8>, v: &impl Serialize) -> Result<(), ApiError> {
    let start = out.len();
    serde_json::to_writer(&mut *out, v)
        .map_err(|e| ApiError::Internal(format!("cannot serialize the health answer: {e}")))?;
    out.pop();
    out.remove(start);
    Ok(())
}

/// Plain bytes a piece of a streamed answer holds before it is sent.
const PIECE: usize = 64 * 1024;

/// The answer written as it is sent, in pieces of about [`PIECE`] bytes:
/// at 10,000 components it is 6 MB, which every request in flight held
/// whole (16 at once took 65 MiB more), grown by doubling. The components
/// are the results taken when the request came; their JSON was made when
/// each result was.
struct Streamed {
    /// A piece written before the answer was sent.
    first: Option<Vec<u8>>,
    stage: Stage,
    /// The text around the two lists of components: up to `marks[0]`
    /// before the components, up to `marks[1]` between them and the
    /// cache's counts of each, the rest after those.
    text: Vec<u8>,
    marks: [usize; 2],
    /// The components in force when the request came (every one is in
    /// the cache's counts), and which of them the answer shows: one
    /// reference for all, not one per component (at 10,000, cloning and
    /// dropping each one's was two passes of cache misses).
    rt: Arc<Components>,
    selection: Selection,
    results: Vec<Arc<Latest>>,
}

#[derive(Clone, Copy)]
enum Stage {
    Head,
    Components(usize),
    Middle,
    Cache(usize),
    Tail,
    Done,
}

/// The most one component's cache counts take (`{"hits":N,"misses":M}`,
/// two `u64`s) beside its name and separators.
const COUNTS: usize = 64;

impl Streamed {
    fn new(
        text: Vec<u8>,
        marks: [usize; 2],
        rt: Arc<Components>,
        selection: Selection,
        results: Vec<Arc<Latest>>,
    ) -> Streamed {
        Streamed {
            first: None,
            stage: Stage::Head,
            text,
            marks,
            rt,
            selection,
            results,
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Room for the first piece: the whole answer when it is smaller than
    /// a piece (a default run's is 2 KB: an 80 KB buffer for it cost more
    /// in malloc than the rest of the handler), else a whole piece. Looks
    /// at no more components than fill one piece.
    fn first_capacity(&self) -> usize {
        let full = PIECE + PIECE / 4;
        let mut n = self.text.len();
        let selected = self.selection.of(&self.rt);
        for (c, l) in selected.iter().zip(&self.results) {
            n += c.name_json().len() + 2 + c.view_json(l).get().len();
            if n >= PIECE {
                return full;
            }
        }
        for c in &self.rt.components {
            n += c.name_json().len() + COUNTS;
            if n >= PIECE {
                return full;
            }
        }
        n
    }

    /// The next piece, empty at the end.
    fn piece(&mut self) -> Vec<u8> {
        if let Some(first) = self.first.take() {
            return first;
        }
        // A piece ends after the component that takes it past PIECE: room
        // for that one, so that it is not grown by doubling on the way.
        let mut out = Vec::with_capacity(match self.stage {
            Stage::Head => self.first_capacity(),
            _ => PIECE + PIECE / 4,
        });
        // `"name":`, the name as JSON (escaped once, when the component
        // was made).
        let key = |out: &mut Vec<u8>, first: bool, c: &Component| {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(c.name_json().as_bytes());
            out.push(b':');
        };
        let [head_end, middle_end] = self.marks;
        while out.len() < PIECE {
            self.stage = match self.stage {
                Stage::Head => {
                    out.extend_from_slice(&self.text[..head_end]);
                    Stage::Components(0)
                }
                Stage::Components(mut i) => {
                    let selected = self.selection.of(&self.rt);
                    while i < selected.len() && out.len() < PIECE {
                        let (c, l) = (&selected[i], &self.results[i]);
                        key(&mut out, i == 0, c);
                        out.extend_from_slice(c.view_json(l).get().as_bytes());
                        i += 1;
                    }
                    if i < selected.len() {
                        Stage::Components(i)
                    } else {
                        // The results are written: let them go.
                        self.results = Vec::new();
                        Stage::Middle
                    }
                }
                Stage::Middle => {
                    out.extend_from_slice(&self.text[head_end..middle_end]);
                    Stage::Cache(0)
                }
                Stage::Cache(mut i) => {
                    let all = &self.rt.components;
                    while i < all.len() && out.len() < PIECE {
                        let c = &all[i];
                        key(&mut out, i == 0, c);
                        let (hits, misses) = c.cache_counts();
                        // {"hits":N,"misses":M}
                        let mut n = itoa::Buffer::new();
                        out.extend_from_slice(b"{\"hits\":");
                        out.extend_from_slice(n.format(hits).as_bytes());
                        out.extend_from_slice(b",\"misses\":");
                        out.extend_from_slice(n.format(misses).as_bytes());
                        out.push(b'}');
                        i += 1;
                    }
                    if i < all.len() {
                        Stage::Cache(i)
                    } else {
                        Stage::Tail
                    }
                }
                Stage::Tail => {
                    out.extend_from_slice(&self.text[middle_end..]);
                    self.text = Vec::new();
                    Stage::Done
                }
                Stage::Done => break,
            };
        }
        out
    }
}

impl http_body::Body for Streamed {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let piece = self.piece();
        std::task::Poll::Ready(
            (!piece.is_empty()).then(|| Ok(http_body::Frame::data(bytes::Bytes::from(piece)))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.is_done()
    }
}

#[derive(Serialize)]
struct CacheView {
    hits: u64,
    misses: u64,
    hit_rate: f64,
    /// Fresh results (as `valid`; kept for earlier readers).
    entries: usize,
    /// Results younger than the TTL and not invalidated.
    valid: usize,
    /// Components whose next health request checks anew (older than the
    /// TTL, invalidated, or never checked).
    expired: usize,
    ttl_seconds: f64,
}

/// The latest result of each component: from the cache when fresh, else from
/// a check run now (misses run concurrently, each bounded by its timeout).
async fn latest_of(s: &Shared, components: &[Arc<Component>], ttl: Duration) -> Vec<Arc<Latest>> {
    let since = tokio::time::Instant::now();
    let mut out: Vec<Option<Arc<Latest>>> = Vec::with_capacity(components.len());
    let mut misses = tokio::task::JoinSet::new();
    for (i, c) in components.iter().enumerate() {
        match c.cached(ttl) {
            Some(l) => {
                s.count_cache(true);
                c.count_cache(true);
                out.push(Some(l));
            }
            None => {
                s.count_cache(false);
                c.count_cache(false);
                out.push(None);
                let c = c.clone();
                misses.spawn(async move { (i, c.run_check(since).await) });
            }
        }
    }
    crate::metrics::snapshot::changed();
    while let Some(done) = misses.join_next().await {
        if let Ok((i, l)) = done {
            out[i] = Some(l);
        }
    }
    out.into_iter()
        .zip(components)
        .map(|(l, c)| l.unwrap_or_else(|| c.latest()))
        .collect()
}

fn component_perf(c: &Component, cfg: &PerfConfig) -> Value {
    let w = c.perf();
    let mut v = match perf::stats(std::iter::once(&w), cfg) {
        Some(st) => serde_json::to_value(st).unwrap_or(Value::Null),
        None => return json!({ "checks": 0 }),
    };
    if let Value::Object(m) = &mut v {
        let mut top = Slowest::new(cfg.top_slowest);
        for s in w.samples() {
            top.offer(c.name(), s);
        }
        m.insert("top_slowest".into(), Value::Array(top.into_json()));
        m.insert(
            "regression".into(),
            w.regression().map_or(Value::Null, |(b, r)| {
                json!({ "baseline_p50_ms": perf::round2(b), "current_p50_ms": perf::round2(r) })
            }),
        );
    }
    v
}

/// The verdict alone, from the same cache as the whole answer (the
/// anonymous `summary` view): of every component, or of one.
pub(super) async fn verdict_now(s: &Shared, component: Option<&str>) -> Result<Status, ApiError> {
    let rt = s.current();
    let selected = select(&rt, component)?.of(&rt);
    let results = latest_of(s, selected, rt.config.health.cache_ttl).await;
    Ok(verdict(
        selected
            .iter()
            .zip(&results)
            .map(|(c, l)| (c.cfg.critical, l.status)),
    ))
}

/// Which components an answer shows.
#[derive(Clone, Copy)]
enum Selection {
    All,
    /// The one `?component=` names (its index).
    One(usize),
}

impl Selection {
    fn of(self, rt: &Components) -> &[Arc<Component>] {
        match self {
            Selection::All => &rt.components,
            Selection::One(i) => std::slice::from_ref(&rt.components[i]),
        }
    }
}

/// Every component, or the one `?component=` names (404 when unknown).
fn select(rt: &Components, component: Option<&str>) -> Result<Selection, ApiError> {
    Ok(match component {
        Some(name) => Selection::One(
            rt.index_of(name)
                .ok_or_else(|| ApiError::NotFound(format!("no component named `{name}`")))?,
        ),
        None => Selection::All,
    })
}
