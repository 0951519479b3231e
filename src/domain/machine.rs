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

    /// Whether the scheduler drives workflows in this status (now or when their timer
    /// fires): not an ended one, and not one held until an operator releases it.
    pub fn is_schedulable(self) -> bool {
        matches!(self, Status::Pending | Status::Running | Status::Retrying)
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
            running(&s, *step, *attempt)?;
        }
        Record::StepSucceeded {
            step,
            attempt,
            output,
        } => {
            running(&s, *step, *attempt)?;
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
            running(&s, *step, *attempt)?;
            check_retry_time(&s, def, *step, *attempt, error, at, *retry_at)?;
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
        Record::Completed { outcome } => {
            if next(&s, def, at) != Next::Complete(*outcome) {
                return violation(format!(
                    "`completed` ({}) before the steps were done",
                    outcome.as_str()
                ));
            }
            s.status = Status::Completed;
            s.outcome = Some(*outcome);
            s.error_message = None;
            if *outcome == Outcome::Removed && !def.recheck_after.is_empty() {
                s.rechecks_from = Some(at);
                s.wake_at = def.recheck_due(0, at);
            }
        }
        Record::Rechecked { recheck, finding } => {
            recheck_due(&s, *recheck, at)?;
            if (finding.result == recheck::RecheckResult::StillGone) != finding.code.is_none() {
                return violation("a recheck's code does not match its result");
            }
            let asked = (finding.code.is_some()
                && def.recheck_action == recheck::RecheckAction::OffboardAgain)
                .then(|| recheck::again_event_id(&s.request.event_id, *recheck));
            if finding.offboarded_again != asked {
                return violation(
                    "a recheck's fresh offboarding is not the one its definition asks for",
                );
            }
            s.rechecks.push(Recheck {
                at,
                finding: finding.clone(),
            });
            s.recheck_attempts = 0;
            s.wake_at = s
                .rechecks_from
                .and_then(|from| def.recheck_due(recheck + 1, from));
        }
        Record::RecheckFailed {
            recheck,
            attempt,
            error,
            retry_at,
            ..
        } => {
            recheck_due(&s, *recheck, at)?;
            if *attempt != s.recheck_attempts + 1 {
                return violation(format!(
                    "recheck attempt {attempt} after {}",
                    s.recheck_attempts
                ));
            }
            let bounds = def
                .retry
                .delay_bounds(recheck_counted(def, *attempt), error.retry_after_ms);
            let delay = (*retry_at - at).to_std().ok();
            let admitted = match bounds {
                Some(b) => delay.is_some_and(|d| b.admits(d)),
                None => delay == Some(std::time::Duration::from_millis(def.retry.max_interval_ms)),
            };
            if !admitted {
                return violation(format!(
                    "a recheck retried {} ms after its failure, outside the policy",
                    (*retry_at - at).num_milliseconds()
                ));
            }
            s.recheck_attempts = *attempt;
            s.wake_at = Some(*retry_at);
        }
        Record::Failed { code, message } => {
            if !matches!(next(&s, def, at), Next::Fail(c, _) if c == *code) {
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
    }
    Ok(s)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::step::Outcome;

    const DEF: &str = r#"
name = "t"
version = 1
app = "t"
event_type = "offboarding.requested"
outcome = "removed"
[retry]
initial_interval_ms = 1000
multiplier = 2.0
max_interval_ms = 10000
max_attempts = 3
jitter = 0.5
[[steps]]
name = "find"
action = "t.find"
[[steps]]
name = "remove"
action = "t.remove"
"#;

    fn def() -> Definition {
        Definition::parse(DEF, |_| true).unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn created(not_before: Option<DateTime<Utc>>) -> Record {
        created_for("t", not_before)
    }

    fn created_for(app: &str, not_before: Option<DateTime<Utc>>) -> Record {
        Record::Created {
            request: WorkflowRequest {
                event_id: "e1".into(),
                source: "test".into(),
                event_time: None,
                event_type: EventType::Offboarding,
                connection: "c".into(),
                app: app.into(),
                person_email: "a@b.co".into(),
                transfer_to: None,
                not_before,
            },
            definition: def().reference(),
            steps: vec!["find".into(), "remove".into()],
        }
    }

    /// Drives a workflow with scripted action results, as the runner would, and returns
    /// the trail it wrote.
    fn drive(results: Vec<Result<StepOutput, StepError>>) -> Vec<(DateTime<Utc>, Record)> {
        drive_with(&def(), results)
    }

    /// [`drive`] with definition `d`; rechecks take their lookup results from the script
    /// too.
    fn drive_with(
        d: &Definition,
        results: Vec<Result<StepOutput, StepError>>,
    ) -> Vec<(DateTime<Utc>, Record)> {
        let d = d.clone();
        let first = created_for(&d.app, None);
        let mut state = create(&first).unwrap();
        let mut trail = vec![(t(0), first)];
        let mut results = results.into_iter();
        let mut now = t(1);
        loop {
            let record = match next(&state, &d, now) {
                Next::Done => return trail,
                Next::Sleep(at) => {
                    now = at;
                    continue;
                }
                Next::Complete(outcome) => Record::Completed { outcome },
                Next::Fail(code, message) => Record::Failed { code, message },
                Next::Recheck { recheck, attempt } => {
                    let result = results.next().expect("a scripted lookup");
                    recheck_result(&state, &d, recheck, attempt, result, now, 0.5)
                }
                Next::Run { step, attempt } => {
                    let started = Record::StepStarted { step, attempt };
                    state = apply(&state, &d, &started, now).unwrap();
                    trail.push((now, started));
                    let result = results.next().expect("a scripted result");
                    step_result(&state, &d, step, attempt, result, now, 0.5)
                }
            };
            state = apply(&state, &d, &record, now).unwrap();
            trail.push((now, record));
            now += chrono::Duration::seconds(1);
        }
    }

    fn kinds(trail: &[(DateTime<Utc>, Record)]) -> Vec<&'static str> {
        trail.iter().map(|(_, r)| r.kind()).collect()
    }

    fn transient() -> Result<StepOutput, StepError> {
        Err(StepError::transient(Code::Smt190B, "503", None))
    }

    #[test]
    fn every_step_in_order_then_the_definition_outcome() {
        let trail = drive(vec![
            Ok(StepOutput::summary("found")),
            Ok(StepOutput::summary("gone")),
        ]);
        assert_eq!(
            kinds(&trail),
            [
                "created",
                "step_started",
                "step_succeeded",
                "step_started",
                "step_succeeded",
                "completed"
            ]
        );
        let state = fold(&def(), &trail).unwrap();
        assert_eq!(state.status, Status::Completed);
        assert_eq!(state.outcome, Some(Outcome::Removed));
    }

    #[test]
    fn an_early_finish_skips_the_rest() {
        let absent = StepOutput {
            finish_with: Some(Outcome::Absent),
            ..StepOutput::summary("nobody")
        };
        let trail = drive(vec![Ok(absent)]);
        let state = fold(&def(), &trail).unwrap();
        assert_eq!(state.outcome, Some(Outcome::Absent));
        assert_eq!(state.steps[1].state, StepState::Skipped);
    }

    #[test]
    fn transient_errors_retry_on_the_policy_timer_then_succeed() {
        let trail = drive(vec![
            Ok(StepOutput::summary("found")),
            transient(),
            transient(),
            Ok(StepOutput::summary("gone")),
        ]);
        let state = fold(&def(), &trail).unwrap();
        assert_eq!(state.status, Status::Completed);
        assert_eq!(state.steps[1].attempts, 3);
        let delays: Vec<i64> = trail
            .iter()
            .filter_map(|(at, r)| match r {
                Record::StepFailed {
                    retry_at: Some(when),
                    ..
                } => Some((*when - *at).num_milliseconds()),
                _ => None,
            })
            .collect();
        // 1 s then 2 s, each plus half the 0.5 jitter (0.5 × 0.5 = 25 %).
        assert_eq!(delays, vec![1250, 2500]);
    }

    #[test]
    fn exhausted_attempts_fail_with_the_errors_code() {
        let trail = drive(vec![
            Ok(StepOutput::summary("found")),
            transient(),
            transient(),
            transient(),
        ]);
        let state = fold(&def(), &trail).unwrap();
        assert_eq!(state.status, Status::Failed);
        assert_eq!(state.error_code, Some(Code::Smt190B));
        assert_eq!(kinds(&trail).last(), Some(&"failed"));
    }

    #[test]
    fn fatal_errors_fail_at_once_and_retry_resumes_the_failed_step() {
        let d = def();
        let mut trail = drive(vec![Err(StepError::fatal(Code::Smt100B, "expired"))]);
        let state = fold(&d, &trail).unwrap();
        assert_eq!(
            (state.status, state.error_code),
            (Status::Failed, Some(Code::Smt100B))
        );
        trail.push((t(100), Record::RetryRequested { by: "ops".into() }));
        let state = fold(&d, &trail).unwrap();
        assert_eq!(
            next(&state, &d, t(100)),
            Next::Run {
                step: 0,
                attempt: 2
            }
        );
    }

    #[test]
    fn not_before_holds_the_first_step() {
        let d = def();
        let state = create(&created(Some(t(60)))).unwrap();
        assert_eq!(next(&state, &d, t(0)), Next::Sleep(t(60)));
        assert_eq!(
            next(&state, &d, t(60)),
            Next::Run {
                step: 0,
                attempt: 1
            }
        );
        let early = apply(
            &state,
            &d,
            &Record::StepStarted {
                step: 0,
                attempt: 1,
            },
            t(10),
        );
        assert!(early.is_err());
    }

    #[test]
    fn illegal_records_are_refused() {
        let d = def();
        let trail = drive(vec![
            Ok(StepOutput::summary("found")),
            transient(),
            Ok(StepOutput::summary("gone")),
        ]);
        // A forged retry time.
        let mut forged = trail.clone();
        for (_, r) in forged.iter_mut() {
            if let Record::StepFailed { retry_at, .. } = r {
                *retry_at = retry_at.map(|t| t + chrono::Duration::seconds(1));
            }
        }
        assert!(fold(&d, &forged).is_err());
        // A step skipped.
        let mut skipped = trail.clone();
        skipped.remove(2);
        assert_eq!(fold(&d, &skipped).unwrap_err().0, 2);
        // Anything after the end.
        let mut after = trail.clone();
        after.push((t(999), Record::Cancelled { by: "x".into() }));
        assert!(fold(&d, &after).is_err());
        // Completion before the steps are done.
        let early = vec![
            trail[0].clone(),
            (
                t(1),
                Record::Completed {
                    outcome: Outcome::Removed,
                },
            ),
        ];
        assert!(fold(&d, &early).is_err());
    }

    /// `trail` with every recorded retry time replaced by what `change` makes of it.
    fn with_retry_times(
        trail: &[(DateTime<Utc>, Record)],
        change: impl Fn(Option<DateTime<Utc>>) -> Option<DateTime<Utc>>,
    ) -> Vec<(DateTime<Utc>, Record)> {
        let mut out = trail.to_vec();
        for (_, r) in out.iter_mut() {
            if let Record::StepFailed { retry_at, .. } = r {
                *retry_at = change(*retry_at);
            }
        }
        out
    }

    /// Retry times are data checked against the policy's bounds: a time 1 ms off what
    /// today's arithmetic computes (another release of the generator) still folds, and so
    /// does any jitter draw within the policy; a time outside the bounds, a missing one
    /// while attempts remain, and one after the last attempt do not.
    #[test]
    fn retry_times_are_checked_against_the_policys_bounds() {
        let d = def();
        let retried = drive(vec![
            Ok(StepOutput::summary("found")),
            transient(),
            Ok(StepOutput::summary("gone")),
        ]);
        let ms = chrono::Duration::milliseconds;
        // A whole trail whose retry time is 1 ms before today's computation.
        let earlier = with_retry_times(&retried, |t| t.map(|t| t - ms(1)));
        assert_eq!(fold(&d, &earlier).unwrap().status, Status::Completed);
        // The trail while it waits: recorded 1250 ms after the failure, where the policy
        // allows 1000–1500 ms (a retry started before its recorded time is refused on its
        // own, so later times are tried on the waiting trail).
        let failed = retried
            .iter()
            .position(|(_, r)| r.kind() == "step_failed")
            .unwrap();
        let waiting = &retried[..=failed];
        for shift in [-250, -1, 1, 250, 251] {
            let moved = with_retry_times(waiting, |t| t.map(|t| t + ms(shift)));
            assert!(fold(&d, &moved).is_ok(), "shifted by {shift} ms");
        }
        for shift in [-252, 252, 60_000, -1_250, -5_000] {
            let moved = with_retry_times(waiting, |t| t.map(|t| t + ms(shift)));
            let (at, why) = fold(&d, &moved).unwrap_err();
            assert_eq!(at, failed, "shifted by {shift} ms: {why}");
        }
        assert!(fold(&d, &with_retry_times(&retried, |_| None)).is_err());

        let exhausted = drive(vec![
            Ok(StepOutput::summary("found")),
            transient(),
            transient(),
            transient(),
        ]);
        assert!(fold(&d, &exhausted).is_ok());
        let one_more = with_retry_times(&exhausted, |t| t.or(Some(t_after_last(&exhausted))));
        assert!(fold(&d, &one_more).is_err());
        let fatal = drive(vec![Err(StepError::fatal(Code::Smt100B, "expired"))]);
        let retried_fatal = with_retry_times(&fatal, |_| Some(t(10)));
        assert!(fold(&d, &retried_fatal).is_err());
    }

    /// A time after every record of `trail`.
    fn t_after_last(trail: &[(DateTime<Utc>, Record)]) -> DateTime<Utc> {
        trail.last().unwrap().0 + chrono::Duration::seconds(1)
    }

    fn rechecking() -> Definition {
        let text = DEF
            .replace("[retry]", "recheck_after = [\"3s\", \"1h\"]\n[retry]")
            .replace("\"t", "\"smartsheet");
        Definition::parse(&text, |_| true).unwrap()
    }

    fn found(id: i64) -> Result<StepOutput, StepError> {
        Ok(StepOutput::summary("found").fact("user_id", id))
    }

    fn absent() -> Result<StepOutput, StepError> {
        Ok(StepOutput {
            finish_with: Some(Outcome::Absent),
            ..StepOutput::summary("nobody")
        })
    }

    /// A removal rechecks at each offset from its completion; what the lookups find is on
    /// record, and the workflow stays `completed` / `removed` throughout.
    #[test]
    fn rechecks_follow_a_removal_at_their_offsets_and_never_change_the_outcome() {
        let d = rechecking();
        let trail = drive_with(
            &d,
            vec![
                found(7),
                Ok(StepOutput::summary("gone")),
                absent(),
                found(8),
            ],
        );
        assert_eq!(
            kinds(&trail),
            [
                "created",
                "step_started",
                "step_succeeded",
                "step_started",
                "step_succeeded",
                "completed",
                "rechecked",
                "rechecked"
            ]
        );
        let completed_at = trail[5].0;
        assert_eq!(trail[6].0, completed_at + chrono::Duration::seconds(3));
        assert_eq!(trail[7].0, completed_at + chrono::Duration::hours(1));
        let state = fold(&d, &trail).unwrap();
        assert_eq!(
            (state.status, state.outcome),
            (Status::Completed, Some(Outcome::Removed))
        );
        let found: Vec<_> = state
            .rechecks
            .iter()
            .map(|r| (r.finding.result, r.finding.code))
            .collect();
        assert_eq!(
            found,
            [
                (recheck::RecheckResult::StillGone, None),
                (recheck::RecheckResult::Recreated, Some(Code::Smt113B))
            ]
        );
        assert_eq!(
            (state.wake_at, next(&state, &d, t(999_999))),
            (None, Next::Done)
        );

        // A workflow that found nobody to remove has nothing to recheck.
        let absent_trail = drive_with(&d, vec![absent()]);
        let state = fold(&d, &absent_trail).unwrap();
        assert_eq!(
            (state.outcome, state.wake_at),
            (Some(Outcome::Absent), None)
        );
    }

    #[test]
    fn a_failed_lookup_is_retried_on_the_policy_and_bad_rechecks_are_refused() {
        let d = rechecking();
        let trail = drive_with(
            &d,
            vec![
                found(7),
                Ok(StepOutput::summary("gone")),
                transient(),
                found(7),
                absent(),
            ],
        );
        assert_eq!(
            &kinds(&trail)[6..],
            ["recheck_failed", "rechecked", "rechecked"]
        );
        let state = fold(&d, &trail).unwrap();
        assert_eq!(
            state.rechecks[0].finding.result,
            recheck::RecheckResult::Reactivated
        );
        assert_eq!(state.rechecks[0].finding.code, Some(Code::Smt113B));

        let mut early = trail.clone();
        early[6].0 = trail[5].0 + chrono::Duration::seconds(1);
        assert_eq!(fold(&d, &early).unwrap_err().0, 6);
        let mut forged = trail.clone();
        if let Record::RecheckFailed { retry_at, .. } = &mut forged[6].1 {
            *retry_at += chrono::Duration::seconds(60);
        }
        assert!(fold(&d, &forged).is_err());
        let mut silent = trail.clone();
        if let Record::Rechecked { finding, .. } = &mut silent[7].1 {
            finding.code = None;
        }
        assert_eq!(fold(&d, &silent).unwrap_err().0, 7);
        // The same trail under a definition without rechecks: nothing is due after the end.
        assert_eq!(fold(&def(), &trail).unwrap_err().0, 6);
    }

    /// `offboard-again` names the fresh offboarding's derived event id in the finding, and
    /// a trail is held to what its definition asks: no such id under a report-only one.
    #[test]
    fn offboard_again_names_one_derived_event_per_recheck() {
        let text = rechecking().source.replace(
            "recheck_after",
            "recheck_action = \"offboard-again\"\nrecheck_after",
        );
        let again = Definition::parse(&text, |_| true).unwrap();
        let trail = drive_with(
            &again,
            vec![
                found(7),
                Ok(StepOutput::summary("gone")),
                found(9),
                absent(),
            ],
        );
        let state = fold(&again, &trail).unwrap();
        let asked: Vec<_> = state
            .rechecks
            .iter()
            .map(|r| r.finding.offboarded_again.clone())
            .collect();
        assert_eq!(asked, [Some("e1:recheck-1".to_string()), None]);
        assert_eq!(fold(&rechecking(), &trail).unwrap_err().0, 6);
    }
}
