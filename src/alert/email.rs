//! How it sends: lettre's async SMTP transport on tokio with rustls
//! (`smtp://` + STARTTLS, `smtps://`), AUTH PLAIN/LOGIN, timeouts; the
//! message builder (text + HTML, threading headers); and failure reasons
//! that never carry the password or the SMTP transcript.

use std::fmt::Write;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use lettre::address::{Address, Envelope};
use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{EmailConfig, StartTls};
use super::render::Rendered;

/// A message ready to go: what is stored in the outbox.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub id: i64,
    pub incident: Option<i64>,
    pub kind: super::incident::EmailKind,
    pub message_id: String,
    pub subject: String,
    pub from: String,
    pub to: Vec<String>,
    pub body: std::sync::Arc<Vec<u8>>,
}

/// Why a delivery failed: bounded, for logs and `/api/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    Config,
    Connect,
    Tls,
    Auth,
    Rejected,
    Transient,
    Timeout,
}

impl FailReason {
    /// A failure retrying will not fix (until the configuration or the
    /// server changes): a refused login (`535`, `534`, `530`, `538`) or a
    /// refusal for good (`5xx`). A mail server may lock an account that
    /// keeps failing its login: these are retried less and less often.
    pub fn for_good(self) -> bool {
        self.hint().is_some()
    }

    /// What to do about a failure retrying will not fix; `None` for the
    /// others (retrying is what to do).
    pub fn hint(self) -> Option<&'static str> {
        match self {
            FailReason::Auth => Some(
                "check alerting.email.username and password (or password_file), then reload: a change of alerting.email is retried at once",
            ),
            FailReason::Rejected => Some(
                "check alerting.email.from and to and what the server accepts from depwatch, then reload: a change of alerting.email is retried at once",
            ),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Config => "config",
            FailReason::Connect => "connect",
            FailReason::Tls => "tls",
            FailReason::Auth => "auth",
            FailReason::Rejected => "rejected",
            FailReason::Transient => "transient",
            FailReason::Timeout => "timeout",
        }
    }
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{reason}: {message}", reason = .reason.as_str())]
pub struct SendError {
    pub reason: FailReason,
    pub message: String,
}

/// The server's final answer, e.g. `250 2.0.0 Ok: queued as 1234`.
pub fn reply_text(r: &lettre::transport::smtp::response::Response) -> String {
    let code = r.code();
    let first = r.message().next().unwrap_or("");
    format!("{code} {first}").trim().chars().take(300).collect()
}

/// This host's name (EHLO, subject, Message-ID).
pub fn host_name() -> String {
    let u = rustix::system::uname();
    let n = u.nodename().to_string_lossy().into_owned();
    if n.is_empty() { "localhost".into() } else { n }
}

fn transport(cfg: &EmailConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
    let cfg_err = |m: String| SendError {
        reason: FailReason::Config,
        message: m,
    };
    let tls_params = || {
        let mut b = TlsParameters::builder(cfg.host.clone());
        if let Some(pem) = &cfg.ca_pem {
            let cert = Certificate::from_pem(pem).map_err(|e| cfg_err(format!("ca_file: {e}")))?;
            b = b
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert);
        }
        b.build_rustls()
            .map_err(|e| cfg_err(format!("TLS setup: {e}")))
    };
    let tls = if cfg.implicit_tls {
        Tls::Wrapper(tls_params()?)
    } else {
        match cfg.starttls {
            StartTls::Required => Tls::Required(tls_params()?),
            StartTls::Opportunistic => Tls::Opportunistic(tls_params()?),
            StartTls::Never => Tls::None,
        }
    };
    let hello = cfg.hello_name.clone().unwrap_or_else(host_name);
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
        .port(cfg.port)
        .tls(tls)
        .timeout(Some(cfg.timeout))
        .hello_name(ClientId::Domain(hello));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        b = b
            .credentials(Credentials::new(u.clone(), p.expose().to_string()))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(b.build())
}

/// Classifies a lettre error. Its text names the server's answer (code and
/// first line) or the network/TLS cause; it never holds the credentials.
fn classify(e: &lettre::transport::smtp::Error, cfg: &EmailConfig) -> SendError {
    // With the root cause, which lettre keeps as a source (io/TLS errors).
    let mut text = crate::util::text::with_causes(e);
    if let Some(p) = &cfg.password
        && !p.expose().is_empty()
    {
        text = text.replace(p.expose(), "***");
    }
    let text: String = text.chars().take(400).collect();
    let code = e.status().map(|c| c.to_string());
    let reason = if e.is_timeout() {
        FailReason::Timeout
    } else if code
        .as_deref()
        .is_some_and(|c| c == "535" || c == "534" || c == "530" || c == "538")
        || text.contains("authentication mechanism")
    {
        FailReason::Auth
    } else if e.is_tls() || text.contains("STARTTLS") {
        FailReason::Tls
    } else if e.is_permanent() {
        FailReason::Rejected
    } else if e.is_transient() {
        FailReason::Transient
    } else {
        FailReason::Connect
    };
    let message = match reason {
        FailReason::Tls if text.contains("STARTTLS is not supported") => format!(
            "{}:{} does not offer STARTTLS and starttls is required: nothing was sent, no credentials either (set `starttls: opportunistic` or `never` only for a trusted network)",
            cfg.host, cfg.port
        ),
        FailReason::Auth => format!("{}:{} refused the login: {text}", cfg.host, cfg.port),
        _ => format!("{}:{}: {text}", cfg.host, cfg.port),
    };
    SendError { reason, message }
}

