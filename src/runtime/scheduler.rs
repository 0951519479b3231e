//! The scheduler: claims due workflows (one statement, fresh leases), hands each claim to
//! a runner task, renews the leases of the drives in flight — and only those — and
//! sleeps until the next timer, an accepted event or a finished drive.
//!
//! A process never holds two drives of one workflow: a claim only succeeds on a workflow
//! no live lease holds, and this process's own leases are live while it drives them. A
//! drive that ends in any way (success, error, panic) leaves the in-flight set, so its
//! lease is released or, if the release cannot be written, lapses.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn, Instrument};

use super::error::EngineError;
use super::runner::Runner;
use super::shared::{HandedOff, Shared};
use crate::domain::machine::State;
use crate::store::{Claim, Lease};

/// Claims due workflows and drives each in its own task, with a `Runner`.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// A scheduler over the runtime's shared context.
    pub fn new(shared: Arc<Shared>) -> Scheduler {
        Scheduler { shared }
    }

    /// Drives a claimed workflow, then gives its lease back. A lost lease stops the drive
    /// with nothing more written; any other error defers the workflow for 30 s.
    pub async fn drive(&self, claim: Claim) -> Result<State, EngineError> {
        self.drive_from(claim, None).await
    }

    /// [`Scheduler::drive`], for a claim whose step attempt `started` is recorded already
    /// (a hand-off from the intake): the drive begins by performing it.
    async fn drive_from(
        &self,
        claim: Claim,
        started: Option<(usize, u32)>,
    ) -> Result<State, EngineError> {
        let id = claim.id.clone();
        let lease = claim.lease.clone();
        let (_in_flight, signal) = self.shared.in_flight().enter(&id, lease.epoch);
        let result = async {
            Runner::new(&self.shared, claim, signal)
                .await?
                .run(started)
                .await
        }
        .instrument(tracing::info_span!("workflow", id = %id, epoch = lease.epoch))
        .await;
        // A drive that ends well has given its lease back with its last write.
        match &result {
            Ok(_) => {}
            Err(e) if e.is_lease_lost() => {
                warn!(workflow = %id, epoch = lease.epoch, "lease lost: another worker has claimed the workflow; this drive stops");
            }
            Err(e) => {
                warn!(workflow = %id, error = %e, "workflow run stopped; looking again in 30 s");
                let later = chrono::Utc::now() + chrono::Duration::seconds(30);
                self.release(&id, &lease, Some(later)).await;
            }
        }
        result
    }

    async fn release(&self, id: &str, lease: &Lease, defer: Option<chrono::DateTime<chrono::Utc>>) {
        if let Err(e) = self.shared.store().release(id, lease, defer).await {
            // Not renewed any more, the lease lapses and any process may claim it.
            warn!(workflow = %id, error = %e, "could not release a lease; it will lapse");
        }
    }

    /// Drives one workflow as far as it can go now; returns its state afterwards, or
    /// `None` when another worker holds it.
    pub async fn run_one(&self, id: &str) -> Result<Option<State>, EngineError> {
        match self
            .shared
            .store()
            .claim(id, self.shared.worker_id(), self.shared.lease_secs())
            .await?
        {
            Some(claim) => {
                // Alone, without the serve loop's heartbeat: the lease is renewed here
                // while steps that only read run without committing, and cancel
                // requests are looked for.
                let drive = self.drive(claim);
                tokio::pin!(drive);
                let mut beat = Heartbeat::new(self.shared.lease());
                loop {
                    tokio::select! {
                        result = &mut drive => return result.map(Some),
                        renew = beat.tick() => self.beat(renew).await,
                    }
                }
            }
            None => Ok(None),
        }
    }

    /// Claims and drives every due workflow, at most `max_concurrent_workflows` at once,
    /// until none is due now. Returns how many drives ran. Places are refilled as drives
    /// end, a quarter of them at a time, so one slow workflow does not hold up the rest
    /// and claims stay batched.
    pub async fn run_due(&self) -> Result<usize, EngineError> {
        let limit = self.shared.config().max_concurrent_workflows.max(1);
        let refill = (limit / 4).max(1);
        let mut running = tokio::task::JoinSet::new();
        let mut count = 0;
        // Steps that only read commit nothing, so leases are kept alive as in `work`.
        let _heartbeat = AbortOnDropHandle::new(tokio::spawn(self.clone().heartbeat()));
        loop {
            let free = limit - running.len();
            if free >= refill || running.is_empty() {
                let claims = self
                    .shared
                    .store()
                    .claim_due(
                        self.shared.worker_id(),
                        self.shared.lease_secs(),
                        free,
                        &self.shared.in_flight().ids(),
                    )
                    .await?;
                count += claims.len();
                for claim in claims {
                    let scheduler = self.clone();
                    running.spawn(async move {
                        let _ = scheduler.drive(claim).await;
                    });
                }
            }
            if running.join_next().await.is_none() {
                return Ok(count);
            }
            while running.try_join_next().is_some() {}
        }
    }

    /// Drives one workflow until it ends or waits longer than `patience` for a timer.
    pub async fn drive_to_rest(
        &self,
        id: &str,
        patience: Duration,
    ) -> Result<Option<State>, EngineError> {
        loop {
            let Some(state) = self.run_one(id).await? else {
                return Ok(None);
            };
            let Some(at) = state.wake_at.filter(|_| !state.status.is_final()) else {
                return Ok(Some(state));
            };
            let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            if wait > patience {
                return Ok(Some(state));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Runs workflows until every one is final or waiting past `horizon` from now.
    pub async fn run_until_settled(&self, horizon: Duration) -> Result<(), EngineError> {
        let deadline = chrono::Utc::now() + chrono::Duration::from_std(horizon).unwrap_or_default();
        loop {
            self.run_due().await?;
            match self.shared.store().next_wake().await? {
                Some(at) if at <= deadline => {
                    let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                }
                _ if self.shared.store().any_due().await? => {}
                _ => return Ok(()),
            }
        }
    }

    /// The serve loop: drives the workflows the intake hands over and claims due ones as
    /// places free up, keeps the leases of the drives in flight alive, stops when
    /// `shutdown` is cancelled (in-flight steps finish first; no new step starts).
    pub async fn work(self, shutdown: CancellationToken) {
        let heartbeat = tokio::spawn(self.clone().heartbeat());
        let (hand_offs, mut handed) = mpsc::unbounded_channel();
        self.shared.set_hand_offs(Some(hand_offs));
        let mut running = tokio::task::JoinSet::new();
        let drive = |running: &mut tokio::task::JoinSet<()>, h: HandedOff| {
            let scheduler = self.clone();
            running.spawn(async move {
                let _permit = h.permit;
                let _ = scheduler.drive_from(h.claim, Some(h.started)).await;
            });
        };
        // Whether something may have become due since the last look: a hand-off makes
        // nothing due (it arrives leased), so it costs no claim and no due query.
        let mut look = true;
        let mut next_look = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            while running.try_join_next().is_some() {}
            while let Ok(h) = handed.try_recv() {
                drive(&mut running, h);
            }
            if look {
                next_look = tokio::time::Instant::now() + self.claim_due_work(&mut running).await;
            }
            look = tokio::select! {
                Some(h) = handed.recv() => {
                    drive(&mut running, h);
                    false
                }
                _ = self.shared.woken() => true,
                _ = tokio::time::sleep_until(next_look) => true,
                _ = running.join_next(), if !running.is_empty() => true,
                _ = shutdown.cancelled() => false,
            };
        }
        self.shared.stop();
        // Hand-offs made before the intake saw the stop are driven like any in flight.
        self.shared.set_hand_offs(None);
        while let Ok(h) = handed.try_recv() {
            drive(&mut running, h);
        }
        info!(
            in_flight = running.len(),
            "stopping: letting in-flight steps finish"
        );
        running.join_all().await;
        heartbeat.abort();
    }

    /// Claims due workflows into the free places and starts their drives; returns how long
    /// to wait before looking again if nothing else happens: until the next timer (other
    /// processes' new events are seen within a second), or a second when every place was
    /// filled (more may be due: a drive's end looks again sooner).
    async fn claim_due_work(&self, running: &mut tokio::task::JoinSet<()>) -> Duration {
        let full = match self.claim_free().await {
            Ok((claims, places)) => {
                let full = !places.is_empty() && claims.len() == places.len();
                for (claim, permit) in claims.into_iter().zip(places) {
                    let scheduler = self.clone();
                    running.spawn(async move {
                        let _permit = permit;
                        let _ = scheduler.drive(claim).await;
                    });
                }
                full
            }
            Err(e) => {
                warn!(error = %e, "could not claim due workflows");
                false
            }
        };
        if full {
            return Duration::from_secs(1);
        }
        match self.shared.store().next_wake().await {
            Ok(Some(at)) => (at - chrono::Utc::now()).to_std().unwrap_or_default(),
            _ => Duration::from_secs(1),
        }
        .clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// Claims as many due workflows as there are free places; returns the claims, and the
    /// places taken for them (the first `claims.len()` are theirs; the rest go back when
    /// dropped).
    async fn claim_free(&self) -> Result<(Vec<Claim>, Vec<OwnedSemaphorePermit>), EngineError> {
        let mut places = Vec::new();
        while let Ok(permit) = self.shared.permits().clone().try_acquire_owned() {
            places.push(permit);
        }
        let claims = self
            .shared
            .store()
            .claim_due(
                self.shared.worker_id(),
                self.shared.lease_secs(),
                places.len(),
                &self.shared.in_flight().ids(),
            )
            .await?;
        Ok((claims, places))
    }

    /// Keeps the drives in flight informed: renews their leases every third of a lease
    /// and passes on the cancel requests waiting on them every second.
    async fn heartbeat(self) {
        let mut beat = Heartbeat::new(self.shared.lease());
        loop {
            let renew = beat.tick().await;
            self.beat(renew).await;
        }
    }

    /// One beat: renew the leases in flight (when `renew`) or only look for cancel
    /// requests on them, and raise the signal of each drive asked to stop.
    async fn beat(&self, renew: bool) {
        let leases = self.shared.in_flight().leases();
        if leases.is_empty() {
            return;
        }
        let held = if renew {
            self.shared
                .store()
                .renew(self.shared.worker_id(), &leases, self.shared.lease_secs())
                .await
        } else {
            self.shared
                .store()
                .cancel_requests(self.shared.worker_id())
                .await
        };
        let held = match held {
            Ok(held) => held,
            Err(e) => {
                warn!(error = %e, "could not renew workflow leases or read cancel requests");
                return;
            }
        };
        if renew && held.len() < leases.len() {
            warn!(
                in_flight = leases.len(),
                renewed = held.len(),
                "some leases were taken over; their drives stop at their next write"
            );
        }
        for lease in held {
            if let Some(by) = lease.cancel_requested_by {
                self.shared
                    .in_flight()
                    .cancel(&lease.id, Some(lease.epoch), &by);
            }
        }
    }
}

/// The rhythm of the heartbeat: a beat every second, every `lease / 3` of which renews.
struct Heartbeat {
    every: Duration,
    renew_every: Duration,
    since_renewal: Duration,
}

impl Heartbeat {
    fn new(lease: Duration) -> Heartbeat {
        let renew_every = lease / 3;
        Heartbeat {
            every: renew_every.min(Duration::from_secs(1)),
            renew_every,
            since_renewal: Duration::ZERO,
        }
    }

    /// Waits for the next beat; says whether it renews.
    async fn tick(&mut self) -> bool {
        tokio::time::sleep(self.every).await;
        self.since_renewal += self.every;
        let renew = self.since_renewal >= self.renew_every;
        if renew {
            self.since_renewal = Duration::ZERO;
        }
        renew
    }
}
