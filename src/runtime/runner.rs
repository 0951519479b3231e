//! Drives one leased workflow: ask [`machine::next`] what to do, persist the record that
//! says so, perform the action, persist its result. A step's result and whatever follows
//! it (the next step's start, the end) commit together, with the step's API-call records,
//! so a step costs one write transaction; the start of a step is durable before any call
//! it makes, so a process killed at any point resumes from the last commit.
//!
//! Every commit presents the lease; when another process has claimed the workflow since,
//! the commit is refused and the drive stops before its next effect.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::RngExt;
use tracing::{info, warn};

use super::acceptor::Acceptor;
use super::drive::{self, AfterCommit, Effects, Stamped};
use super::engine::EngineError;
use super::in_flight::CancelSignal;
use super::shared::Shared;
use crate::apps::http::CallRecord;
use crate::codes::Code;
use crate::domain::chain::stored_time;
use crate::domain::definition::Definition;
use crate::domain::event::{EventType, Request};
use crate::domain::machine::{self, Record, State, Status, Violation};
use crate::domain::step::{StepError, StepOutput};
use crate::outbox::events;
use crate::store::{Claim, Fence, Lease, TrailEnd};

/// One leased workflow and what its driver knows of it.
pub(super) struct Runner {
    shared: Arc<Shared>,
    pub id: String,
    pub lease: Lease,
    end: TrailEnd,
    def: Arc<Definition>,
    pub state: State,
    /// A cancel request the database handed back with the claim or the last commit.
    cancel_by: Option<String>,
    /// A cancel request that reached the drive while it ran (from the operator in this
    /// process, or the heartbeat's look at the database).
    signal: Arc<CancelSignal>,
    /// Whether a commit has answered the cancel request already (with `cancelled` or
    /// `cancel_refused`), so it is not answered twice.
    answered: bool,
}

impl Runner {
    /// A runner for a fresh claim, stopped early by `signal`.
    pub async fn new(
        shared: &Arc<Shared>,
        claim: Claim,
        signal: Arc<CancelSignal>,
    ) -> Result<Runner, EngineError> {
        let def = shared.definition(&claim.definition_hash).await?;
        Ok(Runner {
            shared: shared.clone(),
            id: claim.id,
            lease: claim.lease,
            end: claim.end,
            def,
            state: claim.state,
            cancel_by: claim.cancel_requested_by,
            signal,
            answered: false,
        })
    }

    /// Who asked to cancel, while the request has not been answered.
    fn cancel_asked(&self) -> Option<String> {
        if self.answered {
            return None;
        }
        self.cancel_by
            .clone()
            .or_else(|| self.signal.asked_by().map(str::to_string))
    }

    /// Drives the workflow as far as it can go now: to its end, a durable timer, or a
    /// stop of the process. The commit that leaves nothing more to do now also gives the
    /// lease back. Returns the state afterwards.
    ///
    /// A step that only reads runs without committing its start first: its records are
    /// committed with whatever follows, at the latest with the start of the next step
    /// that writes, which is durable before that step runs. A crash in between repeats
    /// reads only.
    ///
    /// `started` is a step attempt whose start is recorded already (a workflow handed
    /// over with its creation): the drive performs it first.
    ///
    /// A workflow whose stored state no longer takes its own records (the machine refuses
    /// what the drive decided: a trail or state changed behind the engine's back) ends
    /// `failed` with `WF-100`, once, rather than being tried again forever.
    pub async fn run(mut self, started: Option<(usize, u32)>) -> Result<State, EngineError> {
        match self.drive(started).await {
            // An end is never undone: a completed workflow whose recheck the machine
            // refuses keeps its outcome, and is looked at again in an hour.
            Err(EngineError::Corrupt(why)) if self.state.status.is_final() => {
                warn!(reason = %why.escape_debug(), "a recheck of this completed workflow does not fit its trail");
                let later = stored_time(Utc::now()) + chrono::Duration::hours(1);
                self.shared
                    .store()
                    .release(&self.id, &self.lease, Some(later))
                    .await?;
                Ok(self.state)
            }
            Err(EngineError::Corrupt(why)) => self.end_broken(why).await,
            done => done,
        }
    }

