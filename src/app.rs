//! Wiring: builds components from a configuration, runs the scheduler and
//! the HTTP server, reloads on SIGHUP or `POST /-/reload`, and shuts down
//! gracefully on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::component::{Component, Components};
use crate::config::{self, Config};
use crate::http::shared::{ReloadError, ReloadReply, Shared};
use crate::metrics::Metrics;
use crate::metrics::kit::SeriesGate;
use crate::probe::{self, BuildCtx, BuildError, Triggers};
use crate::scheduler::Scheduler;
use crate::store::{Store, StoreError};

/// Builds the components of `config`, reusing those of `old` that did not
/// change (same name and configuration) so that they keep their state.
/// Probes send their refresh events (`invalidates`) to `triggers`.
pub fn build_components(
    config: Config,
    old: Option<&Components>,
    metrics: &Arc<Metrics>,
    store: &Arc<Store>,
    triggers: Option<&Triggers>,
) -> Result<Components, BuildError> {
    let mut components = Vec::with_capacity(config.probes.len());
    for p in &config.probes {
        let prev = old.and_then(|o| o.component(&p.name));
        if let Some(prev) = prev.filter(|c| c.cfg == *p) {
            components.push(prev.clone());
            continue;
        }
        let gate = SeriesGate::default();
        let ctx = BuildCtx {
            name: &p.name,
            metrics: &metrics.kinds,
            store,
            timeout: p.timeout,
            gate: &gate,
            triggers,
        };
        let probe = probe::build(&p.spec, &ctx)?;
        let c = Component::new(
            p.clone(),
            probe,
            metrics.clone(),
            config.health.performance.clone(),
            gate,
        );
        if let Some(prev) = prev {
            c.inherit(prev);
        }
        components.push(Arc::new(c));
    }
    Ok(Components::new(config, components))
}

/// Retires the components of `old` that `new` does not reuse: their series
/// go (the general ones too unless a successor of the same name and kind
/// carries them on), and a check of theirs still in flight writes none.
fn retire_removed(old: &Components, new: &Components) {
    for c in &old.components {
        let kept = new.component(c.name());
        if kept.is_some_and(|k| Arc::ptr_eq(k, c)) {
            continue;
        }
        c.retire(kept.is_none_or(|k| k.kind() != c.kind()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source} ({hint})", hint = bind_hint(source, addr))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("cannot start the thread that runs the checks: {0}")]
    Checks(std::io::Error),
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] crate::http::tls::TlsError),
}

/// What to do about a `listen` address that cannot be bound.
fn bind_hint(e: &std::io::Error, addr: &SocketAddr) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::AddrInUse => "is another depwatch (or another server) running there? change `listen`".into(),
        K::AddrNotAvailable => format!(
            "no interface of this machine has the address {}: use one of its own, 127.0.0.1, or 0.0.0.0 for all",
            addr.ip()
        ),
        K::PermissionDenied if addr.port() < 1024 => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port above 1023 (9877 is depwatch's)"
                .into()
        }
        _ => "change `listen`".into(),
    }
}

