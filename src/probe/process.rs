//! `kind: process` — a process found by `self: true`, `pid`, `pidfile` or
//! `process_name` (a regex), measured with sysinfo: resident memory, CPU seconds,
//! start time, threads and open file descriptors. A process that is gone is
//! a failed check (`not_found`); a new start time is a restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

use super::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, FamiliesOf, Outcome, Probe, Reason,
    Status,
};
use crate::config::check::Checker;
use crate::config::units::Size;
use crate::config::yaml::Node;
use crate::metrics::kit::{AbsCounter, ComponentOnly, GaugeF, SeriesGate};
use crate::util::pool::{PoolError, Workers};

/// The default buckets of the check duration: a sample of /proc.
pub const BUCKETS: &[f64] = crate::probe::core::FAST_BUCKETS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "self", default)]
    self_: bool,
    pid: Option<u32>,
    pidfile: Option<String>,
    /// A regex on the process name (`name` is the component's own name).
    process_name: Option<String>,
    memory_degraded_above: Option<Size>,
    memory_unhealthy_above: Option<Size>,
}

#[derive(Clone, Debug)]
pub enum Target {
    SelfProcess,
    Pid(u32),
    Pidfile(PathBuf),
    Name(Regex),
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Target::SelfProcess, Target::SelfProcess) => true,
            (Target::Pid(a), Target::Pid(b)) => a == b,
            (Target::Pidfile(a), Target::Pidfile(b)) => a == b,
            (Target::Name(a), Target::Name(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub target: Target,
    pub memory_degraded_above: Option<u64>,
    pub memory_unhealthy_above: Option<u64>,
}

impl Spec {
    pub fn parse(node: &Node, path: &str, c: &Checker, also: &[&'static str]) -> Option<Spec> {
        let raw: Raw = c.parse_kind(node, path, also)?;
        let set = [
            raw.self_,
            raw.pid.is_some(),
            raw.pidfile.is_some(),
            raw.process_name.is_some(),
        ];
        let count = set.iter().filter(|s| **s).count();
        if count != 1 {
            let msg = if count == 0 {
                "no process to watch"
            } else {
                "more than one way to find the process"
            };
            c.problem(
                path,
                msg,
                "set exactly one of `self: true`, `pid`, `pidfile` or `process_name`",
            );
            return None;
        }
        let target = if raw.self_ {
            Target::SelfProcess
        } else if let Some(pid) = raw.pid {
            Target::Pid(pid)
        } else if let Some(f) = raw.pidfile {
            Target::Pidfile(c.path(&format!("{path}.pidfile"), &f))
        } else {
            let pat = raw.process_name.unwrap_or_default();
            match Regex::new(&pat) {
                Ok(r) => Target::Name(r),
                Err(e) => {
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .trim_start_matches("error: ")
                        .to_string();
                    c.problem(
                        &format!("{path}.process_name"),
                        format!("invalid regex: {first}"),
                        "process_name is a regular expression, e.g. ^myapp$",
                    );
                    return None;
                }
            }
        };
        let deg = raw.memory_degraded_above.map(|s| s.0);
        let unh = raw.memory_unhealthy_above.map(|s| s.0);
        if let (Some(d), Some(u)) = (deg, unh)
            && d >= u
        {
            c.problem(
                &format!("{path}.memory_degraded_above"),
                "memory_degraded_above is not below memory_unhealthy_above",
                "degraded is the earlier warning: make it the lower limit",
            );
        }
        Some(Spec {
            target,
            memory_degraded_above: deg,
            memory_unhealthy_above: unh,
        })
    }
}

/// The process metric families, labelled by component, and what all
/// process probes share.
pub struct Metrics {
    samplers: Samplers,
    rss: Family<ComponentOnly, Gauge>,
    cpu: Family<ComponentOnly, AbsCounter>,
    start: Family<ComponentOnly, GaugeF>,
    fds: Family<ComponentOnly, Gauge>,
    threads: Family<ComponentOnly, Gauge>,
    restarts: Family<ComponentOnly, Counter>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Metrics {
            samplers: Samplers::default(),
            rss: Family::default(),
            cpu: Family::default(),
            start: Family::default(),
            fds: Family::default(),
            threads: Family::default(),
            restarts: Family::default(),
        };
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the watched process",
            m.rss.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "CPU time (user and system) of the watched process",
            m.cpu.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "When the watched process started (Unix time)",
            m.start.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of the watched process",
            m.fds.clone(),
        );
        r.register(
            "process_threads",
            "Threads of the watched process",
            m.threads.clone(),
        );
        r.register(
            "process_restarts",
            "Restarts of the watched process seen by depwatch (a new start time)",
            m.restarts.clone(),
        );
        m
    }

    fn forget(&self, c: &ComponentOnly) {
        self.rss.remove(c);
        self.cpu.remove(c);
        self.start.remove(c);
        self.fds.remove(c);
        self.threads.remove(c);
        self.restarts.remove(c);
    }
}

