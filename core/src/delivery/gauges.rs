//! Delivery gauges for `/metrics`, refreshed from the store and the bus so
//! every replica reports the same figures: the queue depth at each step
//! (outbox not yet published, bus partitions), commands by delivery state
//! (`waiting` + `held` is the backlog behind failing deals; `parked` and
//! `dead` need an admin) and the seconds left on each paused target.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dispatcher::sleep_or_stop;
use super::gate::TargetGates;
use crate::bus::Bus;
use crate::store::Store;

pub struct DeliveryGauges {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub gates: Arc<TargetGates>,
    pub every: Duration,
}

impl DeliveryGauges {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.store.delivery_counts().await {
                Ok(counts) => {
                    for (state, n) in counts {
                        metrics::gauge!("dealbridge_deliveries", "state" => state.as_str()).set(n as f64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "Delivery counts unavailable."),
            }
            match self.store.unpublished_commands().await {
                Ok(n) => metrics::gauge!("dealbridge_delivery_queue_depth", "queue" => "outbox").set(n as f64),
                Err(e) => tracing::debug!(error = %e, "Outbox backlog unavailable."),
            }
            match self.bus.depth().await {
                Ok(n) => metrics::gauge!("dealbridge_delivery_queue_depth", "queue" => "bus").set(n as f64),
                Err(e) => tracing::debug!(error = %e, "Bus depth unavailable."),
            }
            for (key, left) in self.gates.paused() {
                metrics::gauge!("dealbridge_delivery_target_paused_seconds", "target" => key).set(left.as_secs_f64());
            }
            if sleep_or_stop(&stop, self.every).await {
                return;
            }
        }
    }
}
