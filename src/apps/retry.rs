//! Per-call retry: each HTTP call of a step is retried on its own, with its own backoff,
//! before the step gives up.
//!
//! A step's attempt needs every one of its calls to succeed. Retrying only whole steps
//! makes a step with many calls fail far more often than a single call does: with 35 % of
//! requests failing transiently, a step of six calls succeeds on a given attempt only
//! about 7 % of the time. So each call is retried here, inside the attempt, while the
//! error is transient (429, 5xx, Smartsheet's 4000–4004, no response) and a short time
//! budget lasts, always waiting at least as long as the server's `Retry-After` asks.
//!
//! The budget is deliberately small (a minute by default): a process should not sit on a
//! workflow through a long outage. When it runs out the call's error goes up, the step
//! fails retryably, and the durable per-step retry of the workflow definition (a timer in
//! the database, see `domain::retry`) takes over for as long as the outage lasts.
//!
//! The delay schedule is `backon`'s `ExponentialBuilder` with jitter, used as a delay
//! generator; the waiting is a `tokio` sleep.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the retry loop needs to know about a failed call.
pub trait CallError {
    /// Whether another try may succeed.
    fn is_transient(&self) -> bool;
    /// The wait the server asked for (`Retry-After` and kin), in milliseconds.
    fn retry_after_ms(&self) -> Option<u64>;
}

/// How one call is retried.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRetry {
    /// The first delay.
    pub initial: Duration,
    /// Each further delay is the previous one times this.
    pub factor: f32,
    /// No delay computed from the schedule is longer than this (`Retry-After` may be).
    pub max_delay: Duration,
    /// Retrying stops when the next wait would end later than this after the first try.
    pub budget: Duration,
}

impl Default for CallRetry {
    fn default() -> Self {
        CallRetry {
            initial: Duration::from_millis(500),
            factor: 2.0,
            max_delay: Duration::from_secs(15),
            budget: Duration::from_secs(60),
        }
    }
}

impl CallRetry {
    /// No retry at all: the first error goes up as it is.
    pub fn never() -> Self {
        CallRetry {
            budget: Duration::ZERO,
            ..CallRetry::default()
        }
    }

    /// The wait before the next try, or `None` when it would overrun the budget.
    /// `scheduled` is the backoff's next delay, `elapsed` the time since the first try.
    pub fn wait(
        &self,
        scheduled: Duration,
        retry_after_ms: Option<u64>,
        elapsed: Duration,
    ) -> Option<Duration> {
        let wait = scheduled.max(Duration::from_millis(retry_after_ms.unwrap_or(0)));
        (elapsed + wait <= self.budget).then_some(wait)
    }

    fn schedule(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_factor(self.factor)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Runs `call` until it succeeds, fails for good, the budget is spent, or `stop` is
    /// cancelled (an operator's cancel: no further try is made, even one already
    /// waiting); the last error is returned then.
    pub async fn run<T, E, F, Fut>(
        &self,
        stop: Option<&CancellationToken>,
        mut call: F,
    ) -> Result<T, E>
    where
        E: CallError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let mut schedule = self.schedule();
        loop {
            let err = match call().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_transient() {
                return Err(err);
            }
            let scheduled = schedule.next().unwrap_or(self.max_delay);
            let Some(wait) = self.wait(scheduled, err.retry_after_ms(), started.elapsed()) else {
                return Err(err);
            };
            let Some(stop) = stop else {
                tokio::time::sleep(wait).await;
                continue;
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Err(err),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Failure {
        transient: bool,
        retry_after_ms: Option<u64>,
    }

    impl CallError for Failure {
        fn is_transient(&self) -> bool {
            self.transient
        }
        fn retry_after_ms(&self) -> Option<u64> {
            self.retry_after_ms
        }
    }

    fn transient(retry_after_ms: Option<u64>) -> Failure {
        Failure {
            transient: true,
            retry_after_ms,
        }
    }

    fn policy() -> CallRetry {
        CallRetry {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_secs(1),
            budget: Duration::from_secs(10),
        }
    }

    #[test]
    fn retry_after_is_never_undercut_and_the_budget_is_kept() {
        let p = policy();
        let ms = Duration::from_millis;
        assert_eq!(p.wait(ms(100), None, ms(0)), Some(ms(100)));
        assert_eq!(p.wait(ms(100), Some(3_000), ms(0)), Some(ms(3_000)));
        assert_eq!(p.wait(ms(100), Some(3_000), ms(7_500)), None);
        assert_eq!(p.wait(ms(900), None, ms(9_100)), Some(ms(900)));
        assert_eq!(CallRetry::never().wait(ms(1), None, ms(0)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let got = policy()
            .run(None, || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(transient(Some(2_000))),
                    1 | 2 => Err(transient(None)),
                    _ => Ok("done"),
                }
            })
            .await;
        assert_eq!(got, Ok("done"));
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        // Retry-After's 2 s, then two backoff waits of at most 200 ms and 400 ms (with jitter).
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(2_000 + 200 + 400),
            "{waited:?}"
        );
        assert!(
            waited <= Duration::from_millis(2_000 + 400 + 800),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_and_a_spent_budget_end_the_call() {
        let tries = AtomicU32::new(0);
        let got: Result<(), _> = policy()
            .run(None, || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(Failure {
                    transient: false,
                    retry_after_ms: None,
                })
            })
            .await;
        assert!(got.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);

        let started = Instant::now();
        let got: Result<(), _> = policy().run(None, || async { Err(transient(None)) }).await;
        assert_eq!(got, Err(transient(None)));
        assert!(started.elapsed() <= Duration::from_secs(10));
        assert!(started.elapsed() >= Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_ends_the_wait_and_no_further_try_is_made() {
        let tries = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let cancel_later = {
            let stop = stop.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                stop.cancel();
            }
        };
        let retry = policy();
        let (got, ()) = tokio::join!(
            retry.run(Some(&stop), || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(transient(Some(5_000)))
            }),
            cancel_later
        );
        assert_eq!(got, Err(transient(Some(5_000))));
        assert_eq!(tries.load(Ordering::SeqCst), 1, "no try after the cancel");
        assert_eq!(started.elapsed(), Duration::from_millis(1_500));
        // Cancelled before the first error: that error goes up at once.
        let got: Result<(), _> = policy()
            .run(Some(&stop), || async { Err(transient(None)) })
            .await;
        assert_eq!(got, Err(transient(None)));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
