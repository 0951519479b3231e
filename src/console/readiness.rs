//! `/readyz` answered from a cache: one background task checks readiness every
//! [`CHECK_EVERY`] (the database answers `SELECT 1` and every migration is applied; the
//! event consumer holds an open broker connection) and keeps the latest result; a probe
//! only reads it. However often an orchestrator probes, the database sees one check per
//! interval and the broker no new connection at all (the consumer's status is read
//! through [`BrokerLink`]). A result older than [`MAX_AGE`] is not trusted: a check that
//! stopped finishing is itself a reason to answer 503.
//!
//! Each check counts in `offboard_readiness_checks_total`, so the rate of checks can be
//! compared with the rate of probes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::intake::link::BrokerLink;
use crate::store::Store;

/// How often the background task checks.
pub const CHECK_EVERY: Duration = Duration::from_millis(750);
/// How long the database may take to answer one check before it counts as unreachable.
/// With [`CHECK_EVERY`], the newest finished check started at most 1.5 s ago.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(750);
/// The oldest check a probe may be answered from.
pub const MAX_AGE: Duration = Duration::from_secs(2);

/// One finished check: when it started, and what was wrong (nothing: ready).
#[derive(Clone, Debug, PartialEq)]
struct Checked {
    started: Instant,
    problems: Vec<String>,
}

/// The latest readiness check, shared by the background task and the probes.
#[derive(Debug, Default)]
pub struct Readiness {
    latest: Mutex<Option<Checked>>,
}

impl Readiness {
    /// The answer for a probe at `now`: ready, or why not.
    pub fn answer(&self, now: Instant) -> Result<(), String> {
        judge(self.slot().as_ref(), now)
    }

    /// Checks every [`CHECK_EVERY`] (the first at once) until `stop` turns true.
    pub async fn run(&self, store: &Store, broker: &BrokerLink, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = every.tick() => {}
            }
            let checked = check(store, broker).await;
            *self.slot() = Some(checked);
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Checked>> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One check of the database and the broker.
async fn check(store: &Store, broker: &BrokerLink) -> Checked {
    metrics::counter!("offboard_readiness_checks_total").increment(1);
    let started = Instant::now();
    let mut problems = Vec::new();
    match tokio::time::timeout(CHECK_TIMEOUT, store.unready()).await {
        Ok(None) => {}
        Ok(Some(why)) => problems.push(why),
        Err(_) => problems.push(format!(
            "database unreachable: no answer within {} ms",
            CHECK_TIMEOUT.as_millis()
        )),
    }
    if !broker.connected() {
        problems.push("broker: the event consumer holds no open connection".into());
    }
    Checked { started, problems }
}

/// Whether `latest` makes the process ready at `now`.
fn judge(latest: Option<&Checked>, now: Instant) -> Result<(), String> {
    let Some(checked) = latest else {
        return Err("starting: no readiness check has finished yet".into());
    };
    let age = now.saturating_duration_since(checked.started);
    if age > MAX_AGE {
        return Err(format!(
            "the newest readiness check started {:.1} s ago (at most {} s is trusted)",
            age.as_secs_f64(),
            MAX_AGE.as_secs()
        ));
    }
    if checked.problems.is_empty() {
        Ok(())
    } else {
        Err(checked.problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(started: Instant, problems: &[&str]) -> Checked {
        Checked {
            started,
            problems: problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_fresh_clean_check_is_ready_and_anything_else_is_not() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let cases: [(Option<Checked>, Instant, Result<(), &str>); 5] = [
            (None, t0, Err("starting")),
            (Some(checked(t0, &[])), t0 + ms(1_900), Ok(())),
            (
                Some(checked(t0, &[])),
                t0 + ms(2_100),
                Err("started 2.1 s ago"),
            ),
            (
                Some(checked(t0, &["database unreachable: x", "broker: y"])),
                t0 + ms(10),
                Err("database unreachable: x; broker: y"),
            ),
            (
                Some(checked(t0, &["broker: y"])),
                t0 + ms(3_000),
                Err("started 3.0 s ago"),
            ),
        ];
        for (latest, now, expected) in cases {
            let got = judge(latest.as_ref(), now);
            match (expected, &got) {
                (Ok(()), Ok(())) => {}
                (Err(part), Err(why)) if why.contains(part) => {}
                _ => panic!("{latest:?} at +{:?}: {got:?}", now - t0),
            }
        }
    }
}
