//! The audit trail as auditors and operators use it: replay of completed, retried and
//! cancelled workflows; tampering detected and located; definitions changed mid-flight;
//! the evidence export; a re-published feed that changes nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::Value;
use support::*;

struct Setup {
    org: Org,
    engine: std::sync::Arc<offboard::runtime::engine::Engine>,
    config_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(workflows_dir: Option<&Path>) -> Setup {
    let org = org().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/offboard.db?mode=rwc", dir.path().display());
    let mut cfg = config(&url, amqp_names(), &org.sim.base_url());
    cfg.workflows_dir = workflows_dir.map(Path::to_path_buf);
    let engine = engine(cfg, TOKEN).await;
    let config_file = dir.path().join("offboard.toml");
    let mut text = format!(
        "database_url = \"{url}\"\n[connections.smartsheet]\napp = \"smartsheet\"\nbase_url = \"{}\"\ntoken_env = \"OFFBOARD_TEST_SMARTSHEET_TOKEN\"\n",
        org.sim.base_url()
    );
    if let Some(w) = workflows_dir {
        text = format!("workflows_dir = \"{}\"\n{text}", w.display());
    }
    std::fs::write(&config_file, text).unwrap();
    Setup {
        org,
        engine,
        config_file,
        _dir: dir,
    }
}

impl Setup {
    fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_offboard"))
            .env("OFFBOARD_AUDIT_KEY", support::AUDIT_KEY)
            .args(args)
            .arg("--config")
            .arg(&self.config_file)
            .env("OFFBOARD_TEST_SMARTSHEET_TOKEN", TOKEN)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    async fn submit(&self, body: &[u8]) -> String {
        let request = offboard::domain::event::parse(body, &["smartsheet".into()]).unwrap();
        self.engine
            .accept(&request, &String::from_utf8_lossy(body))
            .await
            .unwrap()
            .unwrap();
        self.engine
            .store()
            .by_event(&request.event_id)
            .await
            .unwrap()[0]
            .id
            .clone()
    }

    async fn settle(&self) {
        self.engine
            .run_until_settled(Duration::from_secs(30))
            .await
            .unwrap();
    }

