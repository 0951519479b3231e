//! The workflow state machine, free of I/O.
//!
//! A workflow's history is a list of [`Record`]s, its audit trail. [`apply`] folds one
//! record into the [`State`], refusing any record that is not a legal next step; [`next`]
//! says what to do in a state; [`step_result`] turns an action's result into the record
//! to append (choosing the retry time from the step's policy). The runner persists every
//! record before acting on it, and `offboard replay` folds the stored trail through the
//! same [`apply`] to rebuild the state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::definition::{Definition, DefinitionRef};
use super::event::EventType;
use super::recheck::{self, Finding};
use super::step::{Outcome, StepError, StepOutput};
use crate::codes::Code;

/// What one workflow is asked to do: one event on one connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRequest {
    /// The event id (idempotency key).
    pub event_id: String,
    /// Who sent the event (its CloudEvents `source`).
    pub source: String,
    /// The event's own `time`, when given.
    pub event_time: Option<DateTime<Utc>>,
    /// Offboarding or license reclaim.
    pub event_type: EventType,
    /// The configured connection name.
    pub connection: String,
    /// The app behind the connection.
    pub app: String,
    /// The person leaving.
    pub person_email: String,
    /// Who receives their data.
    pub transfer_to: Option<String>,
    /// Do nothing before this time.
    pub not_before: Option<DateTime<Utc>>,
    /// The person's id in the HR system (`data.person.employee_id`), when the event
    /// gave one: what a SCIM connection with `match = "externalId"` looks for. Left out
    /// of records without one, so trails written before it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_id: Option<String>,
}

/// Where a workflow stands (the contract's `state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, not started (or waiting for `not_before`, or resumed by `retry`).
    Pending,
    /// Created past the mass-offboarding brake: nothing runs until an operator releases
    /// it (`offboard release`) or cancels it.
    Held,
    /// A step is in progress.
    Running,
    /// A step failed and waits for its retry timer.
    Retrying,
    /// Done; see the outcome.
    Completed,
    /// Stopped with an error code.
    Failed,
    /// Stopped by an operator.
    Cancelled,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Held,
        Status::Running,
        Status::Retrying,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Held => "held",
            Status::Running => "running",
            Status::Retrying => "retrying",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether nothing more will happen without an operator.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// The statuses the scheduler drives workflows in (now or when their timer fires):
    /// not an ended one, and not one held until an operator releases it. The one list:
    /// the store's queries are built from it.
    pub const SCHEDULABLE: [Status; 3] = [Status::Pending, Status::Running, Status::Retrying];

    /// Whether the scheduler drives workflows in this status (see [`Status::SCHEDULABLE`]).
    pub fn is_schedulable(self) -> bool {
        Status::SCHEDULABLE.contains(&self)
    }
}

/// Where one step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Not reached yet.
    Pending,
    /// An attempt is in progress (or was, when the process died).
    Running,
    /// Done.
    Succeeded,
    /// The last attempt failed.
    Failed,
    /// Not needed (an earlier step finished the workflow).
    Skipped,
}

impl StepState {
    /// The lower-case name, as stored and shown (`pending`, `running`, `succeeded`,
    /// `failed`, `skipped`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
        }
    }
}

/// One step's progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    /// The step's name from the definition.
    pub name: String,
    /// Where it stands.
    pub state: StepState,
    /// Attempts made so far, over every retry.
    pub attempts: u32,
    /// Attempts made before the last operator `retry`; the policy counts from here.
    pub attempts_before_retry: u32,
    /// The code of the last failure.
    pub error_code: Option<Code>,
}

