//! GCRA, the one algorithm both backends run: a token bucket stated as a theoretical arrival time
//! (TAT).
//!
//! A limit of `requests` per `period` with a burst `b` has an emission interval `T = period /
//! requests` (whole microseconds, the unit Redis `TIME` gives) and a tolerance `tau = T * (b - 1)`.
//! A request at `now` passes when `tat - now <= tau` (with `tat = max(stored, now)`), and moves the
//! TAT to `tat + T`. This is governor's arithmetic; the Redis script (`redis.lua`) does the same in
//! Lua, and the test vectors hold both to it.

use std::time::Duration;

use crate::config::LimitSpec;

/// A validated limit in the integer units both backends compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// The emission interval, in microseconds (at least 1; nanoseconds after [`Gcra::in_nanos`]).
    pub(crate) emission: u64,
    /// The tolerance, in the unit of `emission`.
    pub(crate) tolerance: u64,
    /// Requests per period, as configured (the `limit` reported in headers).
    pub(crate) requests: u32,
    /// The period, as configured.
    pub(crate) period: Duration,
    /// The burst in effect.
    pub(crate) burst: u32,
}

/// What one limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) allowed: bool,
    /// Requests that would still pass right after this one.
    pub(crate) remaining: u32,
    /// Time until the bucket is full again, in the unit of `emission`.
    pub(crate) reset: u64,
    /// For a denial: time until a request would pass, in the unit of `emission`.
    pub(crate) retry: u64,
    /// For an allowed request: the new TAT.
    pub(crate) new_tat: u64,
}

impl Gcra {
    /// The limit of a spec that [`LimitSpec::validate`] accepted. `divisor` divides the requests and
    /// the burst (the fallback's share of one instance), never below 1.
    pub(crate) fn from_spec(spec: &LimitSpec, divisor: u32) -> Self {
        let divisor = divisor.max(1);
        let requests = (spec.requests / divisor).max(1);
        let burst = (spec.effective_burst() / divisor).max(1);
        let period_us = u64::try_from(spec.period.as_micros()).unwrap_or(u64::MAX);
        let emission = (period_us / u64::from(requests)).max(1);
        Self {
            emission,
            tolerance: emission.saturating_mul(u64::from(burst) - 1),
            requests,
            period: spec.period,
            burst,
        }
    }

    /// The same limit in nanoseconds, the unit of the in-process backend.
    pub(crate) fn in_nanos(&self) -> Self {
        Self {
            emission: self.emission.saturating_mul(1_000),
            tolerance: self.tolerance.saturating_mul(1_000),
            ..*self
        }
    }

    /// Decides one request at `now` against the stored TAT (`None` when the key is fresh). Times in the
    /// unit of `emission`, on any fixed origin.
    pub(crate) fn step(&self, stored: Option<u64>, now: u64) -> Step {
        let tat = stored.map_or(now, |tat| tat.max(now));
        let backlog = tat - now;
        if backlog > self.tolerance {
            return Step {
                allowed: false,
                remaining: 0,
                reset: backlog,
                retry: backlog - self.tolerance,
                new_tat: tat,
            };
        }
        let remaining = (self.tolerance - backlog) / self.emission;
        Step {
            allowed: true,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: backlog + self.emission,
            retry: 0,
            new_tat: tat + self.emission,
        }
    }
}

/// Picks the limit that speaks for a request among `steps` (index order): for a denial the
/// denying limit with the longest wait, for an allowed request the one with the fewest requests
/// remaining (ties: the longer reset). The Redis script picks the same way.
pub(crate) fn most_restrictive(steps: &[Step]) -> Option<usize> {
    let mut best: Option<usize> = None;
    let any_denied = steps.iter().any(|step| !step.allowed);
    for (index, step) in steps.iter().enumerate() {
        if any_denied {
            if step.allowed {
                continue;
            }
            match best.and_then(|best| steps.get(best)) {
                Some(current) if step.retry <= current.retry => {}
                _ => best = Some(index),
            }
        } else {
            match best.and_then(|best| steps.get(best)) {
                Some(current)
                    if step.remaining > current.remaining
                        || (step.remaining == current.remaining && step.reset <= current.reset) => {
                }
                _ => best = Some(index),
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_bucket_holds_its_burst_then_refills_one_per_interval() {
        let gcra = Gcra::from_spec(&LimitSpec::per_minute(60).with_burst(3), 1);
        assert_eq!((gcra.emission, gcra.tolerance), (1_000_000, 2_000_000));
        let mut tat = None;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let step = gcra.step(tat, 0);
            assert!(step.allowed);
            remaining.push(step.remaining);
            tat = Some(step.new_tat);
        }
        assert_eq!(remaining, [2, 1, 0]);
        let denied = gcra.step(tat, 0);
        assert_eq!(
            (denied.allowed, denied.retry, denied.reset),
            (false, 1_000_000, 3_000_000)
        );
        assert!(gcra.step(tat, 1_000_000).allowed);
    }

    #[test]
    fn the_fallback_share_never_drops_below_one() {
        let gcra = Gcra::from_spec(&LimitSpec::per_minute(10).with_burst(2), 4);
        assert_eq!((gcra.requests, gcra.burst), (2, 1));
        let tiny = Gcra::from_spec(&LimitSpec::per_minute(1), 100);
        assert_eq!((tiny.requests, tiny.burst), (1, 1));
    }
}
