//! Drives workflows. Each run claims a workflow (a lease in the database, renewed by a
//! heartbeat, so a second process never runs it at the same time and a dead one's work is
//! picked up when its lease lapses), then loops: ask [`machine::next`], persist the record
//! that says what is about to happen, perform the action, persist its result. A process
//! killed at any point resumes from the last persisted record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{mpsc, watch, Mutex, Notify, Semaphore};
use tracing::{info, warn, Instrument};

use super::definitions::{stored, Registry};
use super::outbound;
use crate::apps::http::CallLog;
use crate::apps::{ActionContext, AppClient};
use crate::codes::Code;
use crate::config::{AppKind, Config};
use crate::domain::chain::stored_time;
use crate::domain::definition::Definition;
use crate::domain::event::{Rejection, Request};
use crate::domain::machine::{self, Next, Record, State, Status, WorkflowRequest};
use crate::domain::step::StepError;
use crate::store::{Accepted, NewWorkflow, Store};

/// The engine: store, configuration, definitions, and one client per connection.
pub struct Engine {
    store: Store,
    config: Config,
    registry: Registry,
    clients: Mutex<HashMap<String, Arc<AppClient>>>,
    worker_id: String,
    lease: Duration,
    wake: Notify,
    stopping: AtomicBool,
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// Stored data is inconsistent.
    #[error("{0}")]
    Corrupt(String),
}

