//! Issue 10: the connectors behave as the apps document, not as our simulators used to
//! say. One test per point the issue lists: Postman's `teamId: 0`, the plan warning at
//! `serve` start-up, a deactivated only Admin, Smartsheet's group reassignment and
//! "already removed", the PENDING and 1022 rules of a removal, and how each app matches
//! mixed-case emails. (Per-call retries: `connector_retry.rs`; contract tests against the
//! OpenAPI documents: `connector_contract.rs`.)

mod apps_support;
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use apps_support::{connection, request, Steps};
use offboard::apps::AppClient;
use offboard::codes::Code;
use offboard::config::{AppKind, Secret};
use offboard::domain::event::EventType;
use offboard_simulators::postman::{Fault as PmFault, FaultKind as PmFaultKind};
use offboard_simulators::smartsheet::{Fault, FaultKind, SimUser};
use serde_json::{json, Value};
use support::*;

const OFFBOARDING: &str = "offboarding.requested";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `GET /me` as Postman documents it for a user in no team: `teamId: 0`.
fn me_without_team(team: &Team) -> Value {
    let admin = team.sim.member(team.seed.admin_id).unwrap();
    json!({"user": {
        "id": admin.id, "username": admin.username, "email": admin.email,
        "fullName": admin.name, "avatar": null, "isPublic": false, "emailVerified": true,
        "teamId": 0, "roles": ["user"],
    }})
}

/// `offboard.toml` with a SQLite database in `dir`, unique broker names, one Postman
/// connection reading its key from [`POSTMAN_TOKEN_ENV`].
fn postman_toml(dir: &Path, url: &str) -> PathBuf {
    let u = unique();
    let text = format!(
        "database_url = \"sqlite://{}/offboard.db?mode=rwc\"\namqp_url = \"{AMQP_URL}\"\n\
         [amqp]\nexchange = \"offboard.t.{u}\"\nqueue = \"offboard.t.{u}.requests\"\n\
         dead_letter_exchange = \"offboard.t.{u}.dlx\"\ndead_letter_queue = \"offboard.t.{u}.dead\"\n\
         [connections.postman]\napp = \"postman\"\nbase_url = \"{url}\"\n\
         token_env = \"{POSTMAN_TOKEN_ENV}\"\nrequests_per_minute = 6000\ntimeout_secs = 5\n",
        dir.display()
    );
    let path = dir.join("offboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn offboard_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offboard"));
    cmd.args(args)
        .env("OFFBOARD_AUDIT_KEY", support::AUDIT_KEY)
        .env_remove("OFFBOARD_CONFIG")
        .env_remove("OFFBOARD_DATABASE_URL")
        .env_remove("OFFBOARD_AMQP_URL")
        .env_remove("RUST_LOG")
        .env_remove(format!("{POSTMAN_TOKEN_ENV}_SCIM"))
        .env(POSTMAN_TOKEN_ENV, POSTMAN_KEY);
    cmd
}

/// Runs `offboard` off the async workers (the simulators keep answering meanwhile).
async fn offboard(args: &[&str]) -> (i32, String, String) {
    run_to_end(offboard_cmd(args)).await
}

/// Runs one Postman workflow for the seeded leaver to its end; returns its row and facts.
async fn run_postman(
    team: &Team,
    kind: &str,
    email: &str,
    transfer_to: Option<&str>,
) -> (offboard::store::entities::workflow::Model, Value) {
    let (url, _db) = fresh_database(Db::Sqlite).await;
    let engine = postman_engine(
        postman_config(&url, amqp_names(), &team.sim.base_url()),
        POSTMAN_KEY,
    )
    .await;
    let id = format!("ev-{}", unique());
    let body = event(&id, kind, email, transfer_to);
    let request = offboard::domain::event::parse(&body, &["postman".into()]).unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    engine
        .run_until_settled(Duration::from_secs(60))
        .await
        .unwrap();
    let wf = engine.store().by_event(&id).await.unwrap().remove(0);
    let state = engine.store().load(&wf.id).await.unwrap().unwrap().state;
    (wf, Value::Object(state.facts))
}

