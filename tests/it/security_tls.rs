//! depwatch's own TLS with real clients — curl, reqwest (rustls) and a real
//! Prometheus scraping with `tls_config` and `basic_auth` — certificate
//! rotation without a restart, client certificates, and the server's limits
//! under abuse (slowloris, a thousand idle connections, oversized heads, a
//! hundred concurrent /probe) while an authorised scraper keeps its answers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::security::{PASS, USER, hash};
use crate::support::*;

struct Pki {
    dir: tempfile::TempDir,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `NAME-ca.pem`, and a certificate for `sans` signed by it as
    /// `NAME.pem` / `NAME.key`.
    fn issue(
        &self,
        name: &str,
        issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        sans: &[&str],
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(
            sans.iter()
                .filter(|s| s.parse::<std::net::IpAddr>().is_err())
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        for s in sans {
            if let Ok(ip) = s.parse::<std::net::IpAddr>() {
                p.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
            }
        }
        let cert = p.signed_by(&key, issuer).unwrap();
        std::fs::write(self.path(&format!("{name}-ca.pem")), issuer.pem()).unwrap();
        // Written aside and renamed: a reader never sees half a file.
        for (ext, text) in [("pem", cert.pem()), ("key", key.serialize_pem())] {
            let tmp = self.path(&format!(".{name}.{ext}"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path(&format!("{name}.{ext}"))).unwrap();
        }
    }
}

/// `curl` against depwatch: the status code, or 0 when TLS failed.
fn curl(port: u16, path: &str, args: &[&str]) -> u16 {
    let out = Command::new(require("curl", "apt-get install curl"))
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A reqwest client with rustls (ring) trusting `ca`, optionally with a
/// client certificate.
fn rustls_client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match identity {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
    };
    http_client()
        .tls_backend_preconfigured(cfg)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn web_file(pki: &Pki, extra_tls: &str, users: bool) -> PathBuf {
    let mut text = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{extra_tls}",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    if users {
        text.push_str(&format!("basic_auth_users:\n  {USER}: {}\n", hash(PASS)));
    }
    let p = pki.path("web.yml");
    std::fs::write(&p, text).unwrap();
    p
}

const CONFIG: &str = "access:\n  metrics: authenticated\n  health: summary\nprobes:\n  - name: self\n    kind: process\n    self: true\n";

#[tokio::test]
async fn tls_with_basic_auth_serves_curl_reqwest_and_prometheus_and_rotates_without_restart() {
    let pki = Pki::new();
    let ca1 = ca("first");
    pki.issue("server", &ca1, &["localhost", "127.0.0.1"]);
    std::fs::copy(pki.path("server-ca.pem"), pki.path("ca1.pem")).unwrap();
    let web = web_file(&pki, "  min_version: TLS12\n", true);
    let dw = Depwatch::start_with(CONFIG, &[], &["--web.config.file", web.to_str().unwrap()]).await;
    assert!(dw.tls, "depwatch did not print an https address");
    let ca1_path = pki.path("ca1.pem");
    let ca1_arg = ca1_path.to_str().unwrap();
    let user = format!("{USER}:{PASS}");

    // curl: right and wrong credentials, and the anonymous health summary.
    assert_eq!(
        curl(dw.port, "/metrics", &["--cacert", ca1_arg, "-u", &user]),
        200
    );
    assert_eq!(curl(dw.port, "/metrics", &["--cacert", ca1_arg]), 401);
    assert_eq!(
        curl(
            dw.port,
            "/metrics",
            &["--cacert", ca1_arg, "-u", "alice:wrong"]
        ),
        401
    );
    assert_eq!(curl(dw.port, "/api/health", &["--cacert", ca1_arg]), 200);
    // An untrusted client refuses the certificate; plain HTTP gets nothing.
    assert_eq!(curl(dw.port, "/metrics", &[]), 0);
    let plain = http_client()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/healthz", dw.port))
        .send()
        .await;
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true));

