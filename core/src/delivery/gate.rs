//! Per-target budgets: a token bucket for each rate key (GCRA through
//! `governor`), plus a pause the target itself can impose — a
//! `Retry-After`, or credentials it refused. All of one replica's
//! partition workers and its lane resumer share these gates; each replica
//! keeps its own, so a target's configured rate is per replica (see
//! docs/operations.md for how to split it).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// A target's configured budget.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateQuota {
    /// Sustained calls per second.
    pub per_second: f64,
    /// Calls allowed at once after a quiet spell.
    pub burst: u32,
}

impl RateQuota {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err("per_second must be a number > 0".into());
        }
        if self.burst == 0 {
            return Err("burst must be at least 1".into());
        }
        Ok(())
    }

    fn limiter(&self) -> Option<DefaultDirectRateLimiter> {
        let period = Duration::from_secs_f64(1.0 / self.per_second);
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(self.burst)?);
        Some(RateLimiter::direct(quota))
    }
}

/// One rate key's gate.
struct TargetGate {
    limiter: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
}

/// Whether a call may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admittance {
    /// A token was taken: call now.
    Go,
    /// Come back after this long (no token was taken).
    WaitFor(Duration),
}

/// The gates of every rate key this replica has called.
#[derive(Default)]
pub struct TargetGates {
    gates: Mutex<HashMap<String, Arc<TargetGate>>>,
}

impl TargetGates {
    fn gate(&self, key: &str, quota: Option<RateQuota>) -> Arc<TargetGate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(TargetGate { limiter: quota.and_then(|q| q.limiter()), paused_until: Mutex::new(None) })
            })
            .clone()
    }

    /// Takes a token for one call to `key`, or says how long to wait.
    pub fn admit(&self, key: &str, quota: Option<RateQuota>) -> Admittance {
        let gate = self.gate(key, quota);
        let now = Instant::now();
        {
            let mut paused = gate.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            match *paused {
                Some(until) if until > now => return Admittance::WaitFor(until - now),
                Some(_) => *paused = None,
                None => {}
            }
        }
        match &gate.limiter {
            None => Admittance::Go,
            Some(limiter) => match limiter.check() {
                Ok(()) => Admittance::Go,
                Err(not_until) => Admittance::WaitFor(not_until.wait_time_from(DefaultClock::default().now())),
            },
        }
    }

    /// Stops calls to `key` for `pause` (a longer pause already in force
    /// stays).
    pub fn pause(&self, key: &str, quota: Option<RateQuota>, pause: Duration) {
        let gate = self.gate(key, quota);
        let until = Instant::now() + pause;
        let mut paused = gate.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// Rate keys that are paused now, with the time left.
    pub fn paused(&self) -> Vec<(String, Duration)> {
        let now = Instant::now();
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = gates
            .iter()
            .filter_map(|(key, gate)| {
                let until = (*gate.paused_until.lock().unwrap_or_else(|p| p.into_inner()))?;
                (until > now).then(|| (key.clone(), until - now))
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_out_at_once_then_calls_wait_for_the_rate() {
        let gates = TargetGates::default();
        let quota = Some(RateQuota { per_second: 2.0, burst: 3 });
        for _ in 0..3 {
            assert_eq!(gates.admit("portal", quota), Admittance::Go);
        }
        match gates.admit("portal", quota) {
            Admittance::WaitFor(d) => {
                assert!(d > Duration::from_millis(300) && d <= Duration::from_millis(500), "{d:?}")
            }
            Admittance::Go => panic!("the burst is spent"),
        }
        assert_eq!(gates.admit("other-portal", quota), Admittance::Go, "keys have their own buckets");
    }

    #[test]
    fn a_pause_holds_every_call_until_it_ends_and_a_shorter_one_does_not_shorten_it() {
        let gates = TargetGates::default();
        gates.pause("portal", None, Duration::from_secs(60));
        gates.pause("portal", None, Duration::from_secs(1));
        match gates.admit("portal", None) {
            Admittance::WaitFor(d) => assert!(d > Duration::from_secs(58)),
            Admittance::Go => panic!("paused"),
        }
        assert_eq!(gates.paused().len(), 1);
        assert_eq!(gates.admit("unlimited", None), Admittance::Go);
    }
}
