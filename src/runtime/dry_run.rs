//! `offboard plan`: what a run for one person would do, found by doing it with writes
//! turned off.
//!
//! The request goes through the same planning as an accepted event
//! ([`crate::domain::plan`]: one workflow per connection, each with the definition in
//! force), and each workflow is driven through the same pure state machine
//! ([`machine::next`], [`machine::step_result`], [`machine::apply`]) by the same drive
//! loop and the same actions as the runner drives it (`super::drive`), with one
//! difference: the connection's client is in dry-run mode
//! ([`crate::apps::dry_run`]), so its reads go to the app and its writes are recorded
//! instead of sent. Nothing is stored: there is no workflow row, no trail, no
//! database at all (so the connection's request budget is paced by this process alone).
//!
//! What the run would wait for is not waited for: a `not_before` time is skipped over.
//! A step that fails in a way the run would retry ends the plan there, with its code and
//! `retryable` set: what follows depends on an answer the app has not given yet.
//!
//! What a dry run cannot see: refusals an app gives only to the write itself. Smartsheet
//! tells that a user is managed by a directory (`SMT-111-B`) only by refusing the
//! `DELETE`; no read shows it, so such a plan lists the `DELETE` and the run stops there.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::drive::{self, AfterCommit, Effects, Stamped};
use crate::apps::dry_run::{DryRun, PlannedWrite};
use crate::apps::http::CallRecord;
use crate::apps::AppClient;
use crate::codes::Code;
use crate::config::{Config, ConnectionConfig};
use crate::domain::definition::{Definition, DefinitionRef, StepDef};
use crate::domain::event::{EventType, Rejection, Request};
use crate::domain::machine::{self, Status, Violation};
use crate::domain::plan::{self, Planned};
use crate::domain::step::{Outcome, StepError, StepOutput};
use crate::runtime::definitions::Registry;

/// What a run for one person would do, per connection.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The person.
    pub person_email: String,
    /// Offboarding or licence reclaim.
    pub event_type: EventType,
    /// Who would receive their data.
    pub transfer_to: Option<String>,
    /// Whether every connection's run would end well.
    pub would_succeed: bool,
    /// One entry per connection the request names (every configured one by default).
    pub connections: Vec<ConnectionPlan>,
}

/// What the run on one connection would do.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionPlan {
    /// The configured connection.
    pub connection: String,
    /// Its app.
    pub app: String,
    /// The definition the run would start with.
    pub definition: DefinitionRef,
    /// The steps that would run, with what each would record.
    pub steps: Vec<PlannedStep>,
    /// Every read made to plan (they were really sent), in order.
    pub reads: Vec<PlannedRead>,
    /// Every write the run would make, in order (none was sent).
    pub writes: Vec<StepWrite>,
    /// How the run would end when it would complete.
    pub outcome: Option<Outcome>,
    /// Where and why the run would stop, when it would.
    pub stop: Option<Stop>,
}

/// A step the run would get through.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedStep {
    /// The step's name in the definition.
    pub name: String,
    /// Its action.
    pub action: String,
    /// The line the run would record for it.
    pub summary: String,
}

/// A read made while planning.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedRead {
    /// The step that made it.
    pub step: String,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The status the app answered (none when no answer came). The action saw this
    /// answer through the dry run's model: a user the plan removed earlier is answered
    /// 200 here but was read as "not found".
    pub status: Option<u16>,
}

/// A write the run would make, and the step that would make it.
#[derive(Clone, Debug, Serialize)]
pub struct StepWrite {
    /// The step.
    pub step: String,
    /// The write.
    #[serde(flatten)]
    pub write: PlannedWrite,
}

/// Why the run would stop.
#[derive(Clone, Debug, Serialize)]
pub struct Stop {
    /// The step it would stop at (`None`: before the first, e.g. no usable token).
    pub step: Option<String>,
    /// The code it would fail with.
    pub code: Code,
    /// What the app or the check said.
    pub message: String,
    /// Whether the run would try the step again later (then it fails with the code only
    /// when every attempt does).
    pub retryable: bool,
    /// How to fix it, from the catalog.
    pub remedy: Vec<String>,
}

