//! What operators ask of a workflow: retry a failed one, cancel one that has not ended,
//! release one the mass-offboarding brake holds.
//! An intervention claims the workflow like a worker does and writes under that lease;
//! when a worker holds it, a cancel is left as a request the worker answers at its next
//! boundary that makes no write (with `cancelled`, or `cancel_refused` if the workflow
//! ended first). The request reaches a drive in this process at once and one in another
//! process within a second; the operator is told what became of it, not a guess: the
//! cancel waits a few seconds for the worker's answer before saying the workflow will stop
//! after the call in flight.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::info;

use super::engine::EngineError;
use super::runner::Runner;
use super::shared::Shared;
use crate::domain::chain::stored_time;
use crate::domain::machine::{Record, State, Status};

/// What an operator can ask of a workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intervention {
    /// Stop it at a step boundary.
    Cancel,
    /// Resume a failed one at the step that failed.
    Retry,
    /// Let a held one run.
    Release,
}

/// How long a cancel waits for the worker running the workflow to answer it.
const CANCEL_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// What became of an intervention.
#[derive(Debug)]
pub enum Intervened {
    /// Recorded; the state afterwards.
    Done(Box<State>),
    /// A worker runs it and has the cancel request, but a call of the step is still in
    /// flight: it stops after that call, with no further write.
    Requested,
    /// Not possible, and why.
    Refused(String),
    /// No such workflow.
    Unknown,
}

/// Records operators' interventions, under a lease of its own like any worker's.
#[derive(Clone)]
pub struct Operator {
    shared: Arc<Shared>,
}

impl Operator {
    /// An operator over the runtime's shared context.
    pub fn new(shared: Arc<Shared>) -> Operator {
        Operator { shared }
    }

    /// Records an operator's cancel, retry or release.
    pub async fn intervene(
        &self,
        id: &str,
        by: &str,
        what: Intervention,
    ) -> Result<Intervened, EngineError> {
        let store = self.shared.store();
        if store.get(id).await?.is_none() {
            return Ok(Intervened::Unknown);
        }
        let Some(claim) = store
            .claim(id, self.shared.worker_id(), self.shared.lease_secs())
            .await?
        else {
            return match what {
                Intervention::Cancel if store.request_cancel(id, by).await? => {
                    self.shared.in_flight().cancel(id, None, by);
                    self.cancel_answer(id, by).await
                }
                Intervention::Cancel => Ok(Intervened::Refused(self.ended_as(id).await?)),
                Intervention::Retry | Intervention::Release => {
                    Ok(Intervened::Refused("another worker is running it".into()))
                }
            };
        };
        let lease = claim.lease.clone();
        let result = async {
            let mut runner = Runner::new(&self.shared, claim, Default::default()).await?;
            let state = &runner.state;
            let record = match what {
                Intervention::Cancel if state.status.is_final() => {
                    return Ok(Intervened::Refused(state.status.as_str().to_string()));
                }
                Intervention::Retry if state.status != Status::Failed => {
                    return Ok(Intervened::Refused(format!(
                        "only failed workflows can be retried; this one is {}",
                        state.status.as_str()
                    )));
                }
                Intervention::Release if state.status != Status::Held => {
                    return Ok(Intervened::Refused(format!(
                        "only held workflows can be released; this one is {}",
                        state.status.as_str()
                    )));
                }
                Intervention::Cancel => Record::Cancelled { by: by.to_string() },
                Intervention::Release => Record::Released { by: by.to_string() },
                Intervention::Retry => Record::RetryRequested { by: by.to_string() },
            };
            info!(workflow = %id, by = %by.escape_debug(), record = record.kind(), "operator intervention");
            runner.commit(vec![(stored_time(Utc::now()), record)], false).await?;
            Ok(Intervened::Done(Box::new(runner.state)))
        }
        .await;
        if let Err(e) = store.release(id, &lease, None).await {
            tracing::warn!(workflow = %id, error = %e, "could not release a lease; it will lapse");
        }
        if matches!(result, Ok(Intervened::Done(_))) {
            self.shared.wake_up();
        }
        result
    }

    /// Waits a little for the worker running `id` to answer a cancel request: `Done` once
    /// the trail says cancelled, `Refused` when the workflow ended otherwise (the worker
    /// records `cancel_refused`), `Requested` while a call is still in flight. A worker
    /// that gave the workflow back without answering (it went to wait on a timer) is
    /// answered here, through the lease.
    async fn cancel_answer(&self, id: &str, by: &str) -> Result<Intervened, EngineError> {
        let deadline = tokio::time::Instant::now() + CANCEL_ANSWER_WAIT;
        loop {
            let Some(row) = self.shared.store().get(id).await? else {
                return Ok(Intervened::Unknown);
            };
            let state: State = serde_json::from_str(&row.state_json)
                .map_err(|e| EngineError::Corrupt(format!("workflow {id}: {e}")))?;
            match state.status {
                Status::Cancelled => return Ok(Intervened::Done(Box::new(state))),
                s if s.is_final() => return Ok(Intervened::Refused(s.as_str().to_string())),
                _ if row.lease_until.is_none_or(|until| until < Utc::now()) => {
                    return Box::pin(self.intervene(id, by, Intervention::Cancel)).await
                }
                _ if tokio::time::Instant::now() >= deadline => return Ok(Intervened::Requested),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// How a workflow that takes no cancel ended (`completed`, …), for the refusal.
    async fn ended_as(&self, id: &str) -> Result<String, EngineError> {
        Ok(self
            .shared
            .store()
            .get(id)
            .await?
            .map_or_else(|| "it no longer exists".to_string(), |row| row.state))
    }
}
