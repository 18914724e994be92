//! Per-target budgets: a token bucket for each rate key (GCRA through
//! `governor`), plus a pause the target itself can impose — a
//! `Retry-After`, or credentials it refused. All of one replica's
//! partition workers and its lane resumer share these gates; each replica
//! keeps its own, so a target's configured rate is per replica (see
//! docs/operations.md for how to split it).
//!
//! When a pause ends the gate lets one call through and holds the rest
//! until that call is back (`settled`): a target that is still overloaded
//! sees one more call, not every call the workers had queued meanwhile
//! (the half-open state of a circuit breaker). Then calls go on at the
//! sustained rate: the burst saved up during the pause is dropped.

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
    pause: Mutex<Pause>,
}

/// A gate's pause, and the probe that ends it.
#[derive(Default)]
struct Pause {
    until: Option<Instant>,
    /// The one call let through after a pause, with when it stops holding
    /// the others (if its result never comes back).
    probe: Option<Instant>,
}

/// How long a probe call holds the gate at most: the performer reports
/// every call's end, so this only matters when a call is abandoned.
const PROBE_HOLD: Duration = Duration::from_secs(30);
/// How often a call held behind a probe looks again.
const PROBE_RECHECK: Duration = Duration::from_millis(50);

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
                Arc::new(TargetGate { limiter: quota.and_then(|q| q.limiter()), pause: Mutex::default() })
            })
            .clone()
    }

    /// Takes a token for one call to `key`, or says how long to wait.
    pub fn admit(&self, key: &str, quota: Option<RateQuota>) -> Admittance {
        let gate = self.gate(key, quota);
        let now = Instant::now();
        let probing = {
            let mut pause = gate.pause.lock().unwrap_or_else(|p| p.into_inner());
            match (pause.until, pause.probe) {
                (Some(until), _) if until > now => return Admittance::WaitFor(until - now),
                (_, Some(hold)) if hold > now => return Admittance::WaitFor(PROBE_RECHECK.min(hold - now)),
                // The pause is over: this call is the probe.
                (Some(_), _) => {
                    *pause = Pause { until: None, probe: Some(now + PROBE_HOLD) };
                    true
                }
                (None, _) => {
                    pause.probe = None;
                    false
                }
            }
        };
        if probing {
            // The probe goes out whatever the bucket says (holding it would
            // hold every call), and the tokens saved up during the pause are
            // dropped: the target has just said it was over its budget, so
            // calls resume at the sustained rate, not with a burst it would
            // refuse again (a Bitrix24 portal's bucket is shared with every
            // other integration of the portal).
            if let Some(limiter) = &gate.limiter {
                while limiter.check().is_ok() {}
            }
            return Admittance::Go;
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
        let mut current = gate.pause.lock().unwrap_or_else(|p| p.into_inner());
        if current.until.is_none_or(|u| u < until) {
            current.until = Some(until);
        }
        current.probe = None;
    }

    /// A call to `key` came back (call `pause` first if it asked for one):
    /// a probe that did not pause the gate again opens it.
    pub fn settled(&self, key: &str, quota: Option<RateQuota>) {
        let gate = self.gate(key, quota);
        gate.pause.lock().unwrap_or_else(|p| p.into_inner()).probe = None;
    }

    /// Rate keys that are paused now, with the time left.
    pub fn paused(&self) -> Vec<(String, Duration)> {
        let now = Instant::now();
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = gates
            .iter()
            .filter_map(|(key, gate)| {
                let until = gate.pause.lock().unwrap_or_else(|p| p.into_inner()).until?;
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

    #[test]
    fn after_a_pause_one_probe_goes_and_the_rest_wait_for_its_answer() {
        let gates = TargetGates::default();
        gates.pause("portal", None, Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(gates.admit("portal", None), Admittance::Go, "the probe");
        assert!(matches!(gates.admit("portal", None), Admittance::WaitFor(_)), "held behind the probe");
        // Still limited: the probe pauses the gate again, and the next pause
        // ends with a probe too.
        gates.pause("portal", None, Duration::from_millis(20));
        assert!(matches!(gates.admit("portal", None), Admittance::WaitFor(_)));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(gates.admit("portal", None), Admittance::Go, "the second probe");
        gates.settled("portal", None);
        assert_eq!(gates.admit("portal", None), Admittance::Go, "open again");
        assert_eq!(gates.admit("portal", None), Admittance::Go);
    }

    #[test]
    fn after_a_pause_calls_resume_at_the_sustained_rate_without_the_saved_up_burst() {
        let gates = TargetGates::default();
        let quota = Some(RateQuota { per_second: 2.0, burst: 50 });
        assert_eq!(gates.admit("portal", quota), Admittance::Go);
        gates.pause("portal", quota, Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(gates.admit("portal", quota), Admittance::Go, "the probe");
        gates.settled("portal", quota);
        match gates.admit("portal", quota) {
            Admittance::WaitFor(wait) => assert!(wait > Duration::from_millis(400), "{wait:?}"),
            Admittance::Go => panic!("49 saved-up tokens were kept after the target refused"),
        }
    }
}
