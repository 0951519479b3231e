//! What operators ask of a workflow: retry a failed one, cancel one that has not ended,
//! release one the mass-offboarding brake holds.
//! An intervention claims the workflow like a worker does and writes under that lease;
//! when a worker holds it, a cancel is left as a request the worker answers at its next
//! step boundary (with `cancelled`, or `cancel_refused` if the workflow ended first).

use std::time::Duration;

use chrono::Utc;
use tracing::info;

use super::engine::{Engine, EngineError};
use super::runner::Runner;
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

/// What became of an intervention.
#[derive(Debug)]
pub enum Intervened {
    /// Recorded; the state afterwards.
    Done(Box<State>),
    /// Another worker runs it; it will cancel at its next step boundary.
    Requested,
    /// Not possible, and why.
    Refused(String),
    /// No such workflow.
    Unknown,
}

impl Engine {
    /// Records an operator's cancel or retry.
    pub async fn intervene(
        &self,
        id: &str,
        by: &str,
        what: Intervention,
    ) -> Result<Intervened, EngineError> {
        if self.store.get(id).await?.is_none() {
            return Ok(Intervened::Unknown);
        }
        let Some(claim) = self
            .store
            .claim(id, &self.worker_id, self.lease_secs())
            .await?
        else {
            return Ok(match what {
                Intervention::Cancel if self.store.request_cancel(id, by).await? => {
                    Intervened::Requested
                }
                Intervention::Cancel => Intervened::Refused("it has already ended".into()),
                Intervention::Retry | Intervention::Release => {
                    Intervened::Refused("another worker is running it".into())
                }
            });
        };
        let lease = claim.lease.clone();
        let result = async {
            let mut runner = Runner::new(self, claim).await?;
            let state = &runner.state;
            let record = match what {
                Intervention::Cancel if state.status.is_final() => {
                    return Ok(Intervened::Refused(format!(
                        "it has already ended ({})",
                        state.status.as_str()
                    )));
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
        if let Err(e) = self.store.release(id, &lease, None).await {
            tracing::warn!(workflow = %id, error = %e, "could not release a lease; it will lapse");
        }
        if matches!(result, Ok(Intervened::Done(_))) {
            self.wake.notify_one();
        }
        result
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
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            if wait > patience {
                return Ok(Some(state));
            }
            tokio::time::sleep(wait).await;
        }
    }
}