    async fn drive(&mut self, started: Option<(usize, u32)>) -> Result<State, EngineError> {
        drive::drive(self, started).await?;
        Ok(self.state.clone())
    }

    /// After a commit: answers a cancel that came back with it — noted as refused when
    /// the workflow has ended, else decided again at once (the step it started, a write,
    /// is not performed, and a workflow that was going to wait stops instead; the next
    /// boundary records `cancelled`) — or stops when nothing follows.
    async fn after_commit(&mut self, last: bool) -> Result<AfterCommit, EngineError> {
        if let Some(by) = self.cancel_asked() {
            if self.state.status.is_final() {
                // A cancel asked while this last commit was on its way: the lease is
                // given back, so the refusal is noted like any non-holder's note.
                self.answered = true;
                let refused = Record::CancelRefused { by };
                self.shared
                    .store()
                    .append_note(&self.id, stored_time(Utc::now()), &refused)
                    .await?;
                return Ok(AfterCommit::Stop);
            }
            if self.writes_remain(&self.state) {
                if last && !self.claim_again().await? {
                    return Ok(AfterCommit::Stop);
                }
                return Ok(AfterCommit::Decide);
            }
        }
        Ok(if last {
            AfterCommit::Stop
        } else {
            AfterCommit::Go
        })
    }

    /// Claims the workflow again after a commit that gave the lease back, to answer a
    /// cancel that came with it. `false` when another holder has it (it answers then).
    async fn claim_again(&mut self) -> Result<bool, EngineError> {
        let store = self.shared.store();
        let Some(claim) = store
            .claim(&self.id, self.shared.worker_id(), self.shared.lease_secs())
            .await?
        else {
            return Ok(false);
        };
        self.lease = claim.lease;
        self.end = claim.end;
        self.state = claim.state;
        self.cancel_by = claim.cancel_requested_by.or(self.cancel_by.take());
        Ok(true)
    }

    fn log_end(&self) {
        let s = &self.state;
        if let Some(age) = age_secs(&self.id).filter(|_| s.status.is_final()) {
            metrics::histogram!("offboard_workflow_duration_seconds", "app" => s.request.app.clone(), "state" => s.status.as_str()).record(age);
        }
        match s.status {
            Status::Completed => {
                info!(
                    outcome = s.outcome.map(|o| o.as_str()).unwrap_or(""),
                    "workflow completed"
                )
            }
            Status::Failed => {
                let code = s.error_code.map(|c| c.as_str()).unwrap_or("");
                let message = s.error_message.as_deref().unwrap_or("").escape_debug();
                warn!(code, message = %message, "workflow failed")
            }
            Status::Cancelled => info!("workflow cancelled"),
            _ => {}
        }
    }

    /// Whether a step that writes to the app is still ahead of (or at) `state`'s current
    /// step.
    fn writes_remain(&self, state: &State) -> bool {
        drive::writes_remain(&self.def, state)
    }

    /// The state after `records`, not yet committed.
    fn preview(&self, records: &[(DateTime<Utc>, Record)]) -> Result<State, EngineError> {
        let mut next = self.state.clone();
        for (at, record) in records {
            next = machine::apply(&next, &self.def, record, *at)
                .map_err(|v| EngineError::Corrupt(format!("workflow {}: {v}", self.id)))?;
        }
        Ok(next)
    }

    /// Applies records through the machine and persists them with the new state under the
    /// lease; a completion event goes to the outbox in the same transaction.
    pub async fn commit(
        &mut self,
        stamped: Vec<(DateTime<Utc>, Record)>,
        release: bool,
    ) -> Result<(), EngineError> {
        let next = self.preview(&stamped)?;
        self.write(stamped, next, release).await
    }

