//! Who may reach depwatch, and how: the Prometheus exporter-toolkit web
//! configuration (`--web.config.file FILE`, or the same keys inline under
//! `web:`), `access:` (public / authenticated / summary per endpoint group)
//! and the bearer tokens of `auth:`.
//!
//! Only names and files are checked here (this is the ground floor: no
//! rustls, no bcrypt); `http::tls` builds the TLS server from them and
//! `http::access` checks credentials.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::check::Checker;
use super::units::Secret;
use super::yaml::{self, Node};

/// The exporter-toolkit web configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebConfig {
    pub tls: Option<TlsServer>,
    /// user → bcrypt hash.
    pub basic_auth_users: BTreeMap<String, Secret>,
    /// Extra answer headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
    /// exporter-toolkit's `rate_limit`: one request per `interval` on
    /// average, bursts of `burst`, for the whole server (429 beyond).
    pub rate_limit: Option<RateLimit>,
    /// Where it came from: `--web.config.file` (re-read on reload) or `web:`.
    pub file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub interval: std::time::Duration,
    pub burst: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsServer {
    pub cert: PemSource,
    pub key: PemSource,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    /// Subject alternative names a client certificate must carry one of.
    pub client_allowed_sans: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// Go names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    /// Go names (`X25519`, `CurveP256`, `CurveP384`); empty: rustls' defaults.
    pub curve_preferences: Vec<String>,
}

/// A certificate or key: a file (re-read when it changes) or inline PEM.
#[derive(Clone, Debug, PartialEq)]
pub enum PemSource {
    File(PathBuf),
    Inline(Secret),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// A certificate the server checked against `client_ca_file`.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The TLS 1.2 suites rustls implements, by their Go (exporter-toolkit) names.
pub const TLS12_SUITES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];
/// TLS 1.3 suites (Go does not let them be chosen; accepted, and honoured).
pub const TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];
pub const CURVES: &[&str] = &["X25519", "CurveP256", "CurveP384"];
/// The headers exporter-toolkit allows in `http_server_config.headers`.
const HEADERS: &[&str] = &[
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];

/// An endpoint group of `access:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Metrics,
    Probe,
    Health,
    Page,
    Events,
    Admin,
    Webhook,
}

impl Group {
    pub const ALL: [Group; 7] = [
        Group::Metrics,
        Group::Probe,
        Group::Health,
        Group::Page,
        Group::Events,
        Group::Admin,
        Group::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Metrics => "metrics",
            Group::Probe => "probe",
            Group::Health => "health",
            Group::Page => "page",
            Group::Events => "events",
            Group::Admin => "admin",
            Group::Webhook => "webhook",
        }
    }
}

/// Who may use an endpoint group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Public,
    Authenticated,
    /// Anonymous clients get the verdict only (`health`, `page`).
    Summary,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Public => "public",
            Level::Authenticated => "authenticated",
            Level::Summary => "summary",
        }
    }
}

/// `access:`: defaults keep everything but admin public.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    levels: [Level; 7],
}

impl Default for Access {
    fn default() -> Self {
        let mut levels = [Level::Public; 7];
        levels[Group::Admin as usize] = Level::Authenticated;
        Access { levels }
    }
}

