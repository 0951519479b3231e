//! The engine: what every part of the runtime shares — the store, the configuration, the
//! definitions in force (and those workflows started with, cached by content hash), one
//! client per connection, this process's worker id, and the hand-off of fresh outbox
//! entries to the publisher. It also takes accepted events in ([`Engine::accept`]).
//!
//! The parts that act live beside it: [`super::scheduler`] claims and leases,
//! [`super::runner`] drives one leased workflow, [`super::operator`] records an
//! operator's retry or cancel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, Mutex, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use super::definitions::{stored, Registry};
use super::in_flight::InFlight;
use crate::apps::http::{BudgetUnavailable, SlotSource};
use crate::apps::AppClient;
use crate::codes::Code;
use crate::config::Config;
use crate::domain::chain::stored_time;
use crate::domain::definition::Definition;
use crate::domain::event::{Rejection, Request};
use crate::domain::machine::{self, Record};
use crate::domain::plan;
use crate::domain::step::StepError;
use crate::store::{Accepted, Claim, HandOff, NewWorkflow, Pending, Store, StoreError};

pub use super::operator::{Intervened, Intervention};

/// The request budgets of the connections, kept in the database so every process using a
/// connection draws on one budget.
#[derive(Debug)]
struct DbBudget(Store);

impl SlotSource for DbBudget {
    fn take_slots<'a>(
        &'a self,
        budget: &'a str,
        interval: Duration,
        count: u32,
    ) -> BoxFuture<'a, Result<Duration, BudgetUnavailable>> {
        Box::pin(async move {
            self.0
                .take_request_slots(budget, interval, count)
                .await
                .map_err(|e| BudgetUnavailable(Box::new(e)))
        })
    }
}

/// The engine: store, configuration, definitions, and one client per connection.
pub struct Engine {
    pub(super) store: Store,
    config: Config,
    registry: Registry,
    clients: Mutex<HashMap<String, Arc<AppClient>>>,
    definitions: StdMutex<HashMap<String, Arc<Definition>>>,
    pub(super) worker_id: String,
    pub(super) lease: Duration,
    pub(super) wake: Notify,
    pub(super) stopping: AtomicBool,
    /// The drives in flight in this process, by lease: the only leases its heartbeat
    /// renews, and where a cancel reaches a running drive.
    pub(super) in_flight: InFlight,
    /// Places among the `max_concurrent_workflows` this process drives at once, shared by
    /// the scheduler's claims and the intake's hand-offs.
    pub(super) permits: Arc<Semaphore>,
    /// Where the intake hands freshly accepted workflows to the running work loop
    /// (`None` when no work loop runs in this process).
    pub(super) hand_offs: StdMutex<Option<mpsc::UnboundedSender<HandedOff>>>,
    outbox_tx: mpsc::UnboundedSender<(Instant, Pending)>,
    outbox_rx: StdMutex<Option<mpsc::UnboundedReceiver<(Instant, Pending)>>>,
}

/// A workflow the intake created already leased to this process, with its first step's
/// start recorded, for the work loop to drive at once.
pub(super) struct HandedOff {
    /// The lease and what the driver needs to start.
    pub claim: Claim,
    /// The step attempt whose start was recorded with the workflow's creation.
    pub started: (usize, u32),
    /// Its place among the workflows driven at once.
    pub permit: OwnedSemaphorePermit,
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store refused (database trouble, or the lease was lost).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored data is inconsistent.
    #[error("{0}")]
    Corrupt(String),
}

impl EngineError {
    /// Whether the error is a lost lease: the holder stops without writing.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, EngineError::Store(StoreError::LeaseLost))
    }
}

impl Engine {
    /// An engine over an open store.
    pub fn new(store: Store, config: Config, registry: Registry) -> Engine {
        let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
        Engine {
            lease: Duration::from_secs(config.lease_secs),
            permits: Arc::new(Semaphore::new(config.max_concurrent_workflows.max(1))),
            store,
            config,
            registry,
            clients: Mutex::new(HashMap::new()),
            definitions: StdMutex::new(HashMap::new()),
            worker_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            in_flight: InFlight::default(),
            hand_offs: StdMutex::new(None),
            outbox_tx,
            outbox_rx: StdMutex::new(Some(outbox_rx)),
        }
    }

