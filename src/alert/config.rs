//! The `alerting:` section: raw keys → a validated [`AlertingConfig`].
//! Mailboxes are parsed with lettre at load time so that a bad `from`/`to`
//! is a positioned problem of `check-config`, not a failure at 3 a.m.

use std::str::FromStr;
use std::time::Duration;

use lettre::message::Mailbox;
use serde::Deserialize;

use crate::config::check::Checker;
use crate::config::units::format_duration;
use crate::config::units::{Dur, Secret};

/// When component incidents are emailed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only while the alerting pipeline is down (Alertmanager has the rest).
    Fallback,
    /// Every incident (teams without Alertmanager).
    Always,
    /// Never (the pipeline is still watched and shown).
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fallback => "fallback",
            Mode::Always => "always",
            Mode::Off => "off",
        }
    }
}

/// How an `smtp://` connection is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartTls {
    Required,
    Opportunistic,
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlertingConfig {
    pub mode: Mode,
    /// `http(s)://host:port` without a trailing slash.
    pub alertmanager_url: Option<String>,
    /// How often Alertmanager's `/-/healthy` is checked and the watchdog judged.
    pub check_interval: Duration,
    /// Failed Alertmanager checks in a row before it counts as down.
    pub failure_threshold: u32,
    pub scrape_watchdog: Duration,
    /// `None`: no heartbeat expected (no Alertmanager configured).
    pub heartbeat_timeout: Option<Duration>,
    pub group_wait: Duration,
    /// An alert Alertmanager notified (not the Watchdog) leaves
    /// `alerting.firing` when no notification carried it for this long:
    /// a route without `send_resolved` never says it resolved.
    pub firing_expiry: Duration,
    pub max_per_hour: u32,
    /// HA pairs: elect one sender through Redis (`None`: this one sends alone).
    pub coordination: Option<Coordination>,
    /// Where the runbook lives: links are `{runbook_url}#section`.
    pub runbook_url: String,
    /// The status page as on-call reaches it (`None`: from `listen`).
    pub page_url: Option<String>,
    pub email: Option<EmailConfig>,
}

