//! The `depwatch_alert_*` families. The optional gauges are absent until
//! `alerting:` is configured.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::incident::EmailKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// 0/1 gauges that are absent while unknown (no `alerting:` configured).
#[derive(Clone, Debug, Default)]
struct Optional {
    pipeline_up: Arc<AtomicI64>,
    sender: Arc<AtomicI64>,
}

const ABSENT: i64 = i64::MIN;

impl prometheus_client::collector::Collector for Optional {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        for (name, help, v) in [
            (
                "alert_pipeline_up",
                "Whether the alerting pipeline (scrapes, Alertmanager, Watchdog heartbeat) works (absent when alerting is not configured)",
                &self.pipeline_up,
            ),
            (
                "alert_sender",
                "Whether this depwatch sends the alert emails (1: it sends alone)",
                &self.sender,
            ),
        ] {
            let v = v.load(Ordering::Relaxed);
            if v == ABSENT {
                continue;
            }
            let g = prometheus_client::metrics::gauge::ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        Ok(())
    }
}

/// `depwatch_alert_*`.
#[derive(Clone)]
pub struct AlertMetrics {
    optional: Optional,
    pub incidents_open: Gauge,
    /// Seconds until the next attempt at the head of the outbox after a
    /// failure (0: not failing).
    backoff: Gauge,
    emails: Family<KindLabel, Counter>,
    failures: Family<KindLabel, Counter>,
}

impl AlertMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = AlertMetrics {
            optional: Optional {
                pipeline_up: Arc::new(AtomicI64::new(ABSENT)),
                sender: Arc::new(AtomicI64::new(ABSENT)),
            },
            incidents_open: Gauge::default(),
            backoff: Gauge::default(),
            emails: Family::default(),
            failures: Family::default(),
        };
        r.register_collector(Box::new(m.optional.clone()));
        r.register(
            "alert_incidents_open",
            "Open incidents (components unhealthy, pipeline down)",
            m.incidents_open.clone(),
        );
        r.register(
            "alert_email_backoff_seconds",
            "How long the outbox waits before its next attempt after a failed one (0: email works); up to 1h when the server refuses the login or the message for good",
            m.backoff.clone(),
        );
        r.register(
            "alert_emails",
            "Alert emails handed to the SMTP server (attempts), by kind",
            m.emails.clone(),
        );
        r.register(
            "alert_email_failures",
            "Alert email attempts that failed, by kind",
            m.failures.clone(),
        );
        for k in EmailKind::ALL {
            let l = KindLabel { kind: k.as_str() };
            let _ = m.emails.get_or_create(&l);
            let _ = m.failures.get_or_create(&l);
        }
        m
    }

    pub fn set_pipeline(&self, up: Option<bool>) {
        let v = up.map_or(ABSENT, i64::from);
        if self.optional.pipeline_up.swap(v, Ordering::Relaxed) != v {
            crate::metrics::snapshot::changed();
        }
    }

    pub fn set_sender(&self, sends: Option<bool>) {
        let v = sends.map_or(ABSENT, i64::from);
        if self.optional.sender.swap(v, Ordering::Relaxed) != v {
            crate::metrics::snapshot::changed();
        }
    }

    pub fn set_backoff(&self, wait: std::time::Duration) {
        let v = wait.as_secs() as i64;
        if self.backoff.set(v) != v {
            crate::metrics::snapshot::changed();
        }
    }

    pub fn attempt(&self, kind: EmailKind) {
        self.emails
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
        crate::metrics::snapshot::changed();
    }

    pub fn failure(&self, kind: EmailKind) {
        self.failures
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
        crate::metrics::snapshot::changed();
    }
}