/// The threads that take process samples: a fixed set (one per core, at
/// least two: /proc reads are kernel CPU work, more at once would not go
/// faster), started at the first check — see [`Workers`] for why not
/// tokio's blocking pool.
pub struct Samplers(Workers);

impl Default for Samplers {
    fn default() -> Self {
        Samplers(Workers::new("depwatch-sampler", 0, SAMPLER_QUEUE))
    }
}

/// Samples waiting beyond this fail at once: those checks are late already.
const SAMPLER_QUEUE: usize = 4096;

impl Samplers {
    /// Runs `f` on a sampler thread. A sample whose check was abandoned
    /// (timeout, reload) before its turn came is skipped.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, CheckError> + Send + 'static,
    ) -> Result<T, CheckError> {
        self.0.run(f).await.map_err(|e| match e {
            PoolError::Full(n) => CheckError::new(
                Reason::Timeout,
                format!("{n} process samples are waiting already"),
            ),
            PoolError::Panicked => CheckError::new(Reason::Internal, "the process sample panicked"),
            e => CheckError::new(Reason::Internal, e.to_string()),
        })?
    }
}

pub struct ProcessProbe {
    spec: Spec,
    label: ComponentOnly,
    metrics: Arc<Metrics>,
    state: Arc<Mutex<Seen>>,
    gate: SeriesGate,
}

struct Seen {
    system: Option<System>,
    last: Option<(u32, u64)>,
    restarts: u64,
}

pub fn build<F: FamiliesOf<Metrics> + ?Sized>(
    spec: &Spec,
    ctx: &BuildCtx<'_, F>,
) -> Result<ProcessProbe, BuildError> {
    Ok(ProcessProbe {
        spec: spec.clone(),
        label: ComponentOnly {
            component: ctx.name.into(),
        },
        metrics: FamiliesOf::<Metrics>::families(ctx.metrics).clone(),
        state: Arc::new(Mutex::new(Seen {
            system: None,
            last: None,
            restarts: 0,
        })),
        gate: ctx.gate.clone(),
    })
}

struct Sample {
    pid: u32,
    name: String,
    rss: u64,
    cpu_seconds: f64,
    start_time: u64,
    threads: Option<usize>,
    fds: Option<usize>,
    matches: usize,
}

/// A process found: its pid, how many processes matched, and for a
/// pidfile when it was last written.
type Found = (u32, usize, Option<SystemTime>);

