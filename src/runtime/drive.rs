//! The drive loop, one for every driver, so a plan is decided by the same code as a run:
//! [`drive`] walks a workflow — decide at each boundary ([`boundary`]), perform, commit —
//! over an [`Effects`] that says how things happen. The [`super::runner::Runner`] performs
//! through the connection's client and commits to the store under its lease;
//! [`super::dry_run`] performs through a dry-run client and commits to memory. Both run
//! an action the same way ([`run_action`]).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::apps::http::{CallLog, CallRecord};
use crate::apps::{ActionContext, AppClient};
use crate::domain::definition::Definition;
use crate::domain::machine::{self, Next, Record, State, Violation, WorkflowRequest};
use crate::domain::step::{StepError, StepOutput};

/// A record with the time its decision used.
pub(super) type Stamped = (DateTime<Utc>, Record);

/// What the loop does after a commit.
pub(super) enum AfterCommit {
    /// Nothing more now: the drive ends.
    Stop,
    /// Decide again at the same boundary, now (a cancel came back with the commit).
    Decide,
    /// Go on: perform the step the commit started, if any.
    Go,
}

/// How a driver carries out what [`drive`] decides.
pub(super) trait Effects {
    /// Why a drive stops early.
    type Error;
    /// The definition the workflow runs.
    fn def(&self) -> &Definition;
    /// Its state as last committed.
    fn state(&self) -> &State;
    /// Who asked to cancel (while unanswered), and whether the process is stopping.
    fn knows(&self) -> (Option<String>, bool);
    /// The time a decision uses now.
    fn now(&self) -> DateTime<Utc>;
    /// Whether the driver goes on as if a timer due at `wake` had come (a plan skips
    /// `not_before`; its clock moves there) rather than waiting for it (a run ends its
    /// drive there).
    fn skip_to(&mut self, wake: DateTime<Utc>) -> bool;
    /// Whether `step` is performed before its start is committed (it only reads).
    fn batches(&self, step: usize) -> bool;
    /// The error for records the machine refuses.
    fn broken(&self, violation: Violation) -> Self::Error;
    /// Performs one attempt of `step` from `state`, adding its records to `records`;
    /// returns the time its result was decided at, or `None` when the drive ends there.
    async fn perform(
        &mut self,
        state: &State,
        step: usize,
        attempt: u32,
        records: &mut Vec<Stamped>,
    ) -> Result<Option<DateTime<Utc>>, Self::Error>;
    /// Performs recheck `recheck` of a completed workflow, adding its record to `records`;
    /// returns the time it was decided at.
    async fn recheck(
        &mut self,
        state: &State,
        recheck: usize,
        attempt: u32,
        records: &mut Vec<Stamped>,
    ) -> Result<DateTime<Utc>, Self::Error>;
    /// Nothing to do now (a timer not due, an ended workflow).
    async fn rest(&mut self) -> Result<(), Self::Error>;
    /// Commits `records`; `last` when nothing follows them now.
    async fn commit(
        &mut self,
        records: Vec<Stamped>,
        last: bool,
    ) -> Result<AfterCommit, Self::Error>;
}

/// Drives a workflow as far as it can go now, through `effects`: to its end, a timer, a
/// stop of the process, or whatever the effects end it at. `started` is a step attempt
/// whose start is committed already: it is performed first.
///
/// A step that only reads (see [`Effects::batches`]) runs without committing its start
/// first: its records are committed with whatever follows, at the latest with the start
/// of the next step that writes, which is committed before that step runs.
pub(super) async fn drive<E: Effects>(
    effects: &mut E,
    started: Option<(usize, u32)>,
) -> Result<(), E::Error> {
    // Records decided but not committed yet, each with the time its decision used.
    let mut records: Vec<Stamped> = Vec::new();
    let mut at = effects.now();
    if let Some((step, attempt)) = started {
        let state = effects.state().clone();
        let Some(done) = effects.perform(&state, step, attempt, &mut records).await? else {
            return Ok(());
        };
        at = done;
    }
    loop {
        let preview = preview(effects, &records)?;
        let (cancel, stopping) = effects.knows();
        match machine::next(&preview, effects.def(), at) {
            Next::Recheck { recheck, attempt } if !stopping => {
                at = effects
                    .recheck(&preview, recheck, attempt, &mut records)
                    .await?;
                continue;
            }
            Next::Sleep(wake) if effects.skip_to(wake) => {
                at = wake;
                continue;
            }
            _ => {}
        }
        let knows = Circumstances {
            cancel: cancel.as_deref(),
            stopping,
        };
        let (more, start) = boundary(&preview, effects.def(), at, knows);
        records.extend(more.into_iter().map(|r| (at, r)));
        if records.is_empty() {
            return effects.rest().await;
        }
        if let Some((step, attempt)) = start.filter(|(step, _)| effects.batches(*step)) {
            let state = self::preview(effects, &records)?;
            let Some(done) = effects.perform(&state, step, attempt, &mut records).await? else {
                return Ok(());
            };
            at = done;
            continue;
        }
        // Nothing follows this commit now: a run releases its lease as it writes.
        let last = start.is_none() && {
            let after = self::preview(effects, &records)?;
            boundary(&after, effects.def(), at, knows).0.is_empty()
        };
        match effects.commit(std::mem::take(&mut records), last).await? {
            AfterCommit::Stop => return Ok(()),
            AfterCommit::Decide => {
                at = effects.now();
                continue;
            }
            AfterCommit::Go => {}
        }
        at = match start {
            Some((step, attempt)) => {
                let state = effects.state().clone();
                let Some(done) = effects.perform(&state, step, attempt, &mut records).await? else {
                    return Ok(());
                };
                done
            }
            None => effects.now(),
        };
    }
}

