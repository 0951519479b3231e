//! Upgrades in place (issue 23), with the real binary: `serve` comes up on a request queue
//! the previous release declared with other arguments, consumes what was queued there and
//! every event published while it switches, and deletes the old queue once drained;
//! workflows the previous release left on its schema (completed, failed, waiting on
//! `not_before`, waiting on a retry timer, completion events in the outbox, plain links)
//! all finish under this one, and `verify --all` passes; a
//! database migrated by a newer release, or live leases of a worker of an older schema,
//! end `serve` with exit 2 and one line naming both versions.

mod support;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;

use migration::MigratorTrait;
use offboard::apps::retry::CallRetry;
use offboard::apps::AppClient;
use offboard::config::{AmqpNames, Secret};
use offboard::intake::topology::{revision_name, QUEUE_REVISION};
use offboard::runtime::definitions::Registry;
use offboard::runtime::engine::Engine;
use offboard::store::{release_version, Store};
use offboard_simulators::smartsheet::{Fault, FaultKind};
use sea_orm::ConnectionTrait;
use support::procs::{cli, ConfigFile, Procs};
use support::*;

const RECLAIMED: &str = "license.reclaim.requested";

/// The topology as the previous release declared it: the request queue without a
/// delivery limit, bound to the event types.
async fn declare_as_previous_release(ch: &Channel, names: &AmqpNames) {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        names.exchange.as_str().into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(names.dead_letter_exchange.as_str().into()),
    );
    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(names.queue.as_str().into(), queue, args)
        .await
        .unwrap();
    for key in ["offboarding.requested", RECLAIMED] {
        ch.queue_bind(
            names.queue.as_str().into(),
            names.exchange.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
}

/// Publishes straight to the exchange (no topology declared), as an HR system does;
/// `mandatory`, so an event no queue takes comes back and fails the test.
async fn publish_raw(ch: &Channel, names: &AmqpNames, id: &str) {
    let confirm = ch
        .basic_publish(
            names.exchange.as_str().into(),
            RECLAIMED.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &event(id, RECLAIMED, RECLAIM, None),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        confirm.take_message().is_none(),
        "event {id} was unroutable"
    );
}

/// Whether a queue exists (a passive declare on a channel of its own).
async fn queue_exists(queue: &str) -> bool {
    let ch = channel().await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_moves_off_a_queue_the_previous_release_declared_without_losing_an_event() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let ch = channel().await;
    declare_as_previous_release(&ch, &names).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // Queued under the previous release, nobody consuming.
    for i in 0..3 {
        publish_raw(&ch, &names, &format!("ev-old-{i}")).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let config =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.path().join("offboard.toml"));
    let mut procs = Procs::new();
    let serve = procs.serve("serve", &config, &dir.path().join("serve.log"));
    // Published all through the switch: before the new queue is bound, while both exist,
    // after the old one is gone. Each must find a queue (mandatory) and be processed.
    let versioned = revision_name(&names.queue, QUEUE_REVISION);
    let mut published = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let id = format!("ev-switch-{}", published.len());
        publish_raw(&ch, &names, &id).await;
        published.push(id);
        let switched = queue_exists(&versioned).await && !queue_exists(&names.queue).await;
        if switched && published.len() >= 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old queue was not retired:\n{}",
            procs.all[serve].log_text()
        );
        assert!(
            procs.all[serve].exited().is_none(),
            "serve exited:\n{}",
            procs.all[serve].log_text()
        );
    }
    for i in 0..3 {
        published.push(format!("ev-after-{i}"));
        publish_raw(&ch, &names, published.last().unwrap()).await;
    }

    let store = Store::open(&url).await.unwrap();
    for id in (0..3).map(|i| format!("ev-old-{i}")).chain(published) {
        let wf = finished(&store, &id, 1, 60).await.remove(0);
        assert_eq!(wf.state, "completed", "{id}");
    }
    assert!(procs.all[serve].exited().is_none(), "serve exited");
    procs.terminate(serve, 10).await;
}