/// A workflow's whole state; what `fold`ing its trail yields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// What was asked.
    pub request: WorkflowRequest,
    /// The definition it runs with, to the end.
    pub definition: DefinitionRef,
    /// Where it stands.
    pub status: Status,
    /// Each step's progress.
    pub steps: Vec<StepStatus>,
    /// Index of the step to run next (`steps.len()` when all are done).
    pub current: usize,
    /// What steps learned, for later steps and for evidence.
    pub facts: Map<String, Value>,
    /// Set by a step that ends the workflow early.
    pub finish_with: Option<Outcome>,
    /// How it ended, when completed.
    pub outcome: Option<Outcome>,
    /// Why it failed.
    pub error_code: Option<Code>,
    /// Why it failed, in words.
    pub error_message: Option<String>,
    /// Nothing happens before this time (`not_before`, a retry timer, or the next
    /// recheck of a completed workflow).
    pub wake_at: Option<DateTime<Utc>>,
    /// When the workflow completed, if rechecks follow (its definition lists
    /// `recheck_after` and the account was removed): the offsets count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rechecks_from: Option<DateTime<Utc>>,
    /// The rechecks done after the end, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rechecks: Vec<Recheck>,
    /// Failed lookups of the recheck now due.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recheck_attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One recheck after the end, as the state keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recheck {
    /// When its result was recorded.
    pub at: DateTime<Utc>,
    /// What it found.
    pub finding: Finding,
}

impl State {
    /// Whether a completed workflow still has a recheck ahead (the scheduler wakes it at
    /// `wake_at`); its status and outcome stay those of its end.
    pub fn recheck_pending(&self) -> bool {
        self.status == Status::Completed && self.wake_at.is_some()
    }