    // reqwest with rustls.
    let c = rustls_client(&ca1_path, None);
    let url = format!("https://127.0.0.1:{}/metrics", dw.port);
    let r = c
        .get(&url)
        .basic_auth(USER, Some(PASS))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("depwatch_up"));
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);

    // A real Prometheus scraping over TLS with basic auth.
    let prometheus = require("prometheus", "apt-get install prometheus");
    let dir = tempfile::tempdir().unwrap();
    let pass_file = dir.path().join("password");
    std::fs::write(&pass_file, PASS).unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: depwatch\n    scheme: https\n    tls_config:\n      ca_file: {ca1_arg}\n    basic_auth:\n      username: {USER}\n      password_file: {}\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            pass_file.display(),
            dw.port
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut prom = crate::bundle::spawn_prometheus(&prometheus, dir.path(), &config, prom_port);
    wait_listening(&mut prom, prom_port, Duration::from_secs(30));
    let q = |query: &'static str| async move {
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{prom_port}/api/v1/query"),
            &[("query", query)],
        )
        .unwrap();
        let v: serde_json::Value = http_client()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    };
    wait_for(
        "Prometheus scraping depwatch over TLS with basic auth",
        Duration::from_secs(30),
        || async {
            (q(r#"up{job="depwatch"}"#).await.as_deref() == Some("1")
                && q(r#"depwatch_up{component="self"}"#).await.as_deref() == Some("1"))
            .then_some(())
        },
    )
    .await;

    // Rotation: a certificate from another CA, swapped in place; the running
    // depwatch serves it within seconds, and the old CA no longer fits.
    let ca2 = ca("second");
    pki.issue("server", &ca2, &["localhost", "127.0.0.1"]);
    let ca2_path = pki.path("server-ca.pem");
    let ca2_arg = ca2_path.to_str().unwrap().to_string();
    let user2 = user.clone();
    let port = dw.port;
    wait_for("the rotated certificate served", Duration::from_secs(20), || {
        let (a, u) = (ca2_arg.clone(), user2.clone());
        async move { (curl(port, "/metrics", &["--cacert", &a, "-u", &u]) == 200).then_some(()) }
    })
    .await;
    assert_eq!(
        curl(dw.port, "/metrics", &["--cacert", ca1_arg, "-u", &user]),
        0
    );
    assert!(dw.log().contains("TLS certificate or key changed"));

    // A broken rotation (a key that does not fit) keeps the last good pair.
    std::fs::write(
        pki.path("server.key"),
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    wait_for(
        "the broken rotation noticed",
        Duration::from_secs(20),
        || async {
            let _ = curl(
                port,
                "/healthz",
                &["--cacert", &ca2_path.display().to_string()],
            );
            dw.log()
                .contains("TLS files changed but cannot be used")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        curl(
            dw.port,
            "/metrics",
            &["--cacert", ca2_path.to_str().unwrap(), "-u", &user]
        ),
        200
    );
}

#[tokio::test]
async fn client_certificates_are_required_verified_and_matched_by_san() {
    let pki = Pki::new();
    let server_ca = ca("server");
    pki.issue("server", &server_ca, &["127.0.0.1"]);
    let client_ca = ca("clients");
    pki.issue("scraper", &client_ca, &["scraper.example"]);
    pki.issue("intruder", &client_ca, &["intruder.example"]);
    let stranger_ca = ca("stranger");
    pki.issue("stranger", &stranger_ca, &["scraper.example"]);
    let web = web_file(
        &pki,
        &format!(
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n  client_allowed_sans: [scraper.example]\n",
            pki.path("scraper-ca.pem").display()
        ),
        false,
    );
    let dw = Depwatch::start_with(CONFIG, &[], &["--web.config.file", web.to_str().unwrap()]).await;
    let ca = pki.path("server-ca.pem").display().to_string();
    let with = |name: &str| {
        vec![
            "--cacert".to_string(),
            ca.clone(),
            "--cert".into(),
            pki.path(&format!("{name}.pem")).display().to_string(),
            "--key".into(),
            pki.path(&format!("{name}.key")).display().to_string(),
        ]
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(dw.port, "/metrics", &a)
    };
    // The verified certificate is the credential: no password needed.
    assert_eq!(run(with("scraper")), 200);
    assert_eq!(
        run(vec!["--cacert".into(), ca.clone()]),
        0,
        "no client certificate"
    );
    assert_eq!(run(with("stranger")), 0, "a certificate of another CA");
    assert_eq!(run(with("intruder")), 0, "a SAN that is not allowed");
    // reqwest with rustls and the client certificate.
    let c = rustls_client(
        &pki.path("server-ca.pem"),
        Some((&pki.path("scraper.pem"), &pki.path("scraper.key"))),
    );
    let r = c
        .get(format!("https://127.0.0.1:{}/metrics", dw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn tls13_only_refuses_tls12_clients() {
    let pki = Pki::new();
    let ca = ca("only13");
    pki.issue("server", &ca, &["127.0.0.1"]);
    let web = web_file(&pki, "  min_version: TLS13\n", true);
    let dw = Depwatch::start_with(CONFIG, &[], &["--web.config.file", web.to_str().unwrap()]).await;
    let ca = pki.path("server-ca.pem").display().to_string();
    assert_eq!(
        curl(dw.port, "/healthz", &["--cacert", &ca, "--tls-max", "1.2"]),
        0
    );
    assert_eq!(
        curl(dw.port, "/healthz", &["--cacert", &ca, "--tlsv1.3"]),
        200
    );
}

/// Raises this test process' open-file limit (a thousand idle sockets).
fn raise_nofile() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_under_abuse_while_the_authorised_scraper_keeps_its_answers() {
    raise_nofile();
    // A partner that answers after a second: /probe checks pile up.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "slow"
        }),
    );
    let slow_task = tokio::spawn(async move {
        let _ = axum::serve(slow, app).await;
    });
    let yaml = format!(
        "{}access:\n  metrics: authenticated\n  probe: authenticated\nlimits:\n  probe_concurrency: 16\nmodules:\n  slow:\n    allowed_targets: [\"http://127.0.0.1:*/*\"]\n    timeout: 5s\nprobes:\n  - name: self\n    kind: process\n    self: true\n",
        crate::security::credentials_yaml()
    );
    let dw = Depwatch::start_with_fd_limit(&yaml, 8192).await;
    let port = dw.port;

    // The scraper: every 100 ms, with the right password, from 127.0.0.1.
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let answers = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (stop, worst, answers) = (stop.clone(), worst.clone(), answers.clone());
        tokio::spawn(async move {
            let c = http_client()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = c
                    .get(format!("http://127.0.0.1:{port}/metrics"))
                    .basic_auth(USER, Some(PASS))
                    .send()
                    .await;
                let ok = matches!(&r, Ok(r) if r.status() == 200);
                assert!(ok, "the scraper lost an answer: {r:?}");
                worst.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                answers.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // 1. A thousand idle connections from another address.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        idle.push(
            s.connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    // 2. Slowloris: a request head, one byte a second.
    let loris = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head =
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let t = Instant::now();
        for b in head {
            if s.write_all(&[*b]).is_err() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        t.elapsed()
    });
    // 3. Oversized request heads: 431, never a hang.
    let c = http_client().build().unwrap();
    for _ in 0..20 {
        let r = c
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .header("X-Big", "a".repeat(64 << 10))
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), 431);
        }
    }
    // 4. A hundred /probe at once against the slow partner: 16 run, the rest 429.
    let target = format!("http://127.0.0.1:{slow_port}/");
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (c, t) = (c.clone(), target.clone());
        probes.spawn(async move {
            let url = reqwest::Url::parse_with_params(
                &format!("http://127.0.0.1:{port}/probe"),
                &[("module", "slow"), ("target", t.as_str())],
            )
            .unwrap();
            c.get(url)
                .bearer_auth(crate::security::TOKEN)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        });
    }
    let mut codes = std::collections::BTreeMap::<u16, u32>::new();
    while let Some(c) = probes.join_next().await {
        *codes.entry(c.unwrap()).or_default() += 1;
    }
    assert_eq!(codes.get(&200).copied().unwrap_or(0), 16, "{codes:?}");
    assert_eq!(codes.get(&429).copied().unwrap_or(0), 84, "{codes:?}");

    // The slowloris connection is cut at the header timeout (10 s), long
    // before its head is complete.
    let lasted = tokio::task::spawn_blocking(move || loris.join().unwrap())
        .await
        .unwrap();
    assert!(lasted < Duration::from_secs(20), "{lasted:?}");
    drop(idle);
    stop.store(true, Ordering::Relaxed);
    scraper.await.unwrap();
    slow_task.abort();
    let worst = Duration::from_millis(worst.load(Ordering::Relaxed));
    let n = answers.load(Ordering::Relaxed);
    println!(
        "scraper: {n} answers, slowest {worst:?}; /probe codes {codes:?}; slowloris cut after {lasted:?}"
    );
    assert!(n >= 50, "{n} answers");
    assert!(
        worst < Duration::from_secs(1),
        "the scraper waited {worst:?}"
    );
    let m = dw.metrics_as(USER, PASS).await;
    assert_eq!(
        m.value(
            "depwatch_http_requests_limited_total",
            &[("reason", "probe_concurrency")]
        ),
        84.0
    );
}
