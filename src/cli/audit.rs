//! `replay`, `retry` and `cancel`: the operator's tools over the audit trail.

use std::time::Duration;

use super::views::describe;
use super::{db, fail, Failure, Outcome, EXIT_MISMATCH, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE};
use crate::domain::machine::State;
use crate::evidence::replay_trail;
use crate::runtime::engine::{Engine, EngineError, Intervened, Intervention};
use crate::store::Store;

/// `offboard replay`.
pub async fn replay(store: &Store, id: &str) -> Outcome {
    let loaded = store
        .load(id)
        .await
        .map_err(db)?
        .ok_or_else(|| fail(EXIT_UNKNOWN, format!("no workflow with id {id:?}")))?;
    let trail = store.trail(id).await.map_err(db)?;
    let report = replay_trail(
        &trail,
        &loaded.row.trail_head,
        &loaded.definition_source,
        &loaded.state,
    );
    let steps: Vec<String> = loaded.state.steps.iter().map(|s| s.name.clone()).collect();
    for row in &trail {
        println!("{}", describe(row, &steps));
    }
    match report.problem {
        None => {
            let s = report.rebuilt.expect("a clean replay rebuilds a state");
            println!(
                "replay OK: {} records, chain intact, rebuilt state matches ({}{})",
                trail.len(),
                s.status.as_str(),
                s.outcome
                    .map(|o| format!(", {}", o.as_str()))
                    .unwrap_or_default()
            );
            Ok(EXIT_OK)
        }
        Some((seq, why)) => {
            println!("replay MISMATCH at record {seq}: {why}");
            Ok(EXIT_MISMATCH)
        }
    }
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
    println!("workflow {id}: retry recorded (by {by}); resuming at the failed step");
    match engine
        .drive_to_rest(id, Duration::from_secs(300))
        .await
        .map_err(db)?
    {
        Some(s) => println!(
            "workflow {id}: {}{}",
            s.status.as_str(),
            s.outcome
                .map(|o| format!(" ({})", o.as_str()))
                .or_else(|| s
                    .error_code
                    .map(|c| format!(" ({c}: {})", s.error_message.clone().unwrap_or_default())))
                .unwrap_or_default()
        ),
        None => println!("workflow {id}: picked up by a running `offboard serve`"),
    }
    Ok(EXIT_OK)
}

/// `offboard cancel`.
pub async fn cancel(engine: &Engine, id: &str, by: &str) -> Outcome {
    if intervened(engine.intervene(id, by, Intervention::Cancel).await, id)?.is_some() {
        println!("workflow {id}: cancelled (by {by})");
        return Ok(EXIT_OK);
    }
    println!("workflow {id}: running elsewhere; asked it to stop at the next step boundary");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let row = engine.store().get(id).await.map_err(db)?;
        if let Some(row) = row.as_ref().filter(|r| r.finished_at.is_some()) {
            println!("workflow {id}: {}", row.state);
            return Ok(EXIT_OK);
        }
        // The worker gave the workflow back without reaching a step boundary (it waits on
        // a timer now): cancel it here.
        if let Ok(Intervened::Done(_)) = engine.intervene(id, by, Intervention::Cancel).await {
            println!("workflow {id}: cancelled (by {by})");
            return Ok(EXIT_OK);
        }
    }
    println!("workflow {id}: the cancel request stands; it takes effect at the next step boundary");
    Ok(EXIT_OK)
}
