//! The one HTTP client of depwatch (the http probe and storage's
//! `source: http` both send through it): a [`Request`] as configured, sent
//! on a fresh connection each time — DNS, TCP connect (through a proxy,
//! CONNECT for https), TLS, HTTP/1.1, redirects as configured, the body read
//! up to a limit — with every phase timed ([`Timings`]). It judges nothing
//! and writes no metrics.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request as HttpRequest, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::coding::{PRESIZE_MAX, decoded};
use super::connect::connect_first;
use super::error::NetError;
use super::lookup::{Failed, Lookups};
use super::target::{Refused, Target, TargetPattern, port_of};
use super::tls::{Identity, Trust};
use super::wire::{MAX_INFORMATIONAL, Plain, Wire};
pub use super::wire::{Phase, Timings};
use crate::probe::core::{CheckError, Reason};
use crate::util::text::with_causes;

/// The longest proxy CONNECT answer head we read before giving up.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

/// The most headers an answer may have (hyper's default, 100, fails
/// partners that browsers and curl read: many `Set-Cookie` or `Link`
/// lines). The head as a whole stays within hyper's ~400 KiB buffer.
const MAX_HEADERS: usize = 1000;

/// What to send and how: everything of an http probe's configuration but
/// what it expects of the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `None` in a `/probe` module (the target comes with each request).
    pub url: Option<Target>,
    pub method: Method,
    /// Values are marked sensitive: `Debug` never shows them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<String>,
    /// The `Authorization` value built from bearer or basic auth.
    pub auth: Option<HeaderValue>,
    /// 0: redirects are answers, not followed.
    pub max_redirects: u32,
    /// Send `headers` and `auth` to another origin a redirect points to.
    pub redirect_credentials: bool,
    /// The URLs a redirect may lead to (a `/probe` module's
    /// `allowed_targets`); `None`: any http(s) URL.
    pub redirect_allowed: Option<Vec<TargetPattern>>,
    pub proxy: Option<Proxy>,
    /// Trusted roots from `ca_file` (instead of the system's).
    pub ca: Option<Vec<CertificateDer<'static>>>,
    pub identity: Option<Identity>,
    pub insecure_skip_verify: bool,
    /// The most body bytes read; more is a `body_too_large` failure.
    pub max_body: u64,
}

impl Request {
    /// A plain GET of `url` with `headers`, its body read up to `max_body`
    /// bytes: no redirects followed, no proxy, the system's trusted roots.
    /// The request of storage's `source: http`.
    pub fn get(url: Target, headers: Vec<(HeaderName, HeaderValue)>, max_body: u64) -> Request {
        Request {
            url: Some(url),
            method: Method::GET,
            headers,
            body: None,
            auth: None,
            max_redirects: 0,
            redirect_credentials: false,
            redirect_allowed: None,
            proxy: None,
            ca: None,
            identity: None,
            insecure_skip_verify: false,
            max_body,
        }
    }
}

/// An HTTP proxy (`http://[user:password@]host:port`).
#[derive(Clone, Debug, PartialEq)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization` value, from the proxy URL's userinfo.
    auth: Option<HeaderValue>,
}

impl Proxy {
    pub fn parse(s: &str) -> Result<Proxy, NetError> {
        let uri: Uri = s.parse().map_err(|_| NetError::ProxyNotAUrl)?;
        if uri.scheme_str() != Some("http") {
            return Err(NetError::ProxyScheme);
        }
        let auth = uri.authority().ok_or(NetError::ProxyNoHost)?;
        let header = match auth.as_str().rsplit_once('@') {
            Some((userinfo, _)) => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                Some(basic_auth(u, p).ok_or(NetError::ProxyCredentials)?)
            }
            None => None,
        };
        Ok(Proxy {
            host: auth
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: port_of(auth, 80)?,
            auth: header,
        })
    }
}

