//! The Postman actions, one step at a time against the Postman simulator: offboarding
//! and reclaim runs, each step safe to run twice, protected people refused before any
//! write, refusals and transient trouble mapped to the catalog's codes, evidence that
//! is optional unless required. (Moved here from `src/apps/postman/actions.rs`: the
//! tests drive the public `perform` as the runner does.)

use offboard::apps::failure::settle;
use offboard::apps::http::CallLog;
use offboard::apps::postman::actions::{perform, ACTIONS, READ_ONLY};
use offboard::apps::postman::client::{Client, ROLE_ADMIN};
use offboard::apps::postman::errors::run_error;
use offboard::apps::retry::CallRetry;
use offboard::apps::transport::Transported;
use offboard::apps::ActionContext;
use offboard::codes::Code;
use offboard::config::{AppKind, ConnectionConfig, Secret};
use offboard::domain::definition::Definition;
use offboard::domain::event::EventType;
use offboard::domain::machine::WorkflowRequest;
use offboard::domain::step::{Outcome, StepError, StepOutput};
use offboard_simulators::postman::{
    DemoSeed, Fault, FaultKind, PostmanSim, SimWorkspace, ROLE_EDITOR,
};
use serde_json::{json, Map, Value};

const OFFBOARD: &[&str] = &[
    "postman.find_member",
    "postman.record_activity",
    "postman.check_recipient",
    "postman.hand_over_workspaces",
    "postman.remove_workspace_roles",
    "postman.deprovision",
    "postman.confirm_deprovisioned",
];

const RECLAIM: &[&str] = &[
    "postman.find_member",
    "postman.record_activity",
    "postman.check_recipient",
    "postman.hand_over_workspaces",
    "postman.deprovision",
    "postman.confirm_deprovisioned",
];

fn client_for(sim: &PostmanSim, key: &str) -> Client {
    let config = ConnectionConfig {
        timeout_secs: 2,
        ..ConnectionConfig::new(AppKind::Postman, sim.base_url(), "UNUSED", 60_000)
    };
    Client::with_keys(&config, Secret::new(key), Secret::new(key))
        .unwrap()
        // One call, one answer: these tests are about how each answer is read.
        .with_call_retry(CallRetry::never())
}

fn request(event_type: EventType, email: &str, transfer_to: Option<&str>) -> WorkflowRequest {
    WorkflowRequest {
        event_id: "evt-1".into(),
        source: "test".into(),
        event_time: None,
        event_type,
        connection: "postman".into(),
        app: "postman".into(),
        person_email: email.into(),
        transfer_to: transfer_to.map(str::to_string),
        not_before: None,
        employee_id: None,
    }
}

struct Run {
    sim: PostmanSim,
    seed: DemoSeed,
    client: Client,
    facts: Map<String, Value>,
}

impl Run {
    async fn new() -> Run {
        let sim = PostmanSim::start().await.unwrap();
        let seed = sim.seed_demo();
        let client = client_for(&sim, &seed.api_key);
        Run {
            sim,
            seed,
            client,
            facts: Map::new(),
        }
    }

    async fn step(&mut self, req: &WorkflowRequest, action: &str) -> Result<StepOutput, StepError> {
        let log = CallLog::discard();
        let ctx = ActionContext {
            request: req,
            facts: &self.facts,
            calls: &log,
        };
        let result = perform(&self.client, action, &ctx).await;
        let out = settle(result, |e, area| run_error(&self.client, e, area, &log)).await?;
        self.facts.extend(out.facts.clone());
        Ok(out)
    }

    /// Runs the steps in order; stops at the first error or early finish.
    async fn steps(
        &mut self,
        req: &WorkflowRequest,
        actions: &[&str],
    ) -> Result<Vec<StepOutput>, StepError> {
        let mut outs = Vec::new();
        for a in actions {
            let out = self.step(req, a).await?;
            let stop = out.finish_with.is_some();
            outs.push(out);
            if stop {
                break;
            }
        }
        Ok(outs)
    }