fn smartsheet_steps(org: &Org, email: &str, transfer_to: Option<&str>) -> Steps {
    let conn = connection(AppKind::Smartsheet, &org.sim.base_url());
    Steps::new(
        AppClient::new(&conn, Secret::new(TOKEN)).unwrap(),
        request("smartsheet", EventType::Offboarding, email, transfer_to),
    )
}

// ---------------------------------------------------------------------------
// Postman: a team that is gone
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_key_whose_me_says_team_id_0() {
    let team = postman_team().await;
    // Every other endpoint still answers: only `/me` tells.
    team.sim.inject(
        PmFault::new(
            "/me",
            PmFaultKind::Reply {
                status: 200,
                body: me_without_team(&team),
            },
        )
        .times(100),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = postman_toml(dir.path(), &team.sim.base_url());
    let (code, out, err) = offboard(&["check", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.starts_with("postman: POST-106-A "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_deleted_during_the_run_ends_post_106_b() {
    let team = postman_team().await;
    let s = team.seed.clone();
    // The team disappears just as the account is being deactivated: SCIM answers
    // Postman's documented 400 and `/me` then says `teamId: 0`.
    team.sim
        .inject(PmFault::new("/scim/v2/Users/", PmFaultKind::DeleteTeam).method("PATCH"));
    let (wf, _) = run_postman(
        &team,
        OFFBOARDING,
        &s.leaver_email,
        Some(&s.recipient_email),
    )
    .await;
    assert_eq!(
        (wf.state.as_str(), wf.error_code.as_deref()),
        ("failed", Some("POST-106-B")),
        "{:?}",
        wf.error_message
    );
    let patch = team
        .sim
        .calls()
        .into_iter()
        .find(|c| c.method == "PATCH" && c.path.starts_with("/scim/"))
        .unwrap();
    assert_eq!(patch.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_then_team_id_0_is_post_106_b() {
    let team = postman_team().await;
    let s = team.seed.clone();
    let forbidden = json!({"error": {"name": "forbiddenError", "message": "You do not have enough permissions to perform this action."}});
    team.sim.inject(
        PmFault::new(
            "/workspaces/",
            PmFaultKind::Reply {
                status: 403,
                body: forbidden,
            },
        )
        .method("PATCH"),
    );
    team.sim.inject(
        PmFault::new(
            "/me",
            PmFaultKind::Reply {
                status: 200,
                body: me_without_team(&team),
            },
        )
        .times(100),
    );
    let (wf, _) = run_postman(
        &team,
        OFFBOARDING,
        &s.leaver_email,
        Some(&s.recipient_email),
    )
    .await;
    assert_eq!(
        (wf.state.as_str(), wf.error_code.as_deref()),
        ("failed", Some("POST-106-B")),
        "{:?}",
        wf.error_message
    );
}

// ---------------------------------------------------------------------------
// Postman: the plan warning at start-up
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_at_start_up_as_check_does() {
    let team = postman_team().await;
    team.sim.set_enterprise(false);
    let dir = tempfile::tempdir().unwrap();
    let config = postman_toml(dir.path(), &team.sim.base_url());
    let config = config.to_str().unwrap().to_string();

    let (code, out, _) = offboard(&["check", "--config", &config]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning POST-105-A"), "{out}");

    let mut child = offboard_cmd(&["serve", "--config", &config])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read the log until the check's verdict on the connection, or give up after 60 s.
    let reader = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("POST-105-A");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let seen = tokio::time::timeout(Duration::from_secs(60), reader).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let seen = seen.expect("serve logged its connection check").unwrap();
    let warning = seen.last().unwrap();
    assert!(
        warning.contains("POST-105-A") && warning.contains("postman"),
        "{seen:#?}"
    );
}

// ---------------------------------------------------------------------------
// Postman: a deactivated member who is still the only Admin
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_only_admin_still_hands_workspaces_over() {
    let team = postman_team().await;
    let s = team.seed.clone();
    team.sim.update_member(s.leaver_id, |m| m.active = false);
    let (wf, facts) = run_postman(
        &team,
        OFFBOARDING,
        &s.leaver_email,
        Some(&s.recipient_email),
    )
    .await;
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("removed")),
        "{:?}",
        wf.error_message
    );
    for ws in &s.leaver_sole_admin_workspaces {
        assert_eq!(
            team.sim.workspace_role(ws, s.recipient_id).as_deref(),
            Some("3"),
            "{ws}"
        );
    }
    assert_eq!(facts["workspaces_handed_over"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_recipient_the_outcome_says_which_workspaces_lack_an_admin() {
    let team = postman_team().await;
    let s = team.seed.clone();
    team.sim.update_member(s.leaver_id, |m| m.active = false);
    let (wf, facts) = run_postman(&team, OFFBOARDING, &s.leaver_email, None).await;
    assert_eq!(wf.outcome.as_deref(), Some("absent"));
    let orphaned: Vec<&str> = facts["orphaned_workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(orphaned, s.leaver_sole_admin_workspaces);
    assert!(team.sim.calls().iter().all(|c| c.method == "GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_co_admin_does_not_count_as_an_admin() {
    // The leaver shares Admin of a workspace with someone deactivated long ago: the
    // workspace still needs the recipient, and the leaver's Admin role is not taken
    // away until it has them.
    let team = postman_team().await;
    let s = team.seed.clone();
    let gone = team
        .sim
        .add_member(offboard_simulators::postman::SimMember::new(
            "old.admin@northwind.example",
        ));
    team.sim.update_member(gone, |m| m.active = false);
    let payments = &s.leaver_sole_admin_workspaces[0];
    team.sim.set_workspace_role(payments, gone, Some("3"));
    let (wf, _) = run_postman(
        &team,
        OFFBOARDING,
        &s.leaver_email,
        Some(&s.recipient_email),
    )
    .await;
    assert_eq!(
        wf.outcome.as_deref(),
        Some("removed"),
        "{:?}",
        wf.error_message
    );
    assert_eq!(
        team.sim.workspace_role(payments, s.recipient_id).as_deref(),
        Some("3")
    );
}

// ---------------------------------------------------------------------------
// Smartsheet: group reassignment and "already removed"
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_groups_the_leaver_still_owns_are_reassigned() {
    let org = org().await;
    let mut steps = smartsheet_steps(&org, LEAVER, Some(RECIPIENT));
    for action in [
        "smartsheet.find_user",
        "smartsheet.list_groups",
        "smartsheet.check_recipient",
    ] {
        steps.run(action).await.unwrap();
    }
    // Between the listing and the reassignment, the admin takes one group over.
    let taken = org.leaver_groups[0];
    let status = reqwest::Client::new()
        .put(format!("{}/groups/{taken}", org.sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"ownerId": org.admin}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let out = steps.run("smartsheet.reassign_groups").await.unwrap();
    assert_eq!(org.sim.group(taken).unwrap().owner_id, org.admin);
    assert_eq!(
        org.sim.group(org.leaver_groups[1]).unwrap().owner_id,
        org.recipient
    );
    assert_eq!(out.facts["groups_not_reassigned"][0]["id"], taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_user_not_found_counts_as_already_removed() {
    // A 404 that is not Smartsheet's "User not found" (1020), e.g. a proxy's page or a
    // wrong base URL (1006 "Not Found"), proves nothing: the step fails.
    let org = org().await;
    let mut steps = smartsheet_steps(&org, RECLAIM, None);
    for action in ["smartsheet.find_user", "smartsheet.list_groups"] {
        steps.run(action).await.unwrap();
    }
    let not_found = FaultKind::Error {
        status: 404,
        error_code: 1006,
        retry_after_secs: None,
    };
    org.sim
        .inject(Fault::new("/users/", not_found.clone()).method("DELETE"));
    let err = steps.run("smartsheet.remove_user").await.unwrap_err();
    assert_eq!(err.code, Code::Smt199B, "{err:?}");
    assert!(org.sim.user(org.reclaim).is_some());
    org.sim
        .inject(Fault::new("/users/", not_found).method("GET"));
    let err = steps.run("smartsheet.confirm_removed").await.unwrap_err();
    assert_eq!(err.code, Code::Smt199B, "{err:?}");

    // Smartsheet's own 404/1020 does count: removed behind our back.
    let status = reqwest::Client::new()
        .delete(format!("{}/users/{}", org.sim.base_url(), org.reclaim))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    steps.run("smartsheet.remove_user").await.unwrap();
    steps.run("smartsheet.confirm_removed").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_user_is_removed_without_a_transfer() {
    let org = org().await;
    let pending = org.sim.add_user(SimUser {
        status: "PENDING".into(),
        ..SimUser::new("invited@example.com")
    });
    let mut steps = smartsheet_steps(&org, "invited@example.com", Some(RECIPIENT));
    for action in [
        "smartsheet.find_user",
        "smartsheet.list_groups",
        "smartsheet.check_recipient",
        "smartsheet.reassign_groups",
        "smartsheet.revoke_licenses",
        "smartsheet.remove_user",
        "smartsheet.confirm_removed",
    ] {
        steps
            .run(action)
            .await
            .unwrap_or_else(|e| panic!("{action}: {e:?}"));
    }
    assert!(org.sim.user(pending).is_none());
    let delete = org
        .sim
        .calls()
        .into_iter()
        .find(|c| c.method == "DELETE")
        .unwrap();
    assert!(!delete.query.contains("transferTo"), "{}", delete.query);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_applies_the_documented_removal_rules() {
    let org = org().await;
    let http = reqwest::Client::new();
    let delete = |query: String| {
        let http = http.clone();
        let url = format!("{}/users/{query}", org.sim.base_url());
        async move {
            let r = http.delete(url).bearer_auth(TOKEN).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["errorCode"].as_i64().unwrap_or(0))
        }
    };
    let pending = org.sim.add_user(SimUser {
        status: "PENDING".into(),
        ..SimUser::new("pending@example.com")
    });
    let outsider = org.sim.add_user(SimUser {
        other_account: true,
        ..SimUser::new("outsider@elsewhere.example")
    });
    let (leaver, recipient) = (org.leaver, org.recipient);
    let cases = [
        (format!("{leaver}?transferTo={leaver}"), (400, 1018)),
        (format!("{leaver}?transferTo=42"), (400, 1019)),
        (format!("{leaver}?transferTo={outsider}"), (403, 1021)),
        (format!("{leaver}?transferTo={}", org.reclaim), (400, 1107)),
        (format!("{leaver}"), (400, 1121)),
        (format!("{leaver}?transferTo={pending}"), (400, 1018)),
        (format!("{pending}?transferTo={recipient}"), (400, 1032)),
        (format!("{outsider}"), (403, 1022)),
        ("77".to_string(), (404, 1020)),
    ];
    for (query, expected) in cases {
        assert_eq!(delete(query.clone()).await, expected, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_another_account_is_not_a_permission_problem() {
    let org = org().await;
    org.sim.update_user(org.reclaim, |u| u.other_account = true);
    let mut steps = smartsheet_steps(&org, RECLAIM, None);
    for action in ["smartsheet.find_user", "smartsheet.list_groups"] {
        steps.run(action).await.unwrap();
    }
    let err = steps.run("smartsheet.remove_user").await.unwrap_err();
    assert_eq!(err.code, Code::Smt199B, "{err:?}");
    assert!(err.message.contains("1022"), "{}", err.message);
}

// ---------------------------------------------------------------------------
// Mixed-case emails
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smartsheet_finds_a_mixed_case_email_even_with_a_case_sensitive_filter() {
    let org = org().await;
    org.sim.set_email_filter_case_sensitive(true);
    let mut steps = smartsheet_steps(&org, "Ada@Example.COM", None);
    let out = steps.run("smartsheet.find_user").await.unwrap();
    assert_eq!(out.finish_with, None, "{}", out.summary);
    assert_eq!(out.facts["user_id"], org.leaver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postman_offboards_a_mixed_case_email() {
    // `GET /users` is matched without case; SCIM's `userName eq` (case-sensitive, as
    // Postman documents) is then asked with Postman's own spelling.
    let team = postman_team().await;
    let s = team.seed.clone();
    let shouted = s.leaver_email.to_uppercase();
    let (wf, _) = run_postman(&team, OFFBOARDING, &shouted, Some(&s.recipient_email)).await;
    assert_eq!(
        wf.outcome.as_deref(),
        Some("removed"),
        "{:?}",
        wf.error_message
    );
    assert!(!team.sim.member(s.leaver_id).unwrap().active);
    let filters: Vec<String> = team
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.path == "/scim/v2/Users" && c.query.contains("filter"))
        .map(|c| c.query)
        .collect();
    assert!(
        filters.iter().all(|q| !q.contains("MARCUS")),
        "SCIM asked with Postman's spelling: {filters:?}"
    );
}
