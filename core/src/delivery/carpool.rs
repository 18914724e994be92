//! Shared calls to a coalescing target, across every partition worker and
//! the lane resumer of one replica.
//!
//! Why: a target that takes several commands per call (a Bitrix24 portal:
//! 2 calls/s, 50 commands per `batch`) is limited by calls, not commands.
//! One worker's round alone fills calls only partly (a batch of 64 is one
//! call of 50 and one of 14). Here, commands for one rate key wait in one
//! queue; whoever finds a command waiting and the target's budget open
//! takes the oldest (up to the call's limit) and makes the call for all of
//! them. While the budget is closed the queue grows, so the next call
//! leaves full; while it is open a call leaves at once with whoever waits.
//!
//! The performer's round (`attempt_round`: lane heads of different deals
//! attempted at once) is here too: it is what feeds the carpool.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::gate::{Admittance, RateQuota};
use super::performer::{CommandPerformer, OutboundTarget, RoundItem, Step, context_of};
use super::target::{AttemptContext, DeliveryFailure, FailureClass, Performed};
use crate::flow::effects::Command;

/// A call's answer for one command, and how long the call took.
pub(super) type Answer = (Result<Performed, DeliveryFailure>, Duration);

/// A command waiting for a call.
pub(super) struct Rider {
    pub command: Command,
    pub context: AttemptContext,
    pub reply: oneshot::Sender<Answer>,
}

/// What [`Carpool::depart`] found.
pub(super) enum Departure {
    /// The budget let a call go: these riders are on it.
    Go(Vec<Rider>),
    /// Riders wait, but the budget opens only after this long.
    NotYet(Duration),
    /// Nobody waits: every rider is on a call already.
    Nobody,
}

/// The waiting commands of each rate key.
#[derive(Default)]
pub(super) struct Carpool {
    queues: Mutex<HashMap<String, VecDeque<Rider>>>,
}

impl Carpool {
    /// Queues commands for `key`'s next calls; each answer comes back on
    /// the receiver at the same position.
    pub fn board(&self, key: &str, commands: Vec<(Command, AttemptContext)>) -> Vec<oneshot::Receiver<Answer>> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let queue = queues.entry(key.to_owned()).or_default();
        commands
            .into_iter()
            .map(|(command, context)| {
                let (reply, answer) = oneshot::channel();
                queue.push_back(Rider { command, context, reply });
                answer
            })
            .collect()
    }

    /// Takes up to `limit` of the oldest riders when there are any and
    /// `admit` (the target's gate) lets a call go.
    pub fn depart(&self, key: &str, limit: usize, admit: impl FnOnce() -> Admittance) -> Departure {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queues.get_mut(key).filter(|q| !q.is_empty()) else {
            return Departure::Nobody;
        };
        // The token is taken under the lock, so it is never taken for a
        // queue another caller has just emptied.
        match admit() {
            Admittance::Go => Departure::Go(queue.drain(..limit.min(queue.len())).collect()),
            Admittance::WaitFor(wait) => Departure::NotYet(wait),
        }
    }

    /// Takes back the riders of these commands that still wait; returns
    /// their ids (the others are on a call).
    pub fn alight(&self, key: &str, commands: &[Uuid]) -> Vec<Uuid> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queues.get_mut(key) else { return Vec::new() };
        let mut left = Vec::new();
        queue.retain(|rider| {
            let leaving = commands.contains(&rider.command.id);
            if leaving {
                left.push(rider.command.id);
            }
            !leaving
        });
        left
    }
}

