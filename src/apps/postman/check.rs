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
    if !me.in_team() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::transport::Transported;
    use crate::config::{AppKind, ConnectionConfig, Secret};
    use offboard_simulators::postman::{Fault, FaultKind, PostmanSim};

    fn client(sim: &PostmanSim, key: &str, scim_key: &str) -> Client {
        let config = ConnectionConfig {
            timeout_secs: 2,
            ..ConnectionConfig::new(AppKind::Postman, sim.base_url(), "UNUSED", 60_000)
        };
        Client::with_keys(&config, Secret::new(key), Secret::new(scim_key))
            .unwrap()
            // One call, one answer: these tests are about how each answer is read.
            .with_call_retry(crate::apps::retry::CallRetry::never())
    }

    async fn check_with(setup: impl FnOnce(&PostmanSim)) -> CheckReport {
        let sim = PostmanSim::start().await.unwrap();
        let seed = sim.seed_demo();
        setup(&sim);
        run(&client(&sim, &seed.api_key, &seed.scim_key)).await
    }

    fn code(report: &CheckReport) -> Option<Code> {
        report.problem.as_ref().map(|(c, _)| *c)
    }

    #[tokio::test]
    async fn a_working_enterprise_team_passes() {
        let report = check_with(|_| {}).await;
        assert_eq!(
            report,
            CheckReport {
                problem: None,
                warnings: Vec::new()
            }
        );
    }

    #[tokio::test]
    async fn no_enterprise_plan_is_only_a_warning() {
        let report = check_with(|sim| sim.set_enterprise(false)).await;
        assert_eq!(report.problem, None);
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].0, Code::Post105A);
    }

    type Setup = Box<dyn FnOnce(&PostmanSim)>;

    #[tokio::test]
    async fn each_problem_gets_its_code() {
        let cases: Vec<(Setup, Code)> = vec![
            (Box::new(|sim| sim.set_users_access(false)), Code::Post101A),
            (Box::new(|sim| sim.set_scim_enabled(false)), Code::Post101A),
            (
                Box::new(|sim| sim.set_workspaces_access(false)),
                Code::Post102A,
            ),
            (Box::new(|sim| sim.set_roles_access(false)), Code::Post103A),
            (
                Box::new(|sim| sim.set_audit_logs_access(false)),
                Code::Post104A,
            ),
            (Box::new(|sim| sim.set_team_deleted(true)), Code::Post106A),
            (
                Box::new(|sim| sim.expire_api_key("demo-key")),
                Code::Post100B,
            ),
            (
                Box::new(|sim| sim.revoke_api_key("demo-key")),
                Code::Post100B,
            ),
            (
                Box::new(|sim| sim.revoke_scim_key("demo-key")),
                Code::Post100B,
            ),
            (Box::new(|sim| sim.set_rate_limit(Some(2))), Code::Post190B),
            (
                Box::new(|sim| sim.inject(Fault::new("/me", FaultKind::DropConnection))),
                Code::Post190B,
            ),
        ];
        for (setup, want) in cases {
            let report = check_with(setup).await;
            assert_eq!(code(&report), Some(want), "{report:?}");
        }
    }

    #[tokio::test]
    async fn wrong_keys_are_post_100_a() {
        let sim = PostmanSim::start().await.unwrap();
        let seed = sim.seed_demo();
        let report = run(&client(&sim, "PMAK-wrong", &seed.scim_key)).await;
        assert_eq!(code(&report), Some(Code::Post100A));
        let report = run(&client(&sim, &seed.api_key, "wrong-scim-key")).await;
        assert_eq!(code(&report), Some(Code::Post100A));
        let (_, text) = report.problem.unwrap();
        assert!(text.contains("SCIM"), "{text}");
        assert!(!text.contains("wrong-scim-key"), "{text}");
    }
}
