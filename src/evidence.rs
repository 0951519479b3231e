//! What the audit trail proves, shared by the command line and the console: the replay
//! verdict of one workflow (chain intact, state rebuilt) and the auditors' evidence rows.
//! Both read only what the store holds; neither calls an app.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::domain::chain::{self, Link};
use crate::domain::machine::{self, Record, State};
use crate::runtime::definitions::stored;
use crate::store::entities::audit;
use crate::store::{Store, StoreError};

/// What replaying a trail found.
pub struct ReplayReport {
    /// The rebuilt state, when the trail could be folded.
    pub rebuilt: Option<State>,
    /// The first bad record (its `seq`) and why, if any.
    pub problem: Option<(i32, String)>,
}

/// Verifies the chain and folds the trail through the state machine; compares the
/// result with `stored`.
pub fn replay_trail(
    trail: &[audit::Model],
    head: &str,
    definition_source: &str,
    stored_state: &State,
) -> ReplayReport {
    let seq_of = |i: usize| trail.get(i).map(|r| r.seq).unwrap_or(0);
    let links: Vec<Link<'_>> = trail
        .iter()
        .map(|r| Link {
            seq: r.seq,
            at: r.at,
            body: &r.body,
            prev_hash: &r.prev_hash,
            hash: &r.hash,
        })
        .collect();
    if let Err((i, why)) = chain::verify(&links, head) {
        return ReplayReport {
            rebuilt: None,
            problem: Some((seq_of(i), why)),
        };
    }
    let def = match stored(definition_source) {
        Ok(d) => d,
        Err(e) => {
            return ReplayReport {
                rebuilt: None,
                problem: Some((0, format!("stored definition: {e}"))),
            }
        }
    };
    let mut records: Vec<(DateTime<Utc>, Record)> = Vec::with_capacity(trail.len());
    for (i, row) in trail.iter().enumerate() {
        match serde_json::from_str::<Record>(&row.body) {
            Ok(r) if r.kind() == row.kind => records.push((row.at, r)),
            Ok(_) => {
                return ReplayReport {
                    rebuilt: None,
                    problem: Some((seq_of(i), "kind column differs from the record".into())),
                }
            }
            Err(e) => {
                return ReplayReport {
                    rebuilt: None,
                    problem: Some((seq_of(i), format!("unreadable record: {e}"))),
                }
            }
        }
    }
    match machine::fold(&def, &records) {
        Err((i, v)) => ReplayReport {
            rebuilt: None,
            problem: Some((seq_of(i), format!("not a legal transition: {v}"))),
        },
        Ok(rebuilt) => {
            let problem = (rebuilt != *stored_state).then(|| {
                (
                    seq_of(trail.len().saturating_sub(1)),
                    "the rebuilt state differs from the stored state".to_string(),
                )
            });
            ReplayReport {
                rebuilt: Some(rebuilt),
                problem,
            }
        }
    }
}

/// Parses `2026-11-20` (midnight UTC) or an RFC 3339 time.
pub fn parse_date(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{raw:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

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

/// The rows for workflows created in [since, until).
pub async fn rows(
    store: &Store,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<Value>, StoreError> {
    let mut out = Vec::new();
    let mut workflows = store.list(None).await?;
    workflows.reverse();
    for row in workflows {
        if row.created_at < since || until.is_some_and(|u| row.created_at >= u) {
            continue;
        }
        let Some(loaded) = store.load(&row.id).await? else {
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

/// The rows as CSV text: a header line of [`COLUMNS`], then one line per row.
pub fn csv(rows: &[Value]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for row in rows {
        let fields: Vec<String> = COLUMNS.iter().map(|c| csv_field(&row[*c])).collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn csv_field(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
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
    }

    #[test]
    fn csv_has_the_header_and_one_line_per_row() {
        let row = json!({"workflow_id": "w1", "person_email": "a@x", "state": "completed"});
        let text = csv(&[row]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert!(lines[1].starts_with("w1,a@x,"), "{}", lines[1]);
        assert_eq!(lines.len(), 2);
    }
}
