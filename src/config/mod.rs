//! Configuration: YAML → raw serde structs → validated [`Config`].
//!
//! Stage one deserializes with positions (see [`yaml`]); stage two checks
//! what types cannot (duplicates, timeout ≥ interval, ranges). Both collect
//! every problem so that `check-config` lists them all at once.

pub mod check;
pub mod de;
pub mod events;
mod probes;
mod refs;
pub(crate) mod suggest;
pub mod units;
pub mod web;
pub mod yaml;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::probe::http::Module;
use crate::probe::{Kind, ProbeSpec};
use crate::util::redact;
use check::MAX_CONFIG_BYTES;
pub use check::{Checker, read_bounded, utf8_text};
use de::Ctx;
pub use units::{Dur, Secret, Size};
use yaml::Problem;

/// The longest check interval: a probe checked less than daily is not watched.
pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
/// The shortest `interval`: checks more often would load the dependency.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The most buckets a check duration histogram may have (`buckets`): each
/// is a series per component.
pub const MAX_BUCKETS: usize = 40;
/// The longest `health.cache_ttl`.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// The longest latency threshold of `health.performance`.
pub const MAX_LATENCY_THRESHOLD: Duration = Duration::from_secs(3600);

/// The built-in default, used when no configuration file is given.
pub const DEFAULT_YAML: &str = r#"
listen: 127.0.0.1:9877
state_dir: ./depwatch-data
probes:
  - name: depwatch
    kind: process
    self: true
  - name: working-dir
    kind: storage
    path: .
"#;

#[derive(Clone, Debug)]
pub struct Config {
    /// The file this came from; `None` for the built-in default.
    pub source: Option<PathBuf>,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub health: HealthConfig,
    pub admin_token: Option<Secret>,
    /// `auth.bearer_tokens`: read access to every `authenticated` group.
    pub bearer_tokens: Vec<Secret>,
    /// TLS, basic auth users, answer headers (`web:` or `--web.config.file`).
    pub web: web::WebConfig,
    /// `access:` per endpoint group.
    pub access: web::Access,
    /// `limits:` of the HTTP server.
    pub limits: Limits,
    /// Shared with the components built from them (one copy each).
    pub probes: Vec<Arc<ProbeConfig>>,
    /// Named http probe templates for `/probe?target=URL&module=NAME`.
    pub modules: BTreeMap<String, Module>,
    /// `alerting:` (email fallback, pipeline watchdog); `None` when absent.
    pub alerting: Option<crate::alert::config::AlertingConfig>,
    /// `events:` (the status page's live stream).
    pub events: events::EventsConfig,
}

/// `limits:`: what the HTTP server does at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// `/probe` checks running at once; beyond, 429.
    pub probe_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            probe_concurrency: 64,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HealthConfig {
    pub cache_ttl: Duration,
    pub performance: PerfConfig,
}

/// Thresholds of the `performance` section of `/api/health`.
#[derive(Clone, Debug, PartialEq)]
pub struct PerfConfig {
    pub window: usize,
    pub recent: usize,
    pub excellent_below: Duration,
    pub slow_above: Duration,
    pub critical_above: Duration,
    pub regression_factor: f64,
    pub top_slowest: usize,
}

impl Default for PerfConfig {
    fn default() -> Self {
        PerfConfig {
            window: 200,
            recent: 20,
            excellent_below: Duration::from_millis(10),
            slow_above: Duration::from_millis(100),
            critical_above: Duration::from_millis(500),
            regression_factor: 2.0,
            top_slowest: 5,
        }
    }
}

/// What the scheduler needs of every probe, whatever its kind.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    pub name: String,
    pub critical: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub jitter: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    /// `tags:` — groups for `?tag=` admin requests and `invalidates: ["tag:T"]`.
    pub tags: Vec<String>,
    /// The upper bounds (seconds) of its `depwatch_check_duration_seconds`:
    /// its own `buckets`, else `defaults.buckets`, else its kind's default.
    pub buckets: Arc<[f64]>,
    pub spec: ProbeSpec,
}

impl ProbeConfig {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", .rendered.join("\n"))]
    Invalid { rendered: Vec<String> },
}

