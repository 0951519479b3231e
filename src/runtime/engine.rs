//! The engine: the runtime as the rest of the program sees it. It holds the
//! [`Shared`] context and hands out the parts that act on it — an [`Acceptor`] for
//! accepted events, a [`Scheduler`] for claims and the serve loop, an [`Operator`] for
//! interventions — with one short method per entry point the CLI, the service, the
//! console and the intake use. It keeps no state of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use super::acceptor::Acceptor;
use super::definitions::Registry;
use super::operator::Operator;
use super::scheduler::Scheduler;
use super::shared::Shared;
use crate::apps::AppClient;
use crate::config::Config;
use crate::domain::event::{Rejection, Request};
use crate::domain::machine::State;
use crate::store::{Accepted, Pending, Store, StoreError};

pub use super::operator::{Intervened, Intervention};

/// The runtime's entry points over one shared context.
pub struct Engine {
    shared: Arc<Shared>,
}

/// Why a runtime operation failed.
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
        Engine {
            shared: Arc::new(Shared::new(store, config, registry)),
        }
    }

    /// Shortens or lengthens the lease a worker holds on a running workflow.
    ///
    /// # Panics
    /// When a part of the engine has been handed out already (call it right after
    /// [`Engine::new`]).
    pub fn with_lease(mut self, lease: Duration) -> Engine {
        Arc::get_mut(&mut self.shared)
            .expect("with_lease before any part is handed out")
            .set_lease(lease);
        self
    }

    /// The part that takes accepted events in.
    pub fn acceptor(&self) -> Acceptor {
        Acceptor::new(self.shared.clone())
    }

    /// The part that claims and drives due workflows.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(self.shared.clone())
    }

    /// The part that records operators' interventions.
    pub fn operator(&self) -> Operator {
        Operator::new(self.shared.clone())
    }

    /// See [`Shared::use_client`].
    pub async fn use_client(&self, connection: &str, client: AppClient) {
        self.shared.use_client(connection, client).await
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.shared.store()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.shared.config()
    }

    /// This process's worker id: the owner named in the leases it holds.
    pub fn worker_id(&self) -> &str {
        self.shared.worker_id()
    }

    /// See [`Shared::take_outbox`].
    pub fn take_outbox(&self) -> Option<mpsc::UnboundedReceiver<(Instant, Pending)>> {
        self.shared.take_outbox()
    }

    /// See [`Acceptor::reserve`].
    pub async fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.acceptor().reserve().await
    }

    /// See [`Acceptor::accept`], with no place reserved.
    pub async fn accept(
        &self,
        request: &Request,
        body: &str,
    ) -> Result<Result<Accepted, Rejection>, EngineError> {
        self.acceptor().accept(request, body, None).await
    }

    /// See [`Acceptor::accept`].
    pub async fn accept_reserved(
        &self,
        request: &Request,
        body: &str,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Result<Result<Accepted, Rejection>, EngineError> {
        self.acceptor().accept(request, body, reserved).await
    }

    /// See [`Scheduler::work`].
    pub async fn work(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        self.scheduler().work(shutdown).await
    }

    /// See [`Scheduler::run_until_settled`].
    pub async fn run_until_settled(&self, horizon: Duration) -> Result<(), EngineError> {
        self.scheduler().run_until_settled(horizon).await
    }

    /// See [`Scheduler::drive_to_rest`].
    pub async fn drive_to_rest(
        &self,
        id: &str,
        patience: Duration,
    ) -> Result<Option<State>, EngineError> {
        self.scheduler().drive_to_rest(id, patience).await
    }

    /// See [`Operator::intervene`].
    pub async fn intervene(
        &self,
        id: &str,
        by: &str,
        what: Intervention,
    ) -> Result<Intervened, EngineError> {
        self.operator().intervene(id, by, what).await
    }
}