/// `alerting.coordination` and its siblings: the sender election.
#[derive(Clone, Debug, PartialEq)]
pub struct Coordination {
    /// `redis://` or `rediss://`; may carry a password: never printed whole.
    pub url: Secret,
    /// How long a leader holds the lease without renewing it (renewed every third).
    pub lease: Duration,
    /// Key prefix `depwatch:alerting:{group}`: pairs of different services
    /// sharing one Redis take different groups.
    pub group: String,
    /// This instance's name among its peers (default `HOST:PORT` of `listen`).
    pub instance: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EmailConfig {
    /// `smtps://` (implicit TLS) or `smtp://`.
    pub implicit_tls: bool,
    pub host: String,
    pub port: u16,
    pub starttls: StartTls,
    /// PEM of a private CA: trusted instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub repeat_interval: Duration,
    /// Connecting and each SMTP command.
    pub timeout: Duration,
    /// The whole delivery of one message.
    pub send_timeout: Duration,
    /// The EHLO name (default: this host's name).
    pub hello_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    mode: Option<String>,
    alertmanager_url: Option<String>,
    check_interval: Option<Dur>,
    failure_threshold: Option<u32>,
    scrape_watchdog: Option<Dur>,
    heartbeat_timeout: Option<Dur>,
    group_wait: Option<Dur>,
    firing_expiry: Option<Dur>,
    max_per_hour: Option<u32>,
    coordination: Option<Secret>,
    coordination_lease: Option<Dur>,
    coordination_group: Option<String>,
    instance: Option<String>,
    runbook_url: Option<String>,
    page_url: Option<String>,
    email: Option<RawEmail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    smtp: String,
    starttls: Option<String>,
    ca_file: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    password_file: Option<String>,
    from: String,
    to: Vec<String>,
    repeat_interval: Option<Dur>,
    timeout: Option<Dur>,
    send_timeout: Option<Dur>,
    hello_name: Option<String>,
}

const MIN: Duration = Duration::from_millis(100);
/// `firing_expiry` by default: 4h30m.
pub const DEFAULT_FIRING_EXPIRY: Duration = Duration::from_secs(4 * 3600 + 1800);
const DAY: Duration = Duration::from_secs(86_400);

/// Parses `alerting:` when present.
pub fn parse(c: &Checker) -> Option<AlertingConfig> {
    let node = c.node("alerting")?;
    if matches!(node.value, crate::config::yaml::Value::Null) {
        return None;
    }
    let raw: Raw = c.parse_kind(node, "alerting", &[])?;
    let mode = match raw.mode.as_deref() {
        None | Some("fallback") => Mode::Fallback,
        Some("always") => Mode::Always,
        Some("off") => Mode::Off,
        Some(other) => {
            c.problem(
                "alerting.mode",
                format!("unknown mode `{other}`"),
                "one of: fallback, always, off",
            );
            Mode::Fallback
        }
    };
    let alertmanager_url =
        raw.alertmanager_url
            .and_then(|u| match crate::net::target::Target::parse(&u) {
                Ok(t) if t.path == "/" || t.path.is_empty() => {
                    Some(u.trim_end_matches('/').to_string())
                }
                Ok(_) => {
                    c.problem(
                        "alerting.alertmanager_url",
                        "alertmanager_url must be the server's base URL, without a path",
                        "e.g. http://127.0.0.1:9093 (depwatch checks /-/healthy)",
                    );
                    None
                }
                Err(e) => {
                    c.problem(
                        "alerting.alertmanager_url",
                        format!("invalid alertmanager_url: {e}"),
                        "e.g. http://127.0.0.1:9093",
                    );
                    None
                }
            });
    let dur = |key: &str, v: Option<Dur>, default: Duration, min: Duration, max: Duration| {
        let d = v.map_or(default, |d| d.0);
        if d < min || d > max {
            c.problem(
                &format!("alerting.{key}"),
                format!("{key} {} is out of range", format_duration(d)),
                format!("use {} to {}", format_duration(min), format_duration(max)),
            );
        }
        d
    };
    let check_interval = dur(
        "check_interval",
        raw.check_interval,
        Duration::from_secs(15),
        MIN,
        Duration::from_secs(3600),
    );
    let scrape_watchdog = dur(
        "scrape_watchdog",
        raw.scrape_watchdog,
        Duration::from_secs(300),
        Duration::from_secs(1),
        DAY,
    );
    let heartbeat = raw.heartbeat_timeout;
    let heartbeat_timeout = if heartbeat.is_some() || alertmanager_url.is_some() {
        Some(dur(
            "heartbeat_timeout",
            heartbeat,
            Duration::from_secs(300),
            Duration::from_secs(1),
            DAY,
        ))
    } else {
        None
    };
    let group_wait = dur(
        "group_wait",
        raw.group_wait,
        Duration::from_secs(30),
        Duration::ZERO,
        Duration::from_secs(3600),
    );
    // Above Alertmanager's default repeat_interval (4h), by more than its
    // group_interval: a firing alert is notified again before it expires.
    let firing_expiry = dur(
        "firing_expiry",
        raw.firing_expiry,
        DEFAULT_FIRING_EXPIRY,
        Duration::from_secs(1),
        30 * DAY,
    );
    let failure_threshold = raw.failure_threshold.unwrap_or(3);
    if !(1..=100).contains(&failure_threshold) {
        c.problem(
            "alerting.failure_threshold",
            format!("failure_threshold {failure_threshold} is out of range"),
            "use 1 to 100 consecutive checks of Alertmanager",
        );
    }
    let max_per_hour = raw.max_per_hour.unwrap_or(20);
    if !(1..=10_000).contains(&max_per_hour) {
        c.problem(
            "alerting.max_per_hour",
            format!("max_per_hour {max_per_hour} is out of range"),
            "use 1 to 10000 emails",
        );
    }
    let coordination = coordination(
        c,
        RawCoordination {
            url: raw.coordination,
            lease: raw.coordination_lease,
            group: raw.coordination_group,
            instance: raw.instance,
        },
        &dur,
    );
    let page_url = raw
        .page_url
        .and_then(|u| match crate::net::target::Target::parse(&u) {
            Ok(_) => Some(u),
            Err(e) => {
                c.problem(
                "alerting.page_url",
                format!("invalid page_url: {e}"),
                "the status page's address as on-call opens it, e.g. https://depwatch.example.com/",
            );
                None
            }
        });
    let email = raw.email.and_then(|e| email(c, e));
    Some(AlertingConfig {
        mode,
        alertmanager_url,
        check_interval,
        failure_threshold,
        scrape_watchdog,
        heartbeat_timeout,
        group_wait,
        firing_expiry,
        max_per_hour,
        coordination,
        runbook_url: raw.runbook_url.unwrap_or_else(|| "docs/runbook.md".into()),
        page_url,
        email,
    })
}

fn email(c: &Checker, raw: RawEmail) -> Option<EmailConfig> {
    let at = "alerting.email";
    let mut ok = true;
    let (implicit_tls, rest) = if let Some(r) = raw.smtp.strip_prefix("smtps://") {
        (true, r)
    } else if let Some(r) = raw.smtp.strip_prefix("smtp://") {
        (false, r)
    } else {
        c.problem(
            &format!("{at}.smtp"),
            "smtp must start with smtp:// or smtps://",
            "e.g. smtp://mail.example:587 (STARTTLS) or smtps://mail.example:465",
        );
        (false, "")
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        _ if rest.contains('@') || rest.contains('/') => {
            c.problem(
                &format!("{at}.smtp"),
                "smtp is HOST[:PORT] only: credentials go in username and password_file",
                "e.g. smtp://mail.example:587",
            );
            ok = false;
            (String::new(), 0)
        }
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h.trim_matches(['[', ']']).to_string(), p),
            _ => {
                c.problem(
                    &format!("{at}.smtp"),
                    format!("invalid port `{p}`"),
                    "e.g. smtp://mail.example:587",
                );
                ok = false;
                (String::new(), 0)
            }
        },
        _ => (
            rest.trim_matches(['[', ']']).to_string(),
            if implicit_tls { 465 } else { 587 },
        ),
    };
    if ok && host.is_empty() && !raw.smtp.is_empty() {
        c.problem(
            &format!("{at}.smtp"),
            "smtp has no host",
            "e.g. smtp://mail.example:587",
        );
    }
    let starttls = match raw.starttls.as_deref() {
        None | Some("required") => StartTls::Required,
        Some("opportunistic") => StartTls::Opportunistic,
        Some("never") => StartTls::Never,
        Some(other) => {
            c.problem(
                &format!("{at}.starttls"),
                format!("unknown starttls `{other}`"),
                "one of: required, opportunistic, never",
            );
            StartTls::Required
        }
    };
    if implicit_tls && raw.starttls.is_some() && starttls != StartTls::Required {
        c.problem(
            &format!("{at}.starttls"),
            "starttls does not apply to smtps:// (TLS from the first byte)",
            "remove starttls, or use smtp://",
        );
    }
    let ca_pem = raw.ca_file.as_deref().and_then(|f| {
        let p = c.resolve(f);
        match c.read_file(&p) {
            Ok(pem)
                if lettre::transport::smtp::client::Certificate::from_pem(&pem).is_ok()
                    && pem.windows(11).any(|w| w == b"-----BEGIN ") =>
            {
                Some(pem)
            }
            Ok(_) => {
                c.problem(
                    &format!("{at}.ca_file"),
                    format!("{} holds no PEM certificate", p.display()),
                    "give the CA certificate that signed the mail server's, in PEM",
                );
                None
            }
            Err(e) => {
                c.problem(
                    &format!("{at}.ca_file"),
                    format!("cannot read {}: {e}", p.display()),
                    "check the path and that depwatch may read it",
                );
                None
            }
        }
    });
    let password = c.secret(at, "password", raw.password, raw.password_file.as_deref());
    if password.is_some() != raw.username.is_some() {
        c.problem(
            &format!("{at}.username"),
            "username and password go together",
            "set both (password or password_file), or neither for a relay without AUTH",
        );
    }
    let mailbox = |key: &str, s: &str| match Mailbox::from_str(s) {
        Ok(m) => Some(m),
        Err(e) => {
            c.problem(
                key,
                format!("`{s}` is not a mailbox: {e}"),
                "e.g. oncall@example.com or \"On-call\" <oncall@example.com>",
            );
            None
        }
    };
    let from = mailbox(&format!("{at}.from"), &raw.from);
    let mut to = Vec::new();
    for (i, s) in raw.to.iter().enumerate() {
        if let Some(m) = mailbox(&format!("{at}.to[{i}]"), s) {
            to.push(m);
        }
    }
    if raw.to.is_empty() {
        c.problem(
            &format!("{at}.to"),
            "no recipient",
            "list at least one address, e.g. [oncall@example.com]",
        );
    }
    let d = |key: &str, v: Option<Dur>, default: Duration, min: Duration, max: Duration| {
        let d = v.map_or(default, |d| d.0);
        if d < min || d > max {
            c.problem(
                &format!("{at}.{key}"),
                format!("{key} {} is out of range", format_duration(d)),
                format!("use {} to {}", format_duration(min), format_duration(max)),
            );
        }
        d
    };
    let repeat_interval = d(
        "repeat_interval",
        raw.repeat_interval,
        Duration::from_secs(4 * 3600),
        Duration::from_secs(1),
        Duration::from_secs(7 * 86_400),
    );
    let timeout = d(
        "timeout",
        raw.timeout,
        Duration::from_secs(10),
        MIN,
        Duration::from_secs(300),
    );
    let send_timeout = d(
        "send_timeout",
        raw.send_timeout,
        Duration::from_secs(60),
        MIN,
        Duration::from_secs(600),
    );
    Some(EmailConfig {
        implicit_tls,
        host,
        port,
        starttls,
        ca_pem,
        username: raw.username,
        password,
        from: from?,
        to,
        repeat_interval,
        timeout,
        send_timeout,
        hello_name: raw.hello_name,
    })
}