fn find_pid(target: &Target, system: &mut System) -> Result<Found, CheckError> {
    match target {
        Target::SelfProcess => Ok((std::process::id(), 1, None)),
        Target::Pid(p) => Ok((*p, 1, None)),
        Target::Pidfile(path) => {
            let cannot = |e: std::io::Error| {
                CheckError::new(
                    Reason::NotFound,
                    format!("cannot read pidfile {}: {e}", path.display()),
                )
            };
            let mut f = std::fs::File::open(path).map_err(cannot)?;
            let written = f.metadata().and_then(|m| m.modified()).ok();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text).map_err(cannot)?;
            text.trim().parse().map(|p| (p, 1, written)).map_err(|_| {
                CheckError::new(
                    Reason::NotFound,
                    format!("pidfile {} does not hold a pid", path.display()),
                )
            })
        }
        Target::Name(re) => {
            system.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                ProcessRefreshKind::nothing().with_cmd(UpdateKind::OnlyIfNotSet),
            );
            let mut found: Vec<(u64, u32)> = system
                .processes()
                .values()
                .filter(|p| p.thread_kind().is_none() && alive(p.status()))
                .filter(|p| {
                    let comm = p.name().to_string_lossy();
                    re.is_match(&comm) || full_name(p).is_some_and(|n| re.is_match(&n))
                })
                .map(|p| (p.start_time(), p.pid().as_u32()))
                .collect();
            found.sort_unstable();
            // The oldest match is the main process; the others are its children.
            found
                .first()
                .map(|(_, pid)| (*pid, found.len(), None))
                .ok_or_else(|| {
                    CheckError::new(
                        Reason::NotFound,
                        format!("no process named like `{}`", re.as_str()),
                    )
                })
        }
    }
}

/// The kernel keeps the first 15 bytes of a process's name (`comm`, what
/// `ps` and `pgrep` show): a longer one, as it was started, is the first
/// word of its command line when that begins with those 15 bytes. `None`
/// for a name that was not cut.
fn full_name(p: &sysinfo::Process) -> Option<String> {
    const COMM_MAX: usize = 15;
    let comm = p.name().to_string_lossy();
    if comm.len() != COMM_MAX {
        return None;
    }
    let arg0 = p.cmd().first()?.to_string_lossy();
    let base = arg0.rsplit('/').next().unwrap_or_default();
    (base.len() > COMM_MAX && base.starts_with(&*comm)).then(|| base.to_string())
}

fn alive(s: ProcessStatus) -> bool {
    !matches!(s, ProcessStatus::Zombie | ProcessStatus::Dead)
}

/// Whether a process that started at `started` (seconds since the epoch,
/// as the kernel counts them: whole seconds, from the boot time) cannot be
/// the one that wrote a pidfile last written at `written`: a process writes
/// its pidfile after it starts (a wrapper that writes `$$` and then execs
/// keeps its start), so one that started later has a pid the kernel gave
/// again, after the process that wrote the file was gone.
fn started_after(started: u64, written: SystemTime) -> bool {
    // Two seconds of slack: the start is rounded to a second, and the boot
    // time it is counted from moves with clock adjustments.
    let written = written
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    started > written + 2
}

fn sample(target: &Target, system: &mut System) -> Result<Sample, CheckError> {
    let (pid, matches, written) = find_pid(target, system)?;
    let spid = Pid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[spid]),
        true,
        // Not `with_tasks`: it reads a file per thread (hundreds for a
        // JVM) and keeps an entry for each; the count is one read below.
        ProcessRefreshKind::nothing()
            .with_memory()
            .with_cpu()
            .with_cmd(UpdateKind::OnlyIfNotSet),
    );
    let p = system
        .process(spid)
        .filter(|p| alive(p.status()))
        .ok_or_else(|| {
            CheckError::new(Reason::NotFound, format!("process {pid} is not running"))
        })?;
    if let (Some(written), Target::Pidfile(path)) = (written, target)
        && started_after(p.start_time(), written)
    {
        return Err(CheckError::new(
            Reason::NotFound,
            format!(
                "pidfile {} is stale: pid {pid} is `{}`, started {} after the pidfile was written {} (the process that wrote it is gone; the pid was given again)",
                path.display(),
                p.name().to_string_lossy(),
                crate::util::time::rfc3339(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(p.start_time())
                ),
                crate::util::time::rfc3339(written),
            ),
        ));
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
        .or_else(|| p.open_files());
    Ok(Sample {
        pid,
        name: full_name(p).unwrap_or_else(|| p.name().to_string_lossy().into_owned()),
        rss: p.memory(),
        cpu_seconds: p.accumulated_cpu_time() as f64 / 1000.0,
        start_time: p.start_time(),
        threads: crate::procfs::threads(pid).map(|t| t as usize),
        fds,
        matches,
    })
}