/// A `Basic` credentials header value (RFC 7617: base64 of `user:password`),
/// marked sensitive. Base64 is always a valid header value: `None` is only
/// what `HeaderValue`'s constructor could say.
pub fn basic_auth(user: &str, password: &str) -> Option<HeaderValue> {
    let encoded = STANDARD.encode(format!("{user}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// An HTTP answer, its body read in full (within the limit).
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

/// Sends a [`Request`] and reads the answer. A fresh connection each time.
pub struct Client {
    request: Request,
    trust: Trust,
    /// The configured URL's forms every check uses, made once.
    first: Option<Forms>,
}

/// One request of a check (a redirect makes another): its method, body,
/// and whether the configured credentials go with it.
struct Hop<'a> {
    method: &'a Method,
    body: Option<&'a str>,
    credentials: bool,
}

/// A URL as a request uses it.
#[derive(Clone)]
struct Forms {
    /// Without its query: for the details.
    redacted: Arc<str>,
    /// The Host header (none when it is no valid header value).
    host: Option<HeaderValue>,
    /// The request target: the path, or the whole URL to a plain proxy
    /// (or why it is none).
    target: Result<Uri, String>,
}

impl Forms {
    fn of(url: &Target, proxy: bool) -> Forms {
        let target = if proxy && !url.https {
            url.absolute()
        } else {
            url.path.clone()
        };
        Forms {
            redacted: url.redacted().into(),
            host: HeaderValue::from_str(&url.authority()).ok(),
            target: Uri::try_from(target).map_err(|e| e.to_string()),
        }
    }
}

impl Client {
    /// No I/O: the system's roots are loaded at the first TLS handshake.
    pub fn new(request: &Request) -> Result<Client, NetError> {
        if request.url.is_none() {
            return Err(NetError::NoUrl);
        }
        let trust = Trust::new(
            request.ca.as_deref(),
            request.insecure_skip_verify,
            request.identity.clone(),
        )?;
        let first = request
            .url
            .as_ref()
            .map(|u| Forms::of(u, request.proxy.is_some()));
        Ok(Client {
            request: request.clone(),
            trust,
            first,
        })
    }

    /// One request and its answer, whatever its status. Fails with dns,
    /// connect, tls, bad_response, body_too_large, or status (too many
    /// redirects); a timeout is the caller's (it drops the future).
    pub async fn fetch(&self) -> Result<Answer, CheckError> {
        self.send(&mut Timings::default()).await
    }

    /// Like [`Client::fetch`], noting what it measures in `t` as it goes.
    pub async fn send(&self, t: &mut Timings) -> Result<Answer, CheckError> {
        let request = &self.request;
        let first = request
            .url
            .as_ref()
            .ok_or_else(|| CheckError::new(Reason::Internal, "no url"))?;
        // Borrowed until a redirect leads elsewhere.
        let mut url = std::borrow::Cow::Borrowed(first);
        let mut method = request.method.clone();
        let mut body = request.body.as_deref();
        loop {
            let forms = match (&url, &self.first) {
                (std::borrow::Cow::Borrowed(_), Some(f)) => f.clone(),
                _ => Forms::of(&url, request.proxy.is_some()),
            };
            t.final_url = Some(forms.redacted.clone());
            // The configured headers (an API key as much as Authorization)
            // and auth go only to the configured origin, unless the
            // configuration says the redirects may have them.
            let send_credentials = request.redirect_credentials || url.same_origin(first);
            let answer = self
                .exchange(
                    &url,
                    forms,
                    Hop {
                        method: &method,
                        body,
                        credentials: send_credentials,
                    },
                    t,
                )
                .await
                .map_err(|mut e| {
                    // An address the configuration never named: say how
                    // the check came to it.
                    if t.redirects > 0 {
                        e.message = format!(
                            "after {} redirect{} from {} to {}: {}",
                            t.redirects,
                            if t.redirects == 1 { "" } else { "s" },
                            first.redacted(),
                            url.redacted(),
                            e.message
                        );
                    }
                    e
                })?;
            let code = answer.status;
            // As UTF-8, not only visible ASCII: servers write `/café` as
            // it is (resolved as browsers do, percent-encoded).
            let location = answer
                .headers
                .get(header::LOCATION)
                .map(|v| std::str::from_utf8(v.as_bytes()));
            if request.max_redirects == 0 || !code.is_redirection() || location.is_none() {
                return Ok(answer);
            }
            if t.redirects >= request.max_redirects {
                return Err(CheckError::new(
                    Reason::Status,
                    format!(
                        "more than {} redirects (last: {} from {})",
                        request.max_redirects,
                        code.as_u16(),
                        url.redacted()
                    ),
                ));
            }
            let Some(Ok(loc)) = location else {
                return Err(CheckError::new(
                    Reason::BadResponse,
                    format!(
                        "bad redirect from {}: the Location header is not UTF-8 text \
                         (the partner's redirect is broken; or set follow_redirects: false and expect the {})",
                        url.redacted(),
                        code.as_u16()
                    ),
                ));
            };
            let next = url.join(loc).map_err(|e| match e {
                Refused::Scheme(scheme) => CheckError::new(
                    Reason::RedirectRefused,
                    format!(
                        "redirect from {} to a `{scheme}:` URL refused (only http and https are followed)",
                        url.redacted()
                    ),
                ),
                Refused::Invalid(e) => CheckError::new(
                    Reason::BadResponse,
                    format!("bad redirect from {}: {e}", url.redacted()),
                ),
            })?;
            if let Some(allowed) = &request.redirect_allowed
                && !allowed.iter().any(|p| p.matches(&next))
            {
                return Err(CheckError::new(
                    Reason::RedirectRefused,
                    format!(
                        "redirect from {} to {} refused: not in the module's allowed_targets",
                        url.redacted(),
                        next.redacted()
                    ),
                ));
            }
            url = std::borrow::Cow::Owned(next);
            t.redirects += 1;
            // The next hop's answer, or none: a 3xx is not the status of a
            // hop that could not connect (the error names the redirect).
            t.status = 0;
            if code == StatusCode::SEE_OTHER
                || ((code == StatusCode::MOVED_PERMANENTLY || code == StatusCode::FOUND)
                    && method == Method::POST)
            {
                method = Method::GET;
                body = None;
            }
        }
    }

    async fn exchange(
        &self,
        url: &Target,
        forms: Forms,
        hop: Hop<'_>,
        t: &mut Timings,
    ) -> Result<Answer, CheckError> {
        let request = &self.request;
        let (host, port) = match &request.proxy {
            Some(p) => (p.host.as_str(), p.port),
            None => (url.host.as_str(), url.port),
        };
        // An address in the URL is the one address: no list to allocate.
        let literal: [SocketAddr; 1];
        let found: Arc<[SocketAddr]>;
        let addrs: &[SocketAddr] = match host.parse::<IpAddr>() {
            Ok(ip) => {
                literal = [SocketAddr::new(ip, port)];
                &literal
            }
            Err(_) => {
                t.begin(Phase::Dns);
                found = Lookups::shared()
                    .resolve(host, port)
                    .await
                    .map_err(|e| match e {
                        Failed::NoAddress => {
                            CheckError::new(Reason::Dns, format!("{host} has no address"))
                        }
                        e => CheckError::new(Reason::Dns, format!("cannot resolve {host}: {e}")),
                    })?;
                t.end();
                &found
            }
        };

        t.begin(Phase::Connect);
        let tcp = connect_first(addrs).await.map_err(|(a, e)| {
            CheckError::new(Reason::Connect, format!("cannot connect to {a}: {e}"))
        })?;
        // Small requests: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        // The connection ends with a reset, as HAProxy's health checks end
        // theirs: by then the answer is read (or the check gave up on it),
        // and neither side keeps the connection in TIME_WAIT. A FIN, its
        // ACK and the partner's TIME_WAIT socket (whose 4-tuple the next
        // connection from a reused port meets) cost the checks thread a
        // fifth of each check at 10,000 probes (bench/http.sh).
        let _ = tcp.set_zero_linger();
        let wire = Arc::new(Wire::default());
        t.wire = Some(wire.clone());
        let mut io: Box<dyn Io> = Box::new(Plain(tcp, wire.clone()));
        if let (Some(p), true) = (&request.proxy, url.https) {
            io = connect_tunnel(io, p, url).await?;
        }
        t.end();

        if url.https {
            t.begin(Phase::Tls);
            let not_after = Arc::new(AtomicI64::new(i64::MIN));
            let config = self
                .trust
                .config(not_after.clone())
                .map_err(|e| CheckError::new(Reason::Tls, e.to_string()))?;
            let name = ServerName::try_from(url.host.clone()).map_err(|_| {
                CheckError::new(
                    Reason::Tls,
                    format!("`{}` is not a valid TLS name", url.host),
                )
            })?;
            let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, io)
                .await;
            let na = not_after.load(Ordering::Relaxed);
            if na != i64::MIN {
                t.cert_not_after = Some(na);
            }
            let tls = handshake.map_err(|e| {
                CheckError::new(
                    Reason::Tls,
                    format!(
                        "TLS handshake with {} failed: {e}{}",
                        url.authority(),
                        if plain_text_answer(&e) {
                            " (the server answered in plain text, not TLS: does this port take http:// rather than https://?)"
                        } else {
                            ""
                        }
                    ),
                )
            })?;
            t.end();
            t.tls_version = tls.get_ref().1.protocol_version().and_then(|v| v.as_str());
            io = Box::new(tls);
        }

        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_headers(MAX_HEADERS)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| CheckError::new(Reason::Connect, format!("HTTP handshake: {e}")))?;
        // The connection is driven here, beside the request, not as a task of
        // its own: no spawn, and no wake-up of another worker thread, per
        // check. When it ends first (the server closed it), the request ends
        // with what arrived or with the error it saw.
        let request_done = self.request_answer(sender, url, forms, hop, &wire, t);
        tokio::pin!(request_done, conn);
        tokio::select! {
            biased;
            answer = &mut request_done => answer,
            _ = &mut conn => request_done.await,
        }
    }

    /// The request and its answer over a connection that `exchange` drives.
    async fn request_answer(
        &self,
        mut sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        url: &Target,
        forms: Forms,
        hop: Hop<'_>,
        wire: &Arc<Wire>,
        t: &mut Timings,
    ) -> Result<Answer, CheckError> {
        let request = &self.request;
        let Hop {
            method,
            body,
            credentials: send_credentials,
        } = hop;

        let target = forms
            .target
            .map_err(|e| CheckError::new(Reason::Internal, format!("request: {e}")))?;
        let mut req = HttpRequest::builder().method(method.clone()).uri(target);
        let h = req
            .headers_mut()
            .ok_or_else(|| CheckError::new(Reason::Internal, "request builder"))?;
        if let Some(v) = forms.host {
            h.insert(header::HOST, v);
        }
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("depwatch/", env!("CARGO_PKG_VERSION"))),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        // One request per connection, and said so (as blackbox_exporter's
        // client does): the server may close as soon as it has answered.
        // (No TIME_WAIT on this host either way: the reset above.)
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        if send_credentials {
            for (k, v) in &request.headers {
                h.insert(k.clone(), v.clone());
            }
            if let Some(a) = &request.auth {
                h.insert(header::AUTHORIZATION, a.clone());
            }
        }
        if let (Some(Proxy { auth: Some(a), .. }), false) = (&request.proxy, url.https) {
            h.insert(header::PROXY_AUTHORIZATION, a.clone());
        }
        let mut req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_string())))
            .map_err(|e| CheckError::new(Reason::Internal, format!("request: {e}")))?;
        // Counted for the connection (`Plain`), which stops reading past
        // the limit.
        let seen = wire.clone();
        hyper::ext::on_informational(&mut req, move |_| {
            seen.informational.fetch_add(1, Ordering::Relaxed);
        });

        t.begin(Phase::FirstByte);
        t.head_from = wire.bytes.load(Ordering::Relaxed);
        let resp = sender.send_request(req).await.map_err(|e| {
            if wire.informational.load(Ordering::Relaxed) > MAX_INFORMATIONAL {
                return CheckError::new(
                    Reason::BadResponse,
                    format!(
                        "no valid answer from {}: more than {MAX_INFORMATIONAL} informational (1xx) answers \
                         came before it (the partner sends 100 Continue or 103 Early Hints in a loop)",
                        url.authority()
                    ),
                );
            }
            let reason = if e.is_parse() || e.is_incomplete_message() {
                Reason::BadResponse
            } else {
                Reason::Connect
            };
            let text = with_causes(&e);
            // What a TLS server's alert, or another protocol's greeting,
            // reads as: the usual slip is http:// for an https port.
            let hint = if e.is_parse() && text.contains("invalid HTTP version") {
                " (the answer is not HTTP/1.x: does this port take https://, or speak another protocol?)".into()
            } else if e.is_parse_too_large() {
                format!(
                    " (depwatch reads at most {MAX_HEADERS} headers, about 400 KiB in all: \
                     does the partner, or a proxy before it, add headers in a loop?)"
                )
            } else if e.is_incomplete_message() || io_kind(&e) == Some(io::ErrorKind::ConnectionReset)
            {
                // The connection was accepted, then ended with no answer.
                " (the partner ended the connection without answering: is it overloaded or \
                 restarting, or does it, or a proxy or firewall before it, refuse this client?)"
                    .into()
            } else {
                String::new()
            };
            CheckError::new(
                reason,
                format!("no valid answer from {}: {text}{hint}", url.authority()),
            )
        })?;
        t.end();
        t.status = resp.status().as_u16();

        let (parts, mut incoming) = resp.into_parts();
        let limit = request.max_body;
        let too_large = |n: String| {
            CheckError::new(
                Reason::BodyTooLarge,
                format!("the body is larger than max_body_bytes ({limit} bytes): {n}"),
            )
        };
        if parts.status.is_redirection() && request.max_redirects > 0 {
            // The body of a redirect is not read: the connection is dropped.
            return Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: Vec::new(),
            });
        }
        // The length of the body that follows, as hyper reads it: none
        // follows an answer to HEAD, or a 204 or 304, whose Content-Length
        // tells the size of what a GET would have had.
        let declared = hyper::body::Body::size_hint(&incoming).exact();
        if let Some(len) = declared.filter(|l| *l > limit) {
            return Err(too_large(format!("Content-Length is {len}")));
        }
        t.begin(Phase::Transfer);
        // Sized from what the server declares, up to a small bound: a
        // declaration alone (up to max_body_bytes) takes no memory.
        let mut buf = Vec::with_capacity(declared.map_or(0, |l| l.min(PRESIZE_MAX)) as usize);
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                CheckError::new(
                    Reason::BadResponse,
                    format!(
                        "the body from {} broke off: {}",
                        url.authority(),
                        with_causes(&e)
                    ),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > limit {
                    // Stop reading here: the rest never enters memory.
                    return Err(too_large(format!("more than {limit} bytes arrived")));
                }
                buf.extend_from_slice(&data);
                // So far: what a timeout that cuts the transfer reports.
                t.body_bytes = buf.len();
            }
        }
        t.end();
        t.body_bytes = buf.len();
        let body = decoded(&parts.headers, buf, limit).await?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// The kind of the I/O error under `e`, if one is.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}

