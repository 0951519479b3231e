//! What every part of the runtime shares: the store, the configuration, the definitions in
//! force (and those workflows started with, cached by content hash), one client per
//! connection, this process's worker id and lease length, the drives in flight, the places
//! among the workflows driven at once, the hand-off of fresh workflows from the intake to
//! the work loop, and the hand-off of fresh outbox entries to the publisher.
//!
//! The parts that act hold it behind an `Arc`: [`super::acceptor::Acceptor`] takes accepted
//! events in, [`super::scheduler::Scheduler`] claims and leases, `super::runner::Runner`
//! drives one leased workflow, [`super::operator::Operator`] records an operator's
//! intervention. This file is the only one that implements [`Shared`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, Mutex, Notify, OwnedSemaphorePermit, Semaphore};

use super::definitions::{stored, Registry};
use super::error::EngineError;
use super::in_flight::InFlight;
use crate::apps::http::{BudgetUnavailable, SlotSource};
use crate::apps::AppClient;
use crate::codes::Code;
use crate::config::Config;
use crate::domain::definition::Definition;
use crate::domain::step::StepError;
use crate::store::{Claim, Pending, Store};

/// The request budgets of the connections, kept in the database so every process using a
/// connection draws on one budget.
#[derive(Debug)]
struct DbBudget(Store);

impl SlotSource for DbBudget {
    fn take_slots<'a>(
        &'a self,
        budget: &'a str,
        span: Duration,
    ) -> BoxFuture<'a, Result<Duration, BudgetUnavailable>> {
        Box::pin(async move {
            self.0
                .take_request_span(budget, span)
                .await
                .map_err(|e| BudgetUnavailable(Box::new(e)))
        })
    }
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

/// The context the runtime's parts share (see the module documentation).
pub struct Shared {
    store: Store,
    config: Config,
    registry: Registry,
    clients: Mutex<HashMap<String, Arc<AppClient>>>,
    definitions: StdMutex<HashMap<String, Arc<Definition>>>,
    worker_id: String,
    lease: Duration,
    /// Wakes the work loop: an event was accepted, an intervention made a workflow due.
    wake: Notify,
    stopping: AtomicBool,
    /// The drives in flight in this process, by lease: the only leases its heartbeat
    /// renews, and where a cancel reaches a running drive.
    in_flight: InFlight,
    /// Places among the `max_concurrent_workflows` this process drives at once, shared by
    /// the scheduler's claims and the intake's hand-offs.
    permits: Arc<Semaphore>,
    /// Where the intake hands freshly accepted workflows to the running work loop
    /// (`None` when no work loop runs in this process).
    hand_offs: StdMutex<Option<mpsc::UnboundedSender<HandedOff>>>,
    outbox_tx: mpsc::UnboundedSender<(Instant, Pending)>,
    outbox_rx: StdMutex<Option<mpsc::UnboundedReceiver<(Instant, Pending)>>>,
}

impl Shared {
    /// The context over an open store, with the lease length the configuration names.
    pub fn new(store: Store, config: Config, registry: Registry) -> Shared {
        let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
        Shared {
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

    /// Sets the lease a worker holds on a running workflow (before the context is shared).
    pub fn set_lease(&mut self, lease: Duration) {
        self.lease = lease;
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The workflow definitions in force.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// This process's worker id: the owner named in the leases it holds.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// How long a lease lasts unless renewed.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The lease length, in seconds, as the store takes it.
    pub fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// The drives in flight in this process.
    pub(super) fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// The places among the workflows this process drives at once.
    pub(super) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Wakes the work loop to look for due workflows now.
    pub fn wake_up(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Shared::wake_up`] is called.
    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Whether the process is stopping (no new step starts).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Marks the process as stopping: steps in flight finish, no new one starts.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Opens (`Some`) or closes (`None`) the channel the intake hands workflows over by.
    pub(super) fn set_hand_offs(&self, sender: Option<mpsc::UnboundedSender<HandedOff>>) {
        *self.hand_offs.lock().expect("hand-off lock") = sender;
    }

    /// Where to hand a workflow over to the work loop, while one runs.
    pub(super) fn hand_offs(&self) -> Option<mpsc::UnboundedSender<HandedOff>> {
        self.hand_offs.lock().expect("hand-off lock").clone()
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

    /// Uses `client` for `connection` instead of building one from the environment (the
    /// demo and tests hand over simulator clients this way).
    pub async fn use_client(&self, connection: &str, client: AppClient) {
        client.share_budget(connection, Arc::new(DbBudget(self.store.clone())));
        self.clients
            .lock()
            .await
            .insert(connection.to_string(), Arc::new(client));
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
}
