//! One attempt at a command: through its target's gate, to its connector,
//! and on to the command's next state. Both the partition workers (a
//! command's first attempt, straight off the bus) and the lane resumer
//! (retries, and commands that were held behind them) attempt through here,
//! so the policy is applied the same way on both paths.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::carpool::Carpool;
use super::gate::{Admittance, RateQuota, TargetGates};
use super::policy::{DeliveryPolicy, Verdict};
use super::target::{AttemptContext, DeliveryFailure, FailureClass, OutboundConnector, Performed};
use crate::flow::effects::Command;
use crate::store::{Admission, AttemptRecord, DeliveryState, Settlement};

/// A configured outbound connector instance and its budget.
#[derive(Clone)]
pub struct OutboundTarget {
    pub connector: Arc<dyn OutboundConnector>,
    pub quota: Option<RateQuota>,
}

/// Outbound connector instances by name (a command's `connector`).
#[derive(Clone, Default)]
pub struct OutboundTargets {
    by_name: HashMap<String, OutboundTarget>,
}

impl OutboundTargets {
    pub fn insert(&mut self, name: impl Into<String>, target: OutboundTarget) {
        self.by_name.insert(name.into(), target);
    }

    pub fn get(&self, name: &str) -> Option<&OutboundTarget> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// Where a command stood before this attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prior {
    pub attempts: u32,
    pub round_attempts: u32,
    pub possibly_applied: bool,
}

/// What became of an attempt.
// Made once per attempt and consumed at once: boxing the large variant
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The call was made (or refused before it could be): record this.
    Settle(Settlement),
    /// The target's budget or pause says "not now": come back at this
    /// time. Nothing was sent and no attempt is counted.
    Defer(DateTime<Utc>),
}

/// The lane a command belongs to: its bus key (see `outbox::message_of`).
pub fn admission_of(command: &Command, lane: String) -> Admission {
    Admission { command_id: command.id, lane, deal_id: command.deal, connector: command.connector.clone() }
}

pub struct CommandPerformer {
    pub targets: Arc<OutboundTargets>,
    pub gates: Arc<TargetGates>,
    pub policy: Arc<DeliveryPolicy>,
    pub(super) carpool: Carpool,
}

/// One command of a round: lane heads of different deals attempted at once.
pub struct RoundItem<'a> {
    pub command: &'a Command,
    pub admission: Admission,
    pub prior: Prior,
}

impl CommandPerformer {
    pub fn new(targets: Arc<OutboundTargets>, gates: Arc<TargetGates>, policy: Arc<DeliveryPolicy>) -> Self {
        Self { targets, gates, policy, carpool: Carpool::default() }
    }