/// The state after `records`, not yet committed.
fn preview<E: Effects>(effects: &E, records: &[Stamped]) -> Result<State, E::Error> {
    let mut next = effects.state().clone();
    for (at, record) in records {
        next = machine::apply(&next, effects.def(), record, *at).map_err(|v| effects.broken(v))?;
    }
    Ok(next)
}

/// What the driver knows beyond the state at a boundary.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Circumstances<'a> {
    /// Who asked to cancel the workflow, while the request is unanswered.
    pub cancel: Option<&'a str>,
    /// Whether the process is stopping (no new step starts).
    pub stopping: bool,
}

/// What to record at a step boundary in `state` at `now`, and the step attempt it starts.
///
/// A cancel is honoured at every boundary that makes no write: before a step starts,
/// instead of a retry wait, instead of failing. Once no write is left to stop (the
/// workflow has ended, or only read-only steps such as the final confirmation remain),
/// the workflow runs to its end and the cancel is recorded as refused: `cancelled` never
/// stands for an account that is already gone. A timer not due, or a recheck (which the
/// runner performs before it asks), records nothing.
pub(super) fn boundary(
    state: &State,
    def: &Definition,
    now: DateTime<Utc>,
    knows: Circumstances<'_>,
) -> (Vec<Record>, Option<(usize, u32)>) {
    let refused = || {
        knows
            .cancel
            .map(|by| Record::CancelRefused { by: by.into() })
    };
    if let Some(by) = knows.cancel {
        if !state.status.is_final() && writes_remain(def, state) {
            return (vec![Record::Cancelled { by: by.into() }], None);
        }
    }
    match machine::next(state, def, now) {
        Next::Done => (refused().into_iter().collect(), None),
        // A recheck the drive did not run (the process is stopping): it stays due.
        Next::Sleep(_) | Next::Recheck { .. } => (Vec::new(), None),
        Next::Complete(outcome) => {
            let mut v = vec![Record::Completed { outcome }];
            v.extend(refused());
            (v, None)
        }
        Next::Fail(code, message) => {
            let mut v = vec![Record::Failed { code, message }];
            v.extend(refused());
            (v, None)
        }
        Next::Run { .. } if knows.stopping => (Vec::new(), None),
        Next::Run { step, attempt } => (
            vec![Record::StepStarted { step, attempt }],
            Some((step, attempt)),
        ),
    }
}

/// Whether a step that writes to the app is still ahead of (or at) `state`'s current
/// step.
pub(super) fn writes_remain(def: &Definition, state: &State) -> bool {
    def.steps
        .get(state.current..)
        .unwrap_or_default()
        .iter()
        .any(|step| !crate::apps::reads_only(&step.action))
}

/// Runs `action` through `client` for `request` with `facts` (what earlier steps found);
/// the client's waits between per-call retries end early when `stop` is cancelled.
/// Returns the action's result and the calls it made, in order.
pub(super) async fn run_action(
    client: &AppClient,
    action: &str,
    request: &WorkflowRequest,
    facts: &Map<String, Value>,
    stop: Option<&CancellationToken>,
) -> (Result<StepOutput, StepError>, Vec<CallRecord>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let log = match stop {
        Some(token) => CallLog::new(tx).stopped_by(token.clone()),
        None => CallLog::new(tx),
    };
    let ctx = ActionContext {
        request,
        facts,
        calls: &log,
    };
    let result = client.perform(action, &ctx).await;
    let mut calls = Vec::new();
    while let Ok(call) = rx.try_recv() {
        calls.push(call);
    }
    (result, calls)
}