    fn writes(&self) -> usize {
        self.sim
            .calls()
            .iter()
            .filter(|c| c.method != "GET")
            .count()
    }
}

#[tokio::test]
async fn offboarding_hands_over_takes_roles_away_and_deactivates() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    let outs = run.steps(&req, OFFBOARD).await.unwrap();
    assert_eq!(outs.len(), OFFBOARD.len());
    assert!(outs.iter().all(|o| o.finish_with.is_none()));

    let f = &run.facts;
    assert_eq!(f["member_id"], s.leaver_id);
    assert_eq!(f["recipient_id"], s.recipient_id);
    let before = &f["entitlements_before"];
    assert_eq!(before["teamMember"], true);
    assert_eq!(before["scimActive"], true);
    assert_eq!(before["workspaces"].as_array().unwrap().len(), 4);
    assert_eq!(f["last_activity"]["action"], "user.login_google_success");
    assert_eq!(f["workspaces_handed_over"].as_array().unwrap().len(), 2);
    assert_eq!(f["workspace_roles_removed"].as_array().unwrap().len(), 4);
    assert_eq!(f["workspace_roles_kept"], json!([]));
    assert_eq!(f["entitlements_after"]["scimActive"], false);
    let (b, a) = (&f["seats_before"], &f["seats_after"]);
    assert_eq!(
        a["consumed"].as_i64().unwrap(),
        b["consumed"].as_i64().unwrap() - 1
    );
    assert_eq!(
        a["available"].as_i64().unwrap(),
        b["available"].as_i64().unwrap() + 1
    );

    for ws in &s.leaver_sole_admin_workspaces {
        assert_eq!(
            run.sim.workspace_role(ws, s.recipient_id).as_deref(),
            Some(ROLE_ADMIN)
        );
    }
    for ws in &s.leaver_workspaces {
        assert_eq!(run.sim.workspace_role(ws, s.leaver_id), None, "{ws}");
    }
    assert!(!run.sim.member(s.leaver_id).unwrap().active);
    // Workspaces the leaver did not administer alone got no new Admin.
    assert_eq!(
        run.sim
            .workspace_role(&s.leaver_workspaces[3], s.recipient_id),
        None
    );
}

#[tokio::test]
async fn every_step_is_safe_to_run_twice() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    for action in OFFBOARD {
        let first = run.step(&req, action).await.unwrap();
        let writes = run.writes();
        let again = run.step(&req, action).await.unwrap();
        assert_eq!(run.writes(), writes, "{action} wrote again");
        // What a step reports about the end state does not change on a rerun.
        for key in [
            "workspaces_handed_over",
            "entitlements_after",
            "recipient_id",
            "member_id",
        ] {
            if let Some(v) = first.facts.get(key) {
                assert_eq!(again.facts.get(key), Some(v), "{action}: {key}");
            }
        }
    }
    assert!(!run.sim.member(s.leaver_id).unwrap().active);
}

#[tokio::test]
async fn unknown_or_already_deactivated_people_are_absent() {
    let mut run = Run::new().await;
    let req = request(EventType::Offboarding, "nobody@northwind.example", None);
    let outs = run.steps(&req, OFFBOARD).await.unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].finish_with, Some(Outcome::Absent));
    assert_eq!(run.writes(), 0);

    let mut run = Run::new().await;
    let gone = run
        .sim
        .member_by_email("felix.wagner@northwind.example")
        .unwrap();
    assert!(!gone.active);
    let req = request(EventType::LicenseReclaim, &gone.email.to_uppercase(), None);
    let outs = run.steps(&req, RECLAIM).await.unwrap();
    assert_eq!(outs[0].finish_with, Some(Outcome::Absent));
    assert!(outs[0].summary.contains("already deactivated"));
}

