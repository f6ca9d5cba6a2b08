//! gzip for the answers people and scripts read whole: the status page and
//! `/api/health` (and its `?component=` form). At 10,000 components the page
//! is 15 MB of HTML and the health answer 5 MB of JSON; compressed they are
//! a tenth of that or less, which is what a browser over a VPN or a script
//! across a region waits for. A client that does not ask (load balancers,
//! plain curl) gets the plain answer as before, at no cost. `/metrics`
//! compresses its own shared encoding (`scrape.rs`); the event stream is
//! never compressed (each event must reach the browser when it is sent).

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use flate2::write::GzEncoder;

/// Answers shorter than this go plain: a packet either way.
pub const MIN_LEN: u64 = 1024;

/// Whether `Accept-Encoding` allows gzip: `gzip` with a quality above 0,
/// or, when gzip is not named, `*` with a quality above 0.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut star = false;
    for coding in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let q = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        if name.eq_ignore_ascii_case("gzip") {
            return q > 0.0;
        }
        star |= name == "*" && q > 0.0;
    }
    star
}

/// The middleware: the answer compressed when the request accepts gzip and
/// the answer is not known to be short; `Vary: Accept-Encoding` on every
/// answer it passes (caches must keep the two forms apart).
pub async fn compress(req: Request, next: Next) -> Response {
    let gzip = req.method() != Method::HEAD && accepts_gzip(req.headers());
    let mut res = next.run(req).await;
    let short = http_body::Body::size_hint(res.body())
        .exact()
        .is_some_and(|n| n < MIN_LEN);
    let h = res.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if !gzip || short || h.contains_key(header::CONTENT_ENCODING) {
        return res;
    }
    h.remove(header::CONTENT_LENGTH);
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    res.map(|body| Body::new(Gzip::new(body)))
}

/// A body compressed as it is read: each piece of the answer goes through
/// one gzip stream (fast level), whatever it produced so far is sent, and
/// the member ends with the answer.
struct Gzip {
    inner: Body,
    /// `None` once the trailer was sent.
    enc: Option<GzEncoder<Vec<u8>>>,
}

impl Gzip {
    fn new(inner: Body) -> Gzip {
        Gzip {
            inner,
            enc: Some(GzEncoder::new(Vec::new(), flate2::Compression::fast())),
        }
    }
}

impl http_body::Body for Gzip {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let Some(enc) = this.enc.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers: none of the compressed answers has them.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    // Into a Vec: cannot fail.
                    let _ = enc.write_all(&data);
                    let out = std::mem::take(enc.get_mut());
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(out.into()))));
                    }
                }
                Some(Err(e)) => {
                    this.enc = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let out = this.enc.take().and_then(|e| e.finish().ok());
                    let out = Bytes::from(out.unwrap_or_default());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.enc.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn with(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn gzip_is_chosen_as_http_says() {
        assert!(accepts_gzip(&with("gzip")));
        assert!(accepts_gzip(&with("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(accepts_gzip(&with("br, *;q=0.1")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("gzip;q=0, *")));
        assert!(!accepts_gzip(&with("*;q=0")));
        assert!(!accepts_gzip(&with("identity, br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn a_body_in_pieces_is_one_gzip_member_of_them_all() {
        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..50)
            .map(|i| Ok(Bytes::from(format!("{{\"piece\":{i}}},").repeat(200))))
            .collect();
        let whole: String = pieces
            .iter()
            .map(|p| String::from_utf8(p.as_ref().unwrap().to_vec()).unwrap())
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(pieces));
        let gz = axum::body::to_bytes(Body::new(Gzip::new(body)), usize::MAX)
            .await
            .unwrap();
        assert!(
            gz.len() < whole.len() / 10,
            "{} of {}",
            gz.len(),
            whole.len()
        );
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, whole);
    }
}
