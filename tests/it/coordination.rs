//! The HA sender election (`alerting.coordination`) with two real depwatch
//! processes, a real redis-server as the coordinator, another one as the
//! watched dependency, and a real SMTP catcher: one incident is one email,
//! a SIGKILLed leader is replaced within its lease by a peer that neither
//! resends nor forgets the resolution, and with the coordinator down each
//! sends alone and says so.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::alerting::{Smtp, alerting, alerting_health, wait_alerting};
use crate::redis::RedisServer;
use crate::support::*;

const LEASE: Duration = Duration::from_secs(2);

fn config(smtp: u16, coord: &str, instance: &str, watched: u16) -> String {
    format!(
        "{}probes:
  - name: jobs
    kind: redis
    url: redis://127.0.0.1:{watched}/0
    interval: 200ms
    timeout: 150ms
    failure_threshold: 1
",
        alerting(
            smtp,
            &format!(
                "  mode: always\n  coordination: {coord}\n  coordination_lease: 2s\n  instance: {instance}\n"
            ),
            "    starttls: never\n"
        )
    )
}

async fn wait_sender_metric(dw: &Depwatch, v: f64) {
    dw.wait_metrics(
        &format!("depwatch_alert_sender {v}"),
        Duration::from_secs(10),
        |m| m.get("depwatch_alert_sender", &[]) == Some(v),
    )
    .await;
}

async fn sender(dw: &Depwatch) -> Value {
    alerting_health(dw).await["sender"].clone()
}

async fn wait_role(dw: &Depwatch, role: &str) -> Value {
    wait_alerting(dw, &format!("sender role {role}"), |a| {
        a["sender"]["role"] == role
    })
    .await["sender"]
        .clone()
}

#[tokio::test]
async fn an_ha_pair_emails_once_and_a_takeover_neither_resends_nor_forgets() {
    // The coordinator's password never shows.
    let coord = RedisServer::start(Some("coord-pass-Zq81"));
    let watched_port = free_port();
    let watched = RedisServer::start_on(watched_port, None);
    let smtp = Smtp::start(&[]);
    let mut a = Depwatch::start(&config(smtp.port, &coord.url(), "dw-a", watched_port)).await;
    let s = wait_role(&a, "leader").await;
    assert_eq!(s["leader"], "dw-a", "{s}");
    assert_eq!(s["coordinator"], "ok", "{s}");
    let b = Depwatch::start(&config(smtp.port, &coord.url(), "dw-b", watched_port)).await;
    let s = wait_role(&b, "follower").await;
    assert_eq!(s["leader"], "dw-a", "{s}");
    wait_sender_metric(&a, 1.0).await;
    wait_sender_metric(&b, 0.0).await;

    // One incident, seen by both: one email, from the leader.
    drop(watched);
    let firing = smtp.wait_kind("firing", 1).await.remove(0);
    wait_for(
        "the follower to leave its email to the leader",
        Duration::from_secs(30),
        || async {
            b.log()
                .contains("Alert emails left to the HA leader")
                .then_some(())
        },
    )
    .await;
    assert_eq!(smtp.of_kind("firing").len(), 1, "both instances emailed");
    let root = firing.header("message-id");

    // SIGKILL the leader: the follower takes over within the lease.
    a.proc.signal("KILL");
    let _ = a.proc.child.wait();
    let killed = Instant::now();
    let s = wait_role(&b, "leader").await;
    let took = killed.elapsed();
    assert_eq!(s["leader"], "dw-b", "{s}");
    assert!(
        took < LEASE * 3,
        "took over after {took:?} (lease {LEASE:?})"
    );
    wait_sender_metric(&b, 1.0).await;
    // It adopted the open incident (no new firing email for it) ...
    let al = alerting_health(&b).await;
    assert!(
        al["open_incidents"].as_array().is_some_and(|l| l
            .iter()
            .any(|i| i["components"] == serde_json::json!(["jobs"]))),
        "{al}"
    );

    // ... and owes its resolution: exactly one, threaded under the first.
    let _watched = RedisServer::start_on(watched_port, None);
    let resolved = smtp.wait_kind("resolved", 1).await.remove(0);
    assert_eq!(resolved.header("in-reply-to"), root);
    assert_eq!(
        smtp.of_kind("firing").len(),
        1,
        "the takeover resent the firing email"
    );
    assert_eq!(smtp.of_kind("resolved").len(), 1);
    let (_, health) = b.health("").await;
    let text = health.to_string() + &b.metrics().await.text + &b.log();
    assert!(
        !text.contains("coord-pass-Zq81"),
        "the coordinator's password leaked"
    );
    assert!(
        health["alerting"]["sender"]["coordination"]
            .as_str()
            .is_some_and(|u| u.contains("127.0.0.1")),
        "{health}"
    );
    println!("took over in {took:?}; sender after: {}", sender(&b).await);
}

#[tokio::test]
async fn with_the_coordinator_down_each_sends_alone_and_marks_it() {
    let coord = RedisServer::start(None);
    let watched_port = free_port();
    let watched = RedisServer::start_on(watched_port, None);
    let smtp = Smtp::start(&[]);
    let a = Depwatch::start(&config(smtp.port, &coord.url(), "dw-a", watched_port)).await;
    wait_role(&a, "leader").await;
    let b = Depwatch::start(&config(smtp.port, &coord.url(), "dw-b", watched_port)).await;
    wait_role(&b, "follower").await;

    drop(coord);
    for dw in [&a, &b] {
        let s = wait_role(dw, "uncoordinated").await;
        assert_eq!(s["coordinator"], "down", "{s}");
        assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()), "{s}");
        wait_sender_metric(dw, 1.0).await;
    }

    drop(watched);
    let mails = smtp.wait_kind("firing", 2).await;
    let mut from: Vec<String> = mails
        .iter()
        .map(|m| {
            let t = m.text();
            assert!(t.contains("Sent without coordination"), "{t}");
            if t.contains("dw-a cannot reach") {
                "dw-a".to_string()
            } else if t.contains("dw-b cannot reach") {
                "dw-b".to_string()
            } else {
                panic!("{t}")
            }
        })
        .collect();
    from.sort();
    assert_eq!(from, ["dw-a", "dw-b"]);
}

#[tokio::test]
async fn without_coordination_the_instance_says_it_sends_alone() {
    let smtp = Smtp::start(&[]);
    let dw = Depwatch::start(&format!(
        "{}probes:\n  - name: self\n    kind: process\n    self: true\n",
        alerting(smtp.port, "", "    starttls: never\n")
    ))
    .await;
    let s = wait_role(&dw, "sole").await;
    assert!(s["note"].as_str().unwrap().contains("sends alone"), "{s}");
}
