//! A step's retry policy (data from the workflow file), the delay before attempt n+1, and
//! the range of delays the policy allows.
//!
//! The runner's schedule comes from `backon`'s `ExponentialBuilder`, used only as a delay
//! generator: the waiting itself is a durable timer in the database, not a sleep in a
//! future. Jitter is drawn by the runner, and the retry time it leads to is recorded in
//! the trail as data. Replaying a trail does not recompute that time through `backon`
//! (whose `f32` arithmetic could change from one release to the next and would then break
//! every historical trail with a retry): it checks that the recorded time lies within
//! [`RetryPolicy::delay_bounds`], computed here from the policy's own definition.

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

    /// The delays allowed after failed attempt `attempt` (1-based), or `None` when the
    /// attempts are used up: what [`RetryPolicy::delay_after`] may return for any jitter
    /// draw. Computed from the policy's definition in `f64` — `initial_interval_ms ×
    /// multiplier^(attempt − 1)`, capped at `max_interval_ms`, plus up to `jitter` of it,
    /// never below `retry_after_ms` — not through `backon`, so a trail written by one
    /// release's arithmetic is judged the same way by the next.
    pub fn delay_bounds(&self, attempt: u32, retry_after_ms: Option<u64>) -> Option<DelayBounds> {
        if attempt >= self.max_attempts {
            return None;
        }
        let grown = self.initial_interval_ms as f64
            * f64::from(self.multiplier).powi(attempt.saturating_sub(1) as i32);
        let base = grown.min(self.max_interval_ms as f64);
        let hinted = Duration::from_millis(retry_after_ms.unwrap_or(0));
        Some(DelayBounds {
            shortest: millis(base).max(hinted),
            longest: millis(base * (1.0 + self.jitter.clamp(0.0, 1.0))).max(hinted),
        })
    }
}

/// Slack for float arithmetic when a recorded delay is checked against its bounds: 1 ms,
/// which also covers the truncation of stored times to microseconds.
const SLACK: Duration = Duration::from_millis(1);

/// Relative slack for long delays: a delay generator computing in `f32` (as `backon`
/// does) loses about a part in ten million per multiplication, so a delay grown over many
/// attempts may be off by more than 1 ms. One part in ten thousand covers a hundred
/// attempts' worth many times over and is still nothing against a forged timer.
const RELATIVE_SLACK: u32 = 10_000;

/// The shortest and longest delay a policy allows before one retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayBounds {
    /// With no jitter drawn: the exponential delay, or the server's `Retry-After` if longer.
    pub shortest: Duration,
    /// With the largest jitter: the exponential delay times (1 + jitter), or the server's
    /// `Retry-After` if longer.
    pub longest: Duration,
}

impl DelayBounds {
    /// Whether `delay` lies within the bounds, give or take rounding: 1 ms, or one part in
    /// ten thousand of the longest delay when that is more.
    pub fn admits(&self, delay: Duration) -> bool {
        let slack = SLACK.max(self.longest / RELATIVE_SLACK);
        delay + slack >= self.shortest && delay <= self.longest + slack
    }
}

/// A delay of `ms` milliseconds (a float that may be huge), saturating.
fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1_000.0).unwrap_or(Duration::MAX)
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

    /// Every delay the runner can draw lies within the bounds, for attempts up to the last,
    /// across jitter draws and `Retry-After` hints; the attempts past the last have none.
    #[test]
    fn every_drawn_delay_lies_within_the_bounds() {
        let policies = [
            policy(),
            RetryPolicy::default(),
            RetryPolicy {
                initial_interval_ms: 1_234,
                multiplier: 1.1,
                max_interval_ms: 86_400_000,
                max_attempts: 100,
                jitter: 1.0,
            },
        ];
        for p in policies {
            for attempt in 1..p.max_attempts {
                for hint in [None, Some(0), Some(1_500), Some(400_000)] {
                    let bounds = p.delay_bounds(attempt, hint).unwrap();
                    for draw in [0.0, 0.25, 0.5, 0.999_999] {
                        let d = p.delay_after(attempt, draw, hint).unwrap();
                        assert!(
                            bounds.admits(d),
                            "{p:?} {attempt} {hint:?} {draw}: {d:?} {bounds:?}"
                        );
                    }
                }
            }
            assert_eq!(p.delay_bounds(p.max_attempts, None), None);
            assert_eq!(p.delay_after(p.max_attempts, 0.0, None), None);
        }
    }

    #[test]
    fn bounds_follow_the_policy_and_the_hint() {
        let p = policy();
        let ms = |b: DelayBounds| (b.shortest.as_millis(), b.longest.as_millis());
        assert_eq!(ms(p.delay_bounds(1, None).unwrap()), (100, 150));
        assert_eq!(ms(p.delay_bounds(2, None).unwrap()), (200, 300));
        assert_eq!(ms(p.delay_bounds(4, None).unwrap()), (350, 525));
        // A hint between the bounds lifts the shortest; one beyond both is both.
        assert_eq!(ms(p.delay_bounds(1, Some(120)).unwrap()), (120, 150));
        assert_eq!(ms(p.delay_bounds(1, Some(2_000)).unwrap()), (2_000, 2_000));
    }

    /// A delay 1 ms off what today's arithmetic gives is admitted (another release of the
    /// generator may round differently); one well outside the bounds is not.
    #[test]
    fn a_millisecond_of_rounding_is_admitted_and_a_forged_delay_is_not() {
        let p = policy();
        let b = p.delay_bounds(1, None).unwrap();
        let ms = Duration::from_millis;
        for ok in [ms(99), ms(100), ms(125), ms(150), ms(151)] {
            assert!(b.admits(ok), "{ok:?}");
        }
        for forged in [ms(0), ms(98), ms(152), ms(1_150)] {
            assert!(!b.admits(forged), "{forged:?}");
        }
        // The relative slack of a long delay stays far below a forged timer.
        let long = RetryPolicy::default().delay_bounds(23, None).unwrap();
        assert_eq!(long.shortest, Duration::from_secs(300));
        assert!(long.admits(Duration::from_millis(300_020)));
        assert!(!long.admits(Duration::from_secs(299)));
        assert!(!long.admits(Duration::from_secs(361)));
    }
}