impl Engine {
    /// An engine over an open store.
    pub fn new(store: Store, config: Config, registry: Registry) -> Engine {
        Engine {
            lease: Duration::from_secs(config.lease_secs),
            store,
            config,
            registry,
            clients: Mutex::new(HashMap::new()),
            worker_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
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

    /// Works out the workflows an event asks for (one per connection).
    pub fn plan(&self, request: &Request) -> Result<Vec<NewWorkflow>, Rejection> {
        let names: Vec<String> = match &request.connections {
            Some(names) => names.clone(),
            None => self.config.connections.keys().cloned().collect(),
        };
        let mut planned = Vec::new();
        for name in names {
            let Some(conn) = self.config.connections.get(&name) else {
                return Err(Rejection {
                    code: Code::Evt103,
                    message: format!("connection {name:?} is not configured"),
                });
            };
            let app = conn.app.as_str();
            let Some(def) = self.registry.get(app, request.event_type) else {
                return Err(Rejection {
                    code: Code::Evt101,
                    message: format!(
                        "no workflow handles {} for {app}",
                        request.event_type.as_str()
                    ),
                });
            };
            let created = Record::Created {
                request: WorkflowRequest {
                    event_id: request.event_id.clone(),
                    source: request.source.clone(),
                    event_time: request.time,
                    event_type: request.event_type,
                    connection: name.clone(),
                    app: app.to_string(),
                    person_email: request.person_email.clone(),
                    transfer_to: request.transfer_to.clone(),
                    not_before: request.not_before,
                },
                definition: def.reference(),
                steps: def.steps.iter().map(|s| s.name.clone()).collect(),
            };
            let state = machine::create(&created).map_err(|v| Rejection {
                code: Code::Evt102,
                message: v.0,
            })?;
            planned.push(NewWorkflow {
                id: uuid::Uuid::now_v7().to_string(),
                definition: def.clone(),
                created,
                state,
            });
        }
        Ok(planned)
    }

    /// Stores an event's workflows (nothing if its id was seen) and wakes the workers.
    pub async fn accept(
        &self,
        request: &Request,
        body: &str,
    ) -> Result<Result<Accepted, Rejection>, EngineError> {
        let planned = match self.plan(request) {
            Ok(p) => p,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let accepted = self.store.accept(request, body, &planned).await?;
        if let Accepted::New(n) = accepted {
            info!(event_id = %request.event_id, workflows = n, "event accepted");
            self.wake.notify_one();
        } else {
            info!(event_id = %request.event_id, "duplicate event id; nothing new started");
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
        let (state, def) = self.load(id).await?;
        let at = stored_time(Utc::now());
        machine::apply(&state, &def, &record, at)
            .map_err(|v| EngineError::Corrupt(format!("workflow {id}: {v}")))?;
        self.store.append_note(id, at, &record).await?;
        Ok(())
    }

    async fn client(&self, connection: &str) -> Result<Arc<AppClient>, StepError> {
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
            StepError::fatal(code, message)
        })?;
        let client = Arc::new(client);
        clients.insert(connection.to_string(), client.clone());
        Ok(client)
    }

    /// Drives one workflow as far as it can go now; returns its state afterwards.
    /// Returns `None` when another worker holds it.
    pub async fn run_one(&self, id: &str) -> Result<Option<State>, EngineError> {
        let now = Utc::now();
        if !self
            .store
            .claim(id, &self.worker_id, now, self.lease_until())
            .await?
        {
            return Ok(None);
        }
        let result = self
            .drive(id)
            .instrument(tracing::info_span!("workflow", id))
            .await;
        if result.is_err() {
            // Whatever stopped this run (database trouble, inconsistent data) will not
            // clear in a millisecond: look again later rather than spin.
            let _ = self
                .store
                .defer(id, Utc::now() + chrono::Duration::seconds(30))
                .await;
        }
        self.store.release(id, &self.worker_id).await?;
        result.map(Some)
    }

    /// A workflow's state and the definition version it started with.
    async fn load(&self, id: &str) -> Result<(State, Definition), EngineError> {
        let loaded = self
            .store
            .load(id)
            .await?
            .ok_or_else(|| EngineError::Corrupt(format!("workflow {id} vanished")))?;
        let def = stored(&loaded.definition_source)
            .map_err(|e| EngineError::Corrupt(format!("workflow {id}: stored definition: {e}")))?;
        Ok((loaded.state, def))
    }

    fn lease_until(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(15))
    }

    async fn drive(&self, id: &str) -> Result<State, EngineError> {
        let (mut state, def) = self.load(id).await?;
        loop {
            let now = Utc::now();
            let decision = machine::next(&state, &def, now);
            if !matches!(decision, Next::Done | Next::Sleep(_)) {
                if let Some(by) = self
                    .store
                    .get(id)
                    .await?
                    .and_then(|r| r.cancel_requested_by)
                {
                    state = self
                        .commit(id, &def, &state, vec![Record::Cancelled { by }])
                        .await?;
                    continue;
                }
            }
            match decision {
                Next::Done | Next::Sleep(_) => return Ok(state),
                Next::Complete(outcome) => {
                    info!(outcome = outcome.as_str(), "workflow completed");
                    state = self
                        .commit(id, &def, &state, vec![Record::Completed { outcome }])
                        .await?;
                }
                Next::Fail(code, message) => {
                    warn!(%code, %message, "workflow failed");
                    state = self
                        .commit(id, &def, &state, vec![Record::Failed { code, message }])
                        .await?;
                }
                Next::Run { .. } if self.stopping.load(Ordering::SeqCst) => return Ok(state),
                Next::Run { step, attempt } => {
                    state = self
                        .commit(
                            id,
                            &def,
                            &state,
                            vec![Record::StepStarted { step, attempt }],
                        )
                        .await?;
                    state = self.perform(id, &def, state, step, attempt).await?;
                }
            }
        }
    }

    /// Runs one attempt of a step, writing each HTTP call to the trail as it completes.
    async fn perform(
        &self,
        id: &str,
        def: &Definition,
        mut state: State,
        step: usize,
        attempt: u32,
    ) -> Result<State, EngineError> {
        let action = def.steps[step].action.clone();
        info!(step = %def.steps[step].name, attempt, %action, "step started");
        let result = match self.client(&state.request.connection).await {
            Err(e) => Err(e),
            Ok(client) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let log = CallLog::new(tx);
                let facts = state.facts.clone();
                let request = state.request.clone();
                let work = async move {
                    let ctx = ActionContext {
                        request: &request,
                        facts: &facts,
                        calls: &log,
                    };
                    client.perform(&action, &ctx).await
                };
                tokio::pin!(work);
                let result = loop {
                    tokio::select! {
                        result = &mut work => break result,
                        Some(call) = rx.recv() => {
                            state = self.commit(id, def, &state, vec![api_call(step, attempt, call)]).await?;
                        }
                    }
                };
                while let Ok(call) = rx.try_recv() {
                    state = self
                        .commit(id, def, &state, vec![api_call(step, attempt, call)])
                        .await?;
                }
                result
            }
        };
        match &result {
            Ok(out) => {
                info!(step = %def.steps[step].name, summary = %out.summary, "step succeeded")
            }
            Err(e) => {
                warn!(step = %def.steps[step].name, code = %e.code, retryable = e.retryable, message = %e.message, "step failed")
            }
        }
        let jitter: f64 = rand::rng().random();
        let now = stored_time(Utc::now());
        let record = machine::step_result(&state, def, step, attempt, result, now, jitter);
        self.commit_at(id, def, &state, vec![record], now).await
    }

    /// Applies records through the machine and persists them with the new state.
    async fn commit(
        &self,
        id: &str,
        def: &Definition,
        state: &State,
        records: Vec<Record>,
    ) -> Result<State, EngineError> {
        self.commit_at(id, def, state, records, stored_time(Utc::now()))
            .await
    }

