//! The state store on `/metrics`: whether depwatch can save its state
//! (storage history, log offsets, alert state) and what its writes came
//! to, the numbers of `/api/health`'s `state_store` section, read at each
//! scrape. It does not change any verdict (the watched service is not less
//! healthy because depwatch lost its own history), so it is here for an
//! alert on depwatch's own host: a full or read-only disk.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Store;

/// Registered once on the `depwatch` registry (see [`Store::numbers`]).
pub struct StoreCollector(pub Arc<Store>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let n = self.0.numbers();
        let mut one = |name: &str, help: &str, metric: &dyn EncodeMetric| {
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        one(
            "state_store_writable",
            "1 while the state store saves what depwatch writes; 0 while writes fail or it is read-only",
            &ConstGauge::new(i64::from(n.writable)),
        )?;
        one(
            "state_store_pending_writes",
            "Writes queued for the state store, not yet committed",
            &ConstGauge::new(n.pending as i64),
        )?;
        one(
            "state_store_writes",
            "Writes the state store committed",
            &ConstCounter::new(n.committed),
        )?;
        one(
            "state_store_write_failures",
            "Writes the state store failed to commit (lost)",
            &ConstCounter::new(n.failed),
        )?;
        one(
            "state_store_dropped_writes",
            "Writes dropped because the state store's queue was full (a stuck disk)",
            &ConstCounter::new(n.dropped),
        )
    }
}
