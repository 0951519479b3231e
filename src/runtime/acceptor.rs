//! The acceptor: turns an accepted event into stored workflows (one per connection), and
//! hands the ones this process can start at once straight to its work loop.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

use super::error::EngineError;
use super::shared::{HandedOff, Shared};
use crate::domain::chain::stored_time;
use crate::domain::event::{Rejection, Request};
use crate::domain::machine::{self, Record};
use crate::domain::plan;
use crate::store::{Accepted, HandOff, NewWorkflow};

/// Stores accepted events' workflows and wakes (or hands them to) the work loop.
#[derive(Clone)]
pub struct Acceptor {
    shared: Arc<Shared>,
}

impl Acceptor {
    /// An acceptor over the runtime's shared context.
    pub fn new(shared: Arc<Shared>) -> Acceptor {
        Acceptor { shared }
    }

    /// Works out the workflows an event asks for (one per connection).
    fn plan(&self, request: &Request) -> Result<Vec<NewWorkflow>, Rejection> {
        let connections: Vec<(&str, &str)> = self
            .shared
            .config()
            .connections
            .iter()
            .map(|(name, c)| (name.as_str(), c.app.as_str()))
            .collect();
        let registry = self.shared.registry();
        let planned = plan::plan(request, &connections, |app, t| registry.get(app, t))?;
        Ok(planned
            .into_iter()
            .map(|p| NewWorkflow {
                id: uuid::Uuid::now_v7().to_string(),
                ends_account: crate::apps::ends_account(&p.definition),
                definition: p.definition,
                created: p.created,
                state: p.state,
                start: None,
            })
            .collect())
    }

    /// Waits for a place among the workflows this process drives, so the intake accepts
    /// no faster than the work loop drives (the rest of the events wait in the broker,
    /// for whichever process has room) and hands each new workflow straight to the loop.
    /// `None` at once when no work loop runs in this process.
    pub async fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.shared.hand_offs()?;
        self.shared.permits().clone().acquire_owned().await.ok()
    }

    /// Stores an event's workflows (nothing if its id was seen) and wakes the workers.
    /// `Ok(Err(_))` is a rejection to dead-letter; `Err(_)` a store failure.
    ///
    /// With a place `reserved` among the workflows this process drives (see
    /// [`Acceptor::reserve`]), the event's first workflow that can start now is created
    /// with its first step's start, leased to this process, and handed to the work loop —
    /// no claim, no scheduler turn, one commit fewer. Other workflows of the event are
    /// handed off too while places are free; the rest are claimed as usual.
    pub async fn accept(
        &self,
        request: &Request,
        body: &str,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Result<Result<Accepted, Rejection>, EngineError> {
        let mut planned = match self.plan(request) {
            Ok(p) => p,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let mut places = self.place(&mut planned, reserved);
        let hand_off = (!places.is_empty()).then(|| HandOff {
            owner: self.shared.worker_id(),
            lease_secs: self.shared.lease_secs(),
        });
        let brake = self.shared.config().limits.max_offboardings_per_hour;
        let (accepted, claims) = self
            .shared
            .store()
            .accept(request, body, &planned, brake, hand_off)
            .await?;
        let mut handed = 0;
        for claim in claims {
            let Some(i) = places.iter().position(|(id, _, _)| *id == claim.id) else {
                continue;
            };
            let (_, started, permit) = places.swap_remove(i);
            self.hand_off(HandedOff {
                claim,
                started,
                permit,
            })
            .await;
            handed += 1;
        }
        self.report(request, &accepted, brake, handed).await?;
        Ok(Ok(accepted))
    }

    /// Gives the planned workflows that can start now a place among those this process
    /// drives (the `reserved` one first, then free ones) and their first step's start;
    /// returns the places, by workflow, with the step attempt each starts.
    fn place(
        &self,
        planned: &mut [NewWorkflow],
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Vec<(String, (usize, u32), OwnedSemaphorePermit)> {
        let mut spare = reserved.filter(|_| !self.shared.is_stopping());
        let mut places = Vec::new();
        if spare.is_none() {
            return places;
        }
        let now = stored_time(Utc::now());
        for wf in planned.iter_mut() {
            let machine::Next::Run { step, attempt } =
                machine::next(&wf.state, &wf.definition, now)
            else {
                continue;
            };
            let Some(permit) = spare
                .take()
                .or_else(|| self.shared.permits().clone().try_acquire_owned().ok())
            else {
                break;
            };
            wf.start = Some(Record::StepStarted { step, attempt });
            places.push((wf.id.clone(), (step, attempt), permit));
        }
        places
    }

    /// Logs and counts what became of an event, wakes the work loop for what runs and was
    /// not `handed` to it (a claim that can find nothing is two statements per event), and
    /// notes a duplicate delivery on the workflows the event made the first time.
    async fn report(
        &self,
        request: &Request,
        accepted: &Accepted,
        brake: Option<u32>,
        handed: usize,
    ) -> Result<(), EngineError> {
        let event_id = request.event_id.escape_debug();
        match accepted {
            Accepted::New(ids) => {
                info!(event_id = %event_id, workflows = ids.len(), "event accepted");
                if handed < ids.len() {
                    self.shared.wake_up();
                }
            }
            Accepted::Held {
                held,
                running,
                in_last_hour,
            } => {
                warn!(event_id = %event_id, workflows = held.len(), in_last_hour, limit = brake, "mass-offboarding brake on: workflows that remove or deactivate an account held until `offboard release`");
                metrics::counter!("offboard_workflows_held_total").increment(held.len() as u64);
                if !running.is_empty() {
                    info!(event_id = %event_id, workflows = running.len(), "event accepted; its workflows that keep the account run");
                    if handed < running.len() {
                        self.shared.wake_up();
                    }
                }
            }
            Accepted::Duplicate => {
                info!(event_id = %event_id, "duplicate event id; nothing new started");
                for row in self.shared.store().by_event(&request.event_id).await? {
                    let source = request.source.clone();
                    self.note(&row.id, Record::DuplicateReceived { source })
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Gives a handed-off workflow to the work loop; when the loop has stopped, gives its
    /// lease back so any process may claim it.
    async fn hand_off(&self, handed: HandedOff) {
        let handed = match self.shared.hand_offs() {
            Some(tx) => match tx.send(handed) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            None => handed,
        };
        let claim = handed.claim;
        if let Err(e) = self
            .shared
            .store()
            .release(&claim.id, &claim.lease, None)
            .await
        {
            warn!(workflow = %claim.id, error = %e, "could not release a lease; it will lapse");
        }
    }

    /// Appends a record that changes no state (a note for auditors), whoever runs the
    /// workflow.
    async fn note(&self, id: &str, record: Record) -> Result<(), EngineError> {
        let store = self.shared.store();
        let loaded = store
            .load(id)
            .await?
            .ok_or_else(|| EngineError::Corrupt(format!("workflow {id} vanished")))?;
        let def = self.shared.definition(&loaded.row.definition_hash).await?;
        let at = stored_time(Utc::now());
        machine::apply(&loaded.state, &def, &record, at)
            .map_err(|v| EngineError::Corrupt(format!("workflow {id}: {v}")))?;
        store.append_note(id, at, &record).await?;
        Ok(())
    }
}
