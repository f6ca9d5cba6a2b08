//! `/metrics` as scrapers get it: gzip when they accept it (decoded by a
//! real decoder and by curl), one encoding shared by many scrapes, and a
//! check's result in the very next scrape.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

const SECS10: Duration = Duration::from_secs(10);
const TOKEN: &str = "scrape-test-admin-token-0123456789";

/// A process probe of depwatch itself that checks only when asked.
async fn start() -> Depwatch {
    let dw = Depwatch::start(&format!(
        "auth:\n  admin_token: {TOKEN}\nprobes:\n  - name: self\n    kind: process\n    self: true\n    interval: 1h\n    timeout: 2s\n    jitter: 0s\n"
    ))
    .await;
    dw.wait_metrics("the first check", SECS10, |m| {
        m.get(
            "depwatch_checks_total",
            &[("component", "self"), ("kind", "process")],
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    dw
}

async fn raw(
    dw: &Depwatch,
    accept: &str,
    encoding: Option<&str>,
) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let mut r = dw.client.get(dw.url("/metrics")).header("Accept", accept);
    if let Some(e) = encoding {
        r = r.header("Accept-Encoding", e);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    (h, r.bytes().await.unwrap().to_vec())
}

/// The series of an exposition (names and labels, without values).
fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k))
        .collect()
}

const PROMETHEUS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[tokio::test]
async fn gzip_answers_decode_to_the_same_exposition() {
    let dw = start().await;
    for (accept, eof) in [(PROMETHEUS_ACCEPT, true), ("text/plain", false)] {
        let (h, gz) = raw(&dw, accept, Some("gzip")).await;
        let (h_plain, plain) = raw(&dw, accept, None).await;
        assert_eq!(h["content-encoding"], "gzip");
        assert!(h_plain.get("content-encoding").is_none());
        for h in [&h, &h_plain] {
            let vary = h["vary"].to_str().unwrap().to_ascii_lowercase();
            assert!(vary.contains("accept-encoding"), "{vary}");
            let len: usize = h["content-length"].to_str().unwrap().parse().unwrap();
            assert!(len > 0);
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .expect("a valid gzip member");
        let plain = String::from_utf8(plain).unwrap();
        assert!(
            gz.len() * 3 < plain.len(),
            "{} gzip bytes for {}",
            gz.len(),
            plain.len()
        );
        assert_eq!(text.ends_with("# EOF\n"), eof);
        // The same series (their values may be of another encoding when
        // a second passed between the two scrapes).
        assert_eq!(series(&text), series(&plain));
        let m = Metrics::parse(&text);
        assert!(
            m.get("depwatch_last_scrape_timestamp_seconds", &[])
                .unwrap()
                > 1.7e9
        );
        if !eof {
            promtool_check_metrics(&text);
        }
    }
    // curl decodes it as any client would.
    let out = Command::new("curl")
        .args(["-sS", "--compressed", "--max-time", "10"])
        .arg(dw.url("/metrics"))
        .output()
        .expect("curl (apt-get install -y curl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("depwatch_up{component=\"self\",kind=\"process\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn scrapes_share_one_encoding_until_a_result_changes() {
    let dw = start().await;
    let encodes = |m: &Metrics| m.value("depwatch_scrape_encodes_total", &[("format", "text")]);
    let checks = |m: &Metrics| {
        m.value(
            "depwatch_checks_total",
            &[("component", "self"), ("kind", "process")],
        )
    };
    let first = dw.metrics().await;
    let t0 = Instant::now();
    let n = 60;
    for _ in 0..n {
        let _ = raw(&dw, "text/plain", Some("gzip")).await;
    }
    let elapsed = t0.elapsed();
    let last = dw.metrics().await;
    let made = encodes(&last) - encodes(&first);
    // At most one encoding per second without changes (plus the edges).
    assert!(
        made <= elapsed.as_secs_f64().ceil() + 2.0 && made < f64::from(n),
        "{made} encodings for {n} scrapes in {elapsed:?}"
    );
    // A check's result is in the very next scrape, however recent the
    // encoding was.
    for _ in 0..3 {
        let before = checks(&dw.metrics().await);
        let (code, body) = dw
            .post("/api/admin/probes/run?component=self", Some(TOKEN))
            .await;
        assert_eq!(code, 200, "{body}");
        let after = checks(&dw.metrics().await);
        assert_eq!(after, before + 1.0);
    }
}
