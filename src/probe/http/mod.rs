//! `kind: http` — a partner HTTP API, checked the way a real client calls it:
//! a fresh connection per check (DNS, TCP connect, TLS handshake, request,
//! first byte, bounded body read, each timed), the answer checked against
//! `expect`, the peer certificate's expiry read during the handshake.
//!
//! Also the templates (`modules:`) and target allow-list that `/probe` uses,
//! and [`Client`], the one HTTP client of depwatch (storage's `source: http`
//! sends its GET through it).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use regex::Regex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, FamiliesOf, Outcome, Probe, Reason,
    Status,
};
use crate::config::check::Checker;
use crate::config::units::format_duration;
use crate::config::units::{Dur, Secret, Size};
use crate::config::yaml::Node;
use crate::metrics::kit::{ComponentOnly, GaugeF, SeriesGate};
use crate::util::text::short;

/// How a partner API check fails (the counters of these start at 0).
pub const REASONS: &[Reason] = &[
    Reason::Timeout,
    Reason::Connect,
    Reason::Dns,
    Reason::Tls,
    Reason::Status,
    Reason::Expectation,
    Reason::BodyTooLarge,
];

const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
const DEFAULT_MAX_REDIRECTS: u32 = 5;
const DEFAULT_CERT_WARN: Duration = Duration::from_secs(14 * 86_400);
const DEFAULT_CERT_CRITICAL: Duration = Duration::from_secs(2 * 86_400);
/// The longest proxy CONNECT answer head we read before giving up.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

// ---------------------------------------------------------------- config --

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: Option<String>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    body: Option<String>,
    bearer_token: Option<Secret>,
    bearer_token_file: Option<String>,
    basic_auth: Option<RawBasic>,
    follow_redirects: Option<bool>,
    max_redirects: Option<u32>,
    follow_redirects_with_credentials: Option<bool>,
    proxy: Option<Secret>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default)]
    expect: RawExpect,
    slow_above: Option<Dur>,
    cert_expiry_warn: Option<Dur>,
    cert_expiry_critical: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasic {
    username: Secret,
    password: Option<Secret>,
    password_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    status: Option<Vec<Value>>,
    body_contains: Option<Value>,
    body_regex: Option<Value>,
    body_json: Option<BTreeMap<String, Value>>,
    body_json_exists: Option<Vec<String>>,
    headers: Option<BTreeMap<String, String>>,
    max_body_bytes: Option<Size>,
}

/// Where a request goes. Never holds credentials: userinfo in a URL is
/// refused at load time (it would leak into logs); `basic_auth` holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let uri: Uri = s
            .parse()
            // The text is not echoed: it may hold credentials.
            .map_err(|e| format!("not a URL ({e})"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("unsupported scheme `{other}`")),
            None => return Err("the URL has no scheme".into()),
        };
        let auth = uri.authority().ok_or("the URL has no host")?;
        if auth.as_str().contains('@') {
            return Err("credentials in the URL would leak into logs".into());
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        Ok(Target {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    fn default_port(&self) -> bool {
        self.port == if self.https { 443 } else { 80 }
    }

    /// `host[:port]` as the Host header writes it.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL without its query (queries often carry API keys): safe for
    /// messages and health details.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme(),
            self.authority(),
            redact_query(&self.path)
        )
    }

    fn absolute(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority(), self.path)
    }

    fn same_origin(&self, o: &Target) -> bool {
        self.https == o.https && self.host == o.host && self.port == o.port
    }

    /// Resolves a `Location` header against this URL. Only http and https
    /// are followed: any other scheme (`file:`, `gopher:`, ...) is refused
    /// rather than read as a relative path.
    fn join(&self, loc: &str) -> Result<Target, Refused> {
        if let Some((scheme, rest)) = split_scheme(loc) {
            return match scheme.to_ascii_lowercase().as_str() {
                s @ ("http" | "https") => {
                    Target::parse(&format!("{s}:{rest}")).map_err(Refused::Invalid)
                }
                other => Err(Refused::Scheme(other.to_string())),
            };
        }
        if let Some(rest) = loc.strip_prefix("//") {
            return Target::parse(&format!("{}://{rest}", self.scheme())).map_err(Refused::Invalid);
        }
        let path = if loc.starts_with('/') {
            loc.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{loc}")
        };
        Target::parse(&format!("{}://{}{}", self.scheme(), self.authority(), path))
            .map_err(Refused::Invalid)
    }
}

/// Why a `Location` cannot be followed.
#[derive(Debug, PartialEq)]
enum Refused {
    /// A scheme other than http(s), lowercased.
    Scheme(String),
    Invalid(String),
}

/// The scheme of an absolute URL reference (RFC 3986: a letter, then
/// letters, digits, `+`, `-` or `.`, then `:`) and what follows the `:`.
/// `None` for a relative reference.
fn split_scheme(loc: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = loc.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

fn redact_query(s: &str) -> String {
    match s.split_once('?') {
        Some((p, _)) => format!("{p}?…"),
        None => s.to_string(),
    }
}

/// An accepted status: one code or a class such as `2xx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPat {
    Code(u16),
    Class(u16),
}

impl StatusPat {
    fn parse(v: &Value) -> Option<StatusPat> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .filter(|c| (100..600).contains(c))
                .map(|c| StatusPat::Code(c as u16)),
            Value::String(s) => {
                let s = s.to_ascii_lowercase();
                if let Some(d) = s.strip_suffix("xx").filter(|d| d.len() == 1) {
                    d.parse()
                        .ok()
                        .filter(|d| (1..6).contains(d))
                        .map(StatusPat::Class)
                } else {
                    s.parse()
                        .ok()
                        .filter(|c| (100..600).contains(c))
                        .map(StatusPat::Code)
                }
            }
            _ => None,
        }
    }

    fn matches(self, code: u16) -> bool {
        match self {
            StatusPat::Code(c) => c == code,
            StatusPat::Class(d) => code / 100 == d,
        }
    }

    fn show(self) -> String {
        match self {
            StatusPat::Code(c) => c.to_string(),
            StatusPat::Class(d) => format!("{d}xx"),
        }
    }
}