#[tokio::test]
async fn emails_match_without_case_but_scim_gets_postmans_spelling() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    run.sim.update_member(s.leaver_id, |m| {
        m.email = "Marcus.Lee@Northwind.example".into()
    });
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    run.steps(&req, OFFBOARD).await.unwrap();
    assert!(!run.sim.member(s.leaver_id).unwrap().active);
    let scim_lookup = run
        .sim
        .calls()
        .into_iter()
        .find(|c| c.path == "/scim/v2/Users")
        .unwrap();
    assert!(
        scim_lookup.query.contains("Marcus.Lee%40Northwind.example"),
        "{}",
        scim_lookup.query
    );
}

#[tokio::test]
async fn without_a_recipient_only_admins_keep_their_admin_role() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let req = request(EventType::Offboarding, &s.leaver_email, None);
    let outs = run.steps(&req, OFFBOARD).await.unwrap();
    assert_eq!(outs.len(), OFFBOARD.len());
    assert_eq!(
        run.facts["orphaned_workspaces"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        run.facts["workspace_roles_kept"].as_array().unwrap().len(),
        2
    );
    for ws in &s.leaver_sole_admin_workspaces {
        assert_eq!(
            run.sim.workspace_role(ws, s.leaver_id).as_deref(),
            Some(ROLE_ADMIN)
        );
    }
    for ws in &s.leaver_workspaces[2..] {
        assert_eq!(run.sim.workspace_role(ws, s.leaver_id), None);
    }
    assert!(!run.sim.member(s.leaver_id).unwrap().active);
}

#[tokio::test]
async fn unusable_recipients_fail_with_post_110_b() {
    let s = Run::new().await.seed;
    let deactivated = "felix.wagner@northwind.example";
    for to in [
        "stranger@elsewhere.example",
        s.leaver_email.as_str(),
        deactivated,
    ] {
        let mut run = Run::new().await;
        let req = request(EventType::Offboarding, &s.leaver_email, Some(to));
        let err = run.steps(&req, OFFBOARD).await.unwrap_err();
        assert_eq!(
            (err.code, err.retryable),
            (Code::Post110B, false),
            "{to}: {}",
            err.message
        );
        assert_eq!(run.writes(), 0);
    }
}

#[tokio::test]
async fn reclaim_keeps_roles_and_frees_the_seat() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let before = run.sim.seats_consumed();
    let req = request(
        EventType::LicenseReclaim,
        &s.reclaim_email,
        Some(&s.recipient_email),
    );
    run.steps(&req, RECLAIM).await.unwrap();
    assert_eq!(run.sim.seats_consumed(), before - 1);
    let m = run.sim.member(s.reclaim_id).unwrap();
    assert!(!m.active);
    assert_eq!(
        run.facts["workspaces_handed_over"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        run.facts["last_activity"]["action"],
        "user.login_password_success"
    );
    assert_eq!(
        run.facts["entitlements_after"]["workspaceRoles"],
        "kept (restored by a reactivation)"
    );
    // Roles are kept: a reactivation gives the seat and the access back.
    let viewer_ws = &s.leaver_workspaces[3];
    assert_eq!(
        run.sim.workspace_role(viewer_ws, s.reclaim_id).as_deref(),
        Some("1")
    );
    let log = CallLog::discard();
    run.client
        .scim_set_active(&m.scim_id, true, &log)
        .await
        .unwrap();
    assert!(run.sim.member(s.reclaim_id).unwrap().active);
}

#[tokio::test]
async fn recipient_becomes_admin_even_if_they_held_another_role() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let ws = &s.leaver_sole_admin_workspaces[0];
    run.sim
        .set_workspace_role(ws, s.recipient_id, Some(ROLE_EDITOR));
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    run.steps(&req, OFFBOARD).await.unwrap();
    assert_eq!(
        run.sim.workspace_role(ws, s.recipient_id).as_deref(),
        Some(ROLE_ADMIN)
    );
}

