//! An http probe's keys (and a `/probe` module's, the same without `url`):
//! the raw serde structs, then [`Spec`], validated with every problem
//! reported — URL, method, headers, credentials, redirects, proxy, TLS
//! files, `expect:` and the levels.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper::header::{self, HeaderName, HeaderValue};
use regex::Regex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::Value;

use super::expect::{Expect, Pattern, StatusPat};
use crate::config::check::Checker;
use crate::config::units::{Dur, Secret, Size, format_duration};
use crate::config::yaml::Node;
use crate::net::tls::{Identity, usable_roots};
use crate::net::{Proxy, Request, Target, basic_auth};

const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// The largest `max_body_bytes`: a body is held whole, and inflated and
/// judged, at every check.
const MAX_MAX_BODY: u64 = 64 * 1024 * 1024;
const DEFAULT_MAX_REDIRECTS: u32 = 5;
const DEFAULT_CERT_WARN: Duration = Duration::from_secs(14 * 86_400);
const DEFAULT_CERT_CRITICAL: Duration = Duration::from_secs(2 * 86_400);

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

/// An http probe's validated configuration, shared: a `/probe` request
/// or a reload clones the handle, not the data (which is also what keeps
/// `ProbeSpec` small).
#[derive(Clone, Debug, PartialEq)]
pub struct Spec(pub(super) Arc<SpecData>);

impl std::ops::Deref for Spec {
    type Target = SpecData;

    fn deref(&self) -> &SpecData {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpecData {
    /// What is sent, and how (its `url` is `None` in a module).
    pub request: Request,
    /// Shared with the blocking thread that judges a large body.
    pub expect: Arc<Expect>,
    pub slow_above: Option<Duration>,
    pub cert_expiry_warn: Duration,
    pub cert_expiry_critical: Duration,
}

impl Spec {
    pub fn parse(node: &Node, path: &str, c: &Checker, also: &[&'static str]) -> Option<Spec> {
        parse_spec(node, path, c, also, false)
    }

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
        basic_auth(b.username.expose(), pw.as_ref()?.expose())
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

    let proxy = raw.proxy.and_then(|p| match Proxy::parse(p.expose()) {
        Ok(p) => Some(p),
        Err(e) => {
            bad(
                at("proxy"),
                e.to_string(),
                "write it like http://proxy.internal:3128",
            );
            None
        }
    });

    let ca = raw.ca_file.as_deref().and_then(|f| {
        let certs = read_certs(c, &at("ca_file"), f)?;
        if usable_roots(&certs) == 0 {
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

    let (expect, max_body) = parse_expect(raw.expect, &at("expect"), c, &mut ok);
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
        request: Request {
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
            max_body,
        },
        expect: Arc::new(expect),
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

/// `expect:`, and its `max_body_bytes` apart (the client's limit).
fn parse_expect(raw: RawExpect, at: &str, c: &Checker, ok: &mut bool) -> (Expect, u64) {
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
    } else if max_body_bytes > MAX_MAX_BODY {
        problem(
            "max_body_bytes",
            format!(
                "max_body_bytes is {max_body_bytes} bytes, above the most depwatch reads \
                 ({} MiB)",
                MAX_MAX_BODY >> 20
            ),
            "the whole body is read into memory at every check: check a smaller resource \
             (a health endpoint), or expect only the status and headers of a HEAD request",
        );
    }
    let expect = Expect {
        status,
        body_contains,
        body_regex,
        body_json,
        body_json_exists,
        headers,
    };
    (expect, max_body_bytes)
}

fn read_certs(c: &Checker, key: &str, file: &str) -> Option<Vec<CertificateDer<'static>>> {
    let p = c.path(key, file);
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
    let kp = c.path(&format!("{path}.key_file"), key_file);
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
    match Identity::new(chain, key) {
        Ok(id) => Some(id),
        Err(e) => {
            c.problem(
                &format!("{path}.key_file"),
                format!("the client key does not fit the certificate: {e}"),
                "cert_file and key_file must be a pair",
            );
            None
        }
    }
}