/// `dur(key, value, default, min, max)`: a duration within its range.
type DurCheck<'a> = dyn Fn(&str, Option<Dur>, Duration, Duration, Duration) -> Duration + 'a;

struct RawCoordination {
    url: Option<Secret>,
    lease: Option<Dur>,
    group: Option<String>,
    instance: Option<String>,
}

fn coordination(c: &Checker, raw: RawCoordination, dur: &DurCheck) -> Option<Coordination> {
    let Some(url) = raw.url else {
        for (key, set) in [
            ("coordination_lease", raw.lease.is_some()),
            ("coordination_group", raw.group.is_some()),
            ("instance", raw.instance.is_some()),
        ] {
            if set {
                c.problem(
                    &format!("alerting.{key}"),
                    format!("{key} is set but coordination is not"),
                    "add coordination: redis://HOST:6379/0, or remove this key",
                );
            }
        }
        return None;
    };
    let u = url.expose();
    if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
        c.problem(
            "alerting.coordination",
            "coordination must be a redis:// or rediss:// URL",
            "e.g. redis://127.0.0.1:6379/0",
        );
    } else if let Err(e) = redis::IntoConnectionInfo::into_connection_info(u) {
        c.problem(
            "alerting.coordination",
            format!(
                "invalid coordination URL: {}",
                crate::util::redact::scrub(&e.to_string(), &[u])
            ),
            "e.g. redis://:PASSWORD@127.0.0.1:6379/0",
        );
    }
    let lease = dur(
        "coordination_lease",
        raw.lease,
        Duration::from_secs(15),
        Duration::from_secs(1),
        Duration::from_secs(600),
    );
    let group = raw.group.unwrap_or_else(|| "depwatch".into());
    let bad =
        |s: &str| s.is_empty() || s.len() > 100 || s.chars().any(|ch| ch.is_control() || ch == ' ');
    if bad(&group) {
        c.problem(
            "alerting.coordination_group",
            "coordination_group must be 1 to 100 characters without spaces",
            "e.g. orders-api",
        );
    }
    if raw.instance.as_deref().is_some_and(bad) {
        c.problem(
            "alerting.instance",
            "instance must be 1 to 100 characters without spaces",
            "e.g. orders-api-1; the default is HOST:PORT",
        );
    }
    Some(Coordination {
        url,
        lease,
        group,
        instance: raw.instance,
    })
}