/// Whether `smtp://HOST:PORT` greets like an SMTP server within `timeout`:
/// for a test message, where someone waits, so that a wrong port (an HTTP
/// server, a TLS port) fails in seconds and says what answered, instead of
/// after `send_timeout` (lettre's async transport applies `timeout` to the
/// connect only). What only lettre can tell (refused connection, a
/// server's own refusal) is left to the delivery that follows. `smtps://`
/// greets inside TLS: not looked at here.
pub async fn greets(cfg: &EmailConfig) -> Result<(), SendError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if cfg.implicit_tls {
        return Ok(());
    }
    let at = format!("{}:{}", cfg.host, cfg.port);
    let hint = "is it an SMTP server? smtp:// is usually port 587 or 25, smtps:// 465";
    let connect = tokio::time::timeout(
        cfg.timeout,
        tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)),
    );
    let Ok(Ok(mut s)) = connect.await else {
        return Ok(());
    };
    // The first line, however the server's writes split it.
    let mut buf = [0u8; 256];
    let first_line = async {
        let mut n = 0;
        while n < buf.len() && !buf[..n].contains(&b'\n') {
            match s.read(&mut buf[n..]).await? {
                0 => break,
                k => n += k,
            }
        }
        Ok::<_, std::io::Error>(n)
    };
    let n = match tokio::time::timeout(cfg.timeout, first_line).await {
        Err(_) => {
            return Err(SendError {
                reason: FailReason::Timeout,
                message: format!(
                    "{at} accepted the connection but sent no SMTP greeting within {} ({hint})",
                    crate::config::units::format_duration(cfg.timeout)
                ),
            });
        }
        Ok(Err(_)) => return Ok(()),
        Ok(Ok(n)) => n,
    };
    let first = String::from_utf8_lossy(&buf[..n]);
    let line = first.lines().next().unwrap_or("").trim();
    // `220 …`, or a server's own refusal (`421`, `554`): SMTP either way.
    let smtp = line.len() >= 3 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit);
    if smtp {
        let _ = s.write_all(b"QUIT\r\n").await;
        return Ok(());
    }
    let shown: String = line.chars().filter(|c| !c.is_control()).take(60).collect();
    Err(SendError {
        reason: FailReason::Connect,
        message: match n {
            0 => format!("{at} closed the connection without an SMTP greeting ({hint})"),
            _ => format!("{at} answered `{shown}`, not an SMTP greeting ({hint})"),
        },
    })
}

/// What a delivery came to: the server's reply and, when it took the
/// message for some recipients only, why it refused the others.
#[derive(Debug)]
pub struct Delivered {
    pub reply: String,
    pub refused: Option<SendError>,
    /// Recipients the server refused for now (4xx: mailbox full or busy,
    /// greylisting): still owed the message, to be retried alone.
    pub owed: Vec<String>,
}

/// Delivers one stored message; answers the server's reply.
///
/// A server that refuses one recipient (`550` no such user: a colleague
/// who left; `452` a mailbox over quota) makes lettre abandon the whole
/// transaction; the others would get no alert, or only once that one
/// mailbox takes mail again. So a refusal of a message to several
/// recipients is followed by one transaction per recipient: those the
/// server takes get it, the refusals are answered beside the reply, and
/// those refused for now are `owed` (the sender retries them alone).
pub async fn deliver(cfg: &EmailConfig, out: &Outgoing) -> Result<Delivered, SendError> {
    let t = transport(cfg)?;
    let address = |a: &str, key: &str| {
        Address::from_str(a).map_err(|e| SendError {
            reason: FailReason::Config,
            message: format!("{key} `{a}`: {e}"),
        })
    };
    let from = address(&out.from, "from")?;
    let to = out
        .to
        .iter()
        .map(|a| address(a, "to"))
        .collect::<Result<Vec<_>, _>>()?;
    let all = send(cfg, &t, &from, to.clone(), &out.body).await;
    match all {
        Err(e)
            if matches!(e.reason, FailReason::Rejected | FailReason::Transient) && to.len() > 1 => {
        }
        other => {
            return other.map(|reply| Delivered {
                reply,
                refused: None,
                owed: Vec::new(),
            });
        }
    }
    let mut replies = Vec::new();
    let mut refused: Vec<(Address, SendError)> = Vec::new();
    for rcpt in to {
        match send(cfg, &t, &from, vec![rcpt.clone()], &out.body).await {
            Ok(reply) => replies.push(reply),
            Err(e) => refused.push((rcpt, e)),
        }
    }
    let Some(reply) = replies.into_iter().next() else {
        // Refused for every recipient alone too: the message itself (or
        // the server, for now: a temporary refusal first, retried whole).
        let at = refused
            .iter()
            .position(|(_, e)| e.reason != FailReason::Rejected)
            .unwrap_or(0);
        return Err(refused.swap_remove(at).1);
    };
    let owed: Vec<String> = refused
        .iter()
        .filter(|(_, e)| e.reason != FailReason::Rejected)
        .map(|(a, _)| a.to_string())
        .collect();
    let reason = refused[0].1.reason;
    let mut message = refused
        .iter()
        .map(|(a, e)| format!("{a}: {}", e.message))
        .collect::<Vec<_>>()
        .join("; ");
    if !owed.is_empty() {
        let _ = write!(
            message,
            " (retrying {} alone until the server takes it)",
            owed.join(", ")
        );
    }
    Ok(Delivered {
        reply,
        refused: Some(SendError {
            reason,
            message: format!(
                "delivered to {} of {} recipients; refused for {message}",
                out.to.len() - refused.len(),
                out.to.len()
            ),
        }),
        owed,
    })
}

