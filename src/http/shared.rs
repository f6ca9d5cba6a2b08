//! What the HTTP handlers share: the metrics, the configuration in force
//! and its components (swapped whole on reload), the state store, the
//! health cache counters, and the way to ask for a reload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::component::Components;
use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::probe::BuildError;
use crate::store::Store;
use crate::util::sync::{read, write};

/// The state every handler gets.
pub type AppState = Arc<Shared>;

/// Why a reload was refused; the configuration in force keeps running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("depwatch runs with the built-in default: there is no file to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(
        "internal error while loading the configuration: {0} (this is a bug: please report it with the file)"
    )]
    Panic(String),
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] super::tls::TlsError),
}

/// Where the answer to a reload request goes.
pub type ReloadReply = oneshot::Sender<Result<(), ReloadError>>;

/// Everything the HTTP handlers read.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// The configuration in force and its components, swapped on reload.
    current: RwLock<Arc<Components>>,
    pub started: Instant,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub reload_tx: mpsc::Sender<ReloadReply>,
    /// The latest `performance` section (see `performance`).
    pub perf_memo: Arc<std::sync::Mutex<super::performance::Memo>>,
    pub store: Arc<Store>,
    /// The email fallback and the pipeline watchdog (`crate::alert`).
    pub alert: Arc<crate::alert::state::Alerting>,
    /// Credentials remembered, failed logins per address, rate limits.
    pub guard: super::guard::Guard,
    /// The TLS server configuration in force (`None`: plain HTTP); swapped on reload.
    pub tls: Arc<RwLock<Option<Arc<super::tls::Tls>>>>,
}

impl Shared {
    /// The state of a start: counters at zero, uptime from now. `reload_tx`
    /// reaches whoever applies reloads (`run`'s loop).
    pub fn new(
        metrics: Arc<Metrics>,
        current: Arc<Components>,
        store: Arc<Store>,
        reload_tx: mpsc::Sender<ReloadReply>,
    ) -> Shared {
        let alert = Arc::new(crate::alert::state::Alerting::new(metrics.alert.clone()));
        Shared {
            metrics,
            current: RwLock::new(current),
            started: Instant::now(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            reload_tx,
            perf_memo: Default::default(),
            store,
            alert,
            guard: super::guard::Guard::default(),
            tls: Arc::new(RwLock::new(None)),
        }
    }

    /// The configuration in force and its components.
    pub fn current(&self) -> Arc<Components> {
        read(&self.current).clone()
    }

    pub fn set_current(&self, c: Arc<Components>) {
        *write(&self.current) = c;
    }

    /// (The caller tells `metrics::snapshot::changed`, once per request.)
    pub fn count_cache(&self, hit: bool) {
        if hit {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            self.metrics.cache_hit.inc();
        } else {
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
            self.metrics.cache_miss.inc();
        }
    }
}
