//! `GET /metrics`: the latest results in the format the scraper asks for,
//! gzip-compressed when it accepts gzip (Prometheus always does). Never
//! runs a probe; the body is the shared snapshot of the registry (see
//! `metrics::snapshot`) followed by this scrape's own timestamp.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::shared::AppState;
use crate::metrics::exposition::Format;

pub(super) async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    s.metrics.last_scrape.set(crate::util::time::unix_now());
    let format = format_of(&headers);
    let gzip = accepts_gzip(&headers);
    let snap = s
        .metrics
        .snapshots
        .get(&s.metrics.registry, &s.metrics.lines, format, gzip)
        .await;
    let tail = s.metrics.tail(format);
    let body = match snap.deflated().filter(|_| gzip) {
        Some(d) => {
            let (head, middle, rest) = d.gzip_with(tail.as_bytes());
            Chunks::new([Bytes::from_static(head), middle, Bytes::from(rest)])
        }
        None => Chunks::new([snap.plain(), Bytes::from(tail)]),
    };
    let mut r = Body::new(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// OpenMetrics when the scraper lists it (Prometheus does, first), else
/// the 0.0.4 text format.
pub(super) fn format_of(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*`, with a quality
/// above 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && q > 0.0
        })
}

/// A body of a few shared chunks with a known length (Content-Length, no
/// copy of the cached exposition).
struct Chunks {
    chunks: VecDeque<Bytes>,
    left: u64,
}

impl Chunks {
    fn new<const N: usize>(chunks: [Bytes; N]) -> Chunks {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        Chunks {
            left: chunks.iter().map(|c| c.len() as u64).sum(),
            chunks,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| {
            self.left -= c.len() as u64;
            Ok(http_body::Frame::data(c))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn gzip_is_chosen_as_http_says() {
        let e = header::ACCEPT_ENCODING;
        assert!(accepts_gzip(&with(e.clone(), "gzip")));
        assert!(accepts_gzip(&with(e.clone(), "deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&with(e.clone(), "*")));
        assert!(!accepts_gzip(&with(e.clone(), "gzip;q=0")));
        assert!(!accepts_gzip(&with(e.clone(), "identity, br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        // Prometheus' own header.
        assert!(accepts_gzip(&with(e, "gzip")));
    }

    #[test]
    fn openmetrics_only_when_listed() {
        let a = header::ACCEPT;
        assert_eq!(
            format_of(&with(
                a.clone(),
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(format_of(&with(a, "*/*")), Format::Text);
        assert_eq!(format_of(&HeaderMap::new()), Format::Text);
    }
}
