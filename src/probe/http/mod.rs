//! `kind: http` — a partner HTTP API, checked the way a real client calls it:
//! a fresh connection per check (DNS, TCP connect, TLS handshake, request,
//! first byte, bounded body read, each timed), the answer checked against
//! `expect`, the peer certificate's expiry read during the handshake.
//!
//! This file is the probe: its metric families, `build` and the check.
//! The keys are `config.rs`', the judging of an answer `expect.rs`', the
//! `/probe` templates and their allow-list `module.rs`'; the requests go
//! through [`crate::net::Client`], the one HTTP client of depwatch.

mod config;
pub mod expect;
mod module;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::units::format_duration;
use crate::metrics::kit::{ComponentOnly, GaugeF, SeriesGate};
use crate::metrics::lines::{Kept, LabelSet, Labels, Lines, touch_str};
use crate::net::client::{Answer, Client, Phase, Timings};
use crate::probe::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, Details, FamiliesOf, Outcome, Probe,
    Reason, Status,
};

pub use config::{Spec, SpecData};
pub use expect::Expect;
pub use module::Module;

/// The default buckets of the check duration: partner APIs over the network.
pub const BUCKETS: &[f64] = crate::probe::core::API_BUCKETS;

/// The largest body judged on the checks thread (about a millisecond of
/// JSON parsing); a larger one is judged on a blocking thread.
const JUDGE_INLINE_MAX: usize = 256 << 10;

// --------------------------------------------------------------- metrics --