    /// Whether the scheduler drives this workflow (now or when its timer fires): one that
    /// has not ended and is not held, or a completed one with a recheck ahead.
    pub fn is_schedulable(&self) -> bool {
        self.status.is_schedulable() || self.recheck_pending()
    }
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// The workflow was created from an event.
    Created {
        /// What was asked.
        request: WorkflowRequest,
        /// The definition version it runs with.
        definition: DefinitionRef,
        /// The step names, in order.
        steps: Vec<String>,
    },
    /// An attempt of a step begins: written before any call it makes.
    StepStarted {
        /// Step index.
        step: usize,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// One HTTP call made by a step (evidence; changes no state).
    ApiCall {
        /// Step index.
        step: usize,
        /// Attempt number.
        attempt: u32,
        /// HTTP method.
        method: String,
        /// Path and query, with no secret in it.
        path: String,
        /// HTTP status, when a response came.
        status: Option<u16>,
        /// The app's own error code, when it sent one.
        error_code: Option<i64>,
        /// Time taken.
        duration_ms: u64,
    },
    /// A step attempt succeeded.
    StepSucceeded {
        /// Step index.
        step: usize,
        /// Attempt number.
        attempt: u32,
        /// What it learned and did.
        output: StepOutput,
    },
    /// A step attempt failed.
    StepFailed {
        /// Step index.
        step: usize,
        /// Attempt number.
        attempt: u32,
        /// The error.
        error: StepError,
        /// The random draw the runner used for jitter (evidence of how `retry_at` was
        /// chosen; replay checks `retry_at` against the policy's bounds, not this draw).
        jitter: f64,
        /// When the next attempt is due; `None` when there is none.
        retry_at: Option<DateTime<Utc>>,
    },
    /// Every step is done.
    Completed {
        /// How it ended.
        outcome: Outcome,
    },
    /// Stopped with an error.
    Failed {
        /// The code.
        code: Code,
        /// The message.
        message: String,
    },
    /// Stopped by an operator.
    Cancelled {
        /// Who asked.
        by: String,
    },
    /// An operator resumed a failed workflow at the step that failed.
    RetryRequested {
        /// Who asked.
        by: String,
    },
    /// The event that started this workflow arrived again; nothing new was started.
    DuplicateReceived {
        /// The `source` of the repeated delivery.
        source: String,
    },
    /// The mass-offboarding brake was on when the workflow was created: it waits for an
    /// operator.
    Held {
        /// The configured `max_offboardings_per_hour` that was exceeded.
        limit: u32,
        /// How many offboarding events had arrived in the hour, this one included.
        in_last_hour: u64,
    },
    /// An operator let a held workflow run.
    Released {
        /// Who asked.
        by: String,
    },
    /// An operator asked to cancel while the last step ran; the workflow had ended by the
    /// next step boundary, so its end stands and the request is on record as refused.
    CancelRefused {
        /// Who asked.
        by: String,
    },
    /// A recheck after the end: the app's lookup (the first step's read-only action) ran
    /// again, with no write. The workflow's outcome stands whatever it found.
    Rechecked {
        /// Which recheck (0-based index into the definition's `recheck_after`).
        recheck: usize,
        /// What the lookup found.
        finding: Finding,
    },
    /// A recheck's lookup failed (the app away, a token refused); it runs again at
    /// `retry_at`, paced by the definition's default retry policy, without end.
    RecheckFailed {
        /// Which recheck.
        recheck: usize,
        /// Attempt number of this recheck, from 1.
        attempt: u32,
        /// The error.
        error: StepError,
        /// The random draw used for jitter (evidence; `retry_at` is checked against the
        /// policy's bounds).
        jitter: f64,
        /// When the lookup runs again.
        retry_at: DateTime<Utc>,
    },
}

impl Record {
    /// The `kind` name stored in the audit table.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Created { .. } => "created",
            Record::StepStarted { .. } => "step_started",
            Record::ApiCall { .. } => "api_call",
            Record::StepSucceeded { .. } => "step_succeeded",
            Record::StepFailed { .. } => "step_failed",
            Record::Completed { .. } => "completed",
            Record::Failed { .. } => "failed",
            Record::Cancelled { .. } => "cancelled",
            Record::RetryRequested { .. } => "retry_requested",
            Record::DuplicateReceived { .. } => "duplicate_received",
            Record::CancelRefused { .. } => "cancel_refused",
            Record::Held { .. } => "held",
            Record::Released { .. } => "released",
            Record::Rechecked { .. } => "rechecked",
            Record::RecheckFailed { .. } => "recheck_failed",
        }
    }

    /// The step the record is about, if any.
    pub fn step(&self) -> Option<usize> {
        match self {
            Record::StepStarted { step, .. }
            | Record::ApiCall { step, .. }
            | Record::StepSucceeded { step, .. }
            | Record::StepFailed { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// What the runner should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Nothing: the workflow is final, or held until an operator releases it.
    Done,
    /// Wait until this time (durably), then ask again.
    Sleep(DateTime<Utc>),
    /// Run this attempt of this step.
    Run {
        /// Step index.
        step: usize,
        /// Attempt number to record.
        attempt: u32,
    },
    /// Append `Completed` with this outcome.
    Complete(Outcome),
    /// Append `Failed` with this code and message.
    Fail(Code, String),
    /// Run the app's lookup again for this recheck of a completed workflow, then append
    /// what [`recheck_result`] makes of it.
    Recheck {
        /// Which recheck.
        recheck: usize,
        /// Attempt number to record.
        attempt: u32,
    },
}

/// Says what the runner does next in `state`.
pub fn next(state: &State, def: &Definition, now: DateTime<Utc>) -> Next {
    if state.recheck_pending() {
        return match state.wake_at {
            Some(at) if at > now => Next::Sleep(at),
            _ => Next::Recheck {
                recheck: state.rechecks.len(),
                attempt: state.recheck_attempts + 1,
            },
        };
    }
    if state.status.is_final() || state.status == Status::Held {
        return Next::Done;
    }
    if let Some(at) = state.wake_at {
        if at > now {
            return Next::Sleep(at);
        }
    }
    if state.current >= state.steps.len() {
        return Next::Complete(state.finish_with.unwrap_or(def.outcome));
    }
    let step = &state.steps[state.current];
    if let (StepState::Failed, Status::Running, Some(code)) =
        (step.state, state.status, state.error_code)
    {
        // The last attempt failed with no retry left: the workflow fails with its code.
        let message = state
            .error_message
            .clone()
            .unwrap_or_else(|| code.message().to_string());
        return Next::Fail(code, message);
    }
    Next::Run {
        step: state.current,
        attempt: step.attempts + 1,
    }
}

/// Turns an action's result into the record to append. `jitter` is a random draw in [0, 1).
pub fn step_result(
    state: &State,
    def: &Definition,
    step: usize,
    attempt: u32,
    result: Result<StepOutput, StepError>,
    now: DateTime<Utc>,
    jitter: f64,
) -> Record {
    match result {
        Ok(output) => Record::StepSucceeded {
            step,
            attempt,
            output,
        },
        Err(error) => {
            let retry_at = retry_time(state, def, step, attempt, &error, now, jitter);
            Record::StepFailed {
                step,
                attempt,
                error,
                jitter,
                retry_at,
            }
        }
    }
}

/// Turns a recheck's lookup result into the record to append: what it found
/// ([`recheck::classify`], against the account the workflow removed), or the failure and
/// when to look again. `jitter` is a random draw in [0, 1).
pub fn recheck_result(
    state: &State,
    def: &Definition,
    recheck: usize,
    attempt: u32,
    result: Result<StepOutput, StepError>,
    now: DateTime<Utc>,
    jitter: f64,
) -> Record {
    match result {
        Ok(output) => {
            let mut finding = recheck::classify(&state.request.app, &state.facts, &output);
            if finding.code.is_some() && def.recheck_action == recheck::RecheckAction::OffboardAgain
            {
                finding.offboarded_again =
                    Some(recheck::again_event_id(&state.request.event_id, recheck));
            }
            Record::Rechecked { recheck, finding }
        }
        Err(error) => {
            let delay = def
                .retry
                .delay_after(recheck_counted(def, attempt), jitter, error.retry_after_ms)
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .unwrap_or_else(|| {
                    chrono::Duration::milliseconds(def.retry.max_interval_ms as i64)
                });
            Record::RecheckFailed {
                recheck,
                attempt,
                error,
                jitter,
                retry_at: now + delay,
            }
        }
    }
}

/// A recheck's failed attempt as the default policy counts it: a recheck is never given
/// up, so from the last attempt the policy allows on it waits the last delay again.
fn recheck_counted(def: &Definition, attempt: u32) -> u32 {
    attempt.min(def.retry.max_attempts.saturating_sub(1))
}

/// Checks that a recheck record may follow `s` at `at`: the workflow completed, this is
/// the recheck due next, and its time has come.
fn recheck_due(s: &State, recheck: usize, at: DateTime<Utc>) -> Result<(), Violation> {
    if !s.recheck_pending() {
        return violation("a recheck of a workflow with no recheck ahead");
    }
    if recheck != s.rechecks.len() {
        return violation(format!(
            "recheck {recheck}, the one due is {}",
            s.rechecks.len()
        ));
    }
    if s.wake_at.is_some_and(|w| w > at) {
        return violation("a recheck before its time");
    }
    Ok(())
}

/// When the runner retries a failed attempt: the policy's delay for this attempt, with the
/// runner's jitter draw, after `at`; `None` when the error is not retryable or no attempt
/// is left.
fn retry_time(
    state: &State,
    def: &Definition,
    step: usize,
    attempt: u32,
    error: &StepError,
    at: DateTime<Utc>,
    jitter: f64,
) -> Option<DateTime<Utc>> {
    if !error.retryable {
        return None;
    }
    let delay = def.policy(step).delay_after(
        counted_attempt(state, step, attempt),
        jitter,
        error.retry_after_ms,
    )?;
    Some(at + chrono::Duration::from_std(delay).ok()?)
}

/// The attempt as the step's policy counts it: from the last operator `retry` on.
fn counted_attempt(state: &State, step: usize, attempt: u32) -> u32 {
    attempt.saturating_sub(state.steps[step].attempts_before_retry)
}

/// Checks a recorded retry time against the step's policy: none exactly when the error is
/// not retryable or no attempt is left; otherwise a time after the failure (at `at`)
/// within the delays the policy allows for this attempt ([`RetryPolicy::delay_bounds`]).
/// The time itself is data: it is not recomputed from the recorded jitter draw, so a
/// change in the delay generator's arithmetic does not break historical trails.
///
/// [`RetryPolicy::delay_bounds`]: super::retry::RetryPolicy::delay_bounds
fn check_retry_time(
    state: &State,
    def: &Definition,
    step: usize,
    attempt: u32,
    error: &StepError,
    at: DateTime<Utc>,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), Violation> {
    let bounds = if error.retryable {
        def.policy(step)
            .delay_bounds(counted_attempt(state, step, attempt), error.retry_after_ms)
    } else {
        None
    };
    match (bounds, retry_at) {
        (None, None) => Ok(()),
        (None, Some(when)) => violation(format!(
            "a retry at {} where the policy allows no further attempt",
            when.to_rfc3339()
        )),
        (Some(_), None) => violation("no retry time where the policy allows another attempt"),
        (Some(bounds), Some(when)) => {
            let delay = (when - at).to_std().ok();
            if delay.is_some_and(|d| bounds.admits(d)) {
                return Ok(());
            }
            violation(format!(
                "a retry {} ms after the failure, outside the policy's {}–{} ms",
                (when - at).num_milliseconds(),
                bounds.shortest.as_millis(),
                bounds.longest.as_millis()
            ))
        }
    }
}

/// Why a record cannot follow the state it was applied to.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn violation<T>(text: impl Into<String>) -> Result<T, Violation> {
    Err(Violation(text.into()))
}

/// Starts a state from the first record, which must be `Created`.
pub fn create(record: &Record) -> Result<State, Violation> {
    let Record::Created {
        request,
        definition,
        steps,
    } = record
    else {
        return violation("the trail does not start with `created`");
    };
    Ok(State {
        request: request.clone(),
        definition: definition.clone(),
        status: Status::Pending,
        steps: steps
            .iter()
            .map(|name| StepStatus {
                name: name.clone(),
                state: StepState::Pending,
                attempts: 0,
                attempts_before_retry: 0,
                error_code: None,
            })
            .collect(),
        current: 0,
        facts: Map::new(),
        finish_with: None,
        outcome: None,
        error_code: None,
        error_message: None,
        wake_at: request.not_before,
        rechecks_from: None,
        rechecks: Vec::new(),
        recheck_attempts: 0,
    })
}

/// Folds one record, written at `at`, into the state; refuses records that cannot follow.
pub fn apply(
    state: &State,
    def: &Definition,
    record: &Record,
    at: DateTime<Utc>,
) -> Result<State, Violation> {
    let mut s = state.clone();
    if s.status.is_final()
        && !matches!(
            record,
            Record::RetryRequested { .. }
                | Record::DuplicateReceived { .. }
                | Record::CancelRefused { .. }
                | Record::Rechecked { .. }
                | Record::RecheckFailed { .. }
        )
    {
        return violation(format!("`{}` after the workflow ended", record.kind()));
    }
    if let Some(step) = record.step() {
        if step != s.current || step >= s.steps.len() {
            return violation(format!(
                "`{}` names step {step}, the current one is {}",
                record.kind(),
                s.current
            ));
        }
    }
    match record {
        Record::Created { .. } => return violation("a second `created`"),
        Record::StepStarted { .. }
        | Record::ApiCall { .. }
        | Record::StepSucceeded { .. }
        | Record::StepFailed { .. } => apply_step(&mut s, def, record, at)?,
        Record::Completed { .. }
        | Record::Failed { .. }
        | Record::Cancelled { .. }
        | Record::DuplicateReceived { .. }
        | Record::CancelRefused { .. } => apply_end(&mut s, def, record, at)?,
        Record::Rechecked { recheck, finding } => {
            apply_rechecked(&mut s, def, *recheck, finding, at)?
        }
        Record::RecheckFailed {
            recheck,
            attempt,
            error,
            retry_at,
            ..
        } => apply_recheck_failed(&mut s, def, *recheck, *attempt, error, *retry_at, at)?,
        Record::Held { .. } | Record::Released { .. } | Record::RetryRequested { .. } => {
            apply_intervention(&mut s, record)?
        }
    }
    Ok(s)
}

/// [`apply`] for a step's records: its start, its API calls, its result.
fn apply_step(
    s: &mut State,
    def: &Definition,
    record: &Record,
    at: DateTime<Utc>,
) -> Result<(), Violation> {
    match record {
        Record::StepStarted { step, attempt } => {
            if s.status == Status::Held {
                return violation("a step started while the workflow was held");
            }
            let st = &mut s.steps[*step];
            if *attempt != st.attempts + 1 {
                return violation(format!("attempt {attempt} after {}", st.attempts));
            }
            if s.wake_at.is_some_and(|w| w > at) {
                return violation("a step started before its timer was due");
            }
            st.state = StepState::Running;
            st.attempts = *attempt;
            s.status = Status::Running;
            s.wake_at = None;
        }
        Record::ApiCall { attempt, step, .. } => {
            running(s, *step, *attempt)?;
        }
        Record::StepSucceeded {
            step,
            attempt,
            output,
        } => {
            running(s, *step, *attempt)?;
            let st = &mut s.steps[*step];
            st.state = StepState::Succeeded;
            st.error_code = None;
            s.error_code = None;
            s.error_message = None;
            for (k, v) in &output.facts {
                s.facts.insert(k.clone(), v.clone());
            }
            s.current += 1;
            if let Some(outcome) = output.finish_with {
                s.finish_with = Some(outcome);
                for rest in &mut s.steps[s.current..] {
                    rest.state = StepState::Skipped;
                }
                s.current = s.steps.len();
            }
        }
        Record::StepFailed {
            step,
            attempt,
            error,
            retry_at,
            ..
        } => {
            running(s, *step, *attempt)?;
            check_retry_time(s, def, *step, *attempt, error, at, *retry_at)?;
            let st = &mut s.steps[*step];
            st.state = StepState::Failed;
            st.error_code = Some(error.code);
            s.error_code = Some(error.code);
            s.error_message = Some(error.message.clone());
            if retry_at.is_some() {
                s.status = Status::Retrying;
                s.wake_at = *retry_at;
            }
        }
        _ => unreachable!("apply hands only step records here"),
    }
    Ok(())
}

/// [`apply`] for the end of a workflow and the notes that change no state.
fn apply_end(
    s: &mut State,
    def: &Definition,
    record: &Record,
    at: DateTime<Utc>,
) -> Result<(), Violation> {
    match record {
        Record::Completed { outcome } => {
            if next(s, def, at) != Next::Complete(*outcome) {
                return violation(format!(
                    "`completed` ({}) before the steps were done",
                    outcome.as_str()
                ));
            }
            s.status = Status::Completed;
            s.outcome = Some(*outcome);
            s.error_message = None;
            if outcome.ends_access() && !def.recheck_after.is_empty() {
                s.rechecks_from = Some(at);
                s.wake_at = def.recheck_due(0, at);
            }
        }
        Record::Failed { code, message } => {
            if !matches!(next(s, def, at), Next::Fail(c, _) if c == *code) {
                return violation(format!(
                    "`failed` with {code} does not follow a final step failure"
                ));
            }
            s.status = Status::Failed;
            s.error_code = Some(*code);
            s.error_message = Some(message.clone());
        }
        Record::DuplicateReceived { .. } | Record::CancelRefused { .. } => {}
        Record::Cancelled { .. } => {
            s.status = Status::Cancelled;
            s.wake_at = None;
        }
        _ => unreachable!("apply hands only end records and notes here"),
    }
    Ok(())
}

/// [`apply`] for a recheck's finding after the end: it must be the one due, its code
/// must match its result, and a fresh offboarding is named exactly when the definition
/// asks for one.
fn apply_rechecked(
    s: &mut State,
    def: &Definition,
    recheck: usize,
    finding: &recheck::Finding,
    at: DateTime<Utc>,
) -> Result<(), Violation> {
    recheck_due(s, recheck, at)?;
    if (finding.result == recheck::RecheckResult::StillGone) != finding.code.is_none() {
        return violation("a recheck's code does not match its result");
    }
    let asked = (finding.code.is_some()
        && def.recheck_action == recheck::RecheckAction::OffboardAgain)
        .then(|| recheck::again_event_id(&s.request.event_id, recheck));
    if finding.offboarded_again != asked {
        return violation("a recheck's fresh offboarding is not the one its definition asks for");
    }
    s.rechecks.push(Recheck {
        at,
        finding: finding.clone(),
    });
    s.recheck_attempts = 0;
    s.wake_at = s
        .rechecks_from
        .and_then(|from| def.recheck_due(recheck + 1, from));
    Ok(())
}

/// [`apply`] for a recheck attempt that failed: the next attempt in turn, retried within
/// the definition's policy (or, past its attempts, at its longest interval).
fn apply_recheck_failed(
    s: &mut State,
    def: &Definition,
    recheck: usize,
    attempt: u32,
    error: &StepError,
    retry_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<(), Violation> {
    recheck_due(s, recheck, at)?;
    if attempt != s.recheck_attempts + 1 {
        return violation(format!(
            "recheck attempt {attempt} after {}",
            s.recheck_attempts
        ));
    }
    let bounds = def
        .retry
        .delay_bounds(recheck_counted(def, attempt), error.retry_after_ms);
    let delay = (retry_at - at).to_std().ok();
    let admitted = match bounds {
        Some(b) => delay.is_some_and(|d| b.admits(d)),
        None => delay == Some(std::time::Duration::from_millis(def.retry.max_interval_ms)),
    };
    if !admitted {
        return violation(format!(
            "a recheck retried {} ms after its failure, outside the policy",
            (retry_at - at).num_milliseconds()
        ));
    }
    s.recheck_attempts = attempt;
    s.wake_at = Some(retry_at);
    Ok(())
}

/// [`apply`] for what operators and the brake do: hold, release, retry.
fn apply_intervention(s: &mut State, record: &Record) -> Result<(), Violation> {
    match record {
        Record::Held { .. } => {
            if s.status != Status::Pending
                || s.current != 0
                || s.steps.iter().any(|st| st.attempts > 0)
            {
                return violation("`held` for a workflow that has already started");
            }
            s.status = Status::Held;
        }
        Record::Released { .. } => {
            if s.status != Status::Held {
                return violation("`released` for a workflow that is not held");
            }
            s.status = Status::Pending;
        }
        Record::RetryRequested { .. } => {
            if s.status != Status::Failed {
                return violation("`retry_requested` for a workflow that has not failed");
            }
            let st = &mut s.steps[s.current];
            st.state = StepState::Pending;
            st.attempts_before_retry = st.attempts;
            s.status = Status::Pending;
            s.error_code = None;
            s.error_message = None;
        }

        _ => unreachable!("apply hands only interventions here"),
    }
    Ok(())
}

fn running(s: &State, step: usize, attempt: u32) -> Result<(), Violation> {
    let st = &s.steps[step];
    if st.state != StepState::Running || st.attempts != attempt {
        return violation(format!(
            "step {step} attempt {attempt} is not the one running"
        ));
    }
    Ok(())
}

/// Rebuilds a state from a whole trail; on a bad record, says which (0-based) and why.
pub fn fold(
    def: &Definition,
    trail: &[(DateTime<Utc>, Record)],
) -> Result<State, (usize, Violation)> {
    let Some(((_, first), rest)) = trail.split_first() else {
        return Err((0, Violation("the trail is empty".into())));
    };
    let mut state = create(first).map_err(|v| (0, v))?;
    for (i, (at, record)) in rest.iter().enumerate() {
        state = apply(&state, def, record, *at).map_err(|v| (i + 1, v))?;
    }
    Ok(state)
}