/// Runs depwatch until SIGINT/SIGTERM.
pub async fn run(config: Config) -> Result<(), RunError> {
    let state_dir = config.state_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&state_dir))
        .await
        .map_err(|_| StoreError::Closed)??;
    let store = Arc::new(store);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    let tls = crate::http::tls::Tls::of(&config.web)?;
    for w in config.warnings() {
        tracing::warn!(warning = %w, "Configuration warning.");
    }
    let mut metrics = Metrics::new();
    metrics
        .registry
        .sub_registry_with_prefix("depwatch")
        .register_collector(Box::new(crate::store::metrics::StoreCollector(
            store.clone(),
        )));
    let metrics = Arc::new(metrics);
    let (triggers, trigger_rx) = mpsc::unbounded_channel();
    let runtime = Arc::new(build_components(
        config,
        None,
        &metrics,
        &store,
        Some(&triggers),
    )?);
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadReply>(4);
    let shared = Arc::new(Shared::new(
        metrics.clone(),
        runtime.clone(),
        store.clone(),
        reload_tx,
    ));
    *crate::util::sync::write(&shared.tls) = tls;
    let mut scheduler = Scheduler::on_own_thread().map_err(RunError::Checks)?;
    scheduler.apply(&runtime.components);

    let source = runtime
        .config
        .source
        .as_ref()
        .map_or("the built-in default".to_string(), |p| {
            p.display().to_string()
        });
    tracing::info!(listen = %addr, config = %source, probes = runtime.components.len(), "depwatch started.");
    println!(
        "depwatch {} is watching {} component(s) ({source}).",
        crate::util::build::VERSION,
        runtime.components.len()
    );
    let scheme = if crate::util::sync::read(&shared.tls).is_some() {
        "https"
    } else {
        "http"
    };
    println!("  status page  {scheme}://{addr}/");
    println!("  health       {scheme}://{addr}/api/health");
    println!("  metrics      {scheme}://{addr}/metrics");
    if let Some(r) = shared.store.recovered() {
        println!(
            "  note: the state database was corrupt; it was moved to {} and a fresh one started.",
            r.moved_to.display()
        );
    }
    if let Some(e) = shared.store.read_only() {
        println!(
            "  note: the state database cannot be written ({e}); nothing is saved until state_dir is writable and depwatch restarts."
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut alert_tasks = crate::alert::start(shared.clone(), stop_rx.clone(), addr.port());
    // The verdict announcer; on stop it ends the /api/events streams.
    alert_tasks.push(crate::http::events::start(shared.clone(), stop_rx.clone()));
    let refresh = {
        let shared = shared.clone();
        tokio::spawn(crate::refresh::run(
            trigger_rx,
            Arc::new(move || shared.current()),
            stop_rx.clone(),
        ))
    };
    let server = tokio::spawn(crate::http::serve::serve(
        listener,
        crate::http::router(shared.clone()),
        metrics.server.clone(),
        shared.tls.clone(),
        stop_rx,
    ));

    let mut hup = signal(tokio::signal::unix::SignalKind::hangup());
    let mut term = signal(tokio::signal::unix::SignalKind::terminate());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = recv(&mut term) => break,
            _ = recv(&mut hup) => {
                let _ = reload(&shared, &mut scheduler, &triggers);
            }
            Some(reply) = reload_rx.recv() => {
                let _ = reply.send(reload(&shared, &mut scheduler, &triggers));
            }
        }
    }
    tracing::info!("Shutting down.");
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(5);
    refresh.abort();
    scheduler.shutdown(grace).await;
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!("HTTP requests still open after 5s; closing them.");
    }
    // Background work (log tailers, alerting) stops and saves its state.
    let deadline = tokio::time::Instant::now() + grace;
    for t in alert_tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            abort.abort();
        }
    }
    for c in &shared.current().components {
        if tokio::time::timeout_at(deadline, c.probe.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(component = c.name(), "Probe did not stop within 5s.");
        }
    }
    // Probe rounds are drained: commit what they queued before exiting.
    match tokio::time::timeout(grace, store.close()).await {
        Ok(Ok(())) => tracing::info!("State store flushed."),
        Ok(Err(e)) => tracing::warn!(error = %e, "State store was already closed."),
        Err(_) => {
            tracing::warn!("State store did not flush within 5s; the latest samples may be lost.")
        }
    }
    tracing::info!("Stopped.");
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).ok()
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// `replay-log` over a configuration: picks the log probe named `probe`
/// (or the only one) and replays `files` through its rules.
pub fn replay_log(
    config: &Config,
    probe: Option<&str>,
    files: &[PathBuf],
) -> Result<probe::log::replay::Replayed, probe::log::replay::ReplayError> {
    let logs: Vec<(&str, &probe::log::Spec)> = config
        .probes
        .iter()
        .filter_map(|p| match &p.spec {
            probe::ProbeSpec::Log(s) => Some((p.name.as_str(), s)),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .collect();
    let names = || logs.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let (name, spec) = match probe {
        Some(want) => logs
            .iter()
            .find(|(n, _)| *n == want)
            .copied()
            .ok_or_else(|| probe::log::replay::ReplayError::NoSuchProbe {
                want: want.to_string(),
                known: names(),
            })?,
        None => match logs.as_slice() {
            [one] => *one,
            [] => return Err(probe::log::replay::ReplayError::NoLogProbe),
            _ => {
                return Err(probe::log::replay::ReplayError::Several(names()));
            }
        },
    };
    probe::log::replay::replay(spec, name, files)
}

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Re-reads the configuration file. An invalid file is refused and the
/// running configuration stays.
fn reload(
    shared: &Shared,
    scheduler: &mut Scheduler,
    triggers: &Triggers,
) -> Result<(), ReloadError> {
    let old = shared.current();
    // The parsers refuse what they cannot take; should one still panic, the
    // panic is caught here so that the daemon keeps its running
    // configuration instead of dying on a SIGHUP.
    let load = std::panic::AssertUnwindSafe(|| {
        let Some(path) = old.config.source.clone() else {
            return Err(ReloadError::NoFile);
        };
        let web = old
            .config
            .web
            .file
            .as_deref()
            .map(config::load_web_file)
            .transpose()?;
        let config = config::load_file_with(&path, web)?;
        let tls = crate::http::tls::Tls::of(&config.web)?;
        if config.state_dir != old.config.state_dir {
            tracing::warn!(old = %old.config.state_dir.display(), new = %config.state_dir.display(), "A new state_dir needs a restart; keeping the old one.");
        }
        if config.listen != old.config.listen {
            tracing::warn!(old = %old.config.listen, new = %config.listen, "A new listen address needs a restart; keeping the old one.");
        }
        let rt = build_components(
            config,
            Some(&old),
            &shared.metrics,
            &shared.store,
            Some(triggers),
        )?;
        Ok((rt, tls))
    });
    let result = std::panic::catch_unwind(load)
        .unwrap_or_else(|panic| Err(ReloadError::Panic(panic_text(&*panic))));
    match result {
        Ok((rt, tls)) => {
            let rt = Arc::new(rt);
            *crate::util::sync::write(&shared.tls) = tls;
            // Retired before their successors start: a successor's first
            // series are not dropped with its predecessor's.
            retire_removed(&old, &rt);
            scheduler.apply(&rt.components);
            shared.set_current(rt.clone());
            crate::util::sync::lock(&shared.perf_memo).clear();
            shared.metrics.reload_ok.set(1);
            shared
                .metrics
                .reload_time
                .set(crate::util::time::unix_now());
            crate::metrics::snapshot::changed();
            tracing::info!(probes = rt.components.len(), "Configuration reloaded.");
            Ok(())
        }
        Err(e) => {
            shared.metrics.reload_ok.set(0);
            crate::metrics::snapshot::changed();
            for line in e.to_string().lines() {
                tracing::error!(problem = %line, "Configuration reload refused; the previous configuration keeps running.");
            }
            Err(e)
        }
    }
}