#[tokio::test]
async fn workspaces_that_changed_meanwhile_are_skipped() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    run.steps(&req, &OFFBOARD[..3]).await.unwrap();
    let [gone, other] = [
        &s.leaver_sole_admin_workspaces[0],
        &s.leaver_sole_admin_workspaces[1],
    ];
    run.sim.delete_workspace(gone);
    run.sim
        .set_workspace_role(other, s.admin_id, Some(ROLE_ADMIN));
    run.steps(&req, &OFFBOARD[3..]).await.unwrap();
    let skipped = run.facts["workspaces_not_handed_over"].as_array().unwrap();
    assert_eq!(skipped.len(), 2);
    assert_eq!(run.sim.workspace_role(other, s.recipient_id), None);
    // The other Admin lets the leaver's Admin role go.
    assert_eq!(run.sim.workspace_role(other, s.leaver_id), None);
}

#[tokio::test]
async fn partner_and_personal_workspaces_do_not_stop_the_run() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let partner = run.sim.add_workspace(
        SimWorkspace::team("Partner Portal", s.admin_id)
            .visibility("partner")
            .role(s.leaver_id, ROLE_EDITOR),
    );
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    run.steps(&req, OFFBOARD).await.unwrap();
    let kept = run.facts["workspace_roles_kept"].as_array().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["id"], partner);
    assert!(!run.sim.member(s.leaver_id).unwrap().active);
}

#[tokio::test]
async fn protected_people_are_refused_before_any_write() {
    // (who, allow_admins, protected patterns, what the refusal names)
    type Who = fn(&DemoSeed) -> String;
    let cases: [(Who, bool, &[&str], &str); 4] = [
        (|s| s.admin_email.clone(), false, &[], "administrator"),
        (|s| s.admin_email.clone(), true, &[], "owns the token"),
        (
            |s| s.leaver_email.clone(),
            false,
            &["*@*"],
            "protected pattern",
        ),
        (
            |s| s.leaver_email.to_uppercase(),
            false,
            &["marcus.*@northwind.example"],
            "protected pattern",
        ),
    ];
    for (who, allow_admins, patterns, why) in cases {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        run.client.guard.allow_admins = allow_admins;
        run.client.guard.patterns = patterns.iter().map(|p| p.to_string()).collect();
        for (event_type, steps) in [
            (EventType::Offboarding, OFFBOARD),
            (EventType::LicenseReclaim, RECLAIM),
        ] {
            let req = request(event_type, &who(&s), Some(&s.recipient_email));
            let err = run.steps(&req, steps).await.unwrap_err();
            assert_eq!(err.code, Code::Post112B, "{}", err.message);
            assert!(err.message.contains(why), "{}", err.message);
        }
        let writes: Vec<_> = run
            .sim
            .calls()
            .into_iter()
            .filter(|c| c.method != "GET")
            .collect();
        assert!(writes.is_empty(), "{writes:?}");
        assert!(run.sim.member(s.admin_id).unwrap().active);
    }
}

#[tokio::test]
async fn protection_is_checked_again_right_before_each_write() {
    // Each writing step, reached under rules that let the person go, is run again
    // after the rules changed (a restart with a new `protected` list): it refuses
    // before its own write.
    for (i, action) in OFFBOARD.iter().enumerate() {
        if READ_ONLY.contains(action) {
            continue;
        }
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, &OFFBOARD[..i]).await.unwrap();
        let before = run.writes();
        run.client.guard.patterns = vec![s.leaver_email.to_uppercase()];
        let err = run.step(&req, action).await.unwrap_err();
        assert_eq!(err.code, Code::Post112B, "{action}: {}", err.message);
        assert!(err.message.contains("protected pattern"), "{}", err.message);
        assert_eq!(run.writes(), before, "{action} wrote");
        assert!(run.sim.member(s.leaver_id).unwrap().active);
    }
}

