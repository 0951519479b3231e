//! A step's retry policy (data from the workflow file) and the delay before attempt n+1.
//!
//! The exponential schedule comes from `backon`'s `ExponentialBuilder`, used only as a
//! delay generator: the waiting itself is a durable timer in the database, not a sleep in
//! a future. Jitter is drawn by the runner and recorded in the trail, so replaying a
//! workflow recomputes exactly the same retry times.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

/// How often and how patiently a step is retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay before the second attempt, in milliseconds.
    pub initial_interval_ms: u64,
    /// Each further delay is the previous one times this.
    pub multiplier: f32,
    /// No delay is longer than this, in milliseconds.
    pub max_interval_ms: u64,
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Up to this fraction (0–1) is added at random to each delay.
    pub jitter: f64,
}

/// The default policy waits out an outage of over an hour: delays of 1 s, 2 s, 4 s … up
/// to 5 minutes, 24 attempts (about 78 minutes of waiting in all). The HTTP calls of each
/// attempt are also retried on their own first (`apps::retry`).
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval_ms: 1_000,
            multiplier: 2.0,
            max_interval_ms: 300_000,
            max_attempts: 24,
            jitter: 0.2,
        }
    }
}

/// A per-step override: any field left out keeps the workflow's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    /// See [`RetryPolicy::initial_interval_ms`].
    pub initial_interval_ms: Option<u64>,
    /// See [`RetryPolicy::multiplier`].
    pub multiplier: Option<f32>,
    /// See [`RetryPolicy::max_interval_ms`].
    pub max_interval_ms: Option<u64>,
    /// See [`RetryPolicy::max_attempts`].
    pub max_attempts: Option<u32>,
    /// See [`RetryPolicy::jitter`].
    pub jitter: Option<f64>,
}

impl RetryPolicy {
    /// This policy with `over`'s fields in place of its own.
    pub fn with(&self, over: &RetryOverride) -> RetryPolicy {
        RetryPolicy {
            initial_interval_ms: over.initial_interval_ms.unwrap_or(self.initial_interval_ms),
            multiplier: over.multiplier.unwrap_or(self.multiplier),
            max_interval_ms: over.max_interval_ms.unwrap_or(self.max_interval_ms),
            max_attempts: over.max_attempts.unwrap_or(self.max_attempts),
            jitter: over.jitter.unwrap_or(self.jitter),
        }
    }

    /// Says what is wrong with the policy, if anything.
    pub fn problem(&self) -> Option<&'static str> {
        if self.initial_interval_ms == 0 {
            return Some("initial_interval_ms must be above 0");
        }
        if !(self.multiplier >= 1.0 && self.multiplier <= 100.0) {
            return Some("multiplier must be between 1 and 100");
        }
        if self.max_interval_ms < self.initial_interval_ms {
            return Some("max_interval_ms must not be below initial_interval_ms");
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Some("max_attempts must be between 1 and 100");
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Some("jitter must be between 0 and 1");
        }
        None
    }

    /// The time a step waits in all before giving up, without jitter or `Retry-After`.
    pub fn window(&self) -> Duration {
        (1..self.max_attempts)
            .filter_map(|a| self.delay_after(a, 0.0, None))
            .sum()
    }

    /// The delay after failed attempt `attempt` (1-based), or `None` when the attempts
    /// are used up. `jitter_sample` is in [0, 1); `retry_after_ms` is the server's hint,
    /// which is never undercut.
    pub fn delay_after(
        &self,
        attempt: u32,
        jitter_sample: f64,
        retry_after_ms: Option<u64>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let base = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_interval_ms))
            .with_factor(self.multiplier)
            .with_max_delay(Duration::from_millis(self.max_interval_ms))
            .with_max_times(self.max_attempts as usize)
            .build()
            .nth(attempt.saturating_sub(1) as usize)?;
        let extra = base.mul_f64(self.jitter * jitter_sample.clamp(0.0, 1.0));
        let hinted = Duration::from_millis(retry_after_ms.unwrap_or(0));
        Some((base + extra).max(hinted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval_ms: 100,
            multiplier: 2.0,
            max_interval_ms: 350,
            max_attempts: 5,
            jitter: 0.5,
        }
    }

    #[test]
    fn delays_grow_up_to_the_cap_then_stop() {
        let p = policy();
        let ms: Vec<_> = (1..=5)
            .map(|a| p.delay_after(a, 0.0, None).map(|d| d.as_millis()))
            .collect();
        assert_eq!(ms, vec![Some(100), Some(200), Some(350), Some(350), None]);
    }

    #[test]
    fn jitter_and_retry_after_lengthen_the_delay() {
        let p = policy();
        assert_eq!(p.delay_after(1, 1.0, None).unwrap().as_millis(), 150);
        assert_eq!(
            p.delay_after(1, 0.0, Some(2_000)).unwrap().as_millis(),
            2_000
        );
    }

    #[test]
    fn the_default_policy_outlasts_an_hour_long_outage() {
        // (backon computes in f32: compare whole milliseconds.)
        assert_eq!(policy().window().as_millis(), 100 + 200 + 350 + 350);
        // 1 + 2 + … + 256 s, then 5 minutes for each of the remaining 14 waits.
        assert_eq!(RetryPolicy::default().window().as_secs(), 511 + 14 * 300);
        assert!(RetryPolicy::default().window() >= Duration::from_secs(3_600));
    }

    #[test]
    fn bad_policies_are_refused() {
        for bad in [
            RetryPolicy {
                max_attempts: 0,
                ..policy()
            },
            RetryPolicy {
                multiplier: 0.5,
                ..policy()
            },
            RetryPolicy {
                jitter: 2.0,
                ..policy()
            },
            RetryPolicy {
                max_interval_ms: 10,
                ..policy()
            },
        ] {
            assert!(bad.problem().is_some(), "{bad:?}");
        }
        assert_eq!(policy().problem(), None);
    }
}