/// One SMTP transaction: `body` from `from` to `to`.
async fn send(
    cfg: &EmailConfig,
    t: &AsyncSmtpTransport<Tokio1Executor>,
    from: &Address,
    to: Vec<Address>,
    body: &[u8],
) -> Result<String, SendError> {
    let env = Envelope::new(Some(from.clone()), to).map_err(|e| SendError {
        reason: FailReason::Config,
        message: format!("envelope: {e}"),
    })?;
    match tokio::time::timeout(cfg.send_timeout, t.send_raw(&env, body)).await {
        Err(_) => Err(SendError {
            reason: FailReason::Timeout,
            message: format!(
                "{}:{}: no delivery within send_timeout {}",
                cfg.host,
                cfg.port,
                crate::config::units::format_duration(cfg.send_timeout)
            ),
        }),
        Ok(Err(e)) => Err(classify(&e, cfg)),
        Ok(Ok(resp)) => Ok(reply_text(&resp)),
    }
}

/// A fresh `Message-ID` (with angle brackets).
pub fn new_message_id(incident: Option<i64>, email: i64, host: &str) -> String {
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    let host = if host.is_empty() {
        "localhost".into()
    } else {
        host
    };
    format!(
        "<depwatch.{}.{email}.{:016x}@{host}>",
        incident.unwrap_or(0),
        fastrand::u64(..)
    )
}

/// Builds the RFC 5322 message: text and HTML alternatives, threading.
pub fn build(
    cfg: &EmailConfig,
    r: &Rendered,
    message_id: &str,
    thread: Option<&str>,
    kind: &str,
) -> Result<Vec<u8>, String> {
    let mut b = Message::builder()
        .from(cfg.from.clone())
        .subject(r.subject.clone())
        .message_id(Some(message_id.to_string()))
        .date(SystemTime::now())
        .user_agent(format!("depwatch/{}", crate::util::build::VERSION))
        .header(DepwatchKind(kind.to_string()));
    for to in &cfg.to {
        b = b.to(to.clone());
    }
    if let Some(root) = thread {
        b = b.in_reply_to(root.to_string()).references(root.to_string());
    }
    let m = b
        .multipart(MultiPart::alternative_plain_html(
            r.text.clone(),
            r.html.clone(),
        ))
        .map_err(|e| e.to_string())?;
    Ok(m.formatted())
}

/// `X-Depwatch-Kind: firing` — lets mail filters tell the kinds apart.
#[derive(Clone)]
struct DepwatchKind(String);

impl header::Header for DepwatchKind {
    fn name() -> header::HeaderName {
        header::HeaderName::new_from_ascii_str("X-Depwatch-Kind")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(DepwatchKind(s.to_string()))
    }

    fn display(&self) -> header::HeaderValue {
        header::HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// The addresses of the envelope, as stored.
pub fn envelope_of(cfg: &EmailConfig) -> (String, Vec<String>) {
    (
        cfg.from.email.to_string(),
        cfg.to
            .iter()
            .map(|m: &Mailbox| m.email.to_string())
            .collect(),
    )
}

/// Backoff between retries of the head of the queue: 1s, 2s, 4s … 60s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}

/// Backoff after the `n`th failure in a row that retrying cannot fix
/// ([`FailReason::for_good`]), from 0: 1 min, 2, 4 … 1 h.
pub fn backoff_refused(n: u32) -> Duration {
    Duration::from_secs(60 << n.min(6)).min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_back_off_to_an_hour_and_other_failures_to_a_minute() {
        let mins = |n| backoff_refused(n).as_secs() / 60;
        assert_eq!(
            (0..8).map(mins).collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 60, 60]
        );
        assert_eq!(backoff_refused(u32::MAX), Duration::from_secs(3600));
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(10), Duration::from_secs(60));
        assert!(FailReason::Auth.for_good() && FailReason::Rejected.for_good());
        for r in [
            FailReason::Connect,
            FailReason::Transient,
            FailReason::Timeout,
            FailReason::Tls,
            FailReason::Config,
        ] {
            assert!(!r.for_good(), "{r:?}");
        }
    }
}
