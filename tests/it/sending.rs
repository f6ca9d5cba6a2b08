//! The outbox against a real SMTP server (aiosmtpd, see `alerting.rs`):
//! retries and their backoff, refusals for now and for good, recipients
//! refused, `max_per_hour`, STARTTLS and AUTH, test emails.

use std::time::Duration;

use serde_json::Value;

use crate::alerting::{
    Mail, SELF_PROBE, Scraper, Smtp, WAIT, alerting, redis_probe, send_test_email, wait_alerting,
};
use crate::support::*;

#[tokio::test]
async fn smtp_down_counts_failures_retries_and_delivers_once_back() {
    let mut smtp = Smtp::stopped(&[]);
    let yaml = format!(
        "{}{SELF_PROBE}",
        alerting(
            smtp.port,
            "  scrape_watchdog: 1s\n",
            "    starttls: never\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let a = wait_alerting(&dw, "a delivery failure", |a| !a["last_error"].is_null()).await;
    assert_eq!(a["last_error"]["kind"], "watchdog", "{a}");
    assert_eq!(a["last_error"]["reason"], "connect", "{a}");
    wait_alerting(&dw, "a second attempt", |a| {
        a["last_error"]["attempts"].as_u64().is_some_and(|n| n >= 2)
    })
    .await;
    smtp.restart();
    let w = smtp.wait_kind("watchdog", 1).await;
    assert_eq!(w.len(), 1);
    let a = wait_alerting(&dw, "the queue drained", |a| a["queued_emails"] == 0).await;
    assert!(
        a["last_email"]["subject"]
            .as_str()
            .unwrap()
            .contains("pipeline down")
    );
    let (_, body) = dw.get("/metrics").await;
    let m = Metrics::parse(&body);
    assert!(
        m.value(
            "depwatch_alert_email_failures_total",
            &[("kind", "watchdog")]
        ) >= 2.0
    );
    assert!(m.value("depwatch_alert_emails_total", &[("kind", "watchdog")]) >= 3.0);
}

#[tokio::test]
async fn an_email_queued_when_depwatch_is_killed_is_sent_once_after_the_restart() {
    let mut smtp = Smtp::stopped(&[]);
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:{}\nstate_dir: {}\n{}{SELF_PROBE}",
        free_port(),
        state.path().display(),
        alerting(
            smtp.port,
            "  scrape_watchdog: 1s\n",
            "    starttls: never\n"
        )
    );
    let mut dw = Depwatch::start(&yaml).await;
    wait_alerting(&dw, "the watchdog email failing", |a| {
        a["last_error"]["kind"] == "watchdog" && a["queued_emails"] == 1
    })
    .await;
    dw.proc.signal("KILL");
    let _ = dw.proc.child.wait();
    smtp.restart();
    dw = Depwatch::start(&yaml).await;
    let w = smtp.wait_kind("watchdog", 1).await.remove(0);
    assert!(w.subject().contains("pipeline down"), "{}", w.subject());
    // The outage goes on past the restart (no scrape for 1s again): the
    // same incident, no second watchdog email; a scrape resolves it.
    wait_alerting(&dw, "the pipeline down again", |a| a["pipeline"] == "down").await;
    dw.metrics().await;
    let r = smtp.wait_kind("resolved", 1).await.remove(0);
    assert_eq!(r.header("in-reply-to"), w.header("message-id"));
    assert_eq!(smtp.of_kind("watchdog").len(), 1);
}

#[tokio::test]
async fn a_server_stuck_mid_data_is_cut_off_by_send_timeout_and_the_email_retried() {
    let smtp = Smtp::start(&["--hang-data", "1"]);
    let yaml = format!(
        "{}{SELF_PROBE}",
        alerting(
            smtp.port,
            "  scrape_watchdog: 1s\n",
            "    starttls: never\n    send_timeout: 1s\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let a = wait_alerting(&dw, "the delivery cut off", |a| {
        a["last_error"]["reason"] == "timeout"
    })
    .await;
    assert!(
        a["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("no delivery within send_timeout 1s"),
        "{a}"
    );
    let w = smtp.wait_kind("watchdog", 1).await;
    assert_eq!(w.len(), 1);
    wait_alerting(&dw, "the queue drained", |a| a["queued_emails"] == 0).await;
    assert_eq!(smtp.of_kind("watchdog").len(), 1);
}

#[tokio::test]
async fn reminders_queued_during_an_smtp_outage_are_not_sent_after_the_resolution() {
    // SMTP down while jobs fails, is reminded of several times, recovers:
    // once the server is back, firing then resolved, no stale reminders.
    let mut smtp = Smtp::stopped(&[]);
    let redis_port = free_port();
    let redis = crate::redis::RedisServer::start_on(redis_port, None);
    let yaml = format!(
        "{}{SELF_PROBE}{}",
        alerting(
            smtp.port,
            "  mode: always\n  scrape_watchdog: 1h\n",
            "    starttls: never\n    repeat_interval: 1s\n"
        ),
        redis_probe(redis_port)
    );
    let dw = Depwatch::start(&yaml).await;
    let _scraper = Scraper::start(dw.url("/metrics"));
    wait_alerting(&dw, "jobs checked", |_| true).await;
    drop(redis);
    wait_alerting(&dw, "reminders queued behind the firing email", |a| {
        a["queued_emails"].as_u64().is_some_and(|n| n >= 3)
    })
    .await;
    let _redis = crate::redis::RedisServer::start_on(redis_port, None);
    wait_alerting(&dw, "the incident resolved", |a| {
        a["open_incidents"].as_array().is_some_and(|l| l.is_empty())
    })
    .await;
    smtp.restart();
    smtp.wait_kind("resolved", 1).await;
    wait_alerting(&dw, "the queue drained", |a| a["queued_emails"] == 0).await;
    let kinds: Vec<String> = smtp.mails().iter().map(Mail::kind).collect();
    assert_eq!(kinds, ["firing", "resolved"]);
    assert!(
        dw.log()
            .contains("a later one about the same incident is queued")
    );
}

#[tokio::test]
async fn a_message_the_server_refuses_for_good_does_not_hold_back_the_next() {
    // The server refuses the watchdog email (its content), takes the rest.
    let smtp = Smtp::start(&["--refuse", "pipeline down"]);
    let dead = free_port();
    let alert = alerting(
        smtp.port,
        "  scrape_watchdog: 1s\n",
        "    starttls: never\n",
    );
    let dw = Depwatch::start(&format!("{alert}{SELF_PROBE}")).await;
    let a = wait_alerting(&dw, "the watchdog email refused", |a| {
        a["last_error"]["reason"] == "rejected"
    })
    .await;
    assert_eq!(a["last_error"]["kind"], "watchdog", "{a}");
    assert!(
        a["last_error"]["message"].as_str().unwrap().contains("554"),
        "{a}"
    );
    // An incident after it: its email is not held back behind the refused one.
    dw.rewrite_config(&format!("{alert}{SELF_PROBE}{}", redis_probe(dead)));
    dw.proc.signal("HUP");
    let f = smtp.wait_kind("firing", 1).await.remove(0);
    assert!(f.subject().contains("jobs"), "{}", f.subject());
    let a = wait_alerting(&dw, "the queue drained", |a| a["queued_emails"] == 0).await;
    assert_eq!(a["last_email"]["kind"], "firing", "{a}");
    assert!(dw.log().contains("Alert email given up"), "{}", dw.log());
    assert!(smtp.of_kind("watchdog").is_empty());
}

#[tokio::test]
async fn a_recipient_refused_for_good_does_not_keep_the_email_from_the_others() {
    let smtp = Smtp::start(&["--refuse-rcpt", "gone@example.com"]);
    let yaml = with_a_second_recipient(smtp.port, "gone@example.com");
    let dw = Depwatch::start(&yaml).await;
    let w = smtp.wait_kind("watchdog", 1).await.remove(0);
    assert_eq!(
        w.view["rcpt_tos"],
        serde_json::json!(["oncall@example.com"])
    );
    let a = wait_alerting(&dw, "the refusal shown", |a| !a["last_error"].is_null()).await;
    let message = a["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("delivered to 1 of 2 recipients; refused for gone@example.com")
            && message.contains("550"),
        "{a}"
    );
    assert_eq!(a["last_error"]["reason"], "rejected", "{a}");
    assert_eq!(a["last_email"]["kind"], "watchdog", "{a}");
    assert!(
        dw.metrics().await.value(
            "depwatch_alert_email_failures_total",
            &[("kind", "watchdog")]
        ) >= 1.0
    );
    // Sent once, not retried: the queue is empty.
    let a = wait_alerting(&dw, "the queue drained", |a| a["queued_emails"] == 0).await;
    assert_eq!(smtp.of_kind("watchdog").len(), 1, "{a}");
    // A test email says so and fails.
    let (code, out) = send_test_email(&dw.config_path);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("refused for gone@example.com"), "{out}");
}

#[tokio::test]
async fn a_mailbox_full_for_a_while_does_not_hold_the_email_back_from_the_others() {
    // busy@ is over quota for its first two RCPTs: oncall@ gets the email
    // at once, busy@ alone once its mailbox takes mail; each exactly once.
    let smtp = Smtp::start(&["--defer-rcpt", "busy@example.com:2"]);
    let yaml = with_a_second_recipient(smtp.port, "busy@example.com");
    let dw = Depwatch::start(&yaml).await;
    let w = smtp.wait_kind("watchdog", 2).await;
    assert_eq!(
        w[0].view["rcpt_tos"],
        serde_json::json!(["oncall@example.com"]),
        "the others waited for the full mailbox"
    );
    assert_eq!(
        w[1].view["rcpt_tos"],
        serde_json::json!(["busy@example.com"])
    );
    assert_eq!(w[0].header("message-id"), w[1].header("message-id"));
    let a = wait_alerting(&dw, "the queue drained", |a| a["queued_emails"] == 0).await;
    let message = a["last_error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("delivered to 1 of 2 recipients; refused for busy@example.com")
            && message.contains("452")
            && message.contains("retrying busy@example.com alone"),
        "{a}"
    );
    assert_eq!(a["last_error"]["reason"], "transient", "{a}");
    // Nothing more: a later email (a scrape resolves the pipeline) goes
    // to both at once, and the watchdog one is not sent again.
    dw.metrics().await;
    let r = smtp.wait_kind("resolved", 1).await.remove(0);
    assert_eq!(
        r.view["rcpt_tos"],
        serde_json::json!(["busy@example.com", "oncall@example.com"])
    );
    assert_eq!(smtp.of_kind("watchdog").len(), 2);
}

#[tokio::test]
async fn fixing_a_refused_recipient_and_reloading_unblocks_the_queued_email() {
    // A typo in `to`: the server refuses it, the watchdog email waits.
    let smtp = Smtp::start(&["--refuse-rcpt", "oncal@example.com"]);
    let alert = alerting(
        smtp.port,
        "  scrape_watchdog: 1s\n",
        "    starttls: never\n",
    );
    let typo = alert.replace("to: [oncall@example.com]", "to: [oncal@example.com]");
    let dw = Depwatch::start(&format!("{typo}{SELF_PROBE}")).await;
    let a = wait_alerting(&dw, "the recipient refused", |a| {
        a["last_error"]["reason"] == "rejected"
    })
    .await;
    assert!(
        a["last_error"]["message"].as_str().unwrap().contains("550"),
        "{a}"
    );
    // Fixed and reloaded: the email queued before goes to the fixed address.
    dw.rewrite_config(&format!("{alert}{SELF_PROBE}"));
    dw.proc.signal("HUP");
    let w = smtp.wait_kind("watchdog", 1).await.remove(0);
    assert_eq!(
        w.view["rcpt_tos"],
        serde_json::json!(["oncall@example.com"])
    );
    wait_alerting(&dw, "the queue drained", |a| a["queued_emails"] == 0).await;
    assert_eq!(smtp.of_kind("watchdog").len(), 1);
}

#[tokio::test]
async fn max_per_hour_holds_emails_back_and_counts_them() {
    let smtp = Smtp::start(&[]);
    let dead = free_port();
    let yaml = format!(
        "{}{SELF_PROBE}{}",
        alerting(
            smtp.port,
            "  mode: always\n  scrape_watchdog: 1s\n  max_per_hour: 1\n  page_url: https://depwatch.example/status/\n",
            "    starttls: never\n"
        ),
        redis_probe(dead)
    );
    let dw = Depwatch::start(&yaml).await;
    // One email goes (the watchdog or the firing one); the other is held back.
    let a = wait_alerting(&dw, "an email held back", |a| {
        a["held_back"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    assert_eq!(a["pipeline"], "down");
    wait_for("the one email", WAIT, || async {
        (smtp.mails().len() == 1).then_some(())
    })
    .await;
    assert!(dw.log().contains("max_per_hour reached"));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].text().contains("https://depwatch.example/status/"),
        "{}",
        mails[0].text()
    );
    // The one email says it is the last this hour, in both parts.
    let note = "This is the last email max_per_hour (1) allows this hour: until ";
    assert!(mails[0].text().contains(note), "{}", mails[0].text());
    assert!(
        mails[0].view["html"].as_str().unwrap().contains(note),
        "{}",
        mails[0].view["html"]
    );
}

#[tokio::test]
async fn an_email_held_back_by_max_per_hour_goes_once_the_hour_makes_room_even_after_a_restart() {
    let smtp = Smtp::start(&[]);
    let dead = free_port();
    let state = tempfile::tempdir().unwrap();
    let listen = free_port();
    let mk = |max: u32| {
        format!(
            "listen: 127.0.0.1:{listen}\nstate_dir: {}\n{}{SELF_PROBE}{}",
            state.path().display(),
            alerting(
                smtp.port,
                &format!("  mode: always\n  scrape_watchdog: 1s\n  max_per_hour: {max}\n"),
                "    starttls: never\n"
            ),
            redis_probe(dead)
        )
    };
    let mut dw = Depwatch::start(&mk(1)).await;
    // The watchdog and the firing email: one goes, the other is held back.
    wait_alerting(&dw, "an email held back", |a| {
        a["held_back"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    let first = wait_for("the one email", WAIT, || async {
        smtp.mails().first().map(Mail::kind)
    })
    .await;
    let held = if first == "watchdog" {
        "firing"
    } else {
        "watchdog"
    };
    let a = wait_alerting(&dw, "the incident held back shown", |a| {
        a["open_incidents"]
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["held_back"] == held))
    })
    .await;
    assert_eq!(a["held_back"], 1, "{a}");
    // Stopped, the hour passes (the outbox's times moved an hour back),
    // started again: the email held back goes at once, about now.
    dw.proc.signal("TERM");
    let _ = dw.proc.child.wait();
    let db = rusqlite::Connection::open(state.path().join("depwatch.db")).unwrap();
    db.execute(
        "UPDATE alert_emails SET created_ms = created_ms - 3600000",
        [],
    )
    .unwrap();
    drop(db);
    dw = Depwatch::start(&mk(1)).await;
    let m = smtp.wait_kind(held, 1).await.remove(0);
    if held == "firing" {
        assert!(m.subject().contains("jobs unhealthy"), "{}", m.subject());
    }
    assert!(
        m.text().contains("Held back by max_per_hour since"),
        "{}",
        m.text()
    );
    // Sent after the components' first results since the start, which it
    // shows (not `unknown`), and after this run judged the pipeline (no
    // scrape for scrape_watchdog: down, not the `ok` it starts at).
    assert!(
        !m.text().lines().any(|l| l.trim_end().ends_with(" unknown")),
        "{}",
        m.text()
    );
    let state = m
        .text()
        .lines()
        .find(|l| l.trim_start().starts_with("State "))
        .map(|l| l.split_whitespace().last().unwrap_or_default().to_string());
    assert_eq!(state.as_deref(), Some("down"), "{}", m.text());
    // Once: a later email (more room, then a scrape resolves the pipeline)
    // comes after it, and nothing was sent twice.
    std::fs::write(&dw.config_path, mk(10)).unwrap();
    dw.proc.signal("HUP");
    wait_for("the reload", WAIT, || async {
        dw.log().contains("Configuration reloaded.").then_some(())
    })
    .await;
    wait_alerting(&dw, "the pipeline down", |a| a["pipeline"] == "down").await;
    dw.metrics().await;
    smtp.wait_kind("resolved", 1).await;
    let kinds: Vec<String> = smtp.mails().iter().map(Mail::kind).collect();
    assert_eq!(kinds, [first.as_str(), held, "resolved"]);
}

/// A CA and a server certificate for 127.0.0.1/localhost it signed: (ca pem, cert pem, key pem).
fn test_pki() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    p.subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = p.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn starttls_with_auth_works_and_a_wrong_password_is_an_auth_failure_without_leaks() {
    let (ca, cert, key) = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let write = |n: &str, t: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, t).unwrap();
        p.display().to_string()
    };
    let (ca_f, cert_f, key_f) = (
        write("ca.pem", &ca),
        write("cert.pem", &cert),
        write("key.pem", &key),
    );
    let smtp = Smtp::start(&[
        "--auth",
        "alerts:s3cret-pass-word",
        "--cert",
        &cert_f,
        "--key",
        &key_f,
        "--require-starttls",
    ]);
    let pw_file = write("pw", "s3cret-pass-word\n");
    let token = "admin-token-123";
    let yaml = |pw: &str| {
        format!(
            "auth:\n  admin_token: {token}\n{}{SELF_PROBE}",
            alerting(
                smtp.port,
                "  scrape_watchdog: 1h\n",
                &format!(
                    "    ca_file: {ca_f}\n    username: alerts\n    {pw}\n    hello_name: depwatch.test\n"
                )
            )
            .replace("smtp://127.0.0.1", "smtp://localhost")
        )
    };
    // send-test-email through STARTTLS (required by default) and AUTH.
    let (_d, _p, path) = write_config(&yaml(&format!("password_file: {pw_file}")));
    let (code, text) = send_test_email(&path);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sent: the server answered 250"), "{text}");
    let m = smtp.wait_kind("test", 1).await.remove(0);
    assert_eq!(m.view["tls"], true);
    assert!(
        smtp.auth_log().contains("alerts tls ok"),
        "{}",
        smtp.auth_log()
    );

    // Wrong password: an auth failure, counted, shown, the password nowhere.
    let wrong = "Wr0ng-Pa55word-xyz";
    let dw = Depwatch::start_with_env(
        &yaml("password: ${SMTP_PASSWORD}"),
        &[("SMTP_PASSWORD", wrong)],
    )
    .await;
    let (code, body) = dw.post("/api/admin/alerts/test", Some(token)).await;
    assert_eq!(code, 502, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "auth", "{v}");
    assert!(v["error"].as_str().unwrap().contains("535"), "{v}");
    assert!(!body.contains(wrong));
    let m = dw.metrics().await;
    assert_eq!(
        m.value("depwatch_alert_email_failures_total", &[("kind", "test")]),
        1.0
    );
    dw.assert_never_shown(&[wrong]).await;
    assert!(smtp.auth_log().contains("alerts tls bad"));
}

#[tokio::test]
async fn a_refused_login_backs_off_and_a_reload_of_the_smtp_settings_retries_at_once() {
    let smtp = Smtp::start(&["--auth", "alerts:right-pass-123", "--allow-plain-auth"]);
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    let yaml = format!(
        "{}{SELF_PROBE}",
        alerting(
            smtp.port,
            "  scrape_watchdog: 1s\n",
            &format!(
                "    starttls: never\n    username: alerts\n    password_file: {}\n",
                pw_file.display()
            )
        )
    );
    let (wrong1, wrong2, right) = ("Wr0ng-one-xyz", "Wr0ng-two-xyz", "right-pass-123");
    std::fs::write(&pw_file, wrong1).unwrap();
    let dw = Depwatch::start(&yaml).await;
    let bad = |n: usize| {
        let smtp = &smtp;
        async move {
            wait_for(&format!("{n} refused logins"), WAIT, || async {
                (smtp.auth_log().matches(" bad\n").count() >= n).then_some(())
            })
            .await
        }
    };
    bad(1).await;
    let a = wait_alerting(&dw, "the refused login shown", |a| {
        a["last_error"]["reason"] == "auth"
    })
    .await;
    let e = &a["last_error"];
    assert!(e["message"].as_str().unwrap().contains("535"), "{a}");
    assert!(e["hint"].as_str().unwrap().contains("password"), "{a}");
    // The next attempt in a minute, not in a second.
    let at = |k: &str| chrono_ms(e[k].as_str().unwrap_or_else(|| panic!("no `{k}` in {a}")));
    let wait = at("next_attempt") - at("at");
    assert!((59_000..=61_000).contains(&wait), "{wait} ms: {a}");
    assert_eq!(
        dw.metrics()
            .await
            .value("depwatch_alert_email_backoff_seconds", &[]),
        60.0
    );
    // Another wrong password, reloaded: tried at once, and the refusal
    // logged again (the reload meant to fix it; the log says it did not).
    std::fs::write(&pw_file, wrong2).unwrap();
    dw.proc.signal("HUP");
    bad(2).await;
    // The right one: delivered at once (and the resolution the scrape
    // above brought, behind it).
    std::fs::write(&pw_file, right).unwrap();
    dw.proc.signal("HUP");
    smtp.wait_kind("watchdog", 1).await;
    let log = smtp.auth_log();
    assert_eq!(log.matches(" bad\n").count(), 2, "{log}");
    // The catcher has the email before depwatch has read the server's
    // answer and logged it.
    wait_for("the delivery logged", WAIT, || async {
        dw.log()
            .contains("Alert emails are delivered again.")
            .then_some(())
    })
    .await;
    let dwlog = dw.log();
    assert_eq!(
        dwlog
            .matches("Alert email refused; retrying less and less often.")
            .count(),
        2,
        "{dwlog}"
    );
    assert!(
        dwlog.contains("Alert emails are delivered again."),
        "{dwlog}"
    );
    wait_for("the backoff cleared", WAIT, || async {
        let m = dw.metrics().await;
        (m.value("depwatch_alert_email_backoff_seconds", &[]) == 0.0).then_some(())
    })
    .await;
    dw.assert_never_shown(&[wrong1, wrong2, right]).await;
    for secret in [wrong1, wrong2, right] {
        assert!(!dwlog.contains(secret), "{secret} in the log");
    }
}

/// An RFC 3339 time of `/api/health` in ms since the epoch.
fn chrono_ms(t: &str) -> i64 {
    let t = humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn starttls_required_but_not_offered_sends_nothing_and_no_plaintext_auth() {
    let smtp = Smtp::start(&["--auth", "alerts:pw-not-to-be-sent", "--allow-plain-auth"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dw.yml");
    std::fs::write(
        &cfg,
        format!(
            "probes:\n  - name: self\n    kind: process\n    self: true\n{}",
            alerting(
                smtp.port,
                "",
                "    username: alerts\n    password: pw-not-to-be-sent\n"
            )
        ),
    )
    .unwrap();
    let (code, text) = send_test_email(&cfg);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("does not offer STARTTLS and starttls is required"),
        "{text}"
    );
    assert!(text.contains("tls:"), "{text}");
    assert!(!text.contains("pw-not-to-be-sent"));
    assert_eq!(smtp.auth_log(), "", "AUTH was attempted in plaintext");
    assert!(smtp.mails().is_empty());
}

/// `send-test-email` to a port where no SMTP server answers (a server that
/// waits for the client, one that speaks another protocol) fails within
/// `timeout`, saying what answered, instead of after `send_timeout`.
#[tokio::test]
async fn a_test_email_to_a_port_that_is_not_smtp_fails_fast_and_says_so() {
    use std::io::Write;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let chatty = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = [
        silent.local_addr().unwrap().port(),
        chatty.local_addr().unwrap().port(),
    ];
    // Each holds what it accepted until the test ends.
    std::thread::spawn(move || {
        let kept: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(kept);
    });
    std::thread::spawn(move || {
        for mut c in chatty.incoming().take(1).flatten() {
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    for (port, want) in [
        (
            ports[0],
            format!(
                "timeout: 127.0.0.1:{} accepted the connection but sent no SMTP greeting within 1s",
                ports[0]
            ),
        ),
        (
            ports[1],
            format!(
                "connect: 127.0.0.1:{} answered `HTTP/1.1 400 Bad Request`, not an SMTP greeting",
                ports[1]
            ),
        ),
    ] {
        let cfg = dir.path().join(format!("dw-{port}.yml"));
        let yaml = format!("probes: []\n{}", alerting(port, "", ""))
            .replace("timeout: 3s", "timeout: 1s\n    send_timeout: 60s");
        std::fs::write(&cfg, yaml).unwrap();
        let started = std::time::Instant::now();
        let (code, text) = send_test_email(&cfg);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains(&want), "{text}");
        assert!(
            text.contains(
                "(is it an SMTP server? smtp:// is usually port 587 or 25, smtps:// 465)"
            ),
            "{text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}

/// The alerting of [`alerting`] with a 1 s scrape watchdog, its email to
/// `first` and then to oncall@example.com, and depwatch watching itself.
fn with_a_second_recipient(smtp_port: u16, first: &str) -> String {
    format!(
        "{}{SELF_PROBE}",
        alerting(
            smtp_port,
            "  scrape_watchdog: 1s\n",
            "    starttls: never\n"
        )
        .replace(
            "to: [oncall@example.com]",
            &format!("to: [{first}, oncall@example.com]")
        )
    )
}