/// A regex compared by its source (so a reload can tell whether it changed).
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl PartialEq for Pattern {
    fn eq(&self, o: &Self) -> bool {
        self.0.as_str() == o.0.as_str()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    pub status: Vec<StatusPat>,
    pub body_contains: Vec<String>,
    pub body_regex: Vec<Pattern>,
    /// JSON pointer → the value it must equal.
    pub body_json: Vec<(String, Value)>,
    pub body_json_exists: Vec<String>,
    /// Header → a substring its value must contain ("" = only present).
    pub headers: Vec<(HeaderName, String)>,
    pub max_body_bytes: u64,
}

/// A client certificate and its key (the key never printed).
#[derive(Clone)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl PartialEq for Identity {
    fn eq(&self, o: &Self) -> bool {
        self.chain == o.chain && self.key.secret_der() == o.key.secret_der()
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({} certificate(s), key ***)", self.chain.len())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization` value, from the proxy URL's userinfo.
    auth: Option<HeaderValue>,
}

/// An http probe's validated configuration, shared: a `/probe` request
/// or a reload clones the handle, not the data (which is also what keeps
/// `ProbeSpec` small).
#[derive(Clone, Debug, PartialEq)]
pub struct Spec(Arc<SpecData>);

impl std::ops::Deref for Spec {
    type Target = SpecData;

    fn deref(&self) -> &SpecData {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpecData {
    /// `None` in a module (the target comes with each `/probe` request).
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
    pub expect: Expect,
    pub slow_above: Option<Duration>,
    pub cert_expiry_warn: Duration,
    pub cert_expiry_critical: Duration,
}

impl Spec {
    pub fn parse(node: &Node, path: &str, c: &Checker, also: &[&'static str]) -> Option<Spec> {
        parse_spec(node, path, c, also, false)
    }

    /// A plain GET of `url` with `headers`, its body read up to `max_body`
    /// bytes: no redirects followed, no proxy, the system's trusted roots.
    /// The request of storage's `source: http`.
    pub fn get(url: Target, headers: Vec<(HeaderName, HeaderValue)>, max_body: u64) -> Spec {
        Spec(Arc::new(SpecData {
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
            expect: Expect {
                status: vec![StatusPat::Class(2)],
                body_contains: Vec::new(),
                body_regex: Vec::new(),
                body_json: Vec::new(),
                body_json_exists: Vec::new(),
                headers: Vec::new(),
                max_body_bytes: max_body,
            },
            slow_above: None,
            cert_expiry_warn: DEFAULT_CERT_WARN,
            cert_expiry_critical: DEFAULT_CERT_CRITICAL,
        }))
    }
}

fn parse_spec(
    node: &Node,
    path: &str,
    c: &Checker,
    also: &[&'static str],
    template: bool,
) -> Option<Spec> {
    let raw: Raw = c.parse_kind(node, path, also)?;
    let at = |k: &str| format!("{path}.{k}");
    let mut ok = true;
    let mut bad = |key: String, msg: String, hint: &str| {
        c.problem(&key, msg, hint);
        ok = false;
    };

    let url = match (&raw.url, template) {
        (Some(_), true) => {
            bad(
                at("url"),
                "a module has no url".into(),
                "the target comes with each request: /probe?target=URL&module=NAME",
            );
            None
        }
        (None, false) => {
            bad(
                path.to_string(),
                "missing required key `url`".into(),
                "e.g. url: https://api.partner.example/health",
            );
            None
        }
        (Some(u), false) => match Target::parse(u) {
            Ok(t) => Some(t),
            Err(e) => {
                bad(
                    at("url"),
                    format!("invalid url: {e}"),
                    "write it like https://api.partner.example/health; put credentials in basic_auth",
                );
                None
            }
        },
        (None, true) => None,
    };

    let method = match raw.method.as_deref().map(str::to_ascii_uppercase) {
        None => Method::GET,
        Some(m) => match Method::from_bytes(m.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                bad(
                    at("method"),
                    format!("invalid method `{m}`"),
                    "e.g. GET, HEAD, POST",
                );
                Method::GET
            }
        },
    };

    let mut headers = Vec::new();
    for (k, v) in &raw.headers {
        let name = HeaderName::from_bytes(k.as_bytes());
        let value = HeaderValue::from_str(v.expose());
        match (name, value) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                headers.push((n, v));
            }
            (Err(_), _) => bad(
                at(&format!("headers.{k}")),
                format!("invalid header name `{k}`"),
                "letters, digits and '-'",
            ),
            (_, Err(_)) => bad(
                at(&format!("headers.{k}")),
                "the header value has characters a header cannot carry".into(),
                "no newlines or control characters",
            ),
        }
    }

    let bearer = c.secret(
        path,
        "bearer_token",
        raw.bearer_token,
        raw.bearer_token_file.as_deref(),
    );
    let basic = raw.basic_auth.and_then(|b| {
        let p = at("basic_auth");
        let none = b.password.is_none() && b.password_file.is_none();
        let pw = c.secret(&p, "password", b.password, b.password_file.as_deref());
        if none {
            c.problem(
                &p,
                "basic_auth has no password",
                "set password (e.g. ${PARTNER_PASSWORD}) or password_file",
            );
        }
        basic_value(b.username.expose(), pw.as_ref()?.expose())
    });
    let auth = match (bearer, basic) {
        (Some(_), Some(_)) => {
            bad(
                at("basic_auth"),
                "both bearer_token and basic_auth are set".into(),
                "keep one of them",
            );
            None
        }
        (Some(t), None) => match HeaderValue::from_str(&format!("Bearer {}", t.expose())) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Some(v)
            }
            Err(_) => {
                bad(
                    at("bearer_token"),
                    "the token has characters a header cannot carry".into(),
                    "check for a trailing newline or spaces",
                );
                None
            }
        },
        (None, b) => b,
    };
    if auth.is_some() && headers.iter().any(|(n, _)| *n == header::AUTHORIZATION) {
        bad(
            at("headers.Authorization"),
            "an Authorization header and bearer_token/basic_auth are both set".into(),
            "keep one of them",
        );
    }

    let follow = raw.follow_redirects.unwrap_or(true);
    let redirect_credentials = raw.follow_redirects_with_credentials.unwrap_or(false);
    if !follow && redirect_credentials {
        bad(
            at("follow_redirects_with_credentials"),
            "follow_redirects_with_credentials is set but follow_redirects is false".into(),
            "remove one of them",
        );
    }
    let max_redirects = match (follow, raw.max_redirects) {
        (false, Some(_)) => {
            bad(
                at("max_redirects"),
                "max_redirects is set but follow_redirects is false".into(),
                "remove one of them",
            );
            0
        }
        (false, None) => 0,
        (true, Some(n)) if n == 0 || n > 30 => {
            bad(
                at("max_redirects"),
                format!("max_redirects {n} is out of range"),
                "use 1 to 30, or follow_redirects: false",
            );
            DEFAULT_MAX_REDIRECTS
        }
        (true, n) => n.unwrap_or(DEFAULT_MAX_REDIRECTS),
    };

    let proxy = raw.proxy.and_then(|p| match parse_proxy(p.expose()) {
        Ok(p) => Some(p),
        Err(e) => {
            bad(at("proxy"), e, "write it like http://proxy.internal:3128");
            None
        }
    });

    let ca = raw.ca_file.as_deref().and_then(|f| {
        let certs = read_certs(c, &at("ca_file"), f)?;
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            c.problem(
                &at("ca_file"),
                format!("{f} holds no usable CA certificate"),
                "a PEM file with -----BEGIN CERTIFICATE----- blocks",
            );
            return None;
        }
        Some(certs)
    });
    let identity = match (raw.cert_file.as_deref(), raw.key_file.as_deref()) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            bad(
                at(if raw.cert_file.is_some() {
                    "key_file"
                } else {
                    "cert_file"
                }),
                "a client certificate needs both cert_file and key_file".into(),
                "set both, as PEM files",
            );
            None
        }
        (Some(cf), Some(kf)) => read_identity(c, path, cf, kf),
    };
    if raw.insecure_skip_verify && raw.ca_file.is_some() {
        bad(
            at("insecure_skip_verify"),
            "insecure_skip_verify makes ca_file useless".into(),
            "keep ca_file and drop insecure_skip_verify",
        );
    }

    let expect = parse_expect(raw.expect, &at("expect"), c, &mut ok);
    let cert_expiry_warn = raw.cert_expiry_warn.map_or(DEFAULT_CERT_WARN, |d| d.0);
    let cert_expiry_critical = raw
        .cert_expiry_critical
        .map_or(DEFAULT_CERT_CRITICAL, |d| d.0);
    if cert_expiry_critical >= cert_expiry_warn {
        c.problem(
            &at("cert_expiry_critical"),
            format!(
                "cert_expiry_critical {} is not below cert_expiry_warn {}",
                format_duration(cert_expiry_critical),
                format_duration(cert_expiry_warn)
            ),
            "the warning comes first: e.g. warn 14d, critical 2d",
        );
        ok = false;
    }
    if raw.slow_above.is_some_and(|d| d.0.is_zero()) {
        c.problem(
            &at("slow_above"),
            "slow_above must be above zero",
            "e.g. 2s",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(Spec(Arc::new(SpecData {
        url,
        method,
        headers,
        body: raw.body,
        auth,
        max_redirects,
        redirect_credentials,
        redirect_allowed: None,
        proxy,
        ca,
        identity,
        insecure_skip_verify: raw.insecure_skip_verify,
        expect,
        slow_above: raw.slow_above.map(|d| d.0),
        cert_expiry_warn,
        cert_expiry_critical,
    })))
}

fn one_or_many(v: Option<Value>) -> Result<Vec<String>, ()> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(()),
            })
            .collect(),
        Some(_) => Err(()),
    }
}

