//! `offboard check` for Postman: the API key works and belongs to a team that still
//! exists (POST-100-A/-B, POST-106-A), team members can be listed (POST-101-A), the SCIM
//! key is accepted (POST-100-A) and SCIM allowed (POST-101-A), workspaces can be listed
//! (POST-102-A), workspace roles read (POST-103-A), and audit logs read (POST-104-A). A
//! team without the Enterprise plan only gets the POST-105-A warning: offboarding works
//! without audit-log evidence. Postman unreachable or rate-limited: POST-190-B.

use super::client::{ApiError, Client};
use super::errors::{check_code, Area};
use crate::apps::http::CallLog;
use crate::apps::CheckReport;
use crate::codes::Code;

type Problem = (Code, String);

fn problem(err: &ApiError, area: Area, what: &str) -> Problem {
    (check_code(err, area), format!("{what}: {}", err.describe()))
}

/// Runs the check; the first problem found is reported, warnings are collected.
pub async fn run(client: &Client) -> CheckReport {
    let mut warnings = Vec::new();
    let problem = probe(client, &mut warnings).await.err();
    CheckReport { problem, warnings }
}

async fn probe(client: &Client, warnings: &mut Vec<Problem>) -> Result<(), Problem> {
    let log = CallLog::discard();
    let me = client
        .me(&log)
        .await
        .map_err(|e| problem(&e, Area::Users, "GET /me"))?;
    if me.team_id.is_none() {
        return Err((
            Code::Post106A,
            format!(
                "the API key belongs to {}, who is not in any Postman team",
                me.email
            ),
        ));
    }
    client
        .list_members(&log)
        .await
        .map_err(|e| problem(&e, Area::Users, "GET /users"))?;
    client.probe_scim(&log).await.map_err(|e| {
        let (code, text) = problem(&e, Area::Users, "GET /scim/v2/Users");
        (
            code,
            format!("{text} (SCIM calls send {})", client.scim_key_source()),
        )
    })?;
    let workspaces = client
        .probe_workspaces(&log)
        .await
        .map_err(|e| problem(&e, Area::Workspaces, "GET /workspaces"))?;
    client
        .probe_role_kinds(&log)
        .await
        .map_err(|e| problem(&e, Area::Roles, "GET /workspaces-roles"))?;
    if let Some(w) = workspaces.iter().find(|w| w.has_roles()) {
        client
            .workspace_roles(&w.id, &log)
            .await
            .map_err(|e| problem(&e, Area::Roles, &format!("GET /workspaces/{}/roles", w.id)))?;
    }
    if let Err(e) = client.probe_audit_logs(&log).await {
        let found = problem(&e, Area::AuditLogs, "GET /audit/logs");
        if found.0 != Code::Post105A {
            return Err(found);
        }
        warnings.push(found);
    }
    Ok(())
}
