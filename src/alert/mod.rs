//! The email fallback and the watchdog of the alerting pipeline.
//!
//! - [`config`]: the `alerting:` section (mailboxes checked at load).
//! - [`engine`]: the tasks — the pipeline watchdog (scrapes, Alertmanager's
//!   `/-/healthy`, the `Watchdog` heartbeat) and the incident loop that
//!   decides emails; the outbox sender (retries with backoff, in order).
//! - [`incident`]: when to email (grouping, reminders, resolution).
//! - [`render`]: subject, text and HTML. [`email`]: lettre, SMTP, TLS.
//! - [`store`]: incidents and the outbox in the state store.
//! - [`webhook`]: `POST /api/alertmanager/webhook`, `POST /api/admin/alerts/test`.
//!
//! [`Alerting`] is the state the HTTP handlers read and the tasks write.

pub mod config;
pub mod email;
pub mod engine;
pub mod incident;
pub mod metrics;
pub mod render;
pub mod state;
pub mod store;
pub mod webhook;

pub use metrics::AlertMetrics;
pub use state::{Alerting, FiringAlert, MAX_FIRING, Reason};

/// `depwatch send-test-email`: sends a test message through `alerting.email`
/// on a runtime of its own; the server's reply or the exact failure.
pub fn send_test_email(config: &crate::config::Config) -> Result<String, String> {
    let Some(alerting) = &config.alerting else {
        return Err("the configuration has no `alerting.email` section".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime
        .block_on(engine::send_test(alerting, &email::host_name(), None))
        .map_err(|e| e.to_string())
}
