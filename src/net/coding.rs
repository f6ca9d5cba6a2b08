//! The body as the server meant it: a partner that compresses although it
//! was not asked to (CDNs, frameworks that always do) sends gzip or
//! deflate, which `expect:` would otherwise read as binary. At most the
//! body limit once inflated (a small body may inflate to a great deal);
//! other codings are left as they came (the expectation says which).

use hyper::header;

use crate::probe::core::{CheckError, Reason};

/// The most a body buffer is sized for before its bytes arrive.
pub(super) const PRESIZE_MAX: u64 = 64 << 10;

/// A compressed body larger than this is inflated on a blocking thread
/// (about a millisecond a MiB), not in the way of every other check.
const INFLATE_INLINE_MAX: usize = 128 << 10;

/// `body` as sent under `headers`: inflated when its Content-Encoding is
/// one this client reads, up to `limit` bytes.
pub(super) async fn decoded(
    headers: &hyper::HeaderMap,
    body: Vec<u8>,
    limit: u64,
) -> Result<Vec<u8>, CheckError> {
    match content_coding(headers) {
        None => Ok(body),
        Some(coding) if body.len() > INFLATE_INLINE_MAX => {
            tokio::task::spawn_blocking(move || inflated(&coding, body, limit))
                .await
                .unwrap_or_else(|e| {
                    Err(CheckError::new(
                        Reason::Internal,
                        format!("inflating the body: {e}"),
                    ))
                })
        }
        Some(coding) => inflated(&coding, body, limit),
    }
}

/// The answer's Content-Encoding, lower case, when it is one this client
/// inflates (gzip, x-gzip, deflate).
fn content_coding(headers: &hyper::HeaderMap) -> Option<String> {
    let coding = headers
        .get(header::CONTENT_ENCODING)?
        .to_str()
        .ok()?
        .trim()
        .to_ascii_lowercase();
    matches!(coding.as_str(), "gzip" | "x-gzip" | "deflate").then_some(coding)
}

/// `body` inflated from `coding` (see [`content_coding`]), up to `limit`.
fn inflated(coding: &str, body: Vec<u8>, limit: u64) -> Result<Vec<u8>, CheckError> {
    use std::io::Read;
    if body.is_empty() {
        return Ok(body);
    }
    let read = |r: &mut dyn Read| {
        let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(PRESIZE_MAX as usize));
        r.take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map(|_| out)
    };
    let out = match coding {
        "deflate" => read(&mut flate2::read::ZlibDecoder::new(&body[..]))
            // Some servers send deflate without its zlib wrapper.
            .or_else(|_| read(&mut flate2::read::DeflateDecoder::new(&body[..]))),
        _ => read(&mut flate2::read::MultiGzDecoder::new(&body[..])),
    };
    match out {
        Ok(out) if out.len() as u64 > limit => Err(CheckError::new(
            Reason::BodyTooLarge,
            format!(
                "the body is larger than max_body_bytes ({limit} bytes) once inflated \
                 (Content-Encoding: {coding}, {} bytes sent)",
                body.len()
            ),
        )),
        Ok(out) => Ok(out),
        Err(e) => Err(CheckError::new(
            Reason::BadResponse,
            format!("the body says Content-Encoding: {coding} but does not inflate: {e}"),
        )),
    }
}