fn parse_expect(raw: RawExpect, at: &str, c: &Checker, ok: &mut bool) -> Expect {
    let mut problem = |key: &str, msg: String, hint: &str| {
        c.problem(&format!("{at}.{key}"), msg, hint);
        *ok = false;
    };
    let mut status = Vec::new();
    for (i, v) in raw.status.unwrap_or_default().iter().enumerate() {
        match StatusPat::parse(v) {
            Some(p) => status.push(p),
            None => problem(
                &format!("status[{i}]"),
                format!(
                    "`{}` is not a status code or class",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                ),
                "e.g. 200, 204 or \"2xx\"",
            ),
        }
    }
    if status.is_empty() {
        status.push(StatusPat::Class(2));
    }
    let body_contains = one_or_many(raw.body_contains).unwrap_or_else(|_| {
        problem(
            "body_contains",
            "expected a string or a list of strings".into(),
            "",
        );
        Vec::new()
    });
    let mut body_regex = Vec::new();
    match one_or_many(raw.body_regex) {
        Ok(list) => {
            for r in list {
                match Regex::new(&r) {
                    Ok(r) => body_regex.push(Pattern(r)),
                    Err(e) => problem(
                        "body_regex",
                        format!(
                            "invalid regex: {}",
                            e.to_string().lines().last().unwrap_or("").trim()
                        ),
                        "a regular expression, e.g. \"version\":\\s*\"2",
                    ),
                }
            }
        }
        Err(()) => problem(
            "body_regex",
            "expected a string or a list of strings".into(),
            "",
        ),
    }
    let mut body_json = Vec::new();
    for (ptr, v) in raw.body_json.unwrap_or_default() {
        if !ptr.starts_with('/') {
            problem(
                &format!("body_json.{ptr}"),
                format!("`{ptr}` is not a JSON pointer"),
                "a pointer starts with /, e.g. \"/status\" or \"/checks/0/ok\"",
            );
        } else {
            body_json.push((ptr, v));
        }
    }
    let body_json_exists = raw.body_json_exists.unwrap_or_default();
    for (i, ptr) in body_json_exists.iter().enumerate() {
        if !ptr.starts_with('/') {
            problem(
                &format!("body_json_exists[{i}]"),
                format!("`{ptr}` is not a JSON pointer"),
                "a pointer starts with /, e.g. \"/data\"",
            );
        }
    }
    let mut headers = Vec::new();
    for (k, v) in raw.headers.unwrap_or_default() {
        match HeaderName::from_bytes(k.as_bytes()) {
            Ok(n) => headers.push((n, v)),
            Err(_) => problem(
                &format!("headers.{k}"),
                format!("invalid header name `{k}`"),
                "letters, digits and '-'",
            ),
        }
    }
    let max_body_bytes = raw.max_body_bytes.map_or(DEFAULT_MAX_BODY, |s| s.0);
    if max_body_bytes == 0 {
        problem(
            "max_body_bytes",
            "max_body_bytes must be above zero".into(),
            "e.g. 64KiB",
        );
    }
    Expect {
        status,
        body_contains,
        body_regex,
        body_json,
        body_json_exists,
        headers,
        max_body_bytes,
    }
}

