//! Rechecks after the end, with real RabbitMQ and PostgreSQL and the Smartsheet simulator:
//! a completed removal looks again at its `recheck_after` offsets (here 3–4 s) with its
//! read-only lookup; a person provisioned again is reported (`SMT-113-B`,
//! `workflow.access_reappeared`) while the workflow stays `completed` / `removed`; one who
//! stays gone gets a clean recheck; a recheck pending when `serve` dies runs in the next.
//! On the Postman simulator, a re-activated SCIM user is reported (`POST-113-B`).

mod support;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::Channel;
use offboard::store::Store;
use offboard_simulators::postman::SimWorkspace;
use offboard_simulators::smartsheet::SimUser;
use serde_json::Value;
use support::procs::{cli, ConfigFile, Procs};
use support::*;

/// The shipped Smartsheet offboarding with fast retries and rechecks `recheck_after`.
fn rechecking_workflows(recheck_after: &str) -> tempfile::TempDir {
    let dir = fast_workflows(&["smartsheet-offboard.toml"]);
    let path = dir.path().join("smartsheet-offboard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = edit(&text, r#"recheck_after = ["24h", "30d"]"#, recheck_after);
    std::fs::write(&path, text).unwrap();
    dir
}

/// The one workflow of `event_id`, as stored now.
async fn workflow_of(store: &Store, event_id: &str) -> offboard::store::Loaded {
    let row = store.by_event(event_id).await.unwrap().remove(0);
    store.load(&row.id).await.unwrap().unwrap()
}

/// Waits until the workflow of `event_id` has recorded `count` rechecks.
async fn rechecked(
    store: &Store,
    event_id: &str,
    count: usize,
    secs: u64,
) -> offboard::store::Loaded {
    eventually(
        secs,
        &format!("{count} recheck(s) of {event_id}"),
        || async {
            let w = workflow_of(store, event_id).await;
            (w.state.rechecks.len() >= count).then_some(w)
        },
    )
    .await
}

/// The kinds of a workflow's trail records.
async fn kinds(store: &Store, id: &str) -> Vec<String> {
    trail(store, id).await.into_iter().map(|r| r.kind).collect()
}

#[tokio::test]
async fn access_that_comes_back_is_reported_and_access_that_stays_gone_is_on_record() {
    let org = org().await;
    let stays = org.sim.add_user(SimUser::new("kay@example.com"));
    let (url, _db) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let workflows = rechecking_workflows(r#"recheck_after = ["3s"]"#);
    let mut config = config(&url, names.clone(), &org.sim.base_url());
    config.workflows_dir = Some(workflows.path().to_path_buf());
    let engine = engine(config, TOKEN).await;
    let (watch, queue) = watch_exchange(&names, "workflow.#").await;
    let _service = serve(&engine);
    let store = engine.store();

    for (id, email) in [("ev-back", LEAVER), ("ev-gone", "kay@example.com")] {
        publish(
            &names,
            "offboarding.requested",
            &event(id, "offboarding.requested", email, Some(RECIPIENT)),
        )
        .await;
    }
    let back = finished(store, "ev-back", 1, 30).await.remove(0);
    let gone = finished(store, "ev-gone", 1, 30).await.remove(0);
    assert!(
        org.sim.user(org.leaver).is_none() && org.sim.user(stays).is_none(),
        "{back:?} {gone:?}"
    );
    // Auto-provisioning brings the leaver back as a new user, within the 3 s.
    let new_id = org.sim.add_user(SimUser {
        licensed_sheet_creator: true,
        ..SimUser::new(LEAVER)
    });
    assert_ne!(new_id, org.leaver);
    org.sim.clear_calls();

    let back_now = rechecked(store, "ev-back", 1, 30).await;
    let gone_now = rechecked(store, "ev-gone", 1, 30).await;

    // The outcome stands; `finished_at` is still the completion's time.
    for (before, now) in [(&back, &back_now), (&gone, &gone_now)] {
        assert_eq!(
            (now.row.state.as_str(), now.row.outcome.as_deref()),
            ("completed", Some("removed"))
        );
        assert_eq!(now.row.finished_at, before.finished_at);
        assert_eq!(now.row.error_code, None);
    }
    let found = &back_now.state.rechecks[0];
    assert_eq!(found.finding.result.as_str(), "recreated");
    assert_eq!(found.finding.code.map(|c| c.as_str()), Some("SMT-113-B"));
    assert_eq!(found.finding.user_id, Some(new_id));
    assert_eq!(found.finding.entitlements["licensedSheetCreator"], true);
    let clean = &gone_now.state.rechecks[0];
    assert_eq!(
        (clean.finding.result.as_str(), clean.finding.code),
        ("still_gone", None)
    );
    // Due no more: the one recheck is done.
    assert_eq!((back_now.row.due_at, gone_now.row.due_at), (None, None));
    let completed = back_now.state.rechecks_from.unwrap();
    assert!(found.at >= completed + chrono::Duration::seconds(3));

    // Rechecks read only.
    let writes: Vec<_> = org
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .collect();
    assert!(writes.is_empty(), "a recheck wrote: {writes:?}");
    for id in [&back.id, &gone.id] {
        assert_eq!(
            kinds(store, id).await.last().map(String::as_str),
            Some("rechecked")
        );
        let checked = offboard::evidence::replay(store, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(checked.report.problem, None);
    }

    // Published: the completion once for each, and the reappearance for the leaver only,
    // with the code and the entitlements seen.
    let events = published(&watch, &queue, 3).await;
    let keys_of = |id: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|(_, e)| e["data"]["workflow_id"] == id)
            .map(|(k, _)| k.as_str())
            .collect()
    };
    assert_eq!(
        keys_of(&back.id),
        ["workflow.completed", "workflow.access_reappeared"]
    );
    assert_eq!(keys_of(&gone.id), ["workflow.completed"]);
    let reappeared = &events
        .iter()
        .find(|(k, _)| k == "workflow.access_reappeared")
        .unwrap()
        .1;
    assert_eq!(reappeared["data"]["code"], "SMT-113-B");
    assert_eq!(reappeared["data"]["result"], "recreated");
    assert_eq!(reappeared["data"]["outcome"], "removed");
    assert_eq!(
        reappeared["data"]["entitlements"]["licensedSheetCreator"],
        true
    );

    // The auditors' rows say when it was last checked and what was found.
    let rows = offboard::evidence::rows(store, chrono::DateTime::UNIX_EPOCH, None)
        .await
        .unwrap();
    let row_of = |id: &str| {
        rows.iter()
            .find(|r| r["workflow_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row_of(&back.id)["recheck_result"], "recreated");
    assert_eq!(row_of(&gone.id)["recheck_result"], "still_gone");
    assert!(row_of(&gone.id)["last_rechecked_at"].is_string());
}

/// A recheck pending when `serve` is killed runs in the next `serve`, from its durable
/// timer; `show` and `history` print it and `replay` of the trail exits 0.
#[tokio::test]
async fn a_recheck_pending_across_a_restart_of_serve_still_runs() {
    let org = org().await;
    let (url, _db) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let workflows = rechecking_workflows(r#"recheck_after = ["4s"]"#);
    let dir = tempfile::tempdir().unwrap();
    let config =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.path().join("offboard.toml"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "workflows_dir = {:?}\n{text}",
            workflows.path().display().to_string()
        ),
    )
    .unwrap();
    let store = Store::open(&url).await.unwrap();
    let mut procs = Procs::new();

    let a = procs.serve("A", &config, &dir.path().join("a.log"));
    procs.wait_logs(&[a], "consuming events", 60).await;
    publish(
        &names,
        "offboarding.requested",
        &event(
            "ev-restart",
            "offboarding.requested",
            LEAVER,
            Some(RECIPIENT),
        ),
    )
    .await;
    let done = finished(&store, "ev-restart", 1, 30).await.remove(0);
    procs.kill(a);
    let pending = workflow_of(&store, "ev-restart").await;
    assert!(
        pending.state.rechecks.is_empty(),
        "A was killed before the recheck was due"
    );
    assert!(
        pending.row.due_at.is_some(),
        "{:?} {:?}",
        pending.row,
        pending.state
    );
    // Re-activated under the same id while no `serve` runs.
    org.sim.add_user(SimUser {
        id: org.leaver,
        ..SimUser::new(LEAVER)
    });

    let b = procs.serve("B", &config, &dir.path().join("b.log"));
    let now = rechecked(&store, "ev-restart", 1, 30).await;
    let found = &now.state.rechecks[0].finding;
    assert_eq!(
        (found.result.as_str(), found.code.map(|c| c.as_str())),
        ("reactivated", Some("SMT-113-B"))
    );
    assert_eq!(now.row.outcome.as_deref(), Some("removed"));
    procs.terminate(b, 20).await;

    let (code, out, err) = cli(&config, &["replay", &done.id]);
    assert_eq!(code, 0, "replay: {out}{err}");
    let (code, out, _) = cli(&config, &["show", &done.id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("reactivated") && out.contains("SMT-113-B"),
        "{out}"
    );
    let (code, out, _) = cli(&config, &["history", &done.id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("recheck 1: reactivated") && out.contains("[SMT-113-B]"),
        "{out}"
    );
}

/// With `recheck_action = "offboard-again"`, access that came back also starts a fresh
/// offboarding of the person on the connection, under an event id derived from the
/// recheck, which removes the new account; its own recheck then finds the person gone.
#[tokio::test]
async fn offboard_again_removes_the_account_that_came_back_once() {
    let org = org().await;
    let (url, _db) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let workflows =
        rechecking_workflows("recheck_after = [\"3s\"]\nrecheck_action = \"offboard-again\"");
    let mut config = config(&url, names.clone(), &org.sim.base_url());
    config.workflows_dir = Some(workflows.path().to_path_buf());
    let engine = engine(config, TOKEN).await;
    let _service = serve(&engine);
    let store = engine.store();

    publish(
        &names,
        "offboarding.requested",
        &event("ev-first", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    finished(store, "ev-first", 1, 30).await;
    let new_id = org.sim.add_user(SimUser::new(LEAVER));

    let first = rechecked(store, "ev-first", 1, 30).await;
    let finding = &first.state.rechecks[0].finding;
    assert_eq!(finding.result.as_str(), "recreated");
    assert_eq!(
        finding.offboarded_again.as_deref(),
        Some("ev-first:recheck-1")
    );
    let again = finished(store, "ev-first:recheck-1", 1, 30).await.remove(0);
    assert_eq!(
        (
            again.state.as_str(),
            again.outcome.as_deref(),
            again.connection.as_str()
        ),
        ("completed", Some("removed"), "smartsheet")
    );
    assert!(org.sim.user(new_id).is_none());
    let again_now = rechecked(store, "ev-first:recheck-1", 1, 30).await;
    assert_eq!(
        again_now.state.rechecks[0].finding.result.as_str(),
        "still_gone"
    );
    assert_eq!(again_now.state.rechecks[0].finding.offboarded_again, None);
    // One fresh offboarding for the one recheck, and both trails replay.
    assert_eq!(store.by_event("ev-first:recheck-1").await.unwrap().len(), 1);
    for w in [&first.row.id, &again.id] {
        let checked = offboard::evidence::replay(store, w).await.unwrap().unwrap();
        assert_eq!(checked.report.problem, None);
    }
}

/// The same on Postman, whose lookup knows a person by SCIM id: the leaver's SCIM user
/// re-activated after the offboarding (as an identity provider's push does) records
/// `POST-113-B` and publishes `workflow.access_reappeared`; a person whose SCIM user stays
/// `active: false` (offboard's own deactivation) gets a clean recheck; `replay` exits 0.
#[tokio::test]
async fn on_postman_a_reactivated_scim_user_is_reported_and_a_deactivated_one_is_gone() {
    let team = postman_team().await;
    let s = team.seed.clone();
    let sim = &team.sim;
    let (url, _db) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let workflows = fast_workflows(&["postman-offboard.toml"]);
    let path = workflows.path().join("postman-offboard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = edit(
        &text,
        r#"recheck_after = ["24h", "30d"]"#,
        r#"recheck_after = ["3s"]"#,
    );
    std::fs::write(&path, text).unwrap();
    let mut config = postman_config(&url, names.clone(), &sim.base_url());
    config.workflows_dir = Some(workflows.path().to_path_buf());
    let engine = postman_engine(config, POSTMAN_KEY).await;
    let (watch, queue) = watch_exchange(&names, "workflow.#").await;
    let service = serve(&engine);
    let store = engine.store();

    for (id, email) in [
        ("ev-pm-back", &s.leaver_email),
        ("ev-pm-gone", &s.reclaim_email),
    ] {
        publish(
            &names,
            "offboarding.requested",
            &event(id, "offboarding.requested", email, Some(&s.recipient_email)),
        )
        .await;
    }
    let back = finished(store, "ev-pm-back", 1, 30).await.remove(0);
    let gone = finished(store, "ev-pm-gone", 1, 30).await.remove(0);
    for w in [&back, &gone] {
        assert_eq!(
            (w.state.as_str(), w.outcome.as_deref()),
            ("completed", Some("removed")),
            "{:?}",
            w.error_message
        );
    }
    let leaver = sim.member(s.leaver_id).unwrap();
    assert!(!leaver.active && !sim.member(s.reclaim_id).unwrap().active);
    // The identity provider still assigns the leaver: it re-activates the same SCIM user.
    sim.update_member(s.leaver_id, |m| m.active = true);
    // The other stays deactivated, yet is the only Admin of a workspace (left so by
    // someone since): the lookup reports such a user to hand the workspace over, and the
    // recheck must still count them gone.
    sim.add_workspace(SimWorkspace::team("Left Behind", s.reclaim_id));
    sim.clear_calls();

    let back_now = rechecked(store, "ev-pm-back", 1, 30).await;
    let gone_now = rechecked(store, "ev-pm-gone", 1, 30).await;
    for (before, now) in [(&back, &back_now), (&gone, &gone_now)] {
        assert_eq!(
            (now.row.state.as_str(), now.row.outcome.as_deref()),
            ("completed", Some("removed"))
        );
        assert_eq!(now.row.finished_at, before.finished_at);
    }
    let found = &back_now.state.rechecks[0].finding;
    assert_eq!(
        (found.result.as_str(), found.code.map(|c| c.as_str())),
        ("reactivated", Some("POST-113-B")),
        "{found:?}"
    );
    assert_eq!(found.scim_id.as_deref(), Some(leaver.scim_id.as_str()));
    assert_eq!(found.user_id, Some(s.leaver_id));
    assert_eq!(found.entitlements["teamMember"], true);
    let clean = &gone_now.state.rechecks[0].finding;
    assert_eq!(
        (clean.result.as_str(), clean.code),
        ("still_gone", None),
        "{clean:?}"
    );
    assert!(clean.summary.contains("is deactivated"), "{clean:?}");
    // Rechecks read only.
    let writes: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .collect();
    assert!(writes.is_empty(), "a recheck wrote: {writes:?}");

    // Published: each completion, and the reappearance of the leaver only.
    let events = published(&watch, &queue, 3).await;
    let reappeared: Vec<_> = events
        .iter()
        .filter(|(k, _)| k == "workflow.access_reappeared")
        .map(|(_, e)| &e["data"])
        .collect();
    assert_eq!(reappeared.len(), 1, "{events:?}");
    assert_eq!(reappeared[0]["workflow_id"], back.id.as_str());
    assert_eq!(reappeared[0]["code"], "POST-113-B");
    assert_eq!(reappeared[0]["result"], "reactivated");
    assert_eq!(reappeared[0]["scim_id"], leaver.scim_id.as_str());
    drop(service);

    // The binary replays both trails and shows the finding.
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigFile::new(&url, &names, &sim.base_url()).write(&dir.path().join("o.toml"));
    for id in [back.id.clone(), gone.id.clone()] {
        let config = config.clone();
        let (code, out, err) = tokio::task::spawn_blocking(move || cli(&config, &["replay", &id]))
            .await
            .unwrap();
        assert_eq!(code, 0, "replay: {out}{err}");
    }
    let id = back.id.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || cli(&config, &["show", &id]))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("reactivated") && out.contains("POST-113-B"),
        "{out}"
    );
}

/// The events published to the watch `queue` (routing key and body), taken until at least
/// `count` have come.
async fn published(watch: &Channel, queue: &str, count: usize) -> Vec<(String, Value)> {
    let events = std::sync::Mutex::new(Vec::<(String, Value)>::new());
    eventually(20, "the events out", || async {
        while let Some(m) = watch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            m.ack(BasicAckOptions::default()).await.unwrap();
            let event = (
                m.routing_key.to_string(),
                serde_json::from_slice(&m.data).unwrap(),
            );
            events.lock().unwrap().push(event);
        }
        (events.lock().unwrap().len() >= count).then_some(())
    })
    .await;
    events.into_inner().unwrap()
}