impl Stop {
    fn new(step: Option<String>, code: Code, message: String, retryable: bool) -> Stop {
        Stop {
            step,
            code,
            message,
            retryable,
            remedy: code.info().remedy.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The request could not become workflows (unknown connection, no definition…).
    #[error("{}: {}", .0.code, .0.message)]
    Rejected(Rejection),
    /// The state machine refused a record: a bug, not a condition of the app.
    #[error("state machine: {0}")]
    Machine(Violation),
}

/// Plans `request` with each connection's client built from the environment, as a run's.
pub async fn plan(
    config: &Config,
    registry: &Registry,
    request: &Request,
) -> Result<Plan, PlanError> {
    plan_with(config, registry, request, AppClient::for_run).await
}

/// Plans `request`, building each connection's client with `connect` (tests hand in
/// clients for the simulators). The clients are put in dry-run mode here.
pub async fn plan_with(
    config: &Config,
    registry: &Registry,
    request: &Request,
    connect: impl Fn(&str, &ConnectionConfig) -> Result<AppClient, StepError>,
) -> Result<Plan, PlanError> {
    let connections: Vec<(&str, &str)> = config
        .connections
        .iter()
        .map(|(name, c)| (name.as_str(), c.app.as_str()))
        .collect();
    let planned = plan::plan(request, &connections, |app, t| registry.get(app, t))
        .map_err(PlanError::Rejected)?;
    let mut plans = Vec::with_capacity(planned.len());
    for workflow in planned {
        let name = workflow.state.request.connection.clone();
        let client = connect(&name, &config.connections[&name]);
        plans.push(drive(workflow, client).await?);
    }
    Ok(Plan {
        person_email: request.person_email.clone(),
        event_type: request.event_type,
        transfer_to: request.transfer_to.clone(),
        would_succeed: plans.iter().all(|p| p.stop.is_none()),
        connections: plans,
    })
}

impl ConnectionPlan {
    /// Adds what one step did: the reads it made, the writes it would make, its summary;
    /// or, when the run would try it again later, the stop there. Returns whether the
    /// plan stops.
    fn add_step(
        &mut self,
        spec: &StepDef,
        calls: Vec<CallRecord>,
        writes: impl Iterator<Item = PlannedWrite>,
        result: &Result<StepOutput, StepError>,
    ) -> bool {
        self.reads.extend(calls.into_iter().map(|call| PlannedRead {
            step: spec.name.clone(),
            method: call.method,
            path: call.path,
            status: call.status,
        }));
        self.writes.extend(writes.map(|write| StepWrite {
            step: spec.name.clone(),
            write,
        }));
        match result {
            Ok(out) => self.steps.push(PlannedStep {
                name: spec.name.clone(),
                action: spec.action.clone(),
                summary: out.summary.clone(),
            }),
            Err(e) if e.retryable => {
                let stop = Stop::new(Some(spec.name.clone()), e.code, e.message.clone(), true);
                self.stop = Some(stop);
                return true;
            }
            Err(_) => {}
        }
        false
    }
}

/// Drives one workflow as the runner would, in memory, with writes turned off.
async fn drive(
    workflow: Planned,
    client: Result<AppClient, StepError>,
) -> Result<ConnectionPlan, PlanError> {
    let def = &workflow.definition;
    let state = workflow.state;
    let mut plan = ConnectionPlan {
        connection: state.request.connection.clone(),
        app: state.request.app.clone(),
        definition: def.reference(),
        steps: Vec::new(),
        reads: Vec::new(),
        writes: Vec::new(),
        outcome: None,
        stop: None,
    };
    let (client, dry_run) = match client {
        Ok(client) => client.dry_run(),
        Err(e) => {
            plan.stop = Some(Stop::new(None, e.code, e.message, e.retryable));
            return Ok(plan);
        }
    };
    let mut planning = Planning {
        def,
        state,
        client,
        dry_run,
        plan,
        now: Utc::now(),
    };
    drive::drive(&mut planning, None).await?;
    let Planning {
        mut plan, state, ..
    } = planning;
    if plan.stop.is_some() {
        return Ok(plan);
    }
    // A fresh workflow is never final or held before it starts; anything else ends the
    // plan with nothing more to add. (A recheck follows a completion, which ends a plan.)
    match (state.status, state.error_code) {
        (Status::Completed, _) => plan.outcome = state.outcome,
        (Status::Failed, Some(code)) => {
            let step = state.steps.get(state.current).map(|s| s.name.clone());
            let message = state.error_message.clone().unwrap_or_default();
            plan.stop = Some(Stop::new(step, code, message, false));
        }
        _ => {}
    }
    Ok(plan)
}

/// A plan's effects: actions through a dry-run client (reads sent, writes recorded),
/// commits to memory, and a clock that skips over `not_before`.
struct Planning<'d> {
    def: &'d Definition,
    state: machine::State,
    client: AppClient,
    dry_run: Arc<DryRun>,
    plan: ConnectionPlan,
    now: DateTime<Utc>,
}

impl Effects for Planning<'_> {
    type Error = PlanError;

    fn def(&self) -> &Definition {
        self.def
    }

    fn state(&self) -> &machine::State {
        &self.state
    }

    fn knows(&self) -> (Option<String>, bool) {
        // Nobody cancels a plan, and it never stops half-way.
        (None, false)
    }

    fn now(&self) -> DateTime<Utc> {
        self.now
    }

    fn skip_to(&mut self, wake: DateTime<Utc>) -> bool {
        // `not_before`: the run would wait; the plan goes on as if the time had come.
        self.now = wake;
        true
    }

    fn batches(&self, _step: usize) -> bool {
        true
    }

    fn broken(&self, violation: Violation) -> PlanError {
        PlanError::Machine(violation)
    }

    async fn perform(
        &mut self,
        state: &machine::State,
        step: usize,
        attempt: u32,
        records: &mut Vec<Stamped>,
    ) -> Result<Option<DateTime<Utc>>, PlanError> {
        let spec = &self.def.steps[step];
        let planned_before = self.dry_run.writes().len();
        let (result, calls) = drive::run_action(
            &self.client,
            &spec.action,
            &state.request,
            &state.facts,
            None,
        )
        .await;
        let writes = self.dry_run.writes().into_iter().skip(planned_before);
        if self.plan.add_step(spec, calls, writes, &result) {
            return Ok(None);
        }
        // No jitter: a retry's time is never used, the plan stops before it.
        let record = machine::step_result(state, self.def, step, attempt, result, self.now, 0.0);
        records.push((self.now, record));
        Ok(Some(self.now))
    }

    async fn recheck(
        &mut self,
        _state: &machine::State,
        _recheck: usize,
        _attempt: u32,
        _records: &mut Vec<Stamped>,
    ) -> Result<DateTime<Utc>, PlanError> {
        // A recheck follows a completion, whose commit ends the plan first.
        Ok(self.now)
    }

    async fn rest(&mut self) -> Result<(), PlanError> {
        Ok(())
    }

    async fn commit(
        &mut self,
        records: Vec<Stamped>,
        last: bool,
    ) -> Result<AfterCommit, PlanError> {
        for (at, record) in &records {
            self.state =
                machine::apply(&self.state, self.def, record, *at).map_err(PlanError::Machine)?;
        }
        Ok(if last {
            AfterCommit::Stop
        } else {
            AfterCommit::Go
        })
    }
}
