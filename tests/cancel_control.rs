//! A cancel always stops (issue 19), tried as an operator meets it: `offboard serve` as its
//! own process on PostgreSQL and RabbitMQ, the Smartsheet simulator failing or slow.
//!
//! - A console cancel while the DELETE answers 503 (the step waiting between its per-call
//!   retries) ends the workflow `cancelled`: no further attempt, no `cancel_refused`.
//! - A cancel from the command line (another process) while the read-only steps run ends
//!   the workflow with zero writes.
//! - The store's bookkeeping by lease: a claim skips the workflows a process still drives,
//!   a renewal presents the epoch it was claimed with, and `prune` leaves a workflow under
//!   a live lease alone.

mod support;

use std::time::Duration;

use offboard_simulators::smartsheet::{Fault, FaultKind};
use support::procs::{cli, command, ConfigFile, Procs};
use support::*;

/// The operator token of the console in these tests.
const OPERATOR_TOKEN: &str = "cancel-control-operator-token";

/// Writes the test's configuration, with a console on `console` when given.
fn write_config(
    dir: &std::path::Path,
    url: &str,
    names: &offboard::config::AmqpNames,
    sim_url: &str,
    console: Option<&str>,
) -> std::path::PathBuf {
    let path = ConfigFile::new(url, names, sim_url).write(&dir.join("offboard.toml"));
    if let Some(listen) = console {
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "[http]\nlisten = \"{listen}\"\noperator_token_env = \"OFFBOARD_TEST_OPERATOR_TOKEN\"\n"
        ));
        std::fs::write(&path, text).unwrap();
    }
    path
}

/// Starts `serve` with the operator token in its environment.
fn start_serve(procs: &mut Procs, config: &std::path::Path, dir: &std::path::Path) -> usize {
    let mut cmd = command(config);
    cmd.arg("serve")
        .env("OFFBOARD_TEST_OPERATOR_TOKEN", OPERATOR_TOKEN);
    procs.spawn("serve", cmd, &dir.join("serve.log"))
}

fn calls_with(org: &Org, methods: &[&str]) -> usize {
    org.sim
        .calls()
        .iter()
        .filter(|c| methods.contains(&c.method.as_str()))
        .count()
}

async fn trail_kinds(url: &str, id: &str) -> Vec<String> {
    let store = offboard::store::Store::connect(url).await.unwrap();
    trail(&store, id)
        .await
        .into_iter()
        .map(|r| r.kind)
        .collect()
}

async fn workflow_of(url: &str, event_id: &str) -> offboard::store::entities::workflow::Model {
    let store = offboard::store::Store::connect(url).await.unwrap();
    eventually(30, "the workflow to exist", || async {
        store.by_event(event_id).await.unwrap().pop()
    })
    .await
}

