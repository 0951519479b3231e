//! `list`, `show` and `history`: a workflow and its trail for people and for machines.

use serde_json::{json, Value};

use super::{db, fail, Failure, Outcome, EXIT_OK, EXIT_UNKNOWN};
use crate::domain::describe::{self, Description};
use crate::domain::machine::{Record, State, Status};
use crate::store::entities::{audit, workflow};
use crate::store::Store;

/// Text from events and app responses made safe for a terminal: control characters (ESC,
/// CR, LF, BEL…) are shown escaped (`\u{1b}`), so no value can move the cursor, recolour,
/// retitle the window or fake a line of output.
pub fn terminal_safe(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `outln!` for lines that carry outside values: each line goes through
/// [`terminal_safe`].
macro_rules! say {
    ($($arg:tt)*) => {
        outln!("{}", terminal_safe(&format!($($arg)*)))
    };
}

/// The contract's JSON object for a workflow (with `steps` when `state` is given).
pub fn workflow_json(row: &workflow::Model, state: Option<&State>) -> Value {
    let mut v = json!({
        "id": row.id,
        "event_id": row.event_id,
        "connection": row.connection,
        "app": row.app,
        "type": row.event_type,
        "person_email": row.person_email,
        "transfer_to": row.transfer_to,
        "state": row.state,
        "outcome": row.outcome,
        "error_code": row.error_code,
        "error_message": row.error_message,
        "created_at": row.created_at.to_rfc3339(),
        "updated_at": row.updated_at.to_rfc3339(),
        "finished_at": row.finished_at.map(|t| t.to_rfc3339()),
        "wake_at": row.wake_at.map(|t| t.to_rfc3339()),
    });
    if let Some(state) = state {
        v["definition"] = json!(state.definition);
        v["steps"] = state
            .steps
            .iter()
            .map(|s| json!({ "name": s.name, "state": s.state, "attempts": s.attempts, "error_code": s.error_code }))
            .collect();
        v["facts"] = Value::Object(state.facts.clone());
        v["rechecks"] = state
            .rechecks
            .iter()
            .map(|r| json!({ "at": r.at.to_rfc3339(), "result": r.finding.result, "code": r.finding.code, "user_id": r.finding.user_id, "entitlements": r.finding.entitlements, "summary": r.finding.summary }))
            .collect();
    }
    v
}

/// `offboard list`.
pub async fn list(store: &Store, state: Option<Status>, as_json: bool) -> Outcome {
    let rows = store.list(state).await.map_err(db)?;
    if as_json {
        let all: Vec<Value> = rows.iter().map(|r| workflow_json(r, None)).collect();
        outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    if rows.is_empty() {
        say!("no workflows");
    }
    for r in &rows {
        let result = r
            .outcome
            .clone()
            .or_else(|| r.error_code.clone())
            .unwrap_or_default();
        say!(
            "{}  {:<9} {:<10} {:<11} {:<25} {:<30} {}",
            r.id,
            r.state,
            r.app,
            result,
            r.event_type,
            r.person_email,
            r.event_id
        );
    }
    Ok(EXIT_OK)
}

async fn load(store: &Store, id: &str) -> Result<(workflow::Model, State), Failure> {
    let loaded = store
        .load(id)
        .await
        .map_err(db)?
        .ok_or_else(|| fail(EXIT_UNKNOWN, format!("no workflow with id {id:?}")))?;
    Ok((loaded.row, loaded.state))
}

/// `offboard show`.
pub async fn show(store: &Store, id: &str, as_json: bool) -> Outcome {
    let (row, state) = load(store, id).await?;
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&workflow_json(&row, Some(&state))).unwrap_or_default()
        );
        return Ok(EXIT_OK);
    }
    say!("workflow   {}", row.id);
    say!("event      {} ({})", row.event_id, row.event_type);
    say!("person     {}", row.person_email);
    if let Some(t) = &row.transfer_to {
        say!("recipient  {t}");
    }
    say!("connection {} ({})", row.connection, row.app);
    say!(
        "definition {} v{} {}",
        state.definition.name,
        state.definition.version,
        &state.definition.hash[..12]
    );
    say!("state      {}", row.state);
    if let Some(o) = &row.outcome {
        say!("outcome    {o}");
    }
    if let Some(c) = &row.error_code {
        say!(
            "error      {c}: {}",
            row.error_message.as_deref().unwrap_or("")
        );
        say!("           run `offboard explain {c}` for the remedy");
    }
    if let Some(w) = row.wake_at {
        let label = if state.recheck_pending() {
            "next check"
        } else {
            "next try  "
        };
        say!("{label} {}", w.to_rfc3339());
    }
    for (i, r) in state.rechecks.iter().enumerate() {
        let found = describe::recheck_finding(i, &r.finding);
        let code = found.code.map(|c| format!("  [{c}]")).unwrap_or_default();
        say!(
            "rechecked  {} {}{code}",
            describe::moment(r.at),
            found.summary
        );
    }
    say!("steps:");
    for s in &state.steps {
        let err = s.error_code.map(|c| format!("  {c}")).unwrap_or_default();
        say!(
            "  {:<18} {:<10} attempts {}{err}",
            s.name,
            s.state.as_str(),
            s.attempts
        );
    }
    Ok(EXIT_OK)
}