impl CommandPerformer {
    /// Attempts commands of different lanes at once: those for a target
    /// that coalesces share its calls (see `carpool`), the others are
    /// attempted side by side. One step per item, in the items' order.
    pub async fn attempt_round(&self, items: &[RoundItem<'_>]) -> Vec<Step> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_of: HashMap<(&str, String), usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let Some(target) = self.targets.get(&item.command.connector).filter(|_| self.coalesces(item.command))
            else {
                groups.push(vec![index]);
                continue;
            };
            let key = (item.command.connector.as_str(), target.connector.rate_key(item.command));
            let group = *group_of.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[group].push(index);
        }
        let runs = groups.into_iter().map(|indexes| async move {
            let steps = match indexes.as_slice() {
                [one] => {
                    let item = &items[*one];
                    vec![self.attempt(item.command, item.admission.clone(), item.prior).await]
                }
                many => self.attempt_together(many.iter().map(|&i| &items[i]).collect()).await,
            };
            indexes.into_iter().zip(steps).collect::<Vec<_>>()
        });
        let mut steps: Vec<(usize, Step)> = join_all(runs).await.into_iter().flatten().collect();
        steps.sort_by_key(|(index, _)| *index);
        steps.into_iter().map(|(_, step)| step).collect()
    }

    /// Commands for one coalescing target: queued in its carpool, and
    /// carried by whichever caller finds the budget open — this one or
    /// another worker's. Waits for the budget only up to the policy's
    /// inline wait; commands still queued then are deferred.
    pub(super) async fn attempt_together(&self, items: Vec<&RoundItem<'_>>) -> Vec<Step> {
        let target = self.targets.get(&items[0].command.connector).expect("grouped by a configured target");
        let key = target.connector.rate_key(items[0].command);
        let limit = target.connector.coalesce_limit();
        let riders = items.iter().map(|i| (i.command.clone(), context_of(i.prior))).collect();
        let mut answers: Vec<Option<oneshot::Receiver<Answer>>> =
            self.carpool.board(&key, riders).into_iter().map(Some).collect();
        let mut steps: Vec<Option<Step>> = items.iter().map(|_| None).collect();
        loop {
            let wait = match self.carpool.depart(&key, limit, || self.gates.admit(&key, target.quota)) {
                Departure::Go(riders) => {
                    self.carry(target, &key, riders).await;
                    Duration::ZERO
                }
                Departure::NotYet(wait) if wait > self.policy.max_inline_wait => {
                    let due = Utc::now() + wait;
                    let waiting: Vec<Uuid> = pending(&answers).map(|i| items[i].command.id).collect();
                    let left = self.carpool.alight(&key, &waiting);
                    for (index, item) in items.iter().enumerate() {
                        if left.contains(&item.command.id) {
                            answers[index] = None;
                            steps[index] = Some(Step::Defer(due));
                        }
                    }
                    // The rest are on a call: wait for its answer.
                    self.policy.attempt_timeout
                }
                Departure::NotYet(wait) => wait,
                Departure::Nobody => self.policy.attempt_timeout,
            };
            // Wait for the first outstanding answer (or until the budget
            // may open), then take every answer that is in.
            let first = pending(&answers).next();
            if let Some(first) = first
                && let Some(answer) = answers[first].as_mut()
                && let Ok(answer) = tokio::time::timeout(wait, answer).await
            {
                answers[first] = None;
                steps[first] = Some(self.answered(items[first], answer.ok(), &key, target.quota));
            }
            for index in pending(&answers).collect::<Vec<_>>() {
                let answer = match answers[index].as_mut().map(oneshot::Receiver::try_recv) {
                    Some(Err(oneshot::error::TryRecvError::Empty)) | None => continue,
                    Some(answer) => answer,
                };
                answers[index] = None;
                steps[index] = Some(self.answered(items[index], answer.ok(), &key, target.quota));
            }
            if steps.iter().all(Option::is_some) {
                return steps.into_iter().map(|s| s.expect("every item has its step")).collect();
            }
        }
    }

