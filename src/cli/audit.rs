//! `replay`, `retry` and `cancel`: the operator's tools over the audit trail.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::views::{describe, terminal_safe};
use super::{db, fail, Failure, Outcome, EXIT_MISMATCH, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE};
use crate::domain::machine::{State, Status};
use crate::evidence::{self, Checked};
use crate::runtime::engine::{Engine, EngineError, Intervened, Intervention};
use crate::store::Store;

/// `offboard replay`.
pub async fn replay(store: &Store, id: &str) -> Outcome {
    let checked = evidence::replay(store, id)
        .await
        .map_err(db)?
        .ok_or_else(|| fail(EXIT_UNKNOWN, format!("no workflow with id {id:?}")))?;
    needs_key(store, &checked)?;
    let steps = checked.step_names();
    for row in &checked.trail {
        outln!("{}", describe(row, &steps));
    }
    match checked.report.problem {
        None => {
            let s = checked
                .report
                .rebuilt
                .expect("a clean replay rebuilds a state");
            outln!(
                "replay OK: {} records, chain intact, rebuilt state matches ({}{})",
                checked.trail.len(),
                s.status.as_str(),
                s.outcome
                    .map(|o| format!(", {}", o.as_str()))
                    .unwrap_or_default()
            );
            Ok(EXIT_OK)
        }
        Some((seq, why)) => {
            outln!("replay MISMATCH at record {seq}: {why}");
            Ok(EXIT_MISMATCH)
        }
    }
}

/// Keyed links cannot be vouched for without the key: that is a configuration problem
/// (exit 2), not evidence of tampering.
fn needs_key(store: &Store, checked: &Checked) -> Result<(), Failure> {
    if store.audit_key().is_none() && checked.keyed() {
        return Err(fail(
            EXIT_USAGE,
            format!(
                "the trail is keyed: set {} to check it",
                super::audit_key::ENV
            ),
        ));
    }
    Ok(())
}

/// `offboard verify --all [--since D]`: replays every workflow (created at or after
/// `since`) and prints one line per workflow and a summary an auditor can keep.
pub async fn verify_all(store: &Store, since: Option<DateTime<Utc>>) -> Outcome {
    let (mut intact, mut broken, mut keyed) = (0usize, 0usize, 0usize);
    evidence::verify_each(store, since, |checked| {
        needs_key(store, &checked)?;
        keyed += usize::from(checked.keyed());
        let row = &checked.loaded.row;
        match &checked.report.problem {
            None => {
                intact += 1;
                outln!(
                    "{}  intact  {} records  head {}",
                    row.id,
                    checked.trail.len(),
                    row.trail_head
                );
            }
            Some((seq, why)) => {
                broken += 1;
                outln!("{}  MISMATCH at record {seq}: {why}", row.id);
            }
        }
        Ok::<(), Failure>(())
    })
    .await?;
    outln!(
        "verified {} workflows{} at {}: {intact} intact, {broken} mismatched; {keyed} keyed (HMAC-SHA256), {} plain SHA-256 (written before the audit key)",
        intact + broken,
        since.map(|s| format!(" created since {}", s.to_rfc3339())).unwrap_or_default(),
        Utc::now().to_rfc3339(),
        intact + broken - keyed,
    );
    Ok(if broken == 0 { EXIT_OK } else { EXIT_MISMATCH })
}

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
