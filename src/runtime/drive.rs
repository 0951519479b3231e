//! The parts of the drive loop every driver shares, so a plan is decided by the same
//! code as a run: what to record at a step boundary ([`boundary`]), and one run of an
//! action with the calls it made ([`run_action`]). The [`super::runner::Runner`] drives
//! a leased workflow with them, committing to the store; [`super::dry_run`] drives a
//! planned one in memory, its client in dry-run mode.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::apps::http::{CallLog, CallRecord};
use crate::apps::{ActionContext, AppClient};
use crate::domain::definition::Definition;
use crate::domain::machine::{self, Next, Record, State, WorkflowRequest};
use crate::domain::step::{StepError, StepOutput};

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