#[tokio::test]
async fn an_admin_role_given_after_find_is_seen_before_the_role_removal() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    let upto = OFFBOARD
        .iter()
        .position(|a| *a == "postman.remove_workspace_roles")
        .unwrap();
    run.steps(&req, &OFFBOARD[..upto]).await.unwrap();
    let before = run.writes();
    // `remove_workspace_roles` reads the team list: the new role shows there.
    run.sim
        .update_member(s.leaver_id, |m| m.roles = vec!["admin".into()]);
    let err = run
        .step(&req, "postman.remove_workspace_roles")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Post112B, "{}", err.message);
    assert!(err.message.contains("administrator"), "{}", err.message);
    assert_eq!(run.writes(), before);
}

type Setup = Box<dyn FnOnce(&PostmanSim, &DemoSeed)>;

async fn failing(setup: impl FnOnce(&PostmanSim, &DemoSeed), actions: &[&str]) -> StepError {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    setup(&run.sim, &s);
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    run.steps(&req, actions).await.unwrap_err()
}

#[tokio::test]
async fn refusals_during_a_run_map_to_the_area_codes() {
    let cases: Vec<(Setup, Code)> = vec![
        (
            Box::new(|sim, _| sim.set_users_access(false)),
            Code::Post101B,
        ),
        (
            Box::new(|sim, _| sim.set_scim_enabled(false)),
            Code::Post101B,
        ),
        (
            Box::new(|sim, _| sim.set_workspaces_access(false)),
            Code::Post102B,
        ),
        (
            Box::new(|sim, _| sim.set_roles_access(false)),
            Code::Post103B,
        ),
        (
            Box::new(|sim, s| sim.revoke_api_key(&s.api_key)),
            Code::Post100B,
        ),
        (
            Box::new(|sim, s| sim.revoke_scim_key(&s.scim_key)),
            Code::Post100B,
        ),
        (
            Box::new(|sim, _| sim.set_team_deleted(true)),
            Code::Post106B,
        ),
    ];
    for (setup, code) in cases {
        let err = failing(setup, OFFBOARD).await;
        assert_eq!((err.code, err.retryable), (code, false), "{}", err.message);
    }
}

#[tokio::test]
async fn refusals_later_in_the_run_are_mapped_too() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    run.steps(&req, &OFFBOARD[..4]).await.unwrap();
    run.sim.set_roles_access(false);
    let err = run
        .step(&req, "postman.remove_workspace_roles")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Post103B);
    run.sim.set_roles_access(true);
    run.sim.set_team_deleted(true);
    let err = run
        .step(&req, "postman.remove_workspace_roles")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Post106B);
    run.sim.set_team_deleted(false);
    run.sim.set_scim_enabled(false);
    let err = run.step(&req, "postman.deprovision").await.unwrap_err();
    assert_eq!(err.code, Code::Post101B);
}

#[tokio::test]
async fn transient_trouble_is_retryable_with_the_servers_wait() {
    let err = failing(
        |sim, _| {
            sim.inject(
                Fault::new(
                    "/workspaces",
                    FaultKind::Error {
                        status: 503,
                        retry_after_secs: Some(9),
                    },
                )
                .method("GET"),
            )
        },
        OFFBOARD,
    )
    .await;
    assert_eq!(
        (err.code, err.retryable, err.retry_after_ms),
        (Code::Post190B, true, Some(9000))
    );

    let err = failing(
        |sim, _| sim.inject(Fault::new("/scim/v2/Users", FaultKind::DropConnection)),
        OFFBOARD,
    )
    .await;
    assert_eq!((err.code, err.retryable), (Code::Post190B, true));

    let err = failing(
        |sim, _| {
            sim.inject(Fault::new(
                "/users",
                FaultKind::Delay(std::time::Duration::from_secs(4)),
            ))
        },
        OFFBOARD,
    )
    .await;
    assert_eq!((err.code, err.retryable), (Code::Post190B, true));
    assert!(err.message.contains("timed out"), "{}", err.message);

    let err = failing(|sim, _| sim.set_rate_limit(Some(3)), OFFBOARD).await;
    assert_eq!((err.code, err.retryable), (Code::Post190B, true));
    assert!(err.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 60_000));
}