    /// Shortens or lengthens the lease a worker holds on a running workflow.
    pub fn with_lease(mut self, lease: Duration) -> Engine {
        self.lease = lease;
        self
    }

    /// Uses `client` for `connection` instead of building one from the environment (the
    /// demo and tests hand over simulator clients this way).
    pub async fn use_client(&self, connection: &str, client: AppClient) {
        client.share_budget(connection, Arc::new(DbBudget(self.store.clone())));
        self.clients
            .lock()
            .await
            .insert(connection.to_string(), Arc::new(client));
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This process's worker id: the owner named in the leases it holds.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The lease length, in seconds, as the store takes it.
    pub(super) fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Takes the receiving end of fresh outbox entries, each with when it was handed over
    /// (the publisher does, once).
    pub fn take_outbox(&self) -> Option<mpsc::UnboundedReceiver<(Instant, Pending)>> {
        self.outbox_rx.lock().expect("outbox lock").take()
    }

    /// Hands an entry this process just committed to its publisher.
    pub(super) fn publish_soon(&self, pending: Pending) {
        // No publisher in this process (a CLI verb): the entry's claim lapses and a
        // sweeper of a serving process publishes it.
        let _ = self.outbox_tx.send((Instant::now(), pending));
    }

    /// Works out the workflows an event asks for (one per connection).
    pub fn plan(&self, request: &Request) -> Result<Vec<NewWorkflow>, Rejection> {
        let connections: Vec<(&str, &str)> = self
            .config
            .connections
            .iter()
            .map(|(name, c)| (name.as_str(), c.app.as_str()))
            .collect();
        let planned = plan::plan(request, &connections, |app, t| self.registry.get(app, t))?;
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
        if self.hand_offs.lock().expect("hand-off lock").is_none() {
            return None;
        }
        self.permits.clone().acquire_owned().await.ok()
    }

    /// Stores an event's workflows (nothing if its id was seen) and wakes the workers.
    /// `Ok(Err(_))` is a rejection to dead-letter; `Err(_)` a store failure.
    pub async fn accept(
        &self,
        request: &Request,
        body: &str,
    ) -> Result<Result<Accepted, Rejection>, EngineError> {
        self.accept_reserved(request, body, None).await
    }

    /// [`Engine::accept`] with a place `reserved` among the workflows this process drives
    /// (see [`Engine::reserve`]): the event's first workflow that can start now is created
    /// with its first step's start, leased to this process, and handed to the work loop —
    /// no claim, no scheduler turn, one commit fewer. Other workflows of the event are
    /// handed off too while places are free; the rest are claimed as usual.
    pub async fn accept_reserved(
        &self,
        request: &Request,
        body: &str,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Result<Result<Accepted, Rejection>, EngineError> {
        let mut planned = match self.plan(request) {
            Ok(p) => p,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let mut spare = reserved.filter(|_| !self.is_stopping());
        let mut places = Vec::new();
        if spare.is_some() {
            let now = stored_time(Utc::now());
            for wf in planned.iter_mut() {
                let machine::Next::Run { step, attempt } =
                    machine::next(&wf.state, &wf.definition, now)
                else {
                    continue;
                };
                let Some(permit) = spare
                    .take()
                    .or_else(|| self.permits.clone().try_acquire_owned().ok())
                else {
                    break;
                };
                wf.start = Some(Record::StepStarted { step, attempt });
                places.push((wf.id.clone(), (step, attempt), permit));
            }
        }
        let hand_off = (!places.is_empty()).then(|| HandOff {
            owner: &self.worker_id,
            lease_secs: self.lease_secs(),
        });
        let brake = self.config.limits.max_offboardings_per_hour;
        let (accepted, claims) = self
            .store
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
        // The work loop looks for due work only when some workflow was not handed to it:
        // a claim that can find nothing is two statements per event.
        if let Accepted::New(ids) = &accepted {
            info!(event_id = %request.event_id.escape_debug(), workflows = ids.len(), "event accepted");
            if handed < ids.len() {
                self.wake.notify_one();
            }
        } else if let Accepted::Held {
            held,
            running,
            in_last_hour,
        } = &accepted
        {
            warn!(event_id = %request.event_id.escape_debug(), workflows = held.len(), in_last_hour, limit = brake, "mass-offboarding brake on: workflows that remove or deactivate an account held until `offboard release`");
            metrics::counter!("offboard_workflows_held_total").increment(held.len() as u64);
            if !running.is_empty() {
                info!(event_id = %request.event_id.escape_debug(), workflows = running.len(), "event accepted; its workflows that keep the account run");
                if handed < running.len() {
                    self.wake.notify_one();
                }
            }
        } else {
            info!(event_id = %request.event_id.escape_debug(), "duplicate event id; nothing new started");
            for row in self.store.by_event(&request.event_id).await? {
                self.note(
                    &row.id,
                    Record::DuplicateReceived {
                        source: request.source.clone(),
                    },
                )
                .await?;
            }
        }
        Ok(Ok(accepted))
    }

    /// Gives a handed-off workflow to the work loop; when the loop has stopped, gives its
    /// lease back so any process may claim it.
    async fn hand_off(&self, handed: HandedOff) {
        let sender = self.hand_offs.lock().expect("hand-off lock").clone();
        let handed = match sender {
            Some(tx) => match tx.send(handed) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            None => handed,
        };
        let claim = handed.claim;
        if let Err(e) = self.store.release(&claim.id, &claim.lease, None).await {
            warn!(workflow = %claim.id, error = %e, "could not release a lease; it will lapse");
        }
    }

    /// Appends a record that changes no state (a note for auditors), whoever runs the
    /// workflow.
    async fn note(&self, id: &str, record: Record) -> Result<(), EngineError> {
        let loaded = self
            .store
            .load(id)
            .await?
            .ok_or_else(|| EngineError::Corrupt(format!("workflow {id} vanished")))?;
        let def = self.definition(&loaded.row.definition_hash).await?;
        let at = stored_time(Utc::now());
        machine::apply(&loaded.state, &def, &record, at)
            .map_err(|v| EngineError::Corrupt(format!("workflow {id}: {v}")))?;
        self.store.append_note(id, at, &record).await?;
        Ok(())
    }

    /// The definition a workflow started with, parsed once per process.
    pub(super) async fn definition(&self, hash: &str) -> Result<Arc<Definition>, EngineError> {
        if let Some(def) = self.definitions.lock().expect("definitions lock").get(hash) {
            return Ok(def.clone());
        }
        let source = self.store.definition_source(hash).await?;
        let def = Arc::new(
            stored(&source)
                .map_err(|e| EngineError::Corrupt(format!("stored definition {hash}: {e}")))?,
        );
        self.definitions
            .lock()
            .expect("definitions lock")
            .insert(hash.to_string(), def.clone());
        Ok(def)
    }

    /// The client of a connection, built on first use; its request budget is shared
    /// through the database with every other process on the connection.
    pub(super) async fn client(&self, connection: &str) -> Result<Arc<AppClient>, StepError> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(connection) {
            return Ok(c.clone());
        }
        let Some(conf) = self.config.connections.get(connection) else {
            return Err(StepError::fatal(
                Code::Evt103,
                format!("connection {connection:?} is no longer configured"),
            ));
        };
        let client = AppClient::for_run(connection, conf)?;
        client.share_budget(connection, Arc::new(DbBudget(self.store.clone())));
        let client = Arc::new(client);
        clients.insert(connection.to_string(), client.clone());
        Ok(client)
    }

    /// Whether the process is stopping (no new step starts).
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}