    /// Persists records with the state they lead to, under the lease.
    async fn write(
        &mut self,
        stamped: Vec<(DateTime<Utc>, Record)>,
        next: State,
        release: bool,
    ) -> Result<(), EngineError> {
        let outbox = if self.state.status.is_final() {
            events::reappeared(&self.id, &next, &stamped)
        } else {
            events::completion(&self.id, &next)
        };
        let appended = self
            .shared
            .store()
            .append(
                Fence {
                    id: &self.id,
                    lease: &self.lease,
                    end: &self.end,
                },
                &stamped,
                &next,
                outbox,
                Some(self.shared.lease_secs()).filter(|_| !release),
            )
            .await?;
        self.end = appended.end;
        self.answered |= stamped
            .iter()
            .any(|(_, r)| matches!(r, Record::Cancelled { .. } | Record::CancelRefused { .. }));
        self.state = next;
        self.cancel_by = appended.cancel_requested_by;
        if let Some(pending) = appended.outbox {
            self.shared.publish_soon(pending);
        }
        Ok(())
    }

    /// Ends a workflow whose state no longer takes its records: `failed` with `WF-100`
    /// and the machine's reason, written past the machine (which refuses to go on), with
    /// its `workflow.failed` event. `verify` keeps reporting the trail as broken.
    async fn end_broken(mut self, why: String) -> Result<State, EngineError> {
        warn!(reason = %why.escape_debug(), "the workflow's state no longer takes its records; it ends failed");
        metrics::counter!("offboard_workflows_broken_total", "app" => self.state.request.app.clone()).increment(1);
        let code = Code::Wf100;
        let mut next = self.state.clone();
        next.status = Status::Failed;
        next.error_code = Some(code);
        next.error_message = Some(why.clone());
        next.wake_at = None;
        let record = Record::Failed { code, message: why };
        self.write(vec![(stored_time(Utc::now()), record)], next, true)
            .await?;
        self.log_end();
        Ok(self.state)
    }

    /// Runs `action` for `state`'s request with `facts` through the connection's client,
    /// stopped early by a cancel (see [`drive::run_action`]).
    async fn run_action(
        &self,
        state: &State,
        action: &str,
        facts: &serde_json::Map<String, serde_json::Value>,
    ) -> (Result<StepOutput, StepError>, Vec<CallRecord>) {
        match self.shared.client(&state.request.connection).await {
            Err(e) => (Err(e), Vec::new()),
            Ok(client) => {
                let stop = Some(self.signal.token());
                drive::run_action(&client, action, &state.request, facts, stop).await
            }
        }
    }

    /// Runs one attempt of a step from `state`; adds its API-call records and its result
    /// record to `records`, and returns the time the result was decided at.
    async fn perform_step(
        &self,
        state: &State,
        step: usize,
        attempt: u32,
        records: &mut Vec<(DateTime<Utc>, Record)>,
    ) -> DateTime<Utc> {
        let spec = &self.def.steps[step];
        info!(step = %spec.name, attempt, action = %spec.action, "step started");
        let started = std::time::Instant::now();
        let (result, calls) = self.run_action(state, &spec.action, &state.facts).await;
        let app = state.request.app.clone();
        metrics::histogram!("offboard_step_duration_seconds", "app" => app.clone(), "step" => spec.name.clone(), "result" => if result.is_ok() { "ok" } else { "error" }).record(started.elapsed().as_secs_f64());
        match &result {
            Ok(out) => {
                info!(step = %spec.name, summary = %out.summary.escape_debug(), "step succeeded")
            }
            Err(e) => {
                warn!(step = %spec.name, code = %e.code, retryable = e.retryable, message = %e.message.escape_debug(), "step failed")
            }
        }
        let calls: Vec<Record> = calls
            .into_iter()
            .inspect(|call| count_call(state, call))
            .map(|call| api_call(step, attempt, call))
            .collect();
        let jitter: f64 = rand::rng().random();
        let now = stored_time(Utc::now());
        let outcome = machine::step_result(state, &self.def, step, attempt, result, now, jitter);
        if let Record::StepFailed {
            error,
            retry_at: Some(at),
            ..
        } = &outcome
        {
            metrics::counter!("offboard_step_retries_total", "app" => app.clone(), "step" => spec.name.clone(), "code" => error.code.as_str()).increment(1);
            metrics::histogram!("offboard_retry_wait_seconds", "app" => app, "step" => spec.name.clone()).record((*at - now).as_seconds_f64().max(0.0));
        }
        records.extend(calls.into_iter().chain([outcome]).map(|r| (now, r)));
        now
    }
}

