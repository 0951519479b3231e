//! Every Smartsheet code provoked by the real condition in the simulator: the `-A` codes
//! through `offboard check`, the `-B` codes through full workflow runs.

mod apps_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apps_support::{quick_retry, retry_calls};
use offboard_simulators::smartsheet::{Fault, FaultKind};
use serde_json::Value;
use support::*;

fn write_config(dir: &Path, smartsheet_url: &str) -> PathBuf {
    let path = dir.join("offboard.toml");
    std::fs::write(
        &path,
        format!(
            "database_url = \"sqlite://{}/offboard.db?mode=rwc\"\n[connections.smartsheet]\napp = \"smartsheet\"\nbase_url = \"{smartsheet_url}\"\ntoken_env = \"OFFBOARD_TEST_SMARTSHEET_TOKEN\"\n",
            dir.display()
        ),
    )
    .unwrap();
    path
}

fn offboard(args: &[&str], token: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_offboard"))
        .env("OFFBOARD_AUDIT_KEY", support::AUDIT_KEY)
        .args(args)
        .env("OFFBOARD_TEST_SMARTSHEET_TOKEN", token)
        .env_remove("OFFBOARD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_ok_or_the_a_code_of_each_condition() {
    type Setup = fn(&Org);
    let cases: &[(&str, Setup, Option<&str>)] = &[
        ("healthy", |_| {}, None),
        (
            "token revoked",
            |o| o.sim.revoke_token(TOKEN),
            Some("SMT-100-A"),
        ),
        (
            "token expired",
            |o| o.sim.expire_token(TOKEN),
            Some("SMT-100-B"),
        ),
        (
            "users not readable",
            |o| o.sim.set_users_access(false),
            Some("SMT-101-A"),
        ),
        (
            "groups not readable",
            |o| o.sim.set_groups_access(false),
            Some("SMT-102-A"),
        ),
        (
            "plan without API",
            |o| o.sim.set_plan_allows_api(false),
            Some("SMT-103-A"),
        ),
        (
            "account locked",
            |o| o.sim.set_account_locked(Some(5003)),
            Some("SMT-104-A"),
        ),
        (
            "not a system admin",
            |o| o.sim.update_user(o.admin, |u| u.admin = false),
            Some("SMT-105-A"),
        ),
    ];
    for (name, setup, expected) in cases {
        let org = org().await;
        setup(&org);
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &org.sim.base_url());
        let config = config.to_str().unwrap();
        let (code, out, err) = offboard(&["check", "--config", config], TOKEN);
        match expected {
            None => {
                assert_eq!(code, 0, "{name}: {out}{err}");
                assert_eq!(out.trim(), "smartsheet: OK");
            }
            Some(expected) => {
                assert_eq!(code, 3, "{name}: {out}{err}");
                assert!(
                    out.starts_with(&format!("smartsheet: {expected} ")),
                    "{name}: {out}"
                );
                assert_eq!(out.lines().count(), 1, "{name}: one line per connection");
                let (_, json, _) = offboard(
                    &["check", "smartsheet", "--json", "--config", config],
                    TOKEN,
                );
                let v: Value = serde_json::from_str(&json).unwrap();
                assert_eq!(v[0]["error_code"], *expected, "{name}");
                assert!(v[0]["remedy"].as_array().unwrap().len() >= 2);
            }
        }
        assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_explain_refuse_bad_input_with_one_line() {
    let (code, _, err) = offboard(&["check", "jira"], TOKEN);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = offboard(&["explain", "SMT-999-Z"], TOKEN);
    assert_eq!(code, 4);
    assert_eq!(err.trim().lines().count(), 1);
    let (code, out, _) = offboard(&["explain", "smt-105-b"], TOKEN);
    assert_eq!(code, 0);
    assert!(out.starts_with("SMT-105-B"));
    let (code, out, _) = offboard(&["explain", "--list"], TOKEN);
    assert_eq!(code, 0);
    assert!(out.lines().count() >= 37);
    let (code, _, err) = offboard(&["list", "--state", "sleeping"], TOKEN);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1);
    let (code, _, err) = offboard(&["frobnicate"], TOKEN);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "database_url = 42\n").unwrap();
    let (code, _, err) = offboard(&["list", "--config", bad.to_str().unwrap()], TOKEN);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

struct Case {
    name: &'static str,
    kind: &'static str,
    transfer_to: Option<&'static str>,
    setup: fn(&Org),
    code: &'static str,
    writes_allowed: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_fail_with_the_b_code_of_each_condition() {
    let off = "offboarding.requested";
    let cases = [
        Case {
            name: "token revoked mid-run",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.revoke_token(TOKEN),
            code: "SMT-100-B",
            writes_allowed: false,
        },
        Case {
            name: "token expired",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.expire_token(TOKEN),
            code: "SMT-100-B",
            writes_allowed: false,
        },
        Case {
            name: "users access removed, still admin",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.set_users_access(false),
            code: "SMT-101-B",
            writes_allowed: false,
        },
        Case {
            name: "groups access removed, still admin",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.set_groups_access(false),
            code: "SMT-102-B",
            writes_allowed: false,
        },
        Case {
            name: "plan lost API access",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.set_plan_allows_api(false),
            code: "SMT-103-B",
            writes_allowed: false,
        },
        Case {
            name: "account locked",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.set_account_locked(Some(5001)),
            code: "SMT-104-B",
            writes_allowed: false,
        },
        Case {
            name: "token owner stripped of admin",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.update_user(o.admin, |u| u.admin = false),
            code: "SMT-105-B",
            writes_allowed: false,
        },
        Case {
            name: "recipient does not exist",
            kind: off,
            transfer_to: Some("ghost@example.com"),
            setup: |_| {},
            code: "SMT-110-B",
            writes_allowed: false,
        },
        Case {
            name: "recipient not a group admin",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.update_user(o.recipient, |u| u.group_admin = false),
            code: "SMT-110-B",
            writes_allowed: false,
        },
        Case {
            name: "recipient deactivated",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| {
                o.sim
                    .update_user(o.recipient, |u| u.status = "DEACTIVATED".into())
            },
            code: "SMT-110-B",
            writes_allowed: false,
        },
        Case {
            name: "leaver owns groups, no recipient",
            kind: off,
            transfer_to: None,
            setup: |_| {},
            code: "SMT-110-B",
            writes_allowed: false,
        },
        Case {
            name: "directory-managed user",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| o.sim.update_user(o.leaver, |u| u.directory_managed = true),
            code: "SMT-111-B",
            writes_allowed: true,
        },
        Case {
            name: "Smartsheet down through every retry",
            kind: off,
            transfer_to: Some(RECIPIENT),
            setup: |o| {
                o.sim.inject(
                    Fault::new(
                        "/users",
                        FaultKind::Error {
                            status: 503,
                            error_code: 4001,
                            retry_after_secs: None,
                        },
                    )
                    .times(100_000),
                )
            },
            code: "SMT-190-B",
            writes_allowed: false,
        },
        Case {
            name: "rate-limited through every retry",
            kind: "license.reclaim.requested",
            transfer_to: None,
            setup: |o| {
                o.sim.inject(
                    Fault::new(
                        "/users",
                        FaultKind::Error {
                            status: 429,
                            error_code: 4003,
                            retry_after_secs: None,
                        },
                    )
                    .times(100_000),
                )
            },
            code: "SMT-190-B",
            writes_allowed: false,
        },
    ];
    let workflows = fast_workflows(&SMARTSHEET_WORKFLOWS);
    for case in cases {
        let org = org().await;
        let (url, _dir) = fresh_database(Db::Sqlite).await;
        let mut config = config(&url, amqp_names(), &org.sim.base_url());
        config.workflows_dir = Some(workflows.path().to_path_buf());
        let engine = engine(config, TOKEN).await;
        retry_calls(&engine, "smartsheet", TOKEN, quick_retry()).await;
        (case.setup)(&org);
        let id = format!("ev-{}", unique());
        let body = event(&id, case.kind, LEAVER, case.transfer_to);
        let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
        engine.accept(&request, "{}").await.unwrap().unwrap();
        engine
            .run_until_settled(Duration::from_secs(30))
            .await
            .unwrap();
        let wf = &engine.store().by_event(&id).await.unwrap()[0];
        assert_eq!(wf.state, "failed", "{}", case.name);
        assert_eq!(
            wf.error_code.as_deref(),
            Some(case.code),
            "{}: {:?}",
            case.name,
            wf.error_message
        );
        assert!(!wf.error_message.clone().unwrap_or_default().is_empty());
        assert!(!wf.error_message.clone().unwrap_or_default().contains(TOKEN));
        if !case.writes_allowed {
            let writes: Vec<_> = org
                .sim
                .calls()
                .into_iter()
                .filter(|c| c.method != "GET")
                .collect();
            assert!(writes.is_empty(), "{}: {writes:?}", case.name);
        }
        // The failure is what `workflow.failed` will carry.
        let state = engine.store().load(&wf.id).await.unwrap().unwrap().state;
        let out = offboard::outbox::events::completion(&wf.id, &state).unwrap();
        assert_eq!(out.routing_key, "workflow.failed");
        let v: Value = serde_json::from_str(&out.body).unwrap();
        assert_eq!(v["data"]["error_code"], case.code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_on_the_removal_is_retried_and_completes() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    org.sim
        .inject(Fault::new("/users", FaultKind::DropConnection).method("DELETE"));
    let body = event("ev-drop", "offboarding.requested", LEAVER, Some(RECIPIENT));
    let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    engine
        .run_until_settled(Duration::from_secs(30))
        .await
        .unwrap();
    let wf = &engine.store().by_event("ev-drop").await.unwrap()[0];
    assert_eq!(
        wf.outcome.as_deref(),
        Some("removed"),
        "{:?}",
        wf.error_message
    );
    let deletes: Vec<u16> = org
        .sim
        .calls()
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.status)
        .collect();
    assert_eq!(deletes, vec![0, 200], "the dropped call, then the retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_removed_behind_our_back_counts_as_removed() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    // While the workflow lists groups, someone removes the user in Smartsheet.
    org.sim
        .inject(Fault::new("/groups", FaultKind::Delay(Duration::from_millis(800))).method("GET"));
    let body = event("ev-gone", "offboarding.requested", RECLAIM, None);
    let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    let run = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .run_until_settled(Duration::from_secs(30))
                .await
                .unwrap()
        }
    });
    eventually(10, "the groups listing to start", || async {
        org.sim
            .calls()
            .iter()
            .any(|c| c.path == "/groups")
            .then_some(())
    })
    .await;
    let status = reqwest::Client::new()
        .delete(format!(
            "{}/users/{}?removeFromSharing=true",
            org.sim.base_url(),
            org.reclaim
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    run.await.unwrap();
    let wf = &engine.store().by_event("ev-gone").await.unwrap()[0];
    assert_eq!(
        wf.outcome.as_deref(),
        Some("removed"),
        "{:?}",
        wf.error_message
    );
    let engine_deletes: Vec<u16> = org
        .sim
        .calls()
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.status)
        .collect();
    assert_eq!(
        engine_deletes,
        vec![200, 404],
        "ours came second and found the user gone"
    );
    assert!(
        !org.sim.calls().iter().any(|c| c.method == "PUT"),
        "no role change on a removed user"
    );
}