fn parse_proxy(s: &str) -> Result<Proxy, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| "the proxy is not a URL".to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err(
            "only http:// proxies are supported (CONNECT is used for https targets)".into(),
        );
    }
    let auth = uri.authority().ok_or("the proxy URL has no host")?;
    let header = match auth.as_str().rsplit_once('@') {
        Some((userinfo, _)) => {
            let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            Some(basic_value(u, p).ok_or("the proxy credentials cannot be sent")?)
        }
        None => None,
    };
    Ok(Proxy {
        host: auth
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: auth.port_u16().unwrap_or(80),
        auth: header,
    })
}

fn basic_value(user: &str, password: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!(
        "Basic {}",
        base64(format!("{user}:{password}").as_bytes())
    ))
    .ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Standard base64 with padding (RFC 4648), for Basic credentials.
fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn read_certs(c: &Checker, key: &str, file: &str) -> Option<Vec<CertificateDer<'static>>> {
    let p = c.resolve(file);
    let bytes = match c.read_file(&p) {
        Ok(b) => b,
        Err(e) => {
            c.problem(
                key,
                format!("cannot read {}: {e}", p.display()),
                "check the path and that depwatch may read it",
            );
            return None;
        }
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            c.problem(
                key,
                format!("{} holds no PEM certificate", p.display()),
                "a PEM file with -----BEGIN CERTIFICATE----- blocks",
            );
            None
        }
    }
}

fn read_identity(c: &Checker, path: &str, cert_file: &str, key_file: &str) -> Option<Identity> {
    let chain = read_certs(c, &format!("{path}.cert_file"), cert_file)?;
    let kp = c.resolve(key_file);
    let key = c
        .read_file(&kp)
        .map_err(|e| format!("cannot read {}: {e}", kp.display()))
        .and_then(|b| {
            PrivateKeyDer::from_pem_slice(&b)
                .map_err(|_| format!("{} holds no PEM private key", kp.display()))
        });
    let key = match key {
        Ok(k) => k,
        Err(e) => {
            c.problem(
                &format!("{path}.key_file"),
                e,
                "a PEM key (PKCS#8, PKCS#1 or SEC1)",
            );
            return None;
        }
    };
    // Let rustls say now whether the key fits the certificate.
    let probe = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain.clone(), key.clone_key());
    if let Err(e) = probe {
        c.problem(
            &format!("{path}.key_file"),
            format!("the client key does not fit the certificate: {e}"),
            "cert_file and key_file must be a pair",
        );
        return None;
    }
    Some(Identity {
        chain,
        key: Arc::new(key),
    })
}

// --------------------------------------------------------------- modules --

/// A pattern of URLs a module may probe: `https://*.partner.example/*`.
/// Matched by parts, not as text, so `*` in the host never crosses into the
/// path (`https://evil.test/x.partner.example/` does not match the above).
#[derive(Clone, Debug, PartialEq)]
pub struct TargetPattern {
    source: String,
    https: bool,
    host: Pattern,
    /// `None`: any port.
    port: Option<u16>,
    path: Pattern,
}