async fn ended(url: &str, id: &str) -> offboard::store::entities::workflow::Model {
    let store = offboard::store::Store::connect(url).await.unwrap();
    eventually(60, "the workflow to end", || async {
        store
            .get(id)
            .await
            .unwrap()
            .filter(|row| row.finished_at.is_some())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_cancel_during_a_failing_write_ends_cancelled_with_no_further_attempt() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write_config(
        dir.path(),
        &url,
        &names,
        &org.sim.base_url(),
        Some(&format!("127.0.0.1:{port}")),
    );
    // Every DELETE answers 503: the removal step retries each call, then the step.
    org.sim.inject(
        Fault::new(
            "/users",
            FaultKind::Error {
                status: 503,
                error_code: 4001,
                retry_after_secs: None,
            },
        )
        .method("DELETE")
        .times(100_000),
    );
    let mut procs = Procs::new();
    let serve = start_serve(&mut procs, &config, dir.path());
    publish(
        &names,
        "offboarding.requested",
        &event("ev-503", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    eventually(60, "the DELETE to be retried", || async {
        (calls_with(&org, &["DELETE"]) >= 2).then_some(())
    })
    .await;
    let wf = workflow_of(&url, "ev-503").await;

    let answer = reqwest::Client::new()
        .post(format!("{base}/workflows/{}/cancel", wf.id))
        .bearer_auth(OPERATOR_TOKEN)
        .form(&[("by", "alice")])
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap();
    let deletes_at_answer = calls_with(&org, &["DELETE"]);
    assert!(
        (status == 200 && body.contains("cancelled"))
            || (status == 202 && body.contains("will stop after the call in flight")),
        "the console says what happened: {status} {body}"
    );

    let row = ended(&url, &wf.id).await;
    assert_eq!(row.state, "cancelled", "{row:?}");
    assert!(
        calls_with(&org, &["DELETE"]) <= deletes_at_answer + 1,
        "at most the call in flight after the answer: {} DELETEs, {deletes_at_answer} at the answer",
        calls_with(&org, &["DELETE"])
    );
    let kinds = trail_kinds(&url, &wf.id).await;
    assert!(kinds.contains(&"cancelled".to_string()), "{kinds:?}");
    assert!(
        !kinds.contains(&"cancel_refused".to_string()),
        "no false refusal: {kinds:?}"
    );
    assert!(
        org.sim.user(org.leaver).is_some(),
        "the account was not removed"
    );

    // Asked again, the answer is what happened, from the trail.
    let (code, out, err) = cli(&config, &["cancel", &wf.id, "--by", "bob"]);
    assert_ne!(code, 0);
    assert!(err.contains("refused: cancelled"), "{out}{err}");
    let (code, out, err) = cli(&config, &["replay", &wf.id]);
    assert_eq!(code, 0, "replay:\n{out}{err}");
    assert!(procs.terminate(serve, 30).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_process_during_slow_reads_ends_with_zero_writes() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &url, &names, &org.sim.base_url(), None);
    // The group list is slow (`serve`'s connection check reads it too): the cancel
    // arrives while the read-only steps run.
    org.sim.inject(
        Fault::new("/groups", FaultKind::Delay(Duration::from_secs(3)))
            .method("GET")
            .times(10),
    );
    let mut procs = Procs::new();
    let serve = start_serve(&mut procs, &config, dir.path());
    publish(
        &names,
        "offboarding.requested",
        &event("ev-slow", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    eventually(60, "the leaver to be looked up", || async {
        org.sim
            .calls()
            .iter()
            .any(|c| c.method == "GET" && c.query.starts_with("email="))
            .then_some(())
    })
    .await;
    let wf = workflow_of(&url, "ev-slow").await;

    let (code, out, err) = {
        let config = config.clone();
        let id = wf.id.clone();
        tokio::task::spawn_blocking(move || cli(&config, &["cancel", &id, "--by", "alice"]))
            .await
            .unwrap()
    };
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(": cancelled (by alice)"),
        "the command line says it stopped: {out}{err}"
    );

    let row = ended(&url, &wf.id).await;
    assert_eq!(row.state, "cancelled");
    assert_eq!(
        calls_with(&org, &["PUT", "POST", "DELETE"]),
        0,
        "no write reached the app: {:?}",
        org.sim.calls()
    );
    let kinds = trail_kinds(&url, &wf.id).await;
    assert!(!kinds.contains(&"cancel_refused".to_string()), "{kinds:?}");
    let (code, out, err) = cli(&config, &["replay", &wf.id]);
    assert_eq!(code, 0, "replay:\n{out}{err}");
    assert!(procs.terminate(serve, 30).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_skip_drives_in_flight_renewals_present_their_epoch_and_prune_spares_live_leases() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Postgres).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    let body = event("ev-lease", "license.reclaim.requested", RECLAIM, None);
    let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    let store = engine.store();
    let first = store.claim_due("a", 0.2, 1, &[]).await.unwrap().remove(0);
    let id = first.id.clone();
    // The lease lapses (a database outage longer than the lease, say) while "a" still
    // drives the workflow: "a" does not claim it again beside that drive.
    eventually(10, "the lease to lapse", || async {
        let again = store
            .claim_due("a", 30.0, 1, std::slice::from_ref(&id))
            .await
            .unwrap();
        assert!(again.is_empty(), "claimed a workflow still in flight");
        let row = store.get(&id).await.unwrap().unwrap();
        row.lease_until
            .filter(|until| *until < chrono::Utc::now())
            .map(|_| ())
    })
    .await;
    // Once that drive is gone, a new claim takes a new epoch; the old epoch's renewal is
    // refused and only the new one is extended.
    let second = store.claim_due("a", 30.0, 1, &[]).await.unwrap().remove(0);
    assert_eq!(second.lease.epoch, first.lease.epoch + 1);
    let stale = store
        .renew("a", &[(id.clone(), first.lease.epoch)], 30.0)
        .await
        .unwrap();
    assert!(stale.is_empty(), "the stale epoch was renewed: {stale:?}");
    let live = store
        .renew("a", &[(id.clone(), second.lease.epoch)], 30.0)
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].cancel_requested_by, None);
    // A cancel request shows on the held lease.
    assert!(store.request_cancel(&id, "ops").await.unwrap());
    let asked = store.cancel_requests("a").await.unwrap();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].epoch, asked[0].cancel_requested_by.as_deref()),
        (second.lease.epoch, Some("ops"))
    );

    // Mark the workflow finished under the live lease (as an operator's retry would find a
    // failed one): prune leaves it, and removes it once the lease is given back.
    sea_orm::ConnectionTrait::execute_unprepared(
        store.connection(),
        &format!("UPDATE workflows SET finished_at = now(), state = 'failed' WHERE id = '{id}'"),
    )
    .await
    .unwrap();
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let pruned = store.prune(std::slice::from_ref(&id), later).await.unwrap();
    assert_eq!(
        (pruned.workflows, pruned.skipped.clone()),
        (0, vec![id.clone()])
    );
    assert!(store.get(&id).await.unwrap().is_some());
    store.release(&id, &second.lease, None).await.unwrap();
    let pruned = store.prune(std::slice::from_ref(&id), later).await.unwrap();
    assert_eq!((pruned.workflows, pruned.skipped.len()), (1, 0));
    assert!(store.get(&id).await.unwrap().is_none());
}
