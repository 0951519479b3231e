//! `replay` and `verify`: a trail rebuilt from its records alone and checked against
//! what is stored, for one workflow or all of them.

use chrono::{DateTime, Utc};

use super::views::describe;
use super::{db, fail, Failure, Outcome, EXIT_MISMATCH, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE};
use crate::evidence::{self, Checked};
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
    match checked.report.verdict(checked.trail.len()) {
        Ok(verdict) => {
            outln!("replay OK: {verdict}");
            Ok(EXIT_OK)
        }
        Err(problem) => {
            outln!("replay MISMATCH {problem}");
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