impl Runner {
    /// Runs recheck `recheck` of a completed workflow: the definition's first step (its
    /// read-only lookup, through the connection's client and so its shared request
    /// budget) with the request alone — no fact of the run, and no write. Adds the
    /// result record to `records` and returns the time it was decided at. Access that
    /// came back is counted and logged here; the trail and the outbox say it durably.
    async fn perform_recheck(
        &self,
        state: &State,
        recheck: usize,
        attempt: u32,
        records: &mut Vec<(DateTime<Utc>, Record)>,
    ) -> DateTime<Utc> {
        let lookup = &self.def.steps[0].action;
        info!(recheck, attempt, action = %lookup, "recheck started");
        let (result, calls) = self
            .run_action(state, lookup, &serde_json::Map::new())
            .await;
        let app = state.request.app.clone();
        for call in &calls {
            count_call(state, call);
        }
        let jitter: f64 = rand::rng().random();
        let now = stored_time(Utc::now());
        let record =
            machine::recheck_result(state, &self.def, recheck, attempt, result, now, jitter);
        match &record {
            Record::Rechecked { finding, .. } => {
                let result = finding.result.as_str();
                metrics::counter!("offboard_rechecks_total", "app" => app.clone(), "result" => result).increment(1);
                match finding.code {
                    Some(code) => {
                        metrics::counter!("offboard_access_reappeared_total", "app" => app, "code" => code.as_str()).increment(1);
                        warn!(recheck, result, %code, summary = %finding.summary.escape_debug(), "access came back after offboarding");
                    }
                    None => info!(recheck, result, "recheck: access stayed removed"),
                }
            }
            Record::RecheckFailed {
                error, retry_at, ..
            } => {
                metrics::counter!("offboard_rechecks_total", "app" => app, "result" => "failed")
                    .increment(1);
                warn!(recheck, attempt, code = %error.code, message = %error.message.escape_debug(), retry_at = %retry_at.to_rfc3339(), "recheck failed; it runs again later");
            }
            _ => {}
        }
        records.push((now, record));
        now
    }
}

impl Runner {
    /// Starts the fresh offboarding a recheck's finding among `records` asks for
    /// (`recheck_action = "offboard-again"`): the same person on the same connection,
    /// under the finding's derived event id. Stored before the finding commits, and
    /// deduplicated by that id like any event, so a recheck repeated after a crash starts
    /// it once.
    async fn offboard_again(
        &self,
        state: &State,
        records: &[(DateTime<Utc>, Record)],
    ) -> Result<(), EngineError> {
        let Some((at, finding)) = records.iter().find_map(|(at, r)| match r {
            Record::Rechecked { finding, .. } => Some((at, finding)),
            _ => None,
        }) else {
            return Ok(());
        };
        let Some(event_id) = &finding.offboarded_again else {
            return Ok(());
        };
        let r = &state.request;
        let request = Request {
            event_id: event_id.clone(),
            source: "offboard-recheck".into(),
            event_type: EventType::Offboarding,
            time: Some(*at),
            person_email: r.person_email.clone(),
            employee_id: None,
            transfer_to: r.transfer_to.clone(),
            connections: Some(vec![r.connection.clone()]),
            not_before: None,
            reason: finding
                .code
                .map(|c| format!("access came back after offboarding ({c})")),
        };
        let body = serde_json::json!({
            "specversion": "1.0", "id": event_id, "source": request.source,
            "type": EventType::Offboarding.as_str(), "time": at.to_rfc3339(),
            "data": { "person": { "email": r.person_email }, "connections": [r.connection],
                      "workflow_id": self.id },
        })
        .to_string();
        let acceptor = Acceptor::new(self.shared.clone());
        match acceptor.accept(&request, &body, None).await? {
            Ok(_) => {
                info!(event_id = %event_id.escape_debug(), "access came back: a fresh offboarding was started")
            }
            Err(rejection) => {
                warn!(event_id = %event_id.escape_debug(), reason = ?rejection, "access came back, but no fresh offboarding could be started")
            }
        }
        Ok(())
    }
}