/// One trail record as a line for people: position, time, step, what happened, code
/// (the words are [`describe::describe`]'s, shared with the console's timeline).
pub fn describe(row: &audit::Model, steps: &[String]) -> String {
    let described = match serde_json::from_str::<Record>(&row.body) {
        Ok(record) => describe::describe(&record, row.at, steps),
        Err(_) => Description::unreadable(),
    };
    let code = described
        .code
        .map(|c| format!("  [{c}]"))
        .unwrap_or_default();
    let line = format!(
        "{:>3} {}  {:<17} {}{code}",
        row.seq,
        describe::moment(row.at),
        described.step.unwrap_or_default(),
        described.summary,
    );
    terminal_safe(&line)
}

/// `offboard history`.
pub async fn history(store: &Store, id: &str, as_json: bool) -> Outcome {
    let (_, state) = load(store, id).await?;
    let trail = store.trail(id).await.map_err(db)?;
    if as_json {
        let all: Vec<Value> = trail
            .iter()
            .map(|r| {
                json!({
                    "seq": r.seq, "at": r.at.to_rfc3339(), "kind": r.kind, "step": r.step,
                    "record": serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null),
                    "prev_hash": r.prev_hash, "hash": r.hash,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    let steps: Vec<String> = state.steps.iter().map(|s| s.name.clone()).collect();
    for row in &trail {
        outln!("{}", describe(row, &steps));
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_values_cannot_reach_the_terminal_raw() {
        for (raw, shown) in [
            ("ada@example.com", "ada@example.com"),
            (
                "\u{1b}[2J\u{1b}]0;owned\u{7}",
                "\\u{1b}[2J\\u{1b}]0;owned\\u{7}",
            ),
            (
                "id\r\n2026-11-23 INFO forged",
                "id\\r\\n2026-11-23 INFO forged",
            ),
        ] {
            assert_eq!(terminal_safe(raw), shown);
            assert!(!terminal_safe(raw).chars().any(char::is_control));
        }
    }

    fn row(seq: i32, record: &Record) -> audit::Model {
        audit::Model {
            id: 1,
            workflow_id: "wf".into(),
            seq,
            at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            kind: record.kind().into(),
            step: record.step().map(|s| s as i32),
            body: serde_json::to_string(record).unwrap(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_history_line_lays_out_the_shared_description() {
        let failed = Record::Failed {
            code: crate::codes::Code::Smt110B,
            message: "recipient \u{1b}[2J missing".into(),
        };
        let line = describe(&row(7, &failed), &[]);
        assert_eq!(
            line,
            "  7 2026-09-21 14:13:20.000                    failed: recipient \\u{1b}[2J missing  [SMT-110-B]"
        );
        let mut unreadable = row(8, &failed);
        unreadable.body = "{".into();
        assert!(describe(&unreadable, &[]).ends_with("unreadable record"));
    }
}