impl TargetPattern {
    pub fn parse(s: &str) -> Result<TargetPattern, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("a pattern starts with http:// or https://")?;
        let https = match scheme {
            "http" => false,
            "https" => true,
            _ => return Err(format!("unsupported scheme `{scheme}`")),
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/*"),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or("unclosed [ in the host")?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return Err(format!("invalid host `{host}`"));
        }
        let port = match port {
            None => Some(if https { 443 } else { 80 }),
            Some("*") => None,
            Some(p) => Some(p.parse().map_err(|_| format!("invalid port `{p}`"))?),
        };
        let glob = |g: &str, any: &str| {
            let body: Vec<String> = g.split('*').map(regex::escape).collect();
            Regex::new(&format!("^{}$", body.join(any))).map(Pattern)
        };
        Ok(TargetPattern {
            source: s.to_string(),
            https,
            host: glob(&host.to_ascii_lowercase(), "[a-z0-9.-]*").map_err(|e| e.to_string())?,
            port,
            path: glob(path, ".*").map_err(|e| e.to_string())?,
        })
    }

    pub fn matches(&self, t: &Target) -> bool {
        self.https == t.https
            && self.port.is_none_or(|p| p == t.port)
            && self.host.0.is_match(&t.host)
            && self.path.0.is_match(&t.path)
    }
}

/// A named http probe template for `/probe?target=URL&module=NAME`.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub timeout: Duration,
    pub allowed_targets: Vec<TargetPattern>,
    pub spec: Spec,
}

impl Module {
    pub fn allows(&self, t: &Target) -> bool {
        self.allowed_targets.iter().any(|p| p.matches(t))
    }

    /// The module aimed at `target`; every redirect it follows must match
    /// `allowed_targets` too (else a partner could point it anywhere).
    pub fn spec_for(&self, target: Target) -> Spec {
        Spec(Arc::new(SpecData {
            url: Some(target),
            redirect_allowed: Some(self.allowed_targets.clone()),
            ..(*self.spec.0).clone()
        }))
    }
}

impl Spec {
    /// Parses a module's http keys: like a probe's, without `url`.
    pub fn parse_template(
        node: &Node,
        path: &str,
        c: &Checker,
        also: &[&'static str],
    ) -> Option<Spec> {
        parse_spec(node, path, c, also, true)
    }
}

// --------------------------------------------------------------- metrics --

/// The HTTP status of a failed request as a label: the code, or `none`
/// when no answer came.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Code(pub u16);

impl EncodeLabelValue for Code {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        if self.0 == 0 {
            std::fmt::Write::write_str(e, "none")
        } else {
            std::fmt::Write::write_fmt(e, format_args!("{}", self.0))
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub component: String,
    pub reason: Reason,
    pub code: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub component: String,
    pub phase: &'static str,
}

const PHASES: [&str; 5] = ["dns", "connect", "tls", "first_byte", "transfer"];

fn duration_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

pub struct Metrics {
    requests: Family<ComponentOnly, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ComponentOnly, Histogram, fn() -> Histogram>,
    cert_expiry: Family<ComponentOnly, GaugeF>,
    phase: Family<PhaseLabels, GaugeF>,
    status_code: Family<ComponentOnly, Gauge>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(duration_buckets as fn() -> Histogram),
            cert_expiry: Family::default(),
            phase: Family::default(),
            status_code: Family::default(),
        };
        r.register(
            "http_requests",
            "Checks of the partner API (one request per check, redirects it followed included)",
            m.requests.clone(),
        );
        r.register(
            "http_request_failures",
            "Failed requests, by reason and HTTP status (none: no answer)",
            m.failures.clone(),
        );
        r.register(
            "http_duration_seconds",
            "Time from the DNS lookup to the last body byte, redirects included",
            m.duration.clone(),
        );
        r.register(
            "http_tls_cert_expiry_timestamp_seconds",
            "When the partner's certificate expires (Unix time; also set when it failed verification)",
            m.cert_expiry.clone(),
        );
        r.register(
            "http_phase_duration_seconds",
            "Time spent in each phase of the last request (dns, connect, tls, first_byte, transfer)",
            m.phase.clone(),
        );
        r.register(
            "http_status_code",
            "The HTTP status of the last answer (0: none)",
            m.status_code.clone(),
        );
        m
    }

    fn forget(&self, c: &ComponentOnly, failures: &[FailureLabels]) {
        for l in failures {
            self.failures.remove(l);
        }
        self.requests.remove(c);
        self.duration.remove(c);
        self.cert_expiry.remove(c);
        self.status_code.remove(c);
        for phase in PHASES {
            self.phase.remove(&PhaseLabels {
                component: c.component.clone(),
                phase,
            });
        }
    }
}

// ----------------------------------------------------------------- probe --

pub struct HttpProbe {
    client: Client,
    label: ComponentOnly,
    metrics: Arc<Metrics>,
    /// The failure series written so far (reason × code), to forget them.
    failure_series: std::sync::Mutex<Vec<FailureLabels>>,
    gate: SeriesGate,
}

pub fn build<F: FamiliesOf<Metrics> + ?Sized>(
    spec: &Spec,
    ctx: &BuildCtx<'_, F>,
) -> Result<HttpProbe, BuildError> {
    let mut probe = build_with(
        spec,
        ctx.name,
        FamiliesOf::<Metrics>::families(ctx.metrics).clone(),
    )?;
    probe.gate = ctx.gate.clone();
    Ok(probe)
}

/// Builds a probe that writes into `metrics` under the component `name`
/// (`/probe` uses a fresh registry per request).
pub fn build_with(spec: &Spec, name: &str, metrics: Arc<Metrics>) -> Result<HttpProbe, BuildError> {
    let client = Client::new(spec).map_err(|message| BuildError {
        name: name.to_string(),
        message,
    })?;
    Ok(HttpProbe {
        client,
        label: ComponentOnly {
            component: name.to_string(),
        },
        metrics,
        failure_series: std::sync::Mutex::new(Vec::new()),
        gate: SeriesGate::default(),
    })
}

/// Sends a spec's request and reads the answer: DNS, TCP connect (through
/// the proxy), TLS with the spec's trust settings, HTTP/1.1, redirects as
/// configured, the body up to `expect.max_body_bytes`. A fresh connection
/// each time. It judges nothing and writes no metrics: the http probe checks
/// the answer against `expect`; storage's `source: http` reads its JSON.
pub struct Client {
    spec: Spec,
    /// The verifier of `ca_file` (built once); `None`: system roots or insecure.
    custom_verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl Client {
    /// No I/O: the system's roots are loaded at the first TLS handshake.
    pub fn new(spec: &Spec) -> Result<Client, String> {
        if spec.url.is_none() {
            return Err("an http probe needs a url".into());
        }
        let custom_verifier = match &spec.ca {
            Some(certs) if !spec.insecure_skip_verify => {
                let mut store = RootCertStore::empty();
                store.add_parsable_certificates(certs.iter().cloned());
                Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
                        .build()
                        .map_err(|e| format!("ca_file: {e}"))?,
                )
            }
            _ => None,
        };
        Ok(Client {
            spec: spec.clone(),
            custom_verifier,
        })
    }

    /// One request and its answer, whatever its status. Fails with dns,
    /// connect, tls, bad_response, body_too_large, or status (too many
    /// redirects); a timeout is the caller's (it drops the future).
    pub async fn fetch(&self) -> Result<Answer, CheckError> {
        self.run(&mut Timings::default()).await
    }
}

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The verifier of the system's trust store, loaded once, on first use.
fn system_verifier() -> Result<Arc<WebPkiServerVerifier>, String> {
    static V: OnceLock<Result<Arc<WebPkiServerVerifier>, String>> = OnceLock::new();
    V.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(
                "no trusted CA certificates found on this system (install ca-certificates, or set ca_file)"
                    .into(),
            );
        }
        tracing::debug!(roots = added, "Loaded the system's CA certificates.");
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| e.to_string())
    })
    .clone()
}

/// Verifies like `inner` (or not at all when insecure) and remembers the
/// leaf certificate's notAfter — also when verification then fails, so
/// that an expired certificate still shows when it expired.
#[derive(Debug)]
struct Capture {
    inner: Option<Arc<WebPkiServerVerifier>>,
    algs: WebPkiSupportedAlgorithms,
    not_after: Arc<AtomicI64>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(t) = cert_not_after(end_entity.as_ref()) {
            self.not_after.store(t, Ordering::Relaxed);
        }
        match &self.inner {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// What one check measured, filled as it goes (a timeout keeps what was
/// reached).
#[derive(Default)]
struct Timings {
    dns: Duration,
    connect: Duration,
    tls: Duration,
    first_byte: Duration,
    transfer: Duration,
    status: u16,
    cert_not_after: Option<i64>,
    tls_version: Option<&'static str>,
    redirects: u32,
    body_bytes: usize,
    final_url: Option<String>,
}

/// Records a check into the metrics when it ends, and also when it is cut
/// by the timeout (the future is dropped): then it counts as `timeout`.
struct Recorder<'a> {
    probe: &'a HttpProbe,
    started: Instant,
    t: Timings,
    done: bool,
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.probe
                .record(&self.t, self.started.elapsed(), Some(Reason::Timeout));
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Aborts the connection task when the check ends or is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP answer, its body read in full (within the limit).
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

fn ms(d: Duration) -> Value {
    json!((d.as_secs_f64() * 100_000.0).round() / 100.0)
}

impl HttpProbe {
    fn record(&self, t: &Timings, total: Duration, failed: Option<Reason>) {
        // Also called when a check is dropped (`Recorder`), e.g. by the
        // reload that removed the component: its series stay removed.
        let Some(_live) = self.gate.open() else {
            return;
        };
        let m = &self.metrics;
        m.requests.get_or_create(&self.label).inc();
        m.duration
            .get_or_create(&self.label)
            .observe(total.as_secs_f64());
        if let Some(reason) = failed {
            let l = FailureLabels {
                component: self.label.component.clone(),
                reason,
                code: Code(t.status),
            };
            m.failures.get_or_create(&l).inc();
            let mut seen = self
                .failure_series
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&l) {
                seen.push(l);
            }
        }
        if let Some(na) = t.cert_not_after {
            m.cert_expiry.get_or_create(&self.label).set(na as f64);
        }
        m.status_code
            .get_or_create(&self.label)
            .set(i64::from(t.status));
        for (phase, d) in
            PHASES
                .into_iter()
                .zip([t.dns, t.connect, t.tls, t.first_byte, t.transfer])
        {
            m.phase
                .get_or_create(&PhaseLabels {
                    component: self.label.component.clone(),
                    phase,
                })
                .set(d.as_secs_f64());
        }
    }

    fn details(&self, t: &Timings, total: Duration) -> Map<String, Value> {
        let mut d = Map::new();
        if let Some(u) = &t.final_url {
            d.insert("url".into(), json!(u));
        }
        d.insert(
            "status_code".into(),
            if t.status == 0 {
                Value::Null
            } else {
                json!(t.status)
            },
        );
        d.insert(
            "phases_ms".into(),
            json!({
                "dns": ms(t.dns), "connect": ms(t.connect), "tls": ms(t.tls),
                "first_byte": ms(t.first_byte), "transfer": ms(t.transfer),
                "total": ms(total),
            }),
        );
        d.insert("body_bytes".into(), json!(t.body_bytes));
        d.insert("redirects".into(), json!(t.redirects));
        if let Some(v) = t.tls_version {
            d.insert("tls_version".into(), json!(v));
        }
        if let Some(na) = t.cert_not_after {
            let left = na as f64 - crate::util::time::unix_now();
            d.insert(
                "cert_not_after".into(),
                json!(crate::util::time::rfc3339(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(na.max(0) as u64)
                )),
            );
            d.insert(
                "cert_expires_in_days".into(),
                json!((left / 864.0).round() / 100.0),
            );
        }
        d
    }
}

impl Client {
    async fn run(&self, t: &mut Timings) -> Result<Answer, CheckError> {
        let spec = &self.spec;
        let first = spec
            .url
            .clone()
            .ok_or_else(|| CheckError::new(Reason::Internal, "no url"))?;
        let mut url = first.clone();
        let mut method = spec.method.clone();
        let mut body = spec.body.clone();
        loop {
            t.final_url = Some(url.redacted());
            // The configured headers (an API key as much as Authorization)
            // and auth go only to the configured origin, unless the
            // configuration says the redirects may have them.
            let send_credentials = spec.redirect_credentials || url.same_origin(&first);
            let answer = self
                .exchange(&url, &method, body.as_deref(), send_credentials, t)
                .await?;
            let code = answer.status;
            let location = answer
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok());
            if spec.max_redirects == 0 || !code.is_redirection() || location.is_none() {
                return Ok(answer);
            }
            if t.redirects >= spec.max_redirects {
                return Err(CheckError::new(
                    Reason::Status,
                    format!(
                        "more than {} redirects (last: {} from {})",
                        spec.max_redirects,
                        code.as_u16(),
                        url.redacted()
                    ),
                ));
            }
            let loc = location.unwrap_or_default();
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
            if let Some(allowed) = &spec.redirect_allowed
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
            url = next;
            t.redirects += 1;
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
        method: &Method,
        body: Option<&str>,
        send_credentials: bool,
        t: &mut Timings,
    ) -> Result<Answer, CheckError> {
        let spec = &self.spec;
        let (host, port) = match &spec.proxy {
            Some(p) => (p.host.as_str(), p.port),
            None => (url.host.as_str(), url.port),
        };
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let t0 = Instant::now();
                let found = tokio::net::lookup_host((host, port)).await.map_err(|e| {
                    CheckError::new(Reason::Dns, format!("cannot resolve {host}: {e}"))
                })?;
                t.dns += t0.elapsed();
                let v: Vec<SocketAddr> = found.collect();
                if v.is_empty() {
                    return Err(CheckError::new(
                        Reason::Dns,
                        format!("{host} has no address"),
                    ));
                }
                v
            }
        };

        let t0 = Instant::now();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some((a, e)),
            }
        }
        let tcp = match (tcp, last) {
            (Some(s), _) => s,
            (None, Some((a, e))) => {
                return Err(CheckError::new(
                    Reason::Connect,
                    format!("cannot connect to {a}: {e}"),
                ));
            }
            (None, None) => return Err(CheckError::new(Reason::Connect, "no address")),
        };
        // Small requests: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let mut io: Box<dyn Io> = Box::new(tcp);
        if let (Some(p), true) = (&spec.proxy, url.https) {
            io = connect_tunnel(io, p, url).await?;
        }
        t.connect += t0.elapsed();

        if url.https {
            let t0 = Instant::now();
            let not_after = Arc::new(AtomicI64::new(i64::MIN));
            let config = self.tls_config(not_after.clone())?;
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
                    format!("TLS handshake with {} failed: {e}", url.authority()),
                )
            })?;
            t.tls += t0.elapsed();
            t.tls_version = tls.get_ref().1.protocol_version().and_then(|v| v.as_str());
            io = Box::new(tls);
        }

        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| CheckError::new(Reason::Connect, format!("HTTP handshake: {e}")))?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));

        let target = if spec.proxy.is_some() && !url.https {
            url.absolute()
        } else {
            url.path.clone()
        };
        let mut req = Request::builder().method(method.clone()).uri(target);
        let h = req
            .headers_mut()
            .ok_or_else(|| CheckError::new(Reason::Internal, "request builder"))?;
        if let Ok(v) = HeaderValue::from_str(&url.authority()) {
            h.insert(header::HOST, v);
        }
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("depwatch/", env!("CARGO_PKG_VERSION"))),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        if send_credentials {
            for (k, v) in &spec.headers {
                h.insert(k.clone(), v.clone());
            }
            if let Some(a) = &spec.auth {
                h.insert(header::AUTHORIZATION, a.clone());
            }
        }
        if let (Some(Proxy { auth: Some(a), .. }), false) = (&spec.proxy, url.https) {
            h.insert(header::PROXY_AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_string())))
            .map_err(|e| CheckError::new(Reason::Internal, format!("request: {e}")))?;

        let t0 = Instant::now();
        let resp = sender.send_request(req).await.map_err(|e| {
            let reason = if e.is_parse() || e.is_incomplete_message() {
                Reason::BadResponse
            } else {
                Reason::Connect
            };
            CheckError::new(
                reason,
                format!("no valid answer from {}: {e}", url.authority()),
            )
        })?;
        t.first_byte += t0.elapsed();
        t.status = resp.status().as_u16();

        let (parts, mut incoming) = resp.into_parts();
        let limit = spec.expect.max_body_bytes;
        let too_large = |n: String| {
            CheckError::new(
                Reason::BodyTooLarge,
                format!("the body is larger than max_body_bytes ({limit} bytes): {n}"),
            )
        };
        if parts.status.is_redirection() && spec.max_redirects > 0 {
            // The body of a redirect is not read: the connection is dropped.
            return Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: Vec::new(),
            });
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = declared.filter(|l| *l > limit) {
            return Err(too_large(format!("Content-Length is {len}")));
        }
        let t0 = Instant::now();
        let mut buf = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                CheckError::new(
                    Reason::BadResponse,
                    format!("the body from {} broke off: {e}", url.authority()),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > limit {
                    // Stop reading here: the rest never enters memory.
                    return Err(too_large(format!("more than {limit} bytes arrived")));
                }
                buf.extend_from_slice(&data);
            }
        }
        t.transfer += t0.elapsed();
        t.body_bytes = buf.len();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: buf,
        })
    }

    /// A TLS configuration per check: its session cache starts empty, so
    /// each check does the full handshake a new client would.
    fn tls_config(&self, not_after: Arc<AtomicI64>) -> Result<ClientConfig, CheckError> {
        let tls_err = |m: String| CheckError::new(Reason::Tls, m);
        let inner = if self.spec.insecure_skip_verify {
            None
        } else {
            match &self.custom_verifier {
                Some(v) => Some(v.clone()),
                None => Some(system_verifier().map_err(tls_err)?),
            }
        };
        let p = provider();
        let capture = Capture {
            inner,
            algs: p.signature_verification_algorithms,
            not_after,
        };
        let builder = ClientConfig::builder_with_provider(p)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(capture));
        let mut cfg = match &self.spec.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| tls_err(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

impl HttpProbe {
    fn evaluate(&self, a: &Answer, t: &Timings, total: Duration) -> CheckResult {
        let spec = &self.client.spec;
        let e = &spec.expect;
        let code = a.status.as_u16();
        let details = || self.details(t, total);
        let fail = |reason: Reason, msg: String| {
            let mut err = CheckError::new(reason, msg);
            err.details = details();
            Err(err)
        };
        if !e.status.iter().any(|p| p.matches(code)) {
            let want: Vec<String> = e.status.iter().map(|p| p.show()).collect();
            return fail(
                Reason::Status,
                format!("status {code}, expected {}", want.join(" or ")),
            );
        }
        for (name, want) in &e.headers {
            let got = a.headers.get(name).and_then(|v| v.to_str().ok());
            match got {
                None => {
                    return fail(Reason::Expectation, format!("header {name} is missing"));
                }
                Some(v) if !v.contains(want.as_str()) => {
                    return fail(
                        Reason::Expectation,
                        format!("header {name} does not contain `{want}`"),
                    );
                }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&a.body);
        for s in &e.body_contains {
            if !text.contains(s.as_str()) {
                return fail(
                    Reason::Expectation,
                    format!("the body does not contain `{s}`"),
                );
            }
        }
        for r in &e.body_regex {
            if !r.0.is_match(&text) {
                return fail(
                    Reason::Expectation,
                    format!("the body does not match /{}/", r.0.as_str()),
                );
            }
        }
        if !e.body_json.is_empty() || !e.body_json_exists.is_empty() {
            let doc: Value = match serde_json::from_slice(&a.body) {
                Ok(v) => v,
                Err(err) => {
                    return fail(Reason::Expectation, format!("the body is not JSON: {err}"));
                }
            };
            for p in &e.body_json_exists {
                if doc.pointer(p).is_none() {
                    return fail(Reason::Expectation, format!("JSON {p} is missing"));
                }
            }
            for (p, want) in &e.body_json {
                match doc.pointer(p) {
                    None => return fail(Reason::Expectation, format!("JSON {p} is missing")),
                    Some(got) if !json_eq(got, want) => {
                        return fail(
                            Reason::Expectation,
                            format!(
                                "JSON {p} is {}, expected {}",
                                short(got, 80),
                                short(want, 80)
                            ),
                        );
                    }
                    _ => {}
                }
            }
        }
        let mut out = Outcome::healthy(details());
        if let Some(slow) = spec.slow_above.filter(|s| total > *s) {
            out.raise(
                Status::Degraded,
                format!(
                    "answered in {:.0}ms, slower than {}",
                    total.as_secs_f64() * 1000.0,
                    format_duration(slow)
                ),
            );
        }
        if let Some(na) = t.cert_not_after {
            let left = na as f64 - crate::util::time::unix_now();
            let days = left / 86_400.0;
            let what = if left <= 0.0 {
                "the certificate has expired".to_string()
            } else {
                format!("the certificate expires in {days:.1} days")
            };
            if left < spec.cert_expiry_critical.as_secs_f64() {
                out.raise(Status::Unhealthy, what);
            } else if left < spec.cert_expiry_warn.as_secs_f64() {
                out.raise(Status::Degraded, what);
            }
        }
        Ok(out)
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`) and a
/// scalar written as a YAML string matches the same JSON number or bool
/// (`"200"` matches `200`): config authors rarely mean the type.
fn json_eq(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(_) | Value::Bool(_), Value::String(s)) => {
            serde_json::from_str::<Value>(s).is_ok_and(|w| json_eq(got, &w))
        }
        _ => got == want,
    }
}

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

impl Probe for HttpProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            let mut rec = Recorder {
                probe: self,
                started: Instant::now(),
                t: Timings::default(),
                done: false,
            };
            let answer = self.client.run(&mut rec.t).await;
            let total = rec.started.elapsed();
            let result = match answer {
                Ok(a) => self.evaluate(&a, &rec.t, total),
                Err(mut e) => {
                    e.details = self.details(&rec.t, total);
                    Err(e)
                }
            };
            rec.done = true;
            self.record(&rec.t, total, result.as_ref().err().map(|e| e.reason));
            result
        })
    }

    fn forget(&self) {
        let seen = self
            .failure_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.metrics.forget(&self.label, &seen);
    }
}

// ------------------------------------------------------------------- DER --

/// The notAfter of an X.509 certificate (DER) as Unix seconds. A dozen
/// lines of DER walking instead of a full X.509 parser: only this one
/// field is needed, and the certificate was already parsed by webpki.
pub fn cert_not_after(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = tlv(der).filter(|(t, _, _)| *t == 0x30)?;
    let (_, tbs, _) = tlv(cert).filter(|(t, _, _)| *t == 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2; // version
    }
    rest = tlv(rest)?.2; // serialNumber
    rest = tlv(rest)?.2; // signature algorithm
    rest = tlv(rest)?.2; // issuer
    let (_, validity, _) = tlv(rest).filter(|(t, _, _)| *t == 0x30)?;
    let after = tlv(validity)?.2; // skip notBefore
    let (tag, time, _) = tlv(after)?;
    parse_der_time(tag, std::str::from_utf8(time).ok()?)
}

/// One DER element: (tag, content, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((tag, b.get(head..end)?, b.get(end..)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_der_time(tag: u8, s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(0..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| rest.get(r)?.parse::<i64>().ok();
    let (mo, d, h, mi, se) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pa ss"), "dXNlcjpwYSBzcw==");
    }

    #[test]
    fn status_patterns() {
        let p = |v: Value| StatusPat::parse(&v);
        assert_eq!(p(json!(200)), Some(StatusPat::Code(200)));
        assert_eq!(p(json!("2xx")), Some(StatusPat::Class(2)));
        assert_eq!(p(json!("404")), Some(StatusPat::Code(404)));
        assert_eq!(p(json!("7xx")), None);
        assert_eq!(p(json!(99)), None);
        assert!(StatusPat::Class(2).matches(204));
        assert!(!StatusPat::Class(2).matches(301));
    }

    #[test]
    fn targets_parse_and_redact() {
        let t = Target::parse("https://API.example.com/v1/health?key=s3cret").unwrap();
        assert_eq!(t.host, "api.example.com");
        assert_eq!(t.port, 443);
        assert_eq!(t.redacted(), "https://api.example.com/v1/health?…");
        assert!(Target::parse("https://u:p@x.example/").is_err());
        assert!(Target::parse("ftp://x.example/").is_err());
        let v6 = Target::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.authority(), "[::1]:8080");
    }

    #[test]
    fn redirects_join() {
        let t = Target::parse("http://a.example:81/x/y?q=1").unwrap();
        assert_eq!(t.join("/z").unwrap().absolute(), "http://a.example:81/z");
        assert_eq!(t.join("z").unwrap().absolute(), "http://a.example:81/x/z");
        assert_eq!(
            t.join("https://b.example/").unwrap().absolute(),
            "https://b.example/"
        );
        assert_eq!(
            t.join("//c.example/p").unwrap().absolute(),
            "http://c.example/p"
        );
        assert_eq!(
            t.join("HTTPS://d.example/").unwrap().absolute(),
            "https://d.example/"
        );
        // Other schemes are refused, never read as a relative path.
        assert_eq!(
            t.join("file:///etc/passwd"),
            Err(Refused::Scheme("file".into()))
        );
        assert_eq!(
            t.join("Gopher://x.example/"),
            Err(Refused::Scheme("gopher".into()))
        );
        assert_eq!(
            t.join("z/a:b").unwrap().absolute(),
            "http://a.example:81/x/z/a:b"
        );
    }

    #[test]
    fn allowed_target_patterns_match_by_part() {
        let p = TargetPattern::parse("https://*.partner.example/*").unwrap();
        let ok = |s: &str| p.matches(&Target::parse(s).unwrap());
        assert!(ok("https://api.partner.example/health"));
        assert!(ok("https://a.b.partner.example/"));
        assert!(!ok("http://api.partner.example/health"));
        assert!(!ok("https://api.partner.example:8443/health"));
        assert!(!ok("https://evil.test/x.partner.example/"));
        assert!(!ok("https://partner.example.evil.test/"));
        let any_port = TargetPattern::parse("http://127.0.0.1:*/*").unwrap();
        assert!(any_port.matches(&Target::parse("http://127.0.0.1:5000/x").unwrap()));
        assert!(!any_port.matches(&Target::parse("http://127.0.0.2:5000/x").unwrap()));
        assert!(TargetPattern::parse("partner.example").is_err());
    }

    #[test]
    fn json_equality_is_lenient_on_number_types() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!(200), &json!("200")));
        assert!(json_eq(&json!("ok"), &json!("ok")));
        assert!(!json_eq(&json!("ok"), &json!("degraded")));
    }

    #[test]
    fn der_time_and_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_der_time(0x17, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_der_time(0x18, "20500101000000Z"), Some(2_524_608_000));
        assert_eq!(parse_der_time(0x17, "500101000000Z"), Some(-631_152_000));
    }

    #[test]
    fn cert_not_after_reads_rcgen_certificates() {
        for (y, m, d) in [(2031, 7, 15), (2049, 12, 31), (2051, 1, 2)] {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params.not_after = rcgen::date_time_ymd(y, m, d);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(
                cert_not_after(cert.der()),
                Some(days_from_civil(i64::from(y), i64::from(m), i64::from(d)) * 86_400),
                "{y}-{m}-{d}"
            );
        }
        assert_eq!(cert_not_after(b"\x30\x03\x02\x01"), None);
    }
}
