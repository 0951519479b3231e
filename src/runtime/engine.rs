//! The engine: what every part of the runtime shares — the store, the configuration, the
//! definitions in force (and those workflows started with, cached by content hash), one
//! client per connection, this process's worker id, and the hand-off of fresh outbox
//! entries to the publisher. It also takes accepted events in ([`Engine::accept`]).
//!
//! The parts that act live beside it: [`super::scheduler`] claims and leases,
//! [`super::runner`] drives one leased workflow, [`super::operator`] records an
//! operator's retry or cancel.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, Mutex, Notify};
use tracing::{info, warn};

use super::definitions::{stored, Registry};
use crate::apps::http::{BudgetUnavailable, SlotSource};
use crate::apps::AppClient;
use crate::codes::Code;
use crate::config::{AppKind, Config};
use crate::domain::chain::stored_time;
use crate::domain::definition::Definition;
use crate::domain::event::{Rejection, Request};
use crate::domain::machine::{self, Record};
use crate::domain::plan;
use crate::domain::step::StepError;
use crate::store::{Accepted, NewWorkflow, Pending, Store, StoreError};

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
    /// Workflows this process is driving now: the only leases its heartbeat renews.
    pub(super) in_flight: StdMutex<HashSet<String>>,
    outbox_tx: mpsc::UnboundedSender<(Instant, Pending)>,
    outbox_rx: StdMutex<Option<mpsc::UnboundedReceiver<(Instant, Pending)>>>,
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
            store,
            config,
            registry,
            clients: Mutex::new(HashMap::new()),
            definitions: StdMutex::new(HashMap::new()),
            worker_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            in_flight: StdMutex::new(HashSet::new()),
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
                definition: p.definition,
                created: p.created,
                state: p.state,
            })
            .collect())
    }

    /// Stores an event's workflows (nothing if its id was seen) and wakes the workers.
    /// `Ok(Err(_))` is a rejection to dead-letter; `Err(_)` a store failure.
    pub async fn accept(
        &self,
        request: &Request,
        body: &str,
    ) -> Result<Result<Accepted, Rejection>, EngineError> {
        let planned = match self.plan(request) {
            Ok(p) => p,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let brake = self.config.limits.max_offboardings_per_hour;
        let accepted = self.store.accept(request, body, &planned, brake).await?;
        if let Accepted::New(ids) = &accepted {
            info!(event_id = %request.event_id.escape_debug(), workflows = ids.len(), "event accepted");
            self.wake.notify_one();
        } else if let Accepted::Held(ids, in_last_hour) = &accepted {
            warn!(event_id = %request.event_id.escape_debug(), workflows = ids.len(), in_last_hour, limit = brake, "mass-offboarding brake on: workflows held until `offboard release`");
            metrics::counter!("offboard_workflows_held_total").increment(ids.len() as u64);
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
        let client = AppClient::connect(connection, conf).map_err(|message| {
            let code = match conf.app {
                AppKind::Smartsheet => Code::Smt100B,
                AppKind::Postman => Code::Post100B,
            };
            StepError::fatal(code, message.to_string())
        })?;
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