impl ConfigError {
    /// The number of problems found (1 for an unreadable file).
    pub fn count(&self) -> usize {
        match self {
            ConfigError::Read { .. } => 1,
            ConfigError::Invalid { rendered } => rendered.len(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTop {
    listen: Option<String>,
    state_dir: Option<String>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    events: events::RawEvents,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    probe_concurrency: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    cache_ttl: Option<Dur>,
    #[serde(default)]
    performance: RawPerf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPerf {
    window: Option<usize>,
    recent: Option<usize>,
    excellent_below: Option<Dur>,
    slow_above: Option<Dur>,
    critical_above: Option<Dur>,
    regression_factor: Option<f64>,
    top_slowest: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    admin_token: Option<Secret>,
    admin_token_file: Option<String>,
    bearer_tokens: Option<Vec<Secret>>,
    bearer_tokens_file: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    interval: Option<Dur>,
    timeout: Option<Dur>,
    jitter: Option<Dur>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
    buckets: Option<Vec<f64>>,
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "state_dir",
    "health",
    "auth",
    "defaults",
    "probes",
    "modules",
    "alerting",
    "web",
    "access",
    "limits",
    "events",
];

/// Keys of the top level parsed on their own, not by `RawTop`.
const OWN_KEYS: &[&str] = &["probes", "modules", "alerting", "web", "access"];

/// Loads a configuration file with the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with(path, None)
}

/// [`load_file`], with the web configuration of a `--web.config.file`.
pub fn load_file_with(path: &Path, web: Option<web::WebConfig>) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let read_err = |source| ConfigError::Read {
        path: name.clone(),
        source,
    };
    let Some(bytes) = read_bounded(path, MAX_CONFIG_BYTES).map_err(read_err)? else {
        return Err(ConfigError::Invalid {
            rendered: vec![format!(
                "{name}: the file is larger than {} MiB, the limit for a configuration (is it the right file?)",
                MAX_CONFIG_BYTES >> 20
            )],
        });
    };
    let src = utf8_text(bytes).map_err(|p| ConfigError::Invalid {
        rendered: vec![p.render(&name)],
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    from_str_with(
        &src,
        &name,
        Some(path),
        base,
        &|k| std::env::var(k).ok(),
        web,
    )
}

/// The built-in default configuration.
pub fn builtin() -> Config {
    // The default is a constant of this crate, tested below: it cannot fail.
    from_str(DEFAULT_YAML, "<built-in>", None, Path::new("."), &|_| None)
        .expect("the built-in configuration is valid")
}

/// Parses and validates a configuration from text. `name` is used in error
/// messages; relative `*_file` paths resolve against `base`.
pub fn from_str(
    src: &str,
    name: &str,
    source: Option<&Path>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    from_str_with(src, name, source, base, env, None)
}

/// [`from_str`], with the web configuration of a `--web.config.file`.
pub fn from_str_with(
    src: &str,
    name: &str,
    source: Option<&Path>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    web_file: Option<web::WebConfig>,
) -> Result<Config, ConfigError> {
    let (mut root, env_problems) =
        yaml::parse_document(src, env).map_err(|p| ConfigError::Invalid {
            rendered: vec![redact::userinfo(&p.render(name))],
        })?;
    // Top-level keys starting with `x-` are extension fields, as in Compose
    // files: a place for YAML anchors (`x-http: &http {kind: http}`), not
    // read.
    if let yaml::Value::Map(entries) = &mut root.value {
        entries.retain(|(k, _)| !k.scalar().is_some_and(|k| k.starts_with("x-")));
    }
    // No problem may show a password or a value from the environment, even
    // one reported away from its own key.
    let env_texts = root.env_texts();
    let fail = |problems: Vec<Problem>| ConfigError::Invalid {
        rendered: problems
            .iter()
            .map(|p| {
                let mut line = redact::userinfo(&p.render(name));
                for t in env_texts.iter().filter(|t| t.len() >= 4) {
                    line = line.replace(*t, "***");
                }
                line
            })
            .collect(),
    };
    let ctx = Ctx::default();
    for p in env_problems {
        ctx.push(p);
    }
    if !root.is_map() {
        ctx.push(Problem {
            mark: root.mark,
            path: String::new(),
            message: "the configuration must be a mapping of keys".into(),
            hint: Some(format!("start with keys such as: {}", TOP_KEYS.join(", "))),
        });
        return Err(fail(ctx.into_problems()));
    }
    let top: RawTop =
        de::parse(&root, "", &ctx, &|k| !OWN_KEYS.contains(&k), OWN_KEYS).unwrap_or_default();
    let checker = Checker {
        root: &root,
        ctx: &ctx,
        base,
    };

    let listen = match top.listen.as_deref() {
        None => SocketAddr::from(([127, 0, 0, 1], 9877)),
        Some(s) => listen_address(s).unwrap_or_else(|| {
            checker.problem(
                "listen",
                format!("invalid listen address `{s}`"),
                "write IP:PORT, e.g. 127.0.0.1:9877, [::1]:9877, or :9877 for every interface",
            );
            SocketAddr::from(([127, 0, 0, 1], 9877))
        }),
    };
    let state_dir = top.state_dir.map_or_else(
        || PathBuf::from("./depwatch-data"),
        |d| {
            // Relative to the working directory (README), not the file.
            checker.not_for_a_shell("state_dir", &d);
            PathBuf::from(d)
        },
    );
    let health = checker.health(&top.health);
    let (admin_token, bearer_tokens) = checker.tokens(top.auth);
    let limits = Limits {
        probe_concurrency: top.limits.probe_concurrency.unwrap_or(64),
    };
    if !(1..=10_000).contains(&limits.probe_concurrency) {
        checker.problem(
            "limits.probe_concurrency",
            format!(
                "probe_concurrency {} is out of range",
                limits.probe_concurrency
            ),
            "use 1 to 10000 checks at once",
        );
    }
    let web = match (checker.node("web"), web_file) {
        (Some(_), Some(f)) => {
            checker.problem(
                "web",
                format!(
                    "both --web.config.file ({}) and `web:` are given",
                    f.file.as_deref().unwrap_or(Path::new("?")).display()
                ),
                "keep one of them",
            );
            f
        }
        (None, Some(f)) => f,
        (Some(n), None) => checker.web(n, "web").unwrap_or_default(),
        (None, None) => web::WebConfig::default(),
    };
    let access = checker.access(
        admin_token.is_some()
            || !bearer_tokens.is_empty()
            || !web.basic_auth_users.is_empty()
            || web.tls.as_ref().is_some_and(|t| t.client_auth.verifies()),
    );
    let probes = checker.probes(&top.defaults);
    let modules = checker.modules(&top.defaults);
    let alerting = crate::alert::config::parse(&checker);
    let events = checker.events(&top.events);

    if !ctx.is_empty() {
        return Err(fail(ctx.into_problems()));
    }
    Ok(Config {
        source: source.map(Path::to_path_buf),
        listen,
        state_dir,
        health,
        admin_token,
        bearer_tokens,
        web,
        access,
        limits,
        probes,
        modules,
        alerting,
        events,
    })
}

/// Reads a `--web.config.file` (the exporter-toolkit format, as is).
pub fn load_web_file(path: &Path) -> Result<web::WebConfig, ConfigError> {
    let name = path.display().to_string();
    let read_err = |source| ConfigError::Read {
        path: name.clone(),
        source,
    };
    let bytes = read_bounded(path, MAX_CONFIG_BYTES)
        .map_err(read_err)?
        .unwrap_or_default();
    let src = utf8_text(bytes).map_err(|p| ConfigError::Invalid {
        rendered: vec![p.render(&name)],
    })?;
    let mut web = web_from_str_at(&src, &name, path.parent().unwrap_or(Path::new(".")))?;
    web.file = Some(path.to_path_buf());
    Ok(web)
}

/// Parses the text of an exporter-toolkit web configuration (`name` for
/// messages; relative files resolve against the current directory).
pub fn web_from_str(src: &str, name: &str) -> Result<web::WebConfig, ConfigError> {
    web_from_str_at(src, name, Path::new("."))
}

fn web_from_str_at(src: &str, name: &str, base: &Path) -> Result<web::WebConfig, ConfigError> {
    let (root, env_problems) =
        yaml::parse_document(src, &|_| None).map_err(|p| ConfigError::Invalid {
            rendered: vec![p.render(name)],
        })?;
    let ctx = Ctx::default();
    for p in env_problems {
        ctx.push(p);
    }
    let checker = Checker {
        root: &root,
        ctx: &ctx,
        base,
    };
    let web = checker.web(&root, "");
    if !ctx.is_empty() {
        return Err(ConfigError::Invalid {
            rendered: ctx
                .into_problems()
                .iter()
                .map(|p| redact::userinfo(&p.render(name)))
                .collect(),
        });
    }
    Ok(web.unwrap_or_default())
}

/// Loads a configuration file (or the built-in default) with the web
/// configuration of `--web.config.file` when given.
pub fn load(path: Option<&Path>, web_file: Option<&Path>) -> Result<Config, ConfigError> {
    let web = web_file.map(load_web_file).transpose()?;
    match path {
        Some(p) => load_file_with(p, web),
        None => Ok(from_str_with(
            DEFAULT_YAML,
            "<built-in>",
            None,
            Path::new("."),
            &|_| None,
            web,
        )?),
    }
}

impl Config {
    /// What `check-config` and the start warn about: valid, but risky.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.access.level(web::Group::Probe) == web::Level::Public && !self.modules.is_empty() {
            let names: Vec<&str> = self.modules.keys().map(String::as_str).collect();
            w.push(format!(
                "/probe is public: anyone who can reach depwatch can make it fetch the URLs that the allowed_targets of module(s) {} match (set access.probe: authenticated, or narrow allowed_targets)",
                names.join(", ")
            ));
        }
        if self.web.tls.is_none() && self.listen.ip().is_unspecified() && self.can_authenticate() {
            w.push(format!(
                "credentials are sent in clear text: depwatch listens on {} without TLS (add web.tls_server_config)",
                self.listen
            ));
        }
        w
    }

    /// Some credential is configured (basic auth users, bearer or admin tokens).
    pub fn can_authenticate(&self) -> bool {
        self.admin_token.is_some()
            || !self.bearer_tokens.is_empty()
            || !self.web.basic_auth_users.is_empty()
            || self
                .web
                .tls
                .as_ref()
                .is_some_and(|t| t.client_auth.verifies())
    }
}

/// The top level of a configuration, checked key by key: these parts know
/// the probe kinds, which the ground-floor [`Checker`] does not.
impl Checker<'_> {
    fn health(&self, raw: &RawHealth) -> HealthConfig {
        let d = PerfConfig::default();
        let p = &raw.performance;
        let perf = PerfConfig {
            window: p.window.unwrap_or(d.window),
            recent: p.recent.unwrap_or(d.recent),
            excellent_below: p.excellent_below.map_or(d.excellent_below, |x| x.0),
            slow_above: p.slow_above.map_or(d.slow_above, |x| x.0),
            critical_above: p.critical_above.map_or(d.critical_above, |x| x.0),
            regression_factor: p.regression_factor.unwrap_or(d.regression_factor),
            top_slowest: p.top_slowest.unwrap_or(d.top_slowest),
        };
        let at = "health.performance";
        if perf.window < 2 || perf.window > 100_000 {
            self.problem(
                &format!("{at}.window"),
                format!("window {} is out of range", perf.window),
                "use 2 to 100000 checks",
            );
        }
        if perf.recent == 0 || perf.recent >= perf.window {
            self.problem(
                &format!("{at}.recent"),
                format!(
                    "recent {} must be between 1 and the window ({})",
                    perf.recent, perf.window
                ),
                "the recent checks are compared with the older ones of the window",
            );
        }
        if perf.slow_above <= perf.excellent_below || perf.critical_above <= perf.slow_above {
            self.problem(
                &format!("{at}.critical_above"),
                "latency thresholds must grow: excellent_below < slow_above < critical_above",
                "e.g. 10ms, 100ms, 500ms",
            );
        }
        if !(perf.regression_factor > 1.0 && perf.regression_factor.is_finite()) {
            self.problem(
                &format!("{at}.regression_factor"),
                format!(
                    "regression_factor {} must be above 1",
                    perf.regression_factor
                ),
                "2 flags a median that doubled",
            );
        }
        if perf.critical_above > MAX_LATENCY_THRESHOLD {
            self.problem(
                &format!("{at}.critical_above"),
                format!(
                    "critical_above {} is longer than {}",
                    units::format_duration(perf.critical_above),
                    units::format_duration(MAX_LATENCY_THRESHOLD)
                ),
                "checks time out long before: e.g. 500ms",
            );
        }
        let cache_ttl = raw.cache_ttl.map_or(Duration::from_secs(5), |d| d.0);
        if cache_ttl > MAX_CACHE_TTL {
            self.problem(
                "health.cache_ttl",
                format!(
                    "cache_ttl {} is longer than {}",
                    units::format_duration(cache_ttl),
                    units::format_duration(MAX_CACHE_TTL)
                ),
                "a stale verdict keeps a dead dependency in rotation: use 1s to 1m",
            );
        }
        HealthConfig {
            cache_ttl,
            performance: perf,
        }
    }

    fn tokens(&self, raw: RawAuth) -> (Option<Secret>, Vec<Secret>) {
        let mut bearer = raw.bearer_tokens.unwrap_or_default();
        if let Some(list) = self.secret(
            "auth",
            "bearer_tokens",
            None,
            raw.bearer_tokens_file.as_deref(),
        ) {
            bearer.extend(
                list.expose()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(Secret::new),
            );
        }
        for (i, t) in bearer.iter().enumerate() {
            if t.expose().len() < 16 {
                self.problem(
                    &format!("auth.bearer_tokens[{i}]"),
                    "a bearer token is shorter than 16 characters",
                    "use a long random string, e.g. openssl rand -hex 32",
                );
            }
        }
        (
            self.admin_token(raw.admin_token, raw.admin_token_file),
            bearer,
        )
    }

    fn admin_token(&self, inline: Option<Secret>, file: Option<String>) -> Option<Secret> {
        let token = self.secret("auth", "admin_token", inline, file.as_deref());
        if let Some(t) = &token
            && t.expose().len() < 8
        {
            self.problem(
                "auth.admin_token",
                "the admin token is shorter than 8 characters",
                "use a long random string",
            );
        }
        token
    }
}

/// `listen`: an IP address and port, or the forms exporters take too:
/// `:PORT` (every IPv4 interface, as `0.0.0.0:PORT`; `[::]:PORT` for IPv6
/// as well) and `localhost:PORT` (`127.0.0.1:PORT`). No other name is
/// resolved: what a name stands for can change under a running daemon.
fn listen_address(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse() {
        return Some(addr);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    match host {
        "" => Some(SocketAddr::from(([0, 0, 0, 0], port))),
        h if h.eq_ignore_ascii_case("localhost") => Some(SocketAddr::from(([127, 0, 0, 1], port))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_ip_and_port_and_the_forms_exporters_take() {
        for (given, want) in [
            ("127.0.0.1:9877", Some("127.0.0.1:9877")),
            ("[::1]:9877", Some("[::1]:9877")),
            ("[::]:9877", Some("[::]:9877")),
            (":9877", Some("0.0.0.0:9877")),
            ("localhost:9100", Some("127.0.0.1:9100")),
            ("LOCALHOST:0", Some("127.0.0.1:0")),
            ("9877", None),
            (":99999", None),
            ("example.com:9877", None),
            ("localhost", None),
            ("", None),
        ] {
            assert_eq!(
                listen_address(given).map(|a| a.to_string()).as_deref(),
                want,
                "{given:?}"
            );
        }
    }

    #[test]
    fn builtin_is_valid() {
        let c = builtin();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9877");
        assert_eq!(c.probes.len(), 2);
        assert_eq!(c.probes[0].kind(), Kind::Process);
        assert_eq!(c.probes[1].kind(), Kind::Storage);
    }
}
