//! The events offboard publishes when a workflow ends (`workflow.completed`,
//! `workflow.failed`) and when a recheck after the end finds access back
//! (`workflow.access_reappeared`), built here and written to the outbox with the record
//! that says so.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::domain::machine::{Record, State, Status};
use crate::store::OutboxEntry;

/// The outbox entry for a workflow that just ended, or `None` if it has not (or was
/// cancelled, which an operator did on purpose and needs no notice).
pub fn completion(id: &str, state: &State) -> Option<OutboxEntry> {
    let r = &state.request;
    let (routing_key, data) = match state.status {
        Status::Completed => (
            "workflow.completed",
            json!({
                "workflow_id": id, "event_id": r.event_id, "connection": r.connection,
                "person_email": r.person_email, "outcome": state.outcome.map(|o| o.as_str()),
            }),
        ),
        Status::Failed => (
            "workflow.failed",
            json!({
                "workflow_id": id, "event_id": r.event_id, "connection": r.connection,
                "person_email": r.person_email, "error_code": state.error_code,
                "error_message": state.error_message,
            }),
        ),
        _ => return None,
    };
    Some(entry(routing_key, data))
}

/// The outbox entry for a recheck among `records` that found access back (it has a
/// code), or `None`. The workflow's own outcome is unchanged and sent again as it stands.
pub fn reappeared(
    id: &str,
    state: &State,
    records: &[(DateTime<Utc>, Record)],
) -> Option<OutboxEntry> {
    let (at, recheck, finding) = records.iter().find_map(|(at, r)| match r {
        Record::Rechecked { recheck, finding } if finding.code.is_some() => {
            Some((at, recheck, finding))
        }
        _ => None,
    })?;
    let r = &state.request;
    let data = json!({
        "workflow_id": id, "event_id": r.event_id, "connection": r.connection,
        "person_email": r.person_email, "outcome": state.outcome.map(|o| o.as_str()),
        "code": finding.code, "result": finding.result.as_str(), "recheck": recheck,
        "rechecked_at": at.to_rfc3339(), "user_id": finding.user_id,
        "scim_id": finding.scim_id, "entitlements": finding.entitlements,
    });
    Some(entry("workflow.access_reappeared", data))
}

/// A CloudEvent of `routing_key` carrying `data`, ready for the outbox.
fn entry(routing_key: &str, data: Value) -> OutboxEntry {
    let body = json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "offboard",
        "type": routing_key,
        "time": chrono::Utc::now().to_rfc3339(),
        "datacontenttype": "application/json",
        "data": data,
    });
    OutboxEntry {
        routing_key: routing_key.to_string(),
        body: body.to_string(),
    }
}