impl ProcessProbe {
    fn check_blocking(&self) -> CheckResult {
        let mut seen = self
            .state
            .lock()
            .map_err(|_| CheckError::new(Reason::Internal, "process state poisoned"))?;
        let system = match &mut seen.system {
            Some(s) => s,
            slot => slot.insert(
                System::new()
                    .map_err(|e| CheckError::new(Reason::Internal, format!("sysinfo: {e}")))?,
            ),
        };
        let s = sample(&self.spec.target, system)?;
        let restarted =
            matches!(seen.last, Some((pid, start)) if pid != s.pid || start != s.start_time);
        if restarted {
            seen.restarts += 1;
            tracing::warn!(pid = s.pid, process = %s.name, "Watched process restarted.");
        }
        seen.last = Some((s.pid, s.start_time));
        // This runs on a sampler thread and outlives a check abandoned by
        // a reload: the gate keeps a removed component's series removed.
        if let Some(_live) = self.gate.open() {
            let m = &self.metrics;
            m.rss.get_or_create(&self.label).set(s.rss as i64);
            m.cpu.get_or_create(&self.label).set(s.cpu_seconds);
            m.start.get_or_create(&self.label).set(s.start_time as f64);
            if let Some(f) = s.fds {
                m.fds.get_or_create(&self.label).set(f as i64);
            }
            if let Some(t) = s.threads {
                m.threads.get_or_create(&self.label).set(t as i64);
            }
            // Created at 0 by the first check, so that rate() sees the first restart.
            let restarts = m.restarts.get_or_create(&self.label);
            if restarted {
                restarts.inc();
            }
        }

        let mut d = Map::new();
        d.insert("pid".into(), json!(s.pid));
        d.insert("process".into(), json!(s.name));
        d.insert("resident_memory_bytes".into(), json!(s.rss));
        d.insert(
            "cpu_seconds".into(),
            json!((s.cpu_seconds * 1000.0).round() / 1000.0),
        );
        d.insert("start_time".into(), json!(s.start_time));
        d.insert(
            "threads".into(),
            s.threads.map_or(Value::Null, |t| json!(t)),
        );
        d.insert("open_fds".into(), s.fds.map_or(Value::Null, |t| json!(t)));
        d.insert("restarts_seen".into(), json!(seen.restarts));
        if s.matches > 1 {
            d.insert("matching_processes".into(), json!(s.matches));
        }
        let mut out = Outcome::healthy(d);
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
        if let Some(limit) = self.spec.memory_unhealthy_above.filter(|l| s.rss > *l) {
            out.raise(
                Status::Unhealthy,
                format!("memory {} above {}", mib(s.rss), mib(limit)),
            );
        } else if let Some(limit) = self.spec.memory_degraded_above.filter(|l| s.rss > *l) {
            out.raise(
                Status::Degraded,
                format!("memory {} above {}", mib(s.rss), mib(limit)),
            );
        }
        if restarted {
            out.raise(
                Status::Healthy,
                "process restarted since the previous check",
            );
        }
        Ok(out)
    }
}

impl Probe for ProcessProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            let this = ProcessProbe {
                spec: self.spec.clone(),
                label: self.label.clone(),
                metrics: self.metrics.clone(),
                state: self.state.clone(),
                gate: self.gate.clone(),
            };
            self.metrics
                .samplers
                .run(move || this.check_blocking())
                .await
        })
    }

    fn forget(&self) {
        self.metrics.forget(&self.label);
    }
}
