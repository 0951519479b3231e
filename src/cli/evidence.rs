//! `offboard evidence`: one row per workflow for auditors — who, which app, on whose
//! request, when asked, when done, how it ended, the entitlements before and after, and
//! how long access outlived the request.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};

use super::{db, fail, Failure, Outcome, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::store::Store;

/// The columns, in order (CSV header and JSON keys).
pub const COLUMNS: [&str; 17] = [
    "workflow_id",
    "person_email",
    "app",
    "connection",
    "event_id",
    "event_type",
    "event_time",
    "requested_by",
    "transfer_to",
    "started_at",
    "finished_at",
    "state",
    "outcome",
    "error_code",
    "entitlements_before",
    "entitlements_after",
    "seconds_to_access_removed",
];

/// Parses `2026-11-20` (midnight UTC) or an RFC 3339 time.
pub fn parse_date(raw: &str, flag: &str) -> Result<DateTime<Utc>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            fail(
                EXIT_USAGE,
                format!("{flag} {raw:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"),
            )
        })
}

/// The rows for workflows created in [since, until).
pub async fn rows(
    store: &Store,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<Value>, Failure> {
    let mut out = Vec::new();
    let mut workflows = store.list(None).await.map_err(db)?;
    workflows.reverse();
    for row in workflows {
        if row.created_at < since || until.is_some_and(|u| row.created_at >= u) {
            continue;
        }
        let Some(loaded) = store.load(&row.id).await.map_err(db)? else {
            continue;
        };
        let state = loaded.state;
        let event_time = state.request.event_time;
        let removed = matches!(row.outcome.as_deref(), Some("removed" | "downgraded"));
        let seconds = match (removed, event_time, row.finished_at) {
            (true, Some(asked), Some(done)) => Some((done - asked).num_seconds()),
            _ => None,
        };
        out.push(json!({
            "workflow_id": row.id,
            "person_email": row.person_email,
            "app": row.app,
            "connection": row.connection,
            "event_id": row.event_id,
            "event_type": row.event_type,
            "event_time": event_time.map(|t| t.to_rfc3339()),
            "requested_by": state.request.source,
            "transfer_to": row.transfer_to,
            "started_at": row.created_at.to_rfc3339(),
            "finished_at": row.finished_at.map(|t| t.to_rfc3339()),
            "state": row.state,
            "outcome": row.outcome,
            "error_code": row.error_code,
            "entitlements_before": state.facts.get("entitlements_before").cloned().unwrap_or(Value::Null),
            "entitlements_after": state.facts.get("entitlements_after").cloned().unwrap_or(Value::Null),
            "seconds_to_access_removed": seconds,
        }));
    }
    Ok(out)
}

/// One CSV cell. Text that a spreadsheet would run as a formula (it begins with `=`, `+`,
/// `-`, `@`, a tab or a carriage return: values from events and app responses can) is
/// defused with a leading `'` and quoted, as OWASP advises for CSV injection; numbers are
/// written as they are.
fn csv_field(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => {
            format!("'{s}")
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.starts_with('\'') || text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// `rows` as a document in `format` (`csv` or `json`).
pub fn render(rows: &[Value], format: &str) -> Result<String, Failure> {
    match format {
        "json" => Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(rows).unwrap_or_default()
        )),
        "csv" => {
            let mut out = format!("{}\n", COLUMNS.join(","));
            for row in rows {
                let fields: Vec<String> = COLUMNS.iter().map(|c| csv_field(&row[*c])).collect();
                out.push_str(&fields.join(","));
                out.push('\n');
            }
            Ok(out)
        }
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
    let rows = rows(store, since, until).await?;
    print!("{}", render(&rows, format)?);
    Ok(EXIT_OK)
}

/// `offboard prune`: writes the evidence of every workflow finished before `before` to
/// `file` (and makes sure it is on disk), then removes those workflows and the dead letters
/// received before `before`. Nothing is removed if the export fails.
pub async fn prune(store: &Store, before: DateTime<Utc>, file: &std::path::Path) -> Outcome {
    let ids: std::collections::HashSet<String> = store
        .list(None)
        .await
        .map_err(db)?
        .into_iter()
        .filter(|w| w.finished_at.is_some_and(|f| f < before))
        .map(|w| w.id)
        .collect();
    let since = DateTime::<Utc>::MIN_UTC;
    let exported: Vec<Value> = rows(store, since, Some(before))
        .await?
        .into_iter()
        .filter(|r| r["workflow_id"].as_str().is_some_and(|id| ids.contains(id)))
        .collect();
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
    let (workflows, dead) = store.prune(&ids, before).await.map_err(db)?;
    println!(
        "exported {} workflows to {}; removed {workflows} finished before {} and {dead} dead letters",
        exported.len(),
        file.display(),
        before.to_rfc3339()
    );
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field(&json!("plain")), "plain");
        assert_eq!(
            csv_field(&json!({"a": 1, "b": "x"})),
            "\"{\"\"a\"\":1,\"\"b\"\":\"\"x\"\"}\""
        );
        assert_eq!(csv_field(&Value::Null), "");
        assert_eq!(csv_field(&json!(42)), "42");
        assert_eq!(csv_field(&json!(-42)), "-42");
    }

    #[test]
    fn cells_a_spreadsheet_would_run_come_out_quoted_and_inert() {
        for (cell, expected) in [
            (
                "=HYPERLINK(\"http://evil.example\",\"x\")",
                "\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\"",
            ),
            ("+1+1", "\"'+1+1\""),
            ("-2+3", "\"'-2+3\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("ada@example.com", "ada@example.com"),
        ] {
            assert_eq!(csv_field(&json!(cell)), expected, "{cell}");
        }
    }

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