/// A fresh database with one finished workflow, made by the current `serve`; returns
/// the configuration's path, the database URL and the workflow's id.
async fn one_finished_workflow(
    procs: &mut Procs,
    dir: &std::path::Path,
) -> (std::path::PathBuf, String, String) {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let config =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.join("offboard.toml"));
    let first = procs.serve("first", &config, &dir.join("first.log"));
    procs.wait_logs(&[first], "consuming events", 60).await;
    publish(&names, RECLAIMED, &event("ev-1", RECLAIMED, RECLAIM, None)).await;
    let store = Store::open(&url).await.unwrap();
    let id = finished(&store, "ev-1", 1, 60).await.remove(0).id;
    procs.terminate(first, 10).await;
    (config, url, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_release_ends_serve_with_exit_2_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::new();
    let (config, url, _) = one_finished_workflow(&mut procs, dir.path()).await;
    let store = Store::open(&url).await.unwrap();
    store
        .connection()
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) \
             VALUES ('m20991231_000001_from_the_future', 0)",
        )
        .await
        .unwrap();

    let newer = procs.serve("newer", &config, &dir.path().join("newer.log"));
    let status = procs.wait_exit(newer, 30).await.expect("serve must exit");
    assert_eq!(status.code(), Some(2), "{}", procs.all[newer].log_text());
    let log = procs.all[newer].log_text();
    let line = log
        .lines()
        .find(|l| l.contains("m20991231_000001_from_the_future"))
        .unwrap_or_else(|| panic!("no line names the applied version:\n{log}"));
    assert!(line.contains(&release_version()), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_leases_of_a_worker_of_an_older_schema_keep_serve_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::new();
    let (config, url, id) = one_finished_workflow(&mut procs, dir.path()).await;
    let store = Store::open(&url).await.unwrap();
    let db = store.connection();
    // A worker of the previous release (it recorded no version) holds a live lease.
    db.execute_unprepared(&format!(
        "UPDATE workflows SET lease_owner = 'old-worker', \
         lease_until = now() + interval '1 hour' WHERE id = '{id}'"
    ))
    .await
    .unwrap();
    let refused = procs.serve("refused", &config, &dir.path().join("refused.log"));
    let status = procs.wait_exit(refused, 30).await.expect("serve must exit");
    assert_eq!(status.code(), Some(2), "{}", procs.all[refused].log_text());
    let log = procs.all[refused].log_text();
    let line = log.lines().find(|l| l.contains("old-worker")).unwrap();
    assert!(
        line.contains("unrecorded") && line.contains(&release_version()),
        "{line}"
    );

    // One recorded with an older version is refused alike.
    db.execute_unprepared(
        "INSERT INTO workers (worker_id, schema_version) \
         VALUES ('old-worker', 'm20261203_000009_cancel_requests')",
    )
    .await
    .unwrap();
    let refused = procs.serve("refused-2", &config, &dir.path().join("refused-2.log"));
    let status = procs.wait_exit(refused, 30).await.expect("serve must exit");
    assert_eq!(status.code(), Some(2));
    assert!(procs.all[refused]
        .log_text()
        .contains("schema version m20261203_000009_cancel_requests"));

    // Once its lease has lapsed (the worker was stopped), the new release starts.
    db.execute_unprepared(&format!(
        "UPDATE workflows SET lease_until = now() - interval '1 second' WHERE id = '{id}'"
    ))
    .await
    .unwrap();
    let up = procs.serve("up", &config, &dir.path().join("up.log"));
    procs.wait_logs(&[up], "consuming events", 60).await;
    procs.terminate(up, 10).await;
}

