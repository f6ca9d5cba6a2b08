//! depwatch's own HTTP server under pressure: connections that send nothing
//! (or a request head that never ends, or nothing more after an answer) are
//! closed after a timeout, a flood of them never starves `/healthz`,
//! `/metrics` or `/api/health`, a client that takes nothing of a large
//! answer loses its connection, and SIGTERM still lets a request in flight
//! finish.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const YAML: &str = "probes:\n  - name: self\n    kind: process\n    self: true\n    interval: 1h\n    jitter: 0s\n";

/// A client that opens a fresh connection per request (a pooled one could be
/// among those the server closes).
fn fresh_client() -> reqwest::Client {
    crate::support::http_client()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: String) -> Option<String> {
    let r = client.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

#[tokio::test]
async fn idle_connections_do_not_starve_the_endpoints() {
    const NOFILE: u32 = 256;
    let dw = Depwatch::start_with_fd_limit(YAML, NOFILE).await;
    // More idle connections than depwatch may have open files.
    let mut idle = Vec::new();
    for _ in 0..NOFILE + 64 {
        idle.push(TcpStream::connect(("127.0.0.1", dw.port)).await.unwrap());
    }
    let client = fresh_client();
    let started = Instant::now();
    let mut metrics = String::new();
    for path in ["/healthz", "/api/health", "/metrics"] {
        let body = wait_for(
            &format!("{path} to answer beside idle connections"),
            Duration::from_secs(8),
            || get(&client, dw.url(path)),
        )
        .await;
        metrics = body;
    }
    // Well before the idle connections time out: the server made room.
    assert!(started.elapsed() < Duration::from_secs(8));
    let m = Metrics::parse(&metrics);
    let limit = m.value("depwatch_server_connections_limit", &[]);
    assert!(limit > 0.0 && limit < f64::from(NOFILE), "{limit}");
    let rejected = m.value("depwatch_server_connections_rejected_total", &[]);
    assert!(rejected >= 1.0, "{}", m.text);
    assert!(m.value("depwatch_server_connections", &[]) <= limit);
    // Logged once per burst, not once per connection.
    let logged = dw.log().matches("Connection limit reached").count();
    assert!(
        logged >= 1 && (logged as f64) <= rejected,
        "{logged} / {rejected}"
    );
    drop(idle);
}

/// Reads until the peer closes the connection; the bytes read.
async fn until_closed(mut s: TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one `/healthz` answer (its body is `ok`).
async fn read_answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let dw = Depwatch::start(YAML).await;
    let addr = ("127.0.0.1", dw.port);
    const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: depwatch\r\n\r\n";
    // A connection that never sends a byte.
    let silent = TcpStream::connect(addr).await.unwrap();
    // A request head that never ends.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: depwatch\r\n")
        .await
        .unwrap();
    // A keep-alive connection: two requests answered, then nothing more.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        kept.write_all(REQUEST).await.unwrap();
        let answer = read_answer(&mut kept).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(until_closed(silent), until_closed(slow), until_closed(kept))
    })
    .await;
    assert!(
        closed.is_ok(),
        "connections still open after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish() {
    // A partner that accepts and never answers: the /probe request below is
    // in flight from its accept on until the scrape budget (1.5s) ends.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(1);
    let _hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
            let _ = accepted_tx.try_send(());
        }
    });
    let mut dw = Depwatch::start(&format!(
        "modules:\n  m:\n    allowed_targets: [\"http://127.0.0.1:*/*\"]\n    timeout: 10s\n{YAML}"
    ))
    .await;
    let url = dw.url(&format!(
        "/probe?module=m&target=http%3A%2F%2F127.0.0.1%3A{hole_port}%2F"
    ));
    let request = tokio::spawn(
        crate::support::http_client()
            .build()
            .unwrap()
            .get(url)
            .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
            .timeout(Duration::from_secs(10))
            .send(),
    );
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .expect("the probe reached the partner");
    dw.proc.signal("TERM");
    let answer = request.await.unwrap().expect("an answer despite SIGTERM");
    assert_eq!(answer.status().as_u16(), 200);
    let body = answer.text().await.unwrap();
    assert!(body.contains("depwatch_probe_success"), "{body}");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = dw.proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_client_that_takes_nothing_of_a_large_answer_loses_its_connection() {
    // An /api/health larger than the socket buffers can take (the kernel's
    // send buffer grows to 4 MiB at most): 12,000 components, ~7 MB.
    let mut yaml = String::from("health:\n  cache_ttl: 1h\nprobes:\n");
    for i in 0..12_000 {
        yaml.push_str(&format!(
            "  - {{ name: p{i:05}, kind: http, url: \"http://127.0.0.1:9/\", interval: 1h, jitter: 1s, timeout: 1s }}\n"
        ));
    }
    let dw = Depwatch::start(&yaml).await;
    // Every component checked (a failed check says more than none).
    let whole = wait_for(
        "an /api/health of 6 MB",
        Duration::from_secs(60),
        || async {
            let n = dw.get("/api/health").await.1.len();
            (n > 6_000_000).then_some(n)
        },
    )
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket
        .connect(([127, 0, 0, 1], dw.port).into())
        .await
        .unwrap();
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: depwatch\r\n\r\n")
        .await
        .unwrap();
    // Nothing read for longer than the write stall timeout (30 s).
    tokio::time::sleep(Duration::from_secs(36)).await;
    // What the buffers held, then the close: sooner than an answer read to
    // its end would be closed (10 s idle), and without the answer's end.
    let got = tokio::time::timeout(Duration::from_secs(8), until_closed(s))
        .await
        .expect("the server closed the connection");
    assert!(got.len() < whole, "{} of {whole} bytes", got.len());
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "the whole answer arrived: {} bytes",
        got.len()
    );
    // The server is fine.
    assert_eq!(dw.get("/healthz").await.0, 200);
}

/// A `listen` address that cannot be bound stops the start with what to do
/// about it: taken by another server, or not an address of this machine.
#[test]
fn a_listen_address_that_cannot_be_bound_says_why() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    for (listen, want) in [
        (
            format!("127.0.0.1:{port}"),
            "Address already in use (os error 98) (is another depwatch (or another server) running there? change `listen`)".to_string(),
        ),
        (
            // TEST-NET-1: documentation only, on no interface here.
            "192.0.2.1:9877".to_string(),
            "(no interface of this machine has the address 192.0.2.1: use one of its own, 127.0.0.1, or 0.0.0.0 for all)".to_string(),
        ),
    ] {
        let state = tempfile::tempdir().unwrap();
        let (dir, _, config) = write_config(&format!(
            "listen: {listen}\nstate_dir: {}\nprobes: []\n",
            state.path().display()
        ));
        let err = refused(dir.path(), &config);
        assert!(err.contains(&format!("cannot listen on {listen}: ")), "{err}");
        assert!(err.contains(&want), "{err}");
    }
}
