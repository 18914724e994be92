//! What the dispatcher does after an attempt: the admin-configurable retry
//! schedule (exponential with jitter, through `backon`) and the action each
//! failure class leads to.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;

use super::target::FailureClass;

/// When failed attempts are tried again. The delay before retry *n* is
/// `first_delay * factor^(n-1)`, capped at `max_delay`, plus a random
/// jitter of up to the delay itself; after `max_attempts` attempts in a
/// round the command parks its deal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySchedule {
    pub first_delay_secs: f64,
    pub max_delay_secs: f64,
    pub factor: f32,
    /// Attempts per round, the first included.
    pub max_attempts: u32,
    pub jitter: bool,
}

impl Default for RetrySchedule {
    /// About 5 s, 15 s, 45 s, … up to 30 min: eight attempts over roughly an
    /// hour and a half before a deal parks.
    fn default() -> Self {
        Self { first_delay_secs: 5.0, max_delay_secs: 1800.0, factor: 3.0, max_attempts: 8, jitter: true }
    }
}

impl RetrySchedule {
    /// Checks the values an admin wrote; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.first_delay_secs.is_finite() && self.first_delay_secs >= 0.0) {
            return Err("first_delay_secs must be a number ≥ 0".into());
        }
        if !(self.max_delay_secs.is_finite() && self.max_delay_secs >= self.first_delay_secs) {
            return Err("max_delay_secs must be ≥ first_delay_secs".into());
        }
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err("factor must be ≥ 1".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        Ok(())
    }

    fn builder(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs_f64(self.first_delay_secs))
            .with_max_delay(Duration::from_secs_f64(self.max_delay_secs))
            .with_factor(self.factor)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter { builder.with_jitter() } else { builder }
    }

    /// The wait before the next attempt, once `failed` attempts of this
    /// round have failed; `None` once the round is used up.
    pub fn delay_after(&self, failed: u32) -> Option<Duration> {
        if failed == 0 {
            return Some(Duration::ZERO);
        }
        self.builder().build().nth(failed as usize - 1)
    }
}

/// What a permanent failure does to its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PermanentAction {
    /// The command goes to the dead letters; its deal's later commands go on.
    #[default]
    DeadLetter,
    /// The command parks its deal until an admin retries or discards it.
    Park,
}

/// The dispatcher's whole policy.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    pub retry: RetrySchedule,
    /// How long a target that refused our credentials is left alone.
    pub auth_pause: Duration,
    /// How long a rate-limited target is left alone when it did not say.
    pub rate_limited_pause: Duration,
    pub on_permanent: PermanentAction,
    /// Longer waits for a target's budget are not slept on the partition
    /// (they would hold up other deals): the command waits in its lane.
    pub max_inline_wait: Duration,
    /// An attempt that takes longer is abandoned as retryable.
    pub attempt_timeout: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            retry: RetrySchedule::default(),
            auth_pause: Duration::from_secs(300),
            rate_limited_pause: Duration::from_secs(5),
            on_permanent: PermanentAction::DeadLetter,
            max_inline_wait: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// What happens to a command after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Try again after `delay`; `counted` = the attempt used up the round.
    RetryIn {
        delay: Duration,
        counted: bool,
    },
    /// Stop trying; the deal's later commands wait until an admin acts.
    Park,
    DeadLetter,
}

impl DeliveryPolicy {
    /// Decides after a failure of `class`, `failed_in_round` attempts of the
    /// round having failed (this one included). `retry_after` is the
    /// target's own answer.
    pub fn verdict(&self, class: FailureClass, failed_in_round: u32, retry_after: Option<Duration>) -> Verdict {
        match class {
            // The target is healthy and asked us to slow down: not the
            // command's fault, so it does not use up the round.
            FailureClass::RateLimited => {
                Verdict::RetryIn { delay: retry_after.unwrap_or(self.rate_limited_pause), counted: false }
            }
            FailureClass::Retryable | FailureClass::Auth => match self.retry.delay_after(failed_in_round) {
                Some(delay) => {
                    let floor = if class == FailureClass::Auth { self.auth_pause } else { Duration::ZERO };
                    Verdict::RetryIn { delay: delay.max(floor).max(retry_after.unwrap_or_default()), counted: true }
                }
                None => Verdict::Park,
            },
            FailureClass::Permanent => match self.on_permanent {
                PermanentAction::DeadLetter => Verdict::DeadLetter,
                PermanentAction::Park => Verdict::Park,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule { first_delay_secs: 1.0, max_delay_secs: 10.0, factor: 2.0, max_attempts: 5, jitter: false }
    }

    #[test]
    fn delays_grow_then_cap_and_the_round_ends_after_max_attempts() {
        let s = schedule();
        let delays: Vec<_> = (1..=5).map(|n| s.delay_after(n)).collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(8)),
                None
            ]
        );
        let capped = RetrySchedule { max_attempts: 10, ..schedule() };
        assert_eq!(capped.delay_after(8), Some(Duration::from_secs(10)));
    }

    #[test]
    fn jitter_stays_between_the_delay_and_twice_the_delay() {
        let s = RetrySchedule { jitter: true, ..schedule() };
        for _ in 0..200 {
            let d = s.delay_after(3).unwrap();
            assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(8), "{d:?}");
        }
    }

    #[test]
    fn each_class_leads_to_its_action() {
        let p = DeliveryPolicy { retry: schedule(), ..DeliveryPolicy::default() };
        assert_eq!(
            p.verdict(FailureClass::Retryable, 1, None),
            Verdict::RetryIn { delay: Duration::from_secs(1), counted: true }
        );
        assert_eq!(p.verdict(FailureClass::Retryable, 5, None), Verdict::Park);
        assert_eq!(
            p.verdict(FailureClass::RateLimited, 50, Some(Duration::from_secs(7))),
            Verdict::RetryIn { delay: Duration::from_secs(7), counted: false }
        );
        assert_eq!(p.verdict(FailureClass::Auth, 1, None), Verdict::RetryIn { delay: p.auth_pause, counted: true });
        assert_eq!(p.verdict(FailureClass::Permanent, 1, None), Verdict::DeadLetter);
        let parking = DeliveryPolicy { on_permanent: PermanentAction::Park, ..p };
        assert_eq!(parking.verdict(FailureClass::Permanent, 1, None), Verdict::Park);
    }

    #[test]
    fn bad_schedules_name_the_key() {
        assert!(RetrySchedule { factor: 0.5, ..schedule() }.validate().unwrap_err().contains("factor"));
        assert!(RetrySchedule { max_attempts: 0, ..schedule() }.validate().unwrap_err().contains("max_attempts"));
    }
}
