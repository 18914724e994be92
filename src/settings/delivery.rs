//! `[delivery]`: how commands reach the connected systems — the retry
//! schedule, what each failure class does, and each target's rate budget.

use std::collections::BTreeMap;
use std::time::Duration;

use dealbridge_core::delivery::{DeliveryPolicy, PermanentAction, RateQuota, RetrySchedule};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// `[delivery.retry]`: exponential backoff with jitter.
    pub retry: RetrySchedule,
    /// A target that refused our credentials is left alone this long.
    pub auth_pause_secs: u64,
    /// A rate-limited target that gave no `Retry-After` is left alone this long.
    pub rate_limited_pause_secs: u64,
    /// `dead_letter` (the deal goes on without the command) or `park`.
    pub on_permanent: PermanentAction,
    /// Waits for a target's budget up to this long happen in place; longer
    /// ones let the command wait in its deal's lane.
    pub max_inline_wait_ms: u64,
    /// An attempt with no answer after this long counts as retryable.
    pub attempt_timeout_secs: u64,
    /// How often due retries are looked for.
    pub resume_poll_ms: u64,
    /// Most commands a partition worker takes off the bus at once; the
    /// batch's deals are called side by side (each deal's commands in
    /// order), so this also bounds the calls in flight per partition.
    pub batch: u16,
    /// Replicas sharing one store split the bus partitions between them; a
    /// replica that has not renewed its heartbeat for this long is taken
    /// for gone and its partitions move to the others.
    pub replica_ttl_secs: u64,
    /// `[delivery.targets.<connector>]`: `per_second` and `burst` per
    /// connector instance (per hub replica). Unlisted targets are not
    /// limited by the hub (their own limit answers still pause them).
    pub targets: BTreeMap<String, RateQuota>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        let policy = DeliveryPolicy::default();
        Self {
            retry: policy.retry,
            auth_pause_secs: policy.auth_pause.as_secs(),
            rate_limited_pause_secs: policy.rate_limited_pause.as_secs(),
            on_permanent: policy.on_permanent,
            max_inline_wait_ms: policy.max_inline_wait.as_millis() as u64,
            attempt_timeout_secs: policy.attempt_timeout.as_secs(),
            resume_poll_ms: 500,
            batch: 64,
            replica_ttl_secs: 10,
            targets: BTreeMap::new(),
        }
    }
}

impl DeliverySettings {
    /// The policy, or what is wrong with the section (naming the key).
    pub fn policy(&self) -> Result<DeliveryPolicy, String> {
        self.retry.validate().map_err(|e| format!("delivery.retry: {e}"))?;
        for (name, quota) in &self.targets {
            quota.validate().map_err(|e| format!("delivery.targets.{name}: {e}"))?;
        }
        if self.batch == 0 {
            return Err("delivery.batch must be at least 1".into());
        }
        if self.attempt_timeout_secs == 0 {
            return Err("delivery.attempt_timeout_secs must be at least 1".into());
        }
        Ok(DeliveryPolicy {
            retry: self.retry.clone(),
            auth_pause: Duration::from_secs(self.auth_pause_secs),
            rate_limited_pause: Duration::from_secs(self.rate_limited_pause_secs),
            on_permanent: self.on_permanent,
            max_inline_wait: Duration::from_millis(self.max_inline_wait_ms),
            attempt_timeout: Duration::from_secs(self.attempt_timeout_secs),
        })
    }
}