    /// [`Engine::commit`] with the records' time given (the time their decision used).
    async fn commit_at(
        &self,
        id: &str,
        def: &Definition,
        state: &State,
        records: Vec<Record>,
        at: DateTime<Utc>,
    ) -> Result<State, EngineError> {
        let mut next = state.clone();
        let mut stamped = Vec::with_capacity(records.len());
        for record in records {
            next = machine::apply(&next, def, &record, at)
                .map_err(|v| EngineError::Corrupt(format!("workflow {id}: {v}")))?;
            stamped.push((at, record));
        }
        let outbox = outbound::completion(id, &next).filter(|_| !state.status.is_final());
        self.store.append(id, &stamped, &next, outbox).await?;
        Ok(next)
    }

    /// Records an operator's cancel or retry. A cancel for a workflow another worker is
    /// running is left as a request that worker honours at its next step boundary.
    pub async fn intervene(
        &self,
        id: &str,
        by: &str,
        what: Intervention,
    ) -> Result<Intervened, EngineError> {
        if self.store.get(id).await?.is_none() {
            return Ok(Intervened::Unknown);
        }
        if !self
            .store
            .claim(id, &self.worker_id, Utc::now(), self.lease_until())
            .await?
        {
            return Ok(match what {
                Intervention::Cancel => {
                    self.store.request_cancel(id, by).await?;
                    Intervened::Requested
                }
                Intervention::Retry => Intervened::Refused("another worker is running it".into()),
            });
        }
        let result = async {
            let (state, def) = self.load(id).await?;
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
                Intervention::Cancel => Record::Cancelled { by: by.to_string() },
                Intervention::Retry => Record::RetryRequested { by: by.to_string() },
            };
            info!(workflow = %id, by, record = record.kind(), "operator intervention");
            Ok(Intervened::Done(Box::new(
                self.commit(id, &def, &state, vec![record]).await?,
            )))
        }
        .await;
        self.store.release(id, &self.worker_id).await?;
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

    /// Claims and runs every due workflow, at most `max_concurrent_workflows` at once, and
    /// waits for them. Returns how many were run.
    pub async fn run_due(self: &Arc<Self>) -> Result<usize, EngineError> {
        let ids = self.store.due(Utc::now(), 1000).await?;
        let permits = Arc::new(Semaphore::new(self.config.max_concurrent_workflows));
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let engine = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                if let Err(e) = engine.run_one(&id).await {
                    warn!(workflow = %id, error = %e, "workflow run stopped");
                }
            });
        }
        let count = tasks.len();
        tasks.join_all().await;
        Ok(count)
    }

    /// Runs workflows until every one is final or waiting past `horizon` from now.
    pub async fn run_until_settled(self: &Arc<Self>, horizon: Duration) -> Result<(), EngineError> {
        let deadline = Utc::now() + chrono::Duration::from_std(horizon).unwrap_or_default();
        loop {
            self.run_due().await?;
            match self.store.next_wake().await? {
                Some(at) if at <= deadline => {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                }
                _ if !self.store.due(Utc::now(), 1).await?.is_empty() => {}
                _ => return Ok(()),
            }
        }
    }

    /// The serve loop: runs due workflows as they come, keeps leases alive, stops when
    /// `shutdown` turns true (in-flight steps finish first).
    pub async fn work(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let heartbeat = {
            let engine = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(engine.lease / 3).await;
                    if let Err(e) = engine
                        .store
                        .renew(&engine.worker_id, engine.lease_until())
                        .await
                    {
                        warn!(error = %e, "could not renew workflow leases");
                    }
                }
            })
        };
        let permits = Arc::new(Semaphore::new(self.config.max_concurrent_workflows));
        let mut running = tokio::task::JoinSet::new();
        while !*shutdown.borrow() {
            while running.try_join_next().is_some() {}
            match self
                .store
                .due(Utc::now(), permits.available_permits() as u64)
                .await
            {
                Ok(ids) => {
                    for id in ids {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            break;
                        };
                        let engine = self.clone();
                        running.spawn(async move {
                            let _permit = permit;
                            if let Err(e) = engine.run_one(&id).await {
                                warn!(workflow = %id, error = %e, "workflow run stopped");
                            }
                        });
                    }
                }
                Err(e) => warn!(error = %e, "could not look for due workflows"),
            }
            let nap = match self.store.next_wake().await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default(),
                _ => Duration::from_secs(1),
            }
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = running.join_next(), if !running.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        info!(
            in_flight = running.len(),
            "stopping: letting in-flight steps finish"
        );
        running.join_all().await;
        heartbeat.abort();
    }
}

/// What an operator can ask of a workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intervention {
    /// Stop it at a step boundary.
    Cancel,
    /// Resume a failed one at the step that failed.
    Retry,
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

fn api_call(step: usize, attempt: u32, call: crate::apps::http::CallRecord) -> Record {
    Record::ApiCall {
        step,
        attempt,
        method: call.method,
        path: call.path,
        status: call.status,
        error_code: call.error_code,
        duration_ms: call.duration_ms,
    }
}
