//! `retry`, `cancel` and `release`: an operator's interventions, each taken through the
//! workflow's lease and recorded with who asked.

use std::time::Duration;

use super::views::terminal_safe;
use super::{db, fail, Failure, Outcome, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE};
use crate::domain::machine::{State, Status};
use crate::runtime::engine::{Engine, EngineError, Intervened, Intervention};

fn intervened(result: Result<Intervened, EngineError>, id: &str) -> Result<Option<State>, Failure> {
    match result.map_err(db)? {
        Intervened::Done(state) => Ok(Some(*state)),
        Intervened::Requested => Ok(None),
        Intervened::Refused(why) => Err(fail(EXIT_USAGE, format!("workflow {id}: {why}"))),
        Intervened::Unknown => Err(fail(EXIT_UNKNOWN, format!("no workflow with id {id:?}"))),
    }
}

/// `offboard retry`: records who asked, then runs the workflow here until it ends or
/// waits on a long timer.
pub async fn retry(engine: &Engine, id: &str, by: &str) -> Outcome {
    intervened(engine.intervene(id, by, Intervention::Retry).await, id)?;
    let safe_id = terminal_safe(id);
    outln!(
        "workflow {safe_id}: retry recorded (by {}); resuming at the failed step",
        terminal_safe(by)
    );
    match engine
        .drive_to_rest(id, Duration::from_secs(300))
        .await
        .map_err(db)?
    {
        // The error message comes from the app's answer: shown escaped.
        Some(s) => outln!(
            "workflow {safe_id}: {}{}",
            s.status.as_str(),
            s.outcome
                .map(|o| format!(" ({})", o.as_str()))
                .or_else(|| s.error_code.map(|c| format!(
                    " ({c}: {})",
                    terminal_safe(s.error_message.as_deref().unwrap_or_default())
                )))
                .unwrap_or_default()
        ),
        None => outln!("workflow {safe_id}: picked up by a running `offboard serve`"),
    }
    Ok(EXIT_OK)
}

/// `offboard release`: lets held workflows (the given ones, or every one) run; each
/// release is a `released` record naming `by`. A running `offboard serve` picks them up.
pub async fn release(engine: &Engine, ids: Vec<String>, all: bool, by: &str) -> Outcome {
    let ids = if all {
        let held = engine.store().list(Some(Status::Held)).await.map_err(db)?;
        held.into_iter().rev().map(|row| row.id).collect()
    } else {
        ids
    };
    for id in &ids {
        intervened(engine.intervene(id, by, Intervention::Release).await, id)?;
        outln!("workflow {id}: released (by {})", by.escape_debug());
    }
    outln!("{} workflows released", ids.len());
    Ok(EXIT_OK)
}

/// `offboard cancel`: asks once and prints what became of it — `cancelled`, `will stop
/// after the call in flight` (a worker has the request and makes no further write), or
/// `refused: <how it ended>`.
pub async fn cancel(engine: &Engine, id: &str, by: &str) -> Outcome {
    let by_shown = by.escape_debug();
    match engine
        .intervene(id, by, Intervention::Cancel)
        .await
        .map_err(db)?
    {
        Intervened::Done(_) => outln!("workflow {id}: cancelled (by {by_shown})"),
        Intervened::Requested => {
            outln!("workflow {id}: will stop after the call in flight (cancel asked by {by_shown})")
        }
        Intervened::Refused(why) => {
            return Err(fail(EXIT_USAGE, format!("workflow {id}: refused: {why}")))
        }
        Intervened::Unknown => {
            return Err(fail(EXIT_UNKNOWN, format!("no workflow with id {id:?}")))
        }
    }
    Ok(EXIT_OK)
}