/// Whether a failed handshake met a server that answered without TLS (a
/// plain HTTP server's `HTTP/1.1 400`): a record of no known content type.
fn plain_text_answer(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens a CONNECT tunnel through an HTTP proxy.
async fn connect_tunnel(
    mut io: Box<dyn Io>,
    p: &Proxy,
    url: &Target,
) -> Result<Box<dyn Io>, CheckError> {
    let err = |m: String| CheckError::new(Reason::Connect, m);
    // CONNECT always names the port, IPv6 literals in brackets.
    let hostport = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let req = format!("CONNECT {hostport} HTTP/1.1\r\nHost: {hostport}\r\n");
    let mut bytes = req.into_bytes();
    if let Some(a) = &p.auth {
        bytes.extend_from_slice(b"Proxy-Authorization: ");
        bytes.extend_from_slice(a.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    io.write_all(&bytes)
        .await
        .map_err(|e| err(format!("proxy CONNECT: {e}")))?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    // Byte by byte: the tunnel's first TLS bytes must stay unread.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_HEAD {
            return Err(err("the proxy's CONNECT answer is too long".into()));
        }
        let n = io
            .read(&mut byte)
            .await
            .map_err(|e| err(format!("proxy CONNECT: {e}")))?;
        if n == 0 {
            return Err(err("the proxy closed the connection during CONNECT".into()));
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(err(format!(
            "the proxy refused CONNECT to {}:{} with status {status}",
            url.host, url.port
        )));
    }
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_ports_are_read_past_credentials_and_checked() {
        let p = Proxy::parse("http://u:p@proxy.example:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.example", 3128));
        assert!(p.auth.is_some());
        assert_eq!(Proxy::parse("http://u:p@proxy.example").unwrap().port, 80);
        assert_eq!(Proxy::parse("http://[::1]:8888").unwrap().port, 8888);
        assert!(matches!(
            Proxy::parse("http://proxy.example:31280"),
            Ok(Proxy { port: 31280, .. })
        ));
        assert!(matches!(
            Proxy::parse("http://u:p@proxy.example:312800"),
            Err(NetError::Port(p)) if p == "312800"
        ));
    }

    #[test]
    fn basic_credentials_are_base64_with_padding() {
        let v = |u: &str, p: &str| basic_auth(u, p).unwrap().to_str().unwrap().to_string();
        assert_eq!(v("user", "pa ss"), "Basic dXNlcjpwYSBzcw==");
        // RFC 7617's example.
        assert_eq!(
            v("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(v("", ""), "Basic Og==");
        // Any byte is encoded, a newline too; the value never shows in Debug.
        assert!(basic_auth("a\nb", "").is_some_and(|h| h.is_sensitive()));
    }
}