/// The HTTP status of a failed request as a label: the code, or `none`
/// when no answer came.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Code(pub u16);

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct FailureLabels {
    pub component: Arc<str>,
    pub reason: Reason,
    pub code: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct PhaseLabels {
    pub component: Arc<str>,
    pub phase: &'static str,
}

impl LabelSet for FailureLabels {
    fn write(&self, out: &mut Labels<'_>) {
        let mut code = itoa::Buffer::new();
        let code = match self.code.0 {
            0 => "none",
            c => code.format(c),
        };
        out.add("component", &self.component)
            .add("reason", self.reason.as_str())
            .add("code", code);
    }

    fn touch(&self) -> u64 {
        touch_str(&self.component)
    }
}

impl LabelSet for PhaseLabels {
    fn write(&self, out: &mut Labels<'_>) {
        out.add("component", &self.component)
            .add("phase", self.phase);
    }

    fn touch(&self) -> u64 {
        touch_str(&self.component)
    }
}

const PHASES: [&str; 5] = ["dns", "connect", "tls", "first_byte", "transfer"];

pub struct Metrics {
    requests: Lines<ComponentOnly, Counter>,
    failures: Lines<FailureLabels, Counter>,
    cert_expiry: Lines<ComponentOnly, GaugeF>,
    phase: Lines<PhaseLabels, GaugeF>,
    status_code: Lines<ComponentOnly, Gauge>,
}

impl Metrics {
    pub fn register(r: &mut crate::metrics::lines::Registry) -> Self {
        let m = Metrics {
            requests: Lines::default(),
            failures: Lines::default(),
            cert_expiry: Lines::default(),
            phase: Lines::default(),
            status_code: Lines::default(),
        };
        r.register(
            "depwatch",
            "http_requests",
            "Checks of the partner API (one request per check, redirects it followed included)",
            m.requests.clone(),
        );
        r.register(
            "depwatch",
            "http_request_failures",
            "Failed requests, by reason and HTTP status (none: no answer)",
            m.failures.clone(),
        );
        r.register(
            "depwatch",
            "http_tls_cert_expiry_timestamp_seconds",
            "When the partner's certificate expires (Unix time; also set when it failed verification)",
            m.cert_expiry.clone(),
        );
        r.register(
            "depwatch",
            "http_phase_duration_seconds",
            "Time spent in each phase of the last request (dns, connect, tls, first_byte, transfer)",
            m.phase.clone(),
        );
        r.register(
            "depwatch",
            "http_status_code",
            "The HTTP status of the last answer (0: none)",
            m.status_code.clone(),
        );
        m
    }

    fn forget(&self, c: &ComponentOnly, failures: &[FailureLabels]) {
        for l in failures {
            self.failures.remove(l);
        }
        self.requests.remove(c);
        self.cert_expiry.remove(c);
        self.status_code.remove(c);
        for phase in PHASES {
            self.phase.remove(&PhaseLabels {
                component: c.component.clone(),
                phase,
            });
        }
    }
}

// ----------------------------------------------------------------- probe --

pub struct HttpProbe {
    spec: Spec,
    client: Client,
    label: ComponentOnly,
    metrics: Arc<Metrics>,
    /// The failure series written so far (reason × code), to forget them.
    failure_series: std::sync::Mutex<Vec<FailureLabels>>,
    gate: SeriesGate,
    series: Kept<Series>,
    /// Where the last check that the timeout dropped was (see
    /// [`Probe::timed_out`]).
    cut: std::sync::Mutex<Option<Cut>>,
}

/// A check the timeout dropped: the phase it was in, and its details.
struct Cut {
    phase: Option<Phase>,
    url: Option<Arc<str>>,
    status: u16,
    head_bytes: u64,
    body_bytes: usize,
    details: Details,
    took: Duration,
}

/// Handles on the series every check writes (see [`Kept`]).
struct Series {
    requests: Counter,
    status_code: Gauge,
    /// In the order of `PHASES`.
    phase: [GaugeF; 5],
}

pub fn build<F: FamiliesOf<Metrics> + ?Sized>(
    spec: &Spec,
    ctx: &BuildCtx<'_, F>,
) -> Result<HttpProbe, BuildError> {
    let mut probe = build_with(
        spec,
        ctx.name,
        FamiliesOf::<Metrics>::families(ctx.metrics).clone(),
    )?;
    probe.gate = ctx.gate.clone();
    Ok(probe)
}

/// Builds a probe that writes into `metrics` under the component `name`
/// (`/probe` uses a fresh registry per request).
pub fn build_with(spec: &Spec, name: &str, metrics: Arc<Metrics>) -> Result<HttpProbe, BuildError> {
    let client = Client::new(&spec.request).map_err(|e| BuildError {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    Ok(HttpProbe {
        spec: spec.clone(),
        client,
        label: ComponentOnly {
            component: name.into(),
        },
        metrics,
        failure_series: std::sync::Mutex::new(Vec::new()),
        gate: SeriesGate::default(),
        series: Kept::default(),
        cut: std::sync::Mutex::new(None),
    })
}

/// Records a check into the metrics when it ends, and also when it is cut
/// by the timeout (the future is dropped): then it counts as `timeout`.
struct Recorder<'a> {
    probe: &'a HttpProbe,
    started: Instant,
    t: Timings,
    done: bool,
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        if !self.done {
            let phase = self.t.cut();
            self.probe.record(&self.t, Some(Reason::Timeout));
            let took = self.started.elapsed();
            let cut = Cut {
                phase,
                url: self.t.final_url.clone(),
                status: self.t.status,
                head_bytes: self.t.head_bytes(),
                body_bytes: self.t.body_bytes,
                details: self.probe.details(&self.t, took),
                took,
            };
            *self.probe.cut.lock().unwrap_or_else(|e| e.into_inner()) = Some(cut);
        }
    }
}

/// Milliseconds, two decimals.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

impl HttpProbe {
    fn record(&self, t: &Timings, failed: Option<Reason>) {
        // Also called when a check is dropped (`Recorder`), e.g. by the
        // reload that removed the component: its series stay removed.
        let Some(_live) = self.gate.open() else {
            return;
        };
        let m = &self.metrics;
        let make = || Series {
            requests: m.requests.get_or_create(&self.label),
            status_code: m.status_code.get_or_create(&self.label),
            phase: PHASES.map(|phase| {
                m.phase.get_or_create(&PhaseLabels {
                    component: self.label.component.clone(),
                    phase,
                })
            }),
        };
        self.series.with(make, |s| {
            s.requests.inc();
            if let Some(reason) = failed {
                let l = FailureLabels {
                    component: self.label.component.clone(),
                    reason,
                    code: Code(t.status),
                };
                m.failures.get_or_create(&l).inc();
                let mut seen = self
                    .failure_series
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if !seen.contains(&l) {
                    seen.push(l);
                }
            }
            if let Some(na) = t.cert_not_after {
                m.cert_expiry.get_or_create(&self.label).set(na as f64);
            }
            s.status_code.set(i64::from(t.status));
            for (g, d) in s
                .phase
                .iter()
                .zip([t.dns, t.connect, t.tls, t.first_byte, t.transfer])
            {
                g.set(d.as_secs_f64());
            }
        });
    }

    /// The check's details, serialized straight from the timings (no map:
    /// a check makes them at every round).
    fn details(&self, t: &Timings, total: Duration) -> Details {
        let cert = t.cert_not_after.map(|na| {
            let left = na as f64 - crate::util::time::unix_now();
            (
                crate::util::time::rfc3339(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(na.max(0) as u64),
                ),
                (left / 864.0).round() / 100.0,
            )
        });
        Details::json(&HttpDetails {
            url: t.final_url.as_deref(),
            status_code: (t.status != 0).then_some(t.status),
            phases_ms: Phases {
                dns: ms(t.dns),
                connect: ms(t.connect),
                tls: ms(t.tls),
                first_byte: ms(t.first_byte),
                transfer: ms(t.transfer),
                total: ms(total),
            },
            body_bytes: t.body_bytes,
            redirects: t.redirects,
            tls_version: t.tls_version,
            cert_not_after: cert.as_ref().map(|c| c.0.as_str()),
            cert_expires_in_days: cert.as_ref().map(|c| c.1),
        })
    }
}

/// An http check's details (`/api/health`), in this order.
#[derive(serde::Serialize)]
struct HttpDetails<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    /// `null` when no answer came.
    status_code: Option<u16>,
    phases_ms: Phases,
    body_bytes: usize,
    redirects: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_not_after: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_expires_in_days: Option<f64>,
}