#[tokio::test]
async fn a_failed_write_is_retried_without_harm() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    run.sim.inject(
        Fault::new(
            "/scim/v2/Users/",
            FaultKind::Error {
                status: 502,
                retry_after_secs: None,
            },
        )
        .method("PATCH"),
    );
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    let err = run.steps(&req, OFFBOARD).await.unwrap_err();
    assert_eq!((err.code, err.retryable), (Code::Post190B, true));
    assert!(run.sim.member(s.leaver_id).unwrap().active);
    run.step(&req, "postman.deprovision").await.unwrap();
    run.step(&req, "postman.confirm_deprovisioned")
        .await
        .unwrap();
    assert!(!run.sim.member(s.leaver_id).unwrap().active);
}

#[tokio::test]
async fn confirmation_waits_while_the_account_is_still_active() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let req = request(
        EventType::Offboarding,
        &s.leaver_email,
        Some(&s.recipient_email),
    );
    run.steps(&req, &OFFBOARD[..6]).await.unwrap();
    run.sim.update_member(s.leaver_id, |m| m.active = true);
    let err = run
        .step(&req, "postman.confirm_deprovisioned")
        .await
        .unwrap_err();
    assert_eq!((err.code, err.retryable), (Code::Post199B, true));
}

#[tokio::test]
async fn audit_evidence_is_optional_unless_required() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    let req = request(EventType::Offboarding, &s.leaver_email, None);
    run.step(&req, "postman.find_member").await.unwrap();
    run.sim.set_enterprise(false);
    let out = run.step(&req, "postman.record_activity").await.unwrap();
    assert_eq!(out.facts["audit_evidence"]["code"], "POST-105-B");
    assert_eq!(out.facts["last_activity"], Value::Null);
    let err = run
        .step(&req, "postman.require_activity")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Post105B);
    run.sim.set_enterprise(true);
    run.sim.set_audit_logs_access(false);
    let out = run.step(&req, "postman.record_activity").await.unwrap();
    assert_eq!(out.facts["audit_evidence"]["code"], "POST-104-B");
    let err = run
        .step(&req, "postman.require_activity")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Post104B);
    // Other trouble is not swallowed.
    run.sim.set_audit_logs_access(true);
    run.sim.inject(Fault::new(
        "/audit/logs",
        FaultKind::Error {
            status: 500,
            retry_after_secs: None,
        },
    ));
    let err = run.step(&req, "postman.record_activity").await.unwrap_err();
    assert_eq!((err.code, err.retryable), (Code::Post190B, true));
}

#[tokio::test]
async fn seats_are_optional_evidence() {
    let mut run = Run::new().await;
    let s = run.seed.clone();
    run.sim.inject(
        Fault::new(
            "/accounts",
            FaultKind::Error {
                status: 403,
                retry_after_secs: None,
            },
        )
        .times(5),
    );
    let req = request(EventType::Offboarding, &s.leaver_email, None);
    run.step(&req, "postman.find_member").await.unwrap();
    assert_eq!(run.facts["seats_before"], Value::Null);
}

#[tokio::test]
async fn unknown_actions_are_refused() {
    let mut run = Run::new().await;
    let req = request(EventType::Offboarding, "x@y.z", None);
    let err = run.step(&req, "postman.nope").await.unwrap_err();
    assert_eq!(err.code, Code::Post199B);
}

#[test]
fn shipped_workflows_name_only_known_actions() {
    for (text, outcome, steps) in [
        (
            include_str!("../workflows/postman-offboard.toml"),
            Outcome::Removed,
            OFFBOARD,
        ),
        (
            include_str!("../workflows/postman-license-reclaim.toml"),
            Outcome::Downgraded,
            RECLAIM,
        ),
    ] {
        let def = Definition::parse(text, |a| ACTIONS.contains(&a)).unwrap();
        assert_eq!(def.app, "postman");
        assert_eq!(def.outcome, outcome);
        let actions: Vec<&str> = def.steps.iter().map(|s| s.action.as_str()).collect();
        assert_eq!(actions, steps);
    }
}
