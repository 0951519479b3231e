//! The events offboard publishes when a workflow ends (`workflow.completed`,
//! `workflow.failed`), built here and written to the outbox with the final record.

use serde_json::json;

use crate::domain::machine::{State, Status};
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
    let body = json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "offboard",
        "type": routing_key,
        "time": chrono::Utc::now().to_rfc3339(),
        "datacontenttype": "application/json",
        "data": data,
    });
    Some(OutboxEntry {
        routing_key: routing_key.to_string(),
        body: body.to_string(),
    })
}
