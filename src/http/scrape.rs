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

use super::gzip::accepts_gzip;
use super::shared::AppState;
use crate::metrics::exposition::{Format, Inflating};
use crate::metrics::snapshot::Plain;

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
            Chunks::new([
                Bytes::from_static(head).into(),
                middle.into(),
                Bytes::from(rest).into(),
            ])
        }
        None => {
            let plain = match snap.plain() {
                Plain::Kept(b) => b.into(),
                Plain::Inflating(i) => Piece::Inflating(i),
            };
            Chunks::new([plain, Bytes::from(tail).into()])
        }
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

/// A body of a few shared chunks with a known length (Content-Length, no
/// copy of the cached exposition).
struct Chunks {
    chunks: VecDeque<Piece>,
    left: u64,
}

/// A part of a [`Chunks`] body.
enum Piece {
    Bytes(Bytes),
    /// A kept compressed encoding, inflated as the client reads.
    Inflating(Inflating),
}

impl From<Bytes> for Piece {
    fn from(b: Bytes) -> Piece {
        Piece::Bytes(b)
    }
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Inflating(i) => i.remaining(),
        }
    }
}

impl Chunks {
    fn new<const N: usize>(chunks: [Piece; N]) -> Chunks {
        let chunks: VecDeque<Piece> = chunks.into_iter().filter(|c| c.len() > 0).collect();
        Chunks {
            left: chunks.iter().map(Piece::len).sum(),
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
        let this = &mut *self;
        loop {
            let data = match this.chunks.pop_front() {
                None => return Poll::Ready(None),
                Some(Piece::Bytes(b)) => b,
                Some(Piece::Inflating(mut i)) => match i.next_piece() {
                    Some(b) => {
                        this.chunks.push_front(Piece::Inflating(i));
                        b
                    }
                    None => continue,
                },
            };
            this.left = this.left.saturating_sub(data.len() as u64);
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
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

    #[tokio::test]
    async fn a_body_inflated_as_it_is_read_has_its_length_and_every_byte() {
        use http_body::Body as _;
        use http_body_util::BodyExt;
        let text: String = (0..20_000)
            .map(|i| format!("depwatch_up{{component=\"c{i}\"}} 1\n"))
            .collect();
        let kept = crate::metrics::exposition::Deflated::new(text.as_bytes());
        let body = Chunks::new([
            Piece::Inflating(kept.inflating()),
            Bytes::from_static(b"# EOF\n").into(),
        ]);
        let len = text.len() as u64 + 6;
        assert_eq!(body.size_hint().exact(), Some(len));
        let mut body = std::pin::pin!(body);
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(f) = body.frame().await {
            let data = f.unwrap().into_data().unwrap();
            assert!(data.len() <= crate::metrics::exposition::CHUNK);
            got.extend_from_slice(&data);
            frames += 1;
        }
        assert!(frames > 3, "{frames} frames");
        assert_eq!(got.len() as u64, len);
        assert_eq!(&got[..text.len()], text.as_bytes());
        assert!(got.ends_with(b"# EOF\n"));
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