    /// Makes one call for the riders and sends each its answer.
    async fn carry(&self, target: &OutboundTarget, key: &str, mut riders: Vec<Rider>) {
        // A rider whose caller stopped waiting (shutdown) stays unsent: its
        // command is still unacked and comes back after the restart.
        riders.retain(|rider| !rider.reply.is_closed());
        if riders.is_empty() {
            self.gates.settled(key, target.quota);
            return;
        }
        let carried = riders.len() as f64;
        metrics::gauge!("dealbridge_delivery_in_flight").increment(carried);
        metrics::counter!("dealbridge_delivery_coalesced_calls_total").increment(1);
        metrics::histogram!("dealbridge_delivery_coalesced_commands").record(carried);
        let commands: Vec<(&Command, AttemptContext)> = riders.iter().map(|r| (&r.command, r.context)).collect();
        let started = Instant::now();
        let results = match commands.as_slice() {
            [(command, context)] => {
                tokio::time::timeout(self.policy.attempt_timeout, target.connector.perform(command, *context))
                    .await
                    .map(|result| vec![result])
            }
            _ => tokio::time::timeout(self.policy.attempt_timeout, target.connector.perform_all(&commands)).await,
        };
        let latency = started.elapsed();
        metrics::gauge!("dealbridge_delivery_in_flight").decrement(carried);
        self.gates.settled(key, target.quota);
        let mut results = results.unwrap_or_else(|_| vec![Err(self.no_answer()); riders.len()]).into_iter();
        for rider in riders {
            // A connector that answers for fewer commands than it was
            // given leaves the rest unknown: retried as possibly applied.
            let result = results.next().unwrap_or_else(|| {
                Err(DeliveryFailure::new(FailureClass::Retryable, "the shared call gave no result for it"))
            });
            // The rider's caller may have stopped waiting (shutdown).
            let _ = rider.reply.send((result, latency));
        }
    }

    /// The step of an item whose answer came back from a shared call.
    fn answered(&self, item: &RoundItem<'_>, answer: Option<Answer>, key: &str, quota: Option<RateQuota>) -> Step {
        // No answer: the caller carrying it stopped (shutdown) mid-call.
        let (result, latency) = answer.unwrap_or_else(|| {
            (Err(DeliveryFailure::new(FailureClass::Retryable, "the shared call was abandoned")), Duration::ZERO)
        });
        let result = result.map(|done| done.linked_for(item.command));
        Step::Settle(self.outcome(item.admission.clone(), item.prior, result, latency, key, quota))
    }
}

/// Positions of the answers still outstanding.
fn pending<T>(answers: &[Option<T>]) -> impl Iterator<Item = usize> + '_ {
    answers.iter().enumerate().filter(|(_, a)| a.is_some()).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::effects::CommandOp;

    fn command() -> Command {
        Command {
            id: Uuid::now_v7(),
            idempotency_key: Uuid::now_v7().to_string(),
            connector: "crm".into(),
            system: "crm".into(),
            deal: Some(Uuid::now_v7()),
            cause_event: Uuid::now_v7(),
            flow: "test".into(),
            op: CommandOp::Notify { to: "1".into(), text: "x".into(), external_id: None },
        }
    }

    const FIRST: AttemptContext = AttemptContext { attempt: 1, possibly_applied: false };

    #[test]
    fn a_call_takes_the_oldest_riders_up_to_its_limit_and_only_when_the_budget_opens() {
        let pool = Carpool::default();
        let commands: Vec<Command> = (0..5).map(|_| command()).collect();
        let _answers = pool.board("k", commands.iter().map(|c| (c.clone(), FIRST)).collect());
        let closed = pool.depart("k", 3, || Admittance::WaitFor(Duration::from_millis(400)));
        assert!(matches!(closed, Departure::NotYet(w) if w == Duration::from_millis(400)));
        let Departure::Go(first) = pool.depart("k", 3, || Admittance::Go) else { panic!() };
        let ids: Vec<Uuid> = first.iter().map(|r| r.command.id).collect();
        assert_eq!(ids, commands[..3].iter().map(|c| c.id).collect::<Vec<_>>());
        let left = pool.alight("k", &[commands[0].id, commands[4].id]);
        assert_eq!(left, vec![commands[4].id], "the first is on a call already");
        let Departure::Go(second) = pool.depart("k", 3, || Admittance::Go) else { panic!() };
        assert_eq!(second.len(), 1);
        assert!(matches!(pool.depart("k", 3, || panic!("no token is taken for nobody")), Departure::Nobody));
        assert!(matches!(pool.depart("other", 3, || Admittance::Go), Departure::Nobody));
    }
}