/// The `n` a counting query answers.
async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(sea_orm::Statement::from_string(
        sea_orm::DbBackend::Postgres,
        sql,
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get::<i64>("", "n")
    .unwrap()
}

/// Accepts `event` on `engine` (in this process, as the previous release's worker).
async fn accept(engine: &Engine, event: &[u8]) -> String {
    let request = offboard::domain::event::parse(event, &["smartsheet".into()]).unwrap();
    engine
        .accept(&request, &String::from_utf8_lossy(event))
        .await
        .unwrap()
        .unwrap();
    engine.store().by_event(&request.event_id).await.unwrap()[0]
        .id
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_in_every_state_on_the_previous_schema_finish_under_this_release() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    // The previous release's schema: every migration but this release's.
    let store = Store::connect(&url).await.unwrap();
    let previous = migration::Migrator::migrations().len() as u32 - 1;
    migration::Migrator::up(store.connection(), Some(previous))
        .await
        .unwrap();
    // Its worker, without an audit key (plain links, as before the key).
    let config = support::config(&url, names.clone(), &org.sim.base_url());
    let conn = config.connections["smartsheet"].clone();
    let engine = Arc::new(
        Engine::new(store, config, Registry::load(None).unwrap())
            .with_lease(Duration::from_secs(2)),
    );
    engine
        .use_client(
            "smartsheet",
            // No per-call retry: a 503 goes straight to the step's durable retry timer.
            AppClient::new(&conn, Secret::new(TOKEN))
                .unwrap()
                .with_call_retry(CallRetry::never()),
        )
        .await;

    let completed = accept(&engine, &event("ev-done", RECLAIMED, RECLAIM, None)).await;
    engine.run_until_settled(Duration::ZERO).await.unwrap();
    org.sim.inject(
        Fault::new(
            "/users",
            FaultKind::Error {
                status: 403,
                error_code: 1004,
                retry_after_secs: None,
            },
        )
        .times(1),
    );
    let failed = accept(&engine, &event("ev-fail", RECLAIMED, RECLAIM, None)).await;
    engine.run_until_settled(Duration::ZERO).await.unwrap();
    org.sim.inject(
        Fault::new(
            "/users",
            FaultKind::Error {
                status: 503,
                error_code: 4001,
                retry_after_secs: None,
            },
        )
        .times(1),
    );
    let retrying = accept(&engine, &event("ev-retry", RECLAIMED, RECLAIM, None)).await;
    engine.run_until_settled(Duration::ZERO).await.unwrap();
    let mut later: serde_json::Value =
        serde_json::from_slice(&event("ev-wait", RECLAIMED, RECLAIM, None)).unwrap();
    later["data"]["not_before"] =
        serde_json::Value::from((chrono::Utc::now() + chrono::Duration::seconds(4)).to_rfc3339());
    let waiting = accept(&engine, later.to_string().as_bytes()).await;
    let state = |id: String| {
        let store = engine.store().clone();
        async move { store.get(&id).await.unwrap().unwrap() }
    };
    assert_eq!(state(completed.clone()).await.state, "completed");
    assert_eq!(state(failed.clone()).await.state, "failed");
    assert!(state(waiting.clone()).await.finished_at.is_none());
    let before = state(retrying.clone()).await;
    assert!(
        before.finished_at.is_none() && before.wake_at.is_some(),
        "{:?} should wait on its retry timer",
        before.state
    );
    let db = engine.store().connection().clone();
    // The completion events it wrote wait in the outbox (no publisher ran here).
    assert!(count(&db, "SELECT COUNT(*) AS n FROM outbox").await >= 2);
    // The old worker stops; its leases lapse (the new release refuses to start beside
    // live ones, as `live_leases_of_a_worker_of_an_older_schema…` shows).
    drop(engine);
    eventually(30, "the old worker's leases to lapse", || async {
        let live = count(
            &db,
            "SELECT COUNT(*) AS n FROM workflows WHERE lease_until > now()",
        );
        (live.await == 0).then_some(())
    })
    .await;

    // This release, on the same database and broker, with the audit key.
    let dir = tempfile::tempdir().unwrap();
    let config =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.path().join("offboard.toml"));
    let mut procs = Procs::new();
    let serve = procs.serve("serve", &config, &dir.path().join("serve.log"));
    let store = Store::connect(&url).await.unwrap();
    for id in [&waiting, &retrying] {
        let wf = eventually(60, &format!("{id} to end"), || async {
            store
                .get(id)
                .await
                .unwrap()
                .filter(|w| w.finished_at.is_some())
        })
        .await;
        assert_eq!(wf.state, "completed", "{}", procs.all[serve].log_text());
    }
    // The old failure can be retried, and finishes under this release.
    let (code, out, err) = cli(&config, &["retry", &failed]);
    assert_eq!(code, 0, "{out}{err}");
    let wf = eventually(60, "the retried failure to end", || async {
        store
            .get(&failed)
            .await
            .unwrap()
            .filter(|w| w.finished_at.is_some() && w.state != "failed")
    })
    .await;
    assert_eq!(wf.state, "completed");
    // The sweeper published what the old worker left in the outbox.
    eventually(30, "the outbox to empty", || async {
        (count(&db, "SELECT COUNT(*) AS n FROM outbox").await == 0).then_some(())
    })
    .await;
    let (code, out, err) = cli(&config, &["verify", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    procs.terminate(serve, 10).await;
}