impl Access {
    pub fn level(&self, g: Group) -> Level {
        self.levels[g as usize]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, Secret>>,
    http_server_config: Option<RawHttp>,
    rate_limit: Option<RawRate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    interval: Option<super::units::Dur>,
    burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    cert: Option<Secret>,
    key: Option<Secret>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_ca: Option<Secret>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    metrics: Option<String>,
    probe: Option<String>,
    health: Option<String>,
    page: Option<String>,
    events: Option<String>,
    admin: Option<String>,
    webhook: Option<String>,
}

impl Checker<'_> {
    /// The web configuration at `path` of this document (`web` inline, or
    /// the root of a `--web.config.file` document when `path` is empty).
    pub fn web(&self, node: &Node, path: &str) -> Option<WebConfig> {
        if matches!(node.value, yaml::Value::Null) {
            return Some(WebConfig::default());
        }
        let raw: RawWeb = self.parse_kind(node, path, &[])?;
        let at = |k: &str| yaml::join(path, k);
        let mut web = WebConfig::default();
        if let Some(t) = raw.tls_server_config {
            web.tls = self.tls(t, &at("tls_server_config"));
        }
        for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
            let h = hash.expose();
            let ok = (h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"))
                && h.len() == 60;
            if !ok {
                self.problem(
                    &yaml::join(&at("basic_auth_users"), &user),
                    format!("the password of user `{user}` is not a bcrypt hash"),
                    "store a hash, never the password: htpasswd -nBC 10 USER | cut -d: -f2",
                );
            }
            if user.is_empty() || user.contains(':') {
                self.problem(
                    &at("basic_auth_users"),
                    format!("user name `{user}` cannot be used with basic auth"),
                    "a user name is not empty and has no `:`",
                );
            }
            web.basic_auth_users.insert(user, hash);
        }
        if let Some(r) = raw.rate_limit {
            let interval = r.interval.map_or(std::time::Duration::ZERO, |d| d.0);
            let burst = r.burst.unwrap_or(0);
            if interval.is_zero() || burst == 0 {
                self.problem(
                    &at("rate_limit"),
                    "rate_limit needs an interval above 0 and a burst of at least 1",
                    "e.g. interval: 10ms, burst: 100 (100 requests/s on average)",
                );
            } else {
                web.rate_limit = Some(RateLimit { interval, burst });
            }
        }
        if let Some(h) = raw.http_server_config {
            let _ = h.http2; // depwatch serves HTTP/1.1; Prometheus scrapes over it.
            for (name, value) in h.headers.unwrap_or_default() {
                let known = HEADERS.iter().find(|k| k.eq_ignore_ascii_case(&name));
                match known {
                    Some(k) => web.headers.push(((*k).to_string(), value)),
                    None => self.problem(
                        &yaml::join(&at("http_server_config.headers"), &name),
                        format!("header `{name}` cannot be set here"),
                        format!("the headers allowed are: {}", HEADERS.join(", ")),
                    ),
                }
            }
        }
        Some(web)
    }