    /// Makes one attempt (waiting on the target's budget only briefly).
    pub async fn attempt(&self, command: &Command, admission: Admission, prior: Prior) -> Step {
        let Some(target) = self.targets.get(&command.connector) else {
            return Step::Settle(self.unconfigured(admission, prior, &command.connector));
        };
        if target.connector.coalesce_limit() > 1 {
            let item = RoundItem { command, admission, prior };
            return self.attempt_together(vec![&item]).await.remove(0);
        }
        let key = target.connector.rate_key(command);
        if let Err(due) = self.wait_for_budget(&key, target.quota).await {
            return Step::Defer(due);
        }
        let context = context_of(prior);
        metrics::gauge!("dealbridge_delivery_in_flight").increment(1.0);
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.policy.attempt_timeout, target.connector.perform(command, context)).await;
        let latency = started.elapsed();
        metrics::gauge!("dealbridge_delivery_in_flight").decrement(1.0);
        let result = result.unwrap_or_else(|_| Err(self.no_answer())).map(|done| done.linked_for(command));
        // The call is back: a probe after a pause has its answer (a failure
        // below may pause the gate again).
        self.gates.settled(&key, target.quota);
        Step::Settle(self.outcome(admission, prior, result, latency, &key, target.quota))
    }

    /// Whether the command's target takes several commands per call.
    pub fn coalesces(&self, command: &Command) -> bool {
        self.targets.get(&command.connector).is_some_and(|t| t.connector.coalesce_limit() > 1)
    }

    /// Takes a token of `key`'s budget, waiting for it only up to the
    /// policy's inline wait; otherwise says when to come back.
    async fn wait_for_budget(&self, key: &str, quota: Option<RateQuota>) -> Result<(), DateTime<Utc>> {
        loop {
            match self.gates.admit(key, quota) {
                Admittance::Go => return Ok(()),
                Admittance::WaitFor(wait) if wait <= self.policy.max_inline_wait => tokio::time::sleep(wait).await,
                Admittance::WaitFor(wait) => return Err(Utc::now() + wait),
            }
        }
    }

    pub(super) fn no_answer(&self) -> DeliveryFailure {
        DeliveryFailure::new(
            FailureClass::Retryable,
            format!("no answer within {} s", self.policy.attempt_timeout.as_secs_f64()),
        )
    }

    /// A configuration problem, not the command's: park it so the deal
    /// keeps its order until the connector is configured and retried.
    fn unconfigured(&self, admission: Admission, prior: Prior, connector: &str) -> Settlement {
        let failure = DeliveryFailure::new(
            FailureClass::Permanent,
            format!("no outbound connector named `{connector}` is configured"),
        );
        self.failed(admission, prior, &failure, Duration::ZERO, Some(Verdict::Park))
    }

    /// Records a call's result, pausing the target when its answer says so.
    pub(super) fn outcome(
        &self,
        admission: Admission,
        prior: Prior,
        result: Result<Performed, DeliveryFailure>,
        latency: Duration,
        key: &str,
        quota: Option<RateQuota>,
    ) -> Settlement {
        let failure = match result {
            Ok(performed) => return self.succeeded(admission, prior, &performed, latency),
            Err(failure) => failure,
        };
        match failure.class {
            FailureClass::RateLimited => {
                self.gates.pause(key, quota, failure.retry_after.unwrap_or(self.policy.rate_limited_pause))
            }
            FailureClass::Auth => self.gates.pause(key, quota, self.policy.auth_pause),
            FailureClass::Retryable | FailureClass::Permanent => {
                if let Some(after) = failure.retry_after {
                    self.gates.pause(key, quota, after);
                }
            }
        }
        self.failed(admission, prior, &failure, latency, None)
    }

    fn succeeded(&self, admission: Admission, prior: Prior, performed: &Performed, latency: Duration) -> Settlement {
        let at = Utc::now();
        let outcome = performed.outcome();
        record_metrics(outcome, None, latency);
        let attempt = AttemptRecord {
            command_id: admission.command_id,
            deal_id: admission.deal_id,
            attempt: prior.attempts + 1,
            at,
            outcome: outcome.to_owned(),
            class: None,
            error: None,
            latency_us: micros(latency),
        };
        Settlement {
            admission,
            state: DeliveryState::Done,
            attempts: prior.attempts + 1,
            round_attempts: prior.round_attempts + 1,
            due_at: None,
            last_class: None,
            last_error: None,
            outcome: Some(outcome.to_owned()),
            created: performed.created().cloned(),
            attempt: Some(attempt),
            at,
        }
    }

    fn failed(
        &self,
        admission: Admission,
        prior: Prior,
        failure: &DeliveryFailure,
        latency: Duration,
        forced: Option<Verdict>,
    ) -> Settlement {
        let at = Utc::now();
        let round = prior.round_attempts + 1;
        let verdict = forced.unwrap_or_else(|| self.policy.verdict(failure.class, round, failure.retry_after));
        record_metrics("failed", Some(failure.class), latency);
        let (state, due_at, round_attempts) = match verdict {
            Verdict::RetryIn { delay, counted } => {
                let due = at + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                (DeliveryState::Waiting, Some(due), if counted { round } else { prior.round_attempts })
            }
            Verdict::Park => (DeliveryState::Parked, None, round),
            Verdict::DeadLetter => (DeliveryState::Dead, None, round),
        };
        if state != DeliveryState::Waiting {
            tracing::warn!(
                command = %admission.command_id,
                deal = ?admission.deal_id,
                connector = %admission.connector,
                state = state.as_str(),
                error = %failure,
                "Delivery stopped; an admin can retry or discard it."
            );
        }
        let attempt = AttemptRecord {
            command_id: admission.command_id,
            deal_id: admission.deal_id,
            attempt: prior.attempts + 1,
            at,
            outcome: "failed".into(),
            class: Some(failure.class.as_str().into()),
            error: Some(failure.message.clone()),
            latency_us: micros(latency),
        };
        Settlement {
            admission,
            state,
            attempts: prior.attempts + 1,
            round_attempts,
            due_at,
            last_class: Some(failure.class.as_str().into()),
            last_error: Some(failure.message.clone()),
            outcome: None,
            created: None,
            attempt: Some(attempt),
            at,
        }
    }
}

/// A command that cannot go out now waits as its lane's head, with no
/// attempt counted.
pub fn deferred(admission: Admission, prior: Prior, due_at: DateTime<Utc>) -> Settlement {
    Settlement {
        admission,
        state: DeliveryState::Waiting,
        attempts: prior.attempts,
        round_attempts: prior.round_attempts,
        due_at: Some(due_at),
        last_class: None,
        last_error: None,
        outcome: None,
        created: None,
        attempt: None,
        at: Utc::now(),
    }
}

/// A command recorded behind its lane's head without being tried (its
/// lane's earlier command in the same batch could not go out).
pub fn held(admission: Admission) -> Settlement {
    Settlement {
        admission,
        state: DeliveryState::Held,
        attempts: 0,
        round_attempts: 0,
        due_at: None,
        last_class: None,
        last_error: None,
        outcome: None,
        created: None,
        attempt: None,
        at: Utc::now(),
    }
}

pub(super) fn context_of(prior: Prior) -> AttemptContext {
    AttemptContext { attempt: prior.attempts + 1, possibly_applied: prior.possibly_applied }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn record_metrics(outcome: &'static str, class: Option<FailureClass>, latency: Duration) {
    let class = class.map_or("none", FailureClass::as_str);
    metrics::counter!("dealbridge_delivery_attempts_total", "outcome" => outcome, "class" => class).increment(1);
    metrics::histogram!("dealbridge_delivery_attempt_seconds", "outcome" => outcome).record(latency.as_secs_f64());
}
