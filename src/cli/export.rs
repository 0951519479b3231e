//! `offboard evidence`: one row per workflow for auditors — who, which app, on whose
//! request, when asked, when done, how it ended, the entitlements before and after, and
//! how long access outlived the request.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{db, fail, Failure, Outcome, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::evidence::{csv, finished_before, rows};
use crate::store::Store;

/// [`crate::evidence::parse_date`] as a usage error naming the flag.
pub fn parse_date(raw: &str, flag: &str) -> Result<DateTime<Utc>, Failure> {
    crate::evidence::parse_date(raw).map_err(|e| fail(EXIT_USAGE, format!("{flag} {e}")))
}

/// The rows as `csv` or `json` text (for `evidence` and `prune`).
pub fn render(rows: &[Value], format: &str) -> Result<String, Failure> {
    match format {
        "json" => Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(rows).unwrap_or_default()
        )),
        "csv" => Ok(csv(rows)),
        other => Err(fail(
            EXIT_USAGE,
            format!("unknown --format {other:?}: use csv or json"),
        )),
    }
}

/// `offboard evidence`.
pub async fn run(store: &Store, since: &str, until: Option<&str>, format: &str) -> Outcome {
    let since = parse_date(since, "--since")?;
    let until = until.map(|u| parse_date(u, "--until")).transpose()?;
    let rows = rows(store, since, until).await.map_err(db)?;
    out!("{}", render(&rows, format)?);
    Ok(EXIT_OK)
}

/// `offboard prune`: exports the evidence of the finished workflows older than `before`
/// to `file` (synced to disk), then removes them, their trails and old dead letters.
pub async fn prune(store: &Store, before: DateTime<Utc>, file: &std::path::Path) -> Outcome {
    let exported = finished_before(store, before).await.map_err(db)?;
    let format = if file.extension().is_some_and(|e| e == "json") {
        "json"
    } else {
        "csv"
    };
    let text = render(&exported, format)?;
    let written = std::fs::File::create(file).and_then(|mut f| {
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()
    });
    written.map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot write {}: {e}; nothing was removed", file.display()),
        )
    })?;
    let ids: Vec<String> = exported
        .iter()
        .filter_map(|r| r["workflow_id"].as_str().map(str::to_string))
        .collect();
    let pruned = store.prune(&ids, before).await.map_err(db)?;
    outln!(
        "exported {} workflows to {}; removed {} finished before {} and {} dead letters",
        exported.len(),
        file.display(),
        pruned.workflows,
        before.to_rfc3339(),
        pruned.dead_letters,
    );
    for id in &pruned.skipped {
        outln!("skipped workflow {id}: a worker or an operator holds it now (it was exported; prune again later)");
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_accepted() {
        assert_eq!(
            parse_date("2026-11-20", "--since")
                .ok()
                .unwrap()
                .to_rfc3339(),
            "2026-11-20T00:00:00+00:00"
        );
        assert!(parse_date("2026-11-20T17:00:00Z", "--since").is_ok());
        assert!(parse_date("last tuesday", "--since").is_err());
    }
}