    fn tls(&self, t: RawTls, at: &str) -> Option<TlsServer> {
        let k = |key: &str| yaml::join(at, key);
        let pem = |file: Option<String>, inline: Option<Secret>, key: &str| match (file, inline) {
            (Some(_), Some(_)) => {
                self.problem(
                    &k(key),
                    format!("both `{key}` and `{key}_file` are set"),
                    "keep one of them",
                );
                None
            }
            (Some(f), None) => {
                let p = self.path(&k(&format!("{key}_file")), &f);
                if let Err(e) = self.read_file(&p) {
                    self.problem(
                        &k(&format!("{key}_file")),
                        format!("cannot read {}: {e}", p.display()),
                        "check the path and that depwatch may read it",
                    );
                }
                Some(PemSource::File(p))
            }
            (None, Some(s)) => Some(PemSource::Inline(s)),
            (None, None) => {
                self.problem(
                    at,
                    format!("`{key}_file` is missing"),
                    "TLS needs a certificate and its private key (PEM)",
                );
                None
            }
        };
        let cert = pem(t.cert_file, t.cert, "cert");
        let key = pem(t.key_file, t.key, "key");
        let client_auth = match t.client_auth_type.as_deref() {
            None | Some("NoClientCert") => ClientAuth::NoClientCert,
            Some("RequestClientCert") => ClientAuth::RequestClientCert,
            Some("RequireAnyClientCert") => ClientAuth::RequireAnyClientCert,
            Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
            Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
            Some(other) => {
                self.problem(
                    &k("client_auth_type"),
                    format!("unknown client_auth_type `{other}`"),
                    "one of: NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert",
                );
                ClientAuth::NoClientCert
            }
        };
        if t.client_ca.is_some() {
            self.problem(
                &k("client_ca"),
                "inline client_ca is not supported",
                "put the CA certificates in a file and set client_ca_file",
            );
        }
        let client_ca_file = t.client_ca_file.map(|f| {
            let p = self.path(&k("client_ca_file"), &f);
            if let Err(e) = self.read_file(&p) {
                self.problem(
                    &k("client_ca_file"),
                    format!("cannot read {}: {e}", p.display()),
                    "check the path and that depwatch may read it",
                );
            }
            p
        });
        if client_auth.verifies() && client_ca_file.is_none() {
            self.problem(
                &k("client_auth_type"),
                format!("client_auth_type {client_auth:?} needs client_ca_file"),
                "set client_ca_file to the CA that signs the client certificates",
            );
        }
        let client_allowed_sans = t.client_allowed_sans.unwrap_or_default();
        if !client_allowed_sans.is_empty() && !client_auth.verifies() {
            self.problem(
                &k("client_allowed_sans"),
                "client_allowed_sans needs verified client certificates",
                "set client_auth_type: RequireAndVerifyClientCert",
            );
        }
        let version = |v: Option<&str>, key: &str, default: TlsVersion| match v {
            None => default,
            Some("TLS12") => TlsVersion::Tls12,
            Some("TLS13") => TlsVersion::Tls13,
            Some(old @ ("TLS10" | "TLS11")) => {
                self.problem(
                    &k(key),
                    format!("{old} is not offered: depwatch's TLS (rustls) starts at TLS 1.2"),
                    "use TLS12 or TLS13",
                );
                default
            }
            Some(other) => {
                self.problem(
                    &k(key),
                    format!("unknown TLS version `{other}`"),
                    "use TLS12 or TLS13",
                );
                default
            }
        };
        let min_version = version(t.min_version.as_deref(), "min_version", TlsVersion::Tls12);
        let max_version = version(t.max_version.as_deref(), "max_version", TlsVersion::Tls13);
        if max_version < min_version {
            self.problem(
                &k("max_version"),
                "max_version is below min_version",
                "e.g. min_version: TLS12, max_version: TLS13",
            );
        }
        let cipher_suites = t.cipher_suites.unwrap_or_default();
        for s in &cipher_suites {
            if !TLS12_SUITES.contains(&s.as_str()) && !TLS13_SUITES.contains(&s.as_str()) {
                self.problem(
                    &k("cipher_suites"),
                    format!("cipher suite `{s}` is not available"),
                    format!(
                        "depwatch's TLS offers only AEAD suites with forward secrecy: {}",
                        TLS12_SUITES.join(", ")
                    ),
                );
            }
        }
        if min_version == TlsVersion::Tls12
            && !cipher_suites.is_empty()
            && !cipher_suites
                .iter()
                .any(|s| TLS12_SUITES.contains(&s.as_str()))
        {
            self.problem(
                &k("cipher_suites"),
                "no TLS 1.2 suite is listed although min_version allows TLS 1.2",
                "add a TLS_ECDHE_* suite or set min_version: TLS13",
            );
        }
        let _ = t.prefer_server_cipher_suites; // rustls always prefers the server's order
        let curve_preferences = t.curve_preferences.unwrap_or_default();
        for c in &curve_preferences {
            if !CURVES.contains(&c.as_str()) {
                self.problem(
                    &k("curve_preferences"),
                    format!("curve `{c}` is not available"),
                    format!("use some of: {}", CURVES.join(", ")),
                );
            }
        }
        Some(TlsServer {
            cert: cert?,
            key: key?,
            client_auth,
            client_ca_file,
            client_allowed_sans,
            min_version,
            max_version,
            cipher_suites,
            curve_preferences,
        })
    }

    /// `access:`; `can_authenticate`: some credential is configured.
    pub fn access(&self, can_authenticate: bool) -> Access {
        let mut access = Access::default();
        let Some(node) = self.node("access") else {
            return access;
        };
        if matches!(node.value, yaml::Value::Null) {
            return access;
        }
        let Some(raw) = self.parse_kind::<RawAccess>(node, "access", &[]) else {
            return access;
        };
        let given = [
            raw.metrics,
            raw.probe,
            raw.health,
            raw.page,
            raw.events,
            raw.admin,
            raw.webhook,
        ];
        for (g, v) in Group::ALL.into_iter().zip(given) {
            let Some(v) = v else { continue };
            let path = format!("access.{}", g.as_str());
            let summary_ok = matches!(g, Group::Health | Group::Page);
            let level = match v.as_str() {
                "public" => Level::Public,
                "authenticated" => Level::Authenticated,
                "summary" if summary_ok => Level::Summary,
                other => {
                    self.problem(
                        &path,
                        format!("unknown access `{other}` for {}", g.as_str()),
                        if summary_ok {
                            "one of: public, authenticated, summary"
                        } else {
                            "one of: public, authenticated"
                        },
                    );
                    continue;
                }
            };
            if level != Level::Public && g != Group::Admin && !can_authenticate {
                self.problem(
                    &path,
                    format!(
                        "{} is {} but no one can authenticate",
                        g.as_str(),
                        level.as_str()
                    ),
                    "add web.basic_auth_users (or --web.config.file), auth.bearer_tokens, auth.admin_token or verified client certificates",
                );
            }
            access.levels[g as usize] = level;
        }
        access
    }
}