/// A run's effects: actions through the connection's client, commits to the store under
/// the lease.
impl Effects for Runner {
    type Error = EngineError;

    fn def(&self) -> &Definition {
        &self.def
    }

    fn state(&self) -> &State {
        &self.state
    }

    fn knows(&self) -> (Option<String>, bool) {
        (self.cancel_asked(), self.shared.is_stopping())
    }

    fn now(&self) -> DateTime<Utc> {
        stored_time(Utc::now())
    }

    fn skip_to(&mut self, _wake: DateTime<Utc>) -> bool {
        false
    }

    fn batches(&self, step: usize) -> bool {
        crate::apps::reads_only(&self.def.steps[step].action)
    }

    fn broken(&self, violation: Violation) -> EngineError {
        EngineError::Corrupt(format!("workflow {}: {violation}", self.id))
    }

    async fn perform(
        &mut self,
        state: &State,
        step: usize,
        attempt: u32,
        records: &mut Vec<Stamped>,
    ) -> Result<Option<DateTime<Utc>>, EngineError> {
        Ok(Some(self.perform_step(state, step, attempt, records).await))
    }

    async fn recheck(
        &mut self,
        state: &State,
        recheck: usize,
        attempt: u32,
        records: &mut Vec<Stamped>,
    ) -> Result<DateTime<Utc>, EngineError> {
        let at = self.perform_recheck(state, recheck, attempt, records).await;
        self.offboard_again(state, records).await?;
        Ok(at)
    }

    async fn rest(&mut self) -> Result<(), EngineError> {
        self.shared
            .store()
            .release(&self.id, &self.lease, None)
            .await?;
        Ok(())
    }

    async fn commit(
        &mut self,
        records: Vec<Stamped>,
        last: bool,
    ) -> Result<AfterCommit, EngineError> {
        let ended_before = self.state.status.is_final();
        Runner::commit(self, records, last).await?;
        if !ended_before {
            self.log_end();
        }
        self.after_commit(last).await
    }
}

/// Counts one HTTP call a step or a recheck made, in the API-call and budget metrics.
fn count_call(state: &State, call: &CallRecord) {
    metrics::counter!("offboard_api_calls_total", "app" => state.request.app.clone(), "method" => call.method.clone(), "status" => call.status.map_or("none".into(), |s| s.to_string()), "error_code" => call.error_code.map(|c| c.to_string()).unwrap_or_default()).increment(1);
    metrics::counter!("offboard_request_budget_used_total", "connection" => state.request.connection.clone()).increment(1);
}

fn api_call(step: usize, attempt: u32, call: CallRecord) -> Record {
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

/// Seconds since a workflow was created, read from its id (a UUIDv7 carries its
/// creation time), for the workflow-duration histogram.
fn age_secs(workflow_id: &str) -> Option<f64> {
    let (secs, nanos) = uuid::Uuid::parse_str(workflow_id)
        .ok()?
        .get_timestamp()?
        .to_unix();
    let created = chrono::DateTime::from_timestamp(secs as i64, nanos)?;
    Some((chrono::Utc::now() - created).as_seconds_f64().max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v7_id_tells_its_age_and_others_do_not() {
        let id = uuid::Uuid::now_v7().to_string();
        let age = age_secs(&id).unwrap();
        assert!((0.0..5.0).contains(&age), "{age}");
        assert_eq!(age_secs(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(age_secs("not an id"), None);
    }
}
