//! The email fallback and the watchdog of the alerting pipeline.
//!
//! - [`config`]: the `alerting:` section (mailboxes checked at load).
//! - [`engine`]: the tasks — the pipeline watchdog (scrapes, Alertmanager's
//!   `/-/healthy`, the `Watchdog` heartbeat) and the incident loop that
//!   decides emails. [`outbox`]: the sender (in order, retries with
//!   backoff) and the test email.
//! - [`incident`]: when to email (grouping, reminders, resolution).
//! - [`render`]: subject, text and HTML. [`email`]: lettre, SMTP, TLS.
//! - [`coord`]: the HA sender election through Redis (`coordination`).
//! - [`store`]: incidents and the outbox in the state store.
//! - [`webhook`]: `POST /api/alertmanager/webhook`, `POST /api/admin/alerts/test`.
//!
//! [`start`] starts the tasks of `engine` and `outbox`.
//!
//! [`Alerting`] is the state the HTTP handlers read and the tasks write.

pub mod config;
pub mod coord;
pub mod email;
pub mod engine;
pub mod incident;
pub mod metrics;
pub mod outbox;
pub mod render;
pub mod state;
pub mod store;
pub mod watchdog;
pub mod webhook;

pub use metrics::AlertMetrics;
pub use state::{Alerting, FiringAlert, MAX_FIRING, Reason};

/// Starts the tasks; they end when `stop` turns true. `port` is the one
/// depwatch listens on (the default name of this instance among HA peers).
pub fn start(
    shared: std::sync::Arc<crate::http::shared::Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
    port: u16,
) -> Vec<tokio::task::JoinHandle<()>> {
    let rx = shared.alert.take_outbox();
    let mut tasks = vec![
        tokio::spawn(engine::engine(shared.clone(), stop.clone())),
        tokio::spawn(engine::alertmanager_checker(shared.clone(), stop.clone())),
        tokio::spawn(engine::coordinator(shared.clone(), stop.clone(), port)),
    ];
    if let Some(rx) = rx {
        tasks.push(tokio::spawn(outbox::sender(shared, rx, stop)));
    }
    tasks
}

/// Why `depwatch send-test-email` sent nothing.
#[derive(Debug, thiserror::Error)]
pub enum TestEmailError {
    #[error("the configuration has no `alerting.email` section")]
    NotConfigured,
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Send(#[from] email::SendError),
}

/// `depwatch send-test-email`: sends a test message through `alerting.email`
/// on a runtime of its own; the server's reply or the exact failure.
pub fn send_test_email(config: &crate::config::Config) -> Result<String, TestEmailError> {
    let Some(alerting) = &config.alerting else {
        return Err(TestEmailError::NotConfigured);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TestEmailError::Runtime)?;
    Ok(runtime.block_on(outbox::send_test(alerting, &email::host_name(), None))?)
}