    async fn sql(&self, sql: &str) {
        self.engine
            .store()
            .connection()
            .execute_raw(Statement::from_string(DbBackend::Sqlite, sql.to_string()))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_retried_and_cancelled_workflows_replay_cleanly() {
    let s = setup(None).await;
    // Completed.
    let done = s
        .submit(&event(
            "ev-done",
            "license.reclaim.requested",
            RECLAIM,
            None,
        ))
        .await;
    // Failed at the recipient check, fixed, retried by an operator, completed.
    s.org
        .sim
        .update_user(s.org.recipient, |u| u.group_admin = false);
    let retried = s
        .submit(&event(
            "ev-retry",
            "offboarding.requested",
            LEAVER,
            Some(RECIPIENT),
        ))
        .await;
    s.settle().await;
    let row = s.engine.store().get(&retried).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.error_code.as_deref()),
        ("failed", Some("SMT-110-B"))
    );
    s.org
        .sim
        .update_user(s.org.recipient, |u| u.group_admin = true);
    let (code, out) = s.cli(&["retry", &retried, "--by", "alice"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("completed (removed)"), "{out}");
    let state = s
        .engine
        .store()
        .load(&retried)
        .await
        .unwrap()
        .unwrap()
        .state;
    let attempts: Vec<u32> = state.steps.iter().map(|st| st.attempts).collect();
    assert_eq!(
        attempts,
        vec![1, 1, 2, 1, 1, 1, 1],
        "steps that succeeded were not repeated"
    );
    // Cancelled while waiting for not_before.
    let mut later: Value =
        serde_json::from_slice(&event("ev-cancel", "offboarding.requested", LEAVER, None)).unwrap();
    later["data"]["not_before"] = Value::from("2099-01-01T00:00:00Z");
    let cancelled = s.submit(later.to_string().as_bytes()).await;
    let (code, out) = s.cli(&["cancel", &cancelled, "--by", "bob"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        s.engine
            .store()
            .get(&cancelled)
            .await
            .unwrap()
            .unwrap()
            .state,
        "cancelled"
    );
    assert_ne!(
        s.cli(&["cancel", &cancelled]).0,
        0,
        "a finished workflow cannot be cancelled again"
    );

    for id in [&done, &retried, &cancelled] {
        let (code, out) = s.cli(&["replay", id]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("replay OK"), "{out}");
    }
    let (_, history) = s.cli(&["history", &retried]);
    assert!(history.contains("retry requested by alice"), "{history}");
    let (_, history) = s.cli(&["history", &cancelled]);
    assert!(history.contains("cancelled by bob"), "{history}");
    let (code, json) = s.cli(&["history", &retried, "--json"]);
    assert_eq!(code, 0);
    let records: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(records[0]["kind"], "created");
    assert!(records
        .iter()
        .any(|r| r["kind"] == "api_call" && r["record"]["method"] == "DELETE"));
    assert_eq!(s.cli(&["replay", "no-such-workflow"]).0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_trail_is_detected_and_located() {
    let s = setup(None).await;
    let id = s
        .submit(&event(
            "ev-tamper",
            "offboarding.requested",
            LEAVER,
            Some(RECIPIENT),
        ))
        .await;
    s.settle().await;
    assert_eq!(s.cli(&["replay", &id]).0, 0);
    let trail = s.engine.store().trail(&id).await.unwrap();
    let n = trail.len();

    // 1. An edited field.
    let edited = &trail[4];
    s.sql(&format!(
        "UPDATE audit_records SET body = replace(body, 'found user', 'found nobody') WHERE id = {}",
        edited.id
    ))
    .await;
    let (code, out) = s.cli(&["replay", &id]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains(&format!("MISMATCH at record {}", edited.seq)),
        "{out}"
    );
    s.sql(&format!(
        "UPDATE audit_records SET body = '{}' WHERE id = {}",
        edited.body.replace('\'', "''"),
        edited.id
    ))
    .await;
    assert_eq!(s.cli(&["replay", &id]).0, 0, "restored");

    // 2. Two records swapped.
    let (a, b) = (&trail[6], &trail[7]);
    s.sql(&format!(
        "UPDATE audit_records SET seq = -1 WHERE id = {}",
        a.id
    ))
    .await;
    s.sql(&format!(
        "UPDATE audit_records SET seq = {} WHERE id = {}",
        a.seq, b.id
    ))
    .await;
    s.sql(&format!(
        "UPDATE audit_records SET seq = {} WHERE id = {}",
        b.seq, a.id
    ))
    .await;
    let (code, out) = s.cli(&["replay", &id]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains(&format!("MISMATCH at record {}", a.seq)),
        "{out}"
    );
    s.sql(&format!(
        "UPDATE audit_records SET seq = -1 WHERE id = {}",
        a.id
    ))
    .await;
    s.sql(&format!(
        "UPDATE audit_records SET seq = {} WHERE id = {}",
        b.seq, b.id
    ))
    .await;
    s.sql(&format!(
        "UPDATE audit_records SET seq = {} WHERE id = {}",
        a.seq, a.id
    ))
    .await;
    assert_eq!(s.cli(&["replay", &id]).0, 0, "restored");

    // 3. A record deleted from the middle, then one from the end.
    let gone = &trail[9];
    s.sql(&format!("DELETE FROM audit_records WHERE id = {}", gone.id))
        .await;
    let (code, out) = s.cli(&["replay", &id]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains(&format!("MISMATCH at record {}", gone.seq + 1)),
        "{out}"
    );
    let last = &trail[n - 1];
    s.sql(&format!("DELETE FROM audit_records WHERE id = {}", last.id))
        .await;
    assert_eq!(s.cli(&["replay", &id]).0, 5);

    // 4. The stored state edited while the trail is intact.
    let fresh = s
        .submit(&event(
            "ev-tamper-2",
            "license.reclaim.requested",
            RECLAIM,
            None,
        ))
        .await;
    s.settle().await;
    assert_eq!(s.cli(&["replay", &fresh]).0, 0);
    s.sql(&format!("UPDATE workflows SET state_json = replace(state_json, '\"downgraded\"', '\"absent\"') WHERE id = '{fresh}'")).await;
    let (code, out) = s.cli(&["replay", &fresh]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("differs from the stored state"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_definition_does_not_change_a_started_workflow() {
    let workflows = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/smartsheet-offboard.toml"),
    )
    .unwrap();
    std::fs::write(workflows.path().join("smartsheet-offboard.toml"), &original).unwrap();
    let s = setup(Some(workflows.path())).await;
    // Started (stored) but waiting for not_before when the file changes.
    let mut soon: Value = serde_json::from_slice(&event(
        "ev-v1",
        "offboarding.requested",
        LEAVER,
        Some(RECIPIENT),
    ))
    .unwrap();
    soon["data"]["not_before"] =
        Value::from((chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339());
    let id = s.submit(soon.to_string().as_bytes()).await;
    let version = "version = 1";
    let last_step = "[[steps]]\nname = \"confirm-removed\"\naction = \"smartsheet.confirm_removed\"\nretry = { initial_interval_ms = 2000, max_attempts = 4 }\n";
    assert!(
        original.contains(version) && original.contains(last_step),
        "the fixture edit matches the shipped file"
    );
    let changed = original
        .replace(version, "version = 2")
        .replace(last_step, "");
    std::fs::write(workflows.path().join("smartsheet-offboard.toml"), &changed).unwrap();

    // A restarted engine loads version 2, yet the started workflow finishes on version 1.
    let mut cfg = s.engine.config().clone();
    cfg.workflows_dir = Some(workflows.path().to_path_buf());
    let restarted = engine(cfg, TOKEN).await;
    restarted
        .run_until_settled(Duration::from_secs(30))
        .await
        .unwrap();
    let state = restarted.store().load(&id).await.unwrap().unwrap().state;
    assert_eq!(state.definition.version, 1);
    assert_eq!(state.steps.len(), 7);
    assert_eq!(state.steps.last().unwrap().name, "confirm-removed");
    assert_eq!(state.outcome.map(|o| o.as_str()), Some("removed"));
    assert_eq!(s.cli(&["replay", &id]).0, 0);

    let request = offboard::domain::event::parse(
        &event("ev-v2", "offboarding.requested", RECLAIM, None),
        &["smartsheet".into()],
    )
    .unwrap();
    restarted.accept(&request, "{}").await.unwrap().unwrap();
    let new_id = restarted.store().by_event("ev-v2").await.unwrap()[0]
        .id
        .clone();
    let new_state = restarted
        .store()
        .load(&new_id)
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(
        (new_state.definition.version, new_state.steps.len()),
        (2, 6)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_has_one_checked_row_per_workflow() {
    let s = setup(None).await;
    let removed = s
        .submit(&event(
            "ev-a",
            "offboarding.requested",
            LEAVER,
            Some(RECIPIENT),
        ))
        .await;
    let downgraded = s
        .submit(&event("ev-b", "license.reclaim.requested", RECLAIM, None))
        .await;
    let absent = s
        .submit(&event(
            "ev-c",
            "offboarding.requested",
            "nobody@example.com",
            None,
        ))
        .await;
    s.settle().await;
    let (code, out) = s.cli(&["evidence", "--since", "2000-01-01", "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 3);
    let by_id = |id: &str| {
        rows.iter()
            .find(|r| r["workflow_id"] == id)
            .unwrap()
            .clone()
    };

    let r = by_id(&removed);
    assert_eq!(r["person_email"], LEAVER);
    assert_eq!(r["app"], "smartsheet");
    assert_eq!(r["connection"], "smartsheet");
    assert_eq!(r["event_id"], "ev-a");
    assert_eq!(r["event_type"], "offboarding.requested");
    assert_eq!(r["event_time"], "2026-11-20T17:00:00+00:00");
    assert_eq!(r["requested_by"], "test");
    assert_eq!(r["transfer_to"], RECIPIENT);
    assert_eq!(r["state"], "completed");
    assert_eq!(r["outcome"], "removed");
    assert_eq!(r["error_code"], Value::Null);
    assert_eq!(r["entitlements_before"]["licensedSheetCreator"], true);
    assert_eq!(r["entitlements_before"]["groupAdmin"], true);
    assert_eq!(r["entitlements_before"]["status"], "ACTIVE");
    assert_eq!(r["entitlements_after"], Value::Null, "the account is gone");
    let row = s.engine.store().get(&removed).await.unwrap().unwrap();
    assert_eq!(r["started_at"], row.created_at.to_rfc3339());
    assert_eq!(r["finished_at"], row.finished_at.unwrap().to_rfc3339());
    let expected_secs = (row.finished_at.unwrap()
        - chrono::DateTime::parse_from_rfc3339("2026-11-20T17:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc))
    .num_seconds();
    assert_eq!(r["seconds_to_access_removed"], expected_secs);

    let r = by_id(&downgraded);
    assert_eq!(
        (r["outcome"].as_str(), r["transfer_to"].is_null()),
        (Some("downgraded"), true)
    );
    assert_eq!(r["entitlements_before"]["licensedSheetCreator"], true);
    assert_eq!(r["entitlements_after"]["licensedSheetCreator"], false);
    assert_eq!(r["entitlements_after"]["resourceViewer"], false);
    assert!(r["seconds_to_access_removed"].as_i64().unwrap() > 0);

    let r = by_id(&absent);
    assert_eq!(r["outcome"], "absent");
    assert_eq!(r["entitlements_before"], Value::Null);
    assert_eq!(r["seconds_to_access_removed"], Value::Null);

    let (code, csv) = s.cli(&["evidence", "--since", "2000-01-01"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("workflow_id,person_email,app,connection,event_id"));
    assert!(lines.iter().any(|l| l.starts_with(&format!(
        "{removed},{LEAVER},smartsheet,smartsheet,ev-a,offboarding.requested,"
    ))));
    let (_, future) = s.cli(&["evidence", "--since", "2099-01-01", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&future).unwrap().len(),
        0
    );
    assert_eq!(s.cli(&["evidence", "--since", "yesterday"]).0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republishing_a_feed_changes_nothing_and_the_trail_says_so() {
    let s = setup(None).await;
    let feed = [
        event("feed-1", "license.reclaim.requested", RECLAIM, None),
        event("feed-2", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    ];
    for e in &feed {
        s.submit(e).await;
    }
    s.settle().await;
    let calls_before = s.org.sim.calls().len();
    let states_before: Vec<String> = s
        .engine
        .store()
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.state_json)
        .collect();
    for e in &feed {
        let request = offboard::domain::event::parse(e, &["smartsheet".into()]).unwrap();
        let accepted = s.engine.accept(&request, "{}").await.unwrap().unwrap();
        assert_eq!(accepted, offboard::store::Accepted::Duplicate);
    }
    s.settle().await;
    assert_eq!(s.org.sim.calls().len(), calls_before, "no API call");
    let rows = s.engine.store().list(None).await.unwrap();
    assert_eq!(rows.len(), 2);
    let states_after: Vec<String> = rows.iter().map(|r| r.state_json.clone()).collect();
    assert_eq!(states_after, states_before);
    for row in &rows {
        let trail = s.engine.store().trail(&row.id).await.unwrap();
        assert_eq!(trail.last().unwrap().kind, "duplicate_received");
        assert_eq!(s.cli(&["replay", &row.id]).0, 0);
    }
}