#[derive(serde::Serialize)]
struct Phases {
    dns: f64,
    connect: f64,
    tls: f64,
    first_byte: f64,
    transfer: f64,
    total: f64,
}

impl HttpProbe {
    /// The answer against `expect`: a large body (JSON parsed, regexes run
    /// over it) on a blocking thread, so that the checks thread does not
    /// stop every other check for the time it takes.
    async fn judge(&self, a: Answer) -> Result<(), (Reason, String)> {
        if a.body.len() <= JUDGE_INLINE_MAX {
            return self.spec.expect.judge(&a);
        }
        let expect = self.spec.expect.clone();
        tokio::task::spawn_blocking(move || expect.judge(&a))
            .await
            .unwrap_or_else(|e| Err((Reason::Internal, format!("judging the answer: {e}"))))
    }

    fn evaluate(
        &self,
        judged: Result<(), (Reason, String)>,
        t: &Timings,
        total: Duration,
    ) -> CheckResult {
        let spec = &self.spec;
        if let Err((reason, msg)) = judged {
            let mut err = CheckError::new(reason, msg);
            err.details = self.details(t, total);
            return Err(err);
        }
        let mut out = Outcome::healthy(self.details(t, total));
        if let Some(slow) = spec.slow_above.filter(|s| total > *s) {
            out.raise(
                Status::Degraded,
                format!(
                    "answered in {:.0}ms, slower than {}",
                    total.as_secs_f64() * 1000.0,
                    format_duration(slow)
                ),
            );
        }
        if let Some(na) = t.cert_not_after {
            let left = na as f64 - crate::util::time::unix_now();
            let days = left / 86_400.0;
            let what = if left <= 0.0 {
                "the certificate has expired".to_string()
            } else {
                format!("the certificate expires in {days:.1} days")
            };
            if left < spec.cert_expiry_critical.as_secs_f64() {
                out.raise(Status::Unhealthy, what);
            } else if left < spec.cert_expiry_warn.as_secs_f64() {
                out.raise(Status::Degraded, what);
            }
        }
        Ok(out)
    }
}

impl Probe for HttpProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            let mut rec = Recorder {
                probe: self,
                started: Instant::now(),
                t: Timings::default(),
                done: false,
            };
            let answer = self.client.send(&mut rec.t).await;
            let total = rec.started.elapsed();
            let mut result = match answer {
                Ok(a) => {
                    let judged = self.judge(a).await;
                    self.evaluate(judged, &rec.t, total)
                }
                Err(mut e) => {
                    e.details = self.details(&rec.t, total);
                    Err(e)
                }
            };
            // The check's duration (depwatch_check_duration_seconds{kind="http"},
            // which replaced depwatch_http_duration_seconds) is the request,
            // DNS lookup to the last body byte, redirects included: judging
            // the body afterwards is depwatch's time, not the partner's.
            match &mut result {
                Ok(o) => o.took = Some(total),
                Err(e) => e.took = Some(total),
            }
            rec.done = true;
            self.record(&rec.t, result.as_ref().err().map(|e| e.reason));
            result
        })
    }

    fn timed_out(&self, after: Duration) -> CheckError {
        let Some(cut) = self.cut.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return CheckError::new(
                Reason::Timeout,
                format!("no answer within the timeout of {}", format_duration(after)),
            );
        };
        let after = format_duration(after);
        let url = cut.url.as_deref().unwrap_or("the partner");
        let message = match cut.phase {
            Some(Phase::Dns) => format!(
                "{url}: the name was not resolved within the timeout of {after} \
                 (a slow or unreachable resolver: check /etc/resolv.conf)"
            ),
            Some(Phase::Connect) => format!(
                "{url}: no connection within the timeout of {after} \
                 (a firewall dropping packets, or the partner's accept queue is full)"
            ),
            Some(Phase::Tls) => format!(
                "{url}: the TLS handshake did not end within the timeout of {after} \
                 (does this port speak TLS? is the partner overloaded?)"
            ),
            Some(Phase::FirstByte) if cut.head_bytes > 0 => format!(
                "{url}: the answer's head was still arriving at the timeout of {after} \
                 ({} bytes so far: the partner sends it slowly; raise timeout if that is normal)",
                cut.head_bytes
            ),
            Some(Phase::FirstByte) => format!(
                "{url}: no answer within the timeout of {after} after the request \
                 (the partner took the connection but did not answer: raise timeout if it is only slow)"
            ),
            Some(Phase::Transfer) => format!(
                "{url}: the body was still arriving at the timeout of {after} \
                 (status {}, {} bytes so far: the partner sends it slowly; raise timeout if that is normal)",
                cut.status, cut.body_bytes
            ),
            None => format!("{url}: no answer within the timeout of {after}"),
        };
        let mut err = CheckError::new(Reason::Timeout, message);
        err.details = cut.details;
        err.took = Some(cut.took);
        err
    }

    fn forget(&self) {
        let seen = self
            .failure_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.metrics.forget(&self.label, &seen);
    }
}
