//! Intake survives what it cannot store and a database that goes away: a body with a 0x00
//! byte and an event whose id holds `\u0000` are dead-lettered and recorded while the next
//! event completes; ids of 3,000 to 200,000 characters are refused before the database
//! and an event the database refuses is dead-lettered with `EVT-107` after three tries,
//! neither pausing intake (the real binary); a dead letter keeps 64 KiB of a 300 KiB body
//! with its size and SHA-256; a 15 s PostgreSQL outage while events arrive and workflows
//! run loses nothing, dead-letters no valid event and leaves no workflow stuck.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use offboard_simulators::smartsheet::{Fault, FaultKind, SimUser};
use support::procs::{drain_dead_letters, pg_url_via, publish_many, ConfigFile, Procs, TcpProxy};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_postgres_cannot_store_are_dead_lettered_and_intake_goes_on() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let service = serve(&engine);

    let random: Vec<u8> = b"\x00\xff\x13\x00garbage\x00\x89PNG\r\n\x1a\n\x00".to_vec();
    let json = String::from_utf8(event(
        "ev-utf16",
        "offboarding.requested",
        LEAVER,
        Some(RECIPIENT),
    ))
    .unwrap();
    let utf16: Vec<u8> = json.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let nul_id = event("ev-\0-nul", "offboarding.requested", LEAVER, None);
    assert!(
        String::from_utf8_lossy(&nul_id).contains("\\u0000"),
        "the id carries an escaped NUL"
    );
    let kind = "offboarding.requested".to_string();
    publish_many(
        &names,
        &[
            (kind.clone(), random),
            (kind.clone(), utf16),
            (kind.clone(), nul_id),
            (
                "license.reclaim.requested".into(),
                event("ev-normal", "license.reclaim.requested", RECLAIM, None),
            ),
        ],
    )
    .await;

    // The event behind the poison goes through.
    let wf = finished(engine.store(), "ev-normal", 1, 30).await.remove(0);
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("downgraded"))
    );
    assert!(
        org.sim.user_by_email(LEAVER).is_some(),
        "no poisoned message started anything"
    );

    // Each poisoned message is recorded once and dead-lettered once, with its EVT- code.
    let rows = eventually(15, "three dead letters recorded", || async {
        let rows = engine.store().dead_letters().await.unwrap();
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    let mut dead = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while dead.len() < 3 && tokio::time::Instant::now() < deadline {
        dead.extend(drain_dead_letters(&names.dead_letter_queue).await);
        if dead.len() < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    dead.extend(drain_dead_letters(&names.dead_letter_queue).await);
    service.stop().await;
    dead.extend(drain_dead_letters(&names.dead_letter_queue).await);

    let codes: Vec<Option<String>> = dead.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(
        dead.len(),
        3,
        "one dead letter per poisoned message, got {codes:?}"
    );
    assert!(
        codes
            .iter()
            .all(|c| c.as_deref().is_some_and(|c| c.starts_with("EVT-"))),
        "{codes:?}"
    );
    let rows = engine.store().dead_letters().await.unwrap_or(rows);
    let row_codes: Vec<&str> = rows.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(
        rows.len(),
        3,
        "one record per poisoned message: {row_codes:?}"
    );
    assert!(
        row_codes.iter().all(|c| c.starts_with("EVT-")),
        "{row_codes:?}"
    );
    assert_eq!(engine.store().list(None).await.unwrap().len(), 1);
}

/// What once held an intake slot forever (an id past PostgreSQL's index row limit was
/// taken for a database outage and retried without end) is dead-lettered at once, with
/// `EVT-102`, by the real binary on PostgreSQL; an event the database refuses for a
/// reason of its own (here a trigger) is tried three times and dead-lettered with
/// `EVT-107`; a 300 KiB body's dead letter keeps 64 KiB, its size and its SHA-256. The
/// event published after them all completes, and intake never says the database is
/// unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_ids_and_refused_events_are_dead_lettered_at_once_and_intake_goes_on() {
    use sea_orm::ConnectionTrait;
    use sha2::Digest;
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let store = offboard::store::Store::open(&url).await.unwrap();
    // The database itself refuses one event id: an error of the statement, not of the
    // connection, as a value the parser passes but the server cannot store would be.
    for sql in [
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
         IF NEW.id = 'ev-poison' THEN RAISE EXCEPTION 'this event is poisoned'; END IF; \
         RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON events \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ] {
        store.connection().execute_unprepared(sql).await.unwrap();
    }
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let config =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.path().join("offboard.toml"));
    let mut procs = Procs::new();
    let worker = procs.serve("serve", &config, &dir.path().join("serve.log"));
    procs.wait_logs(&[worker], "consuming events", 60).await;

    let kind = "license.reclaim.requested";
    let long_ids: Vec<String> = [3_000, 20_000, 200_000]
        .iter()
        .map(|n| format!("ev-long-{n}-{}", "x".repeat(*n)))
        .collect();
    let mut messages: Vec<(String, Vec<u8>)> = long_ids
        .iter()
        .map(|id| (kind.to_string(), event(id, kind, RECLAIM, None)))
        .collect();
    let big = format!(
        "{{\"id\":\"ev-big\",\"pad\":\"{}\"}}",
        "y".repeat(300 * 1024)
    );
    messages.push((kind.into(), big.clone().into_bytes()));
    messages.push((kind.into(), event("ev-poison", kind, RECLAIM, None)));
    messages.push((kind.into(), event("ev-after", kind, RECLAIM, None)));
    let published = tokio::time::Instant::now();
    publish_many(&names, &messages).await;

    let rows = eventually(20, "five dead letters recorded", || async {
        let rows = store.dead_letters().await.unwrap();
        (rows.len() >= 5).then_some(rows)
    })
    .await;
    assert!(
        published.elapsed() < Duration::from_secs(10),
        "dead-lettered at once, not after retries: {:?}",
        published.elapsed()
    );
    let wf = finished(&store, "ev-after", 1, 30).await.remove(0);
    assert_eq!(wf.state, "completed", "{:?}", wf.error_code);

    let by_id: HashMap<String, &offboard::store::entities::dead_letter::Model> = rows
        .iter()
        .map(|r| (r.event_id.clone().unwrap_or_default(), r))
        .collect();
    assert_eq!(
        rows.len(),
        5,
        "{:?}",
        by_id
            .keys()
            .map(|k| &k[..k.len().min(20)])
            .collect::<Vec<_>>()
    );
    for id in &long_ids {
        // The record names the event by the start of its id.
        let row = by_id[&id[..256]];
        assert_eq!(row.code, "EVT-102", "{}", row.message);
        assert!(
            row.message.contains("id is") && row.message.contains("limit"),
            "{}",
            row.message
        );
    }
    let poison = by_id["ev-poison"];
    assert_eq!(poison.code, "EVT-107", "{}", poison.message);
    let big_row = by_id["ev-big"];
    assert_eq!(big_row.code, "EVT-100");
    let raw = big_row.raw.as_deref().unwrap();
    assert_eq!(raw.len(), 64 * 1024, "64 KiB of the body are kept");
    assert_eq!(raw, &big.as_bytes()[..64 * 1024]);
    assert_eq!(big_row.body_size, Some(big.len() as i64));
    assert_eq!(
        big_row.body_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest(big.as_bytes())).as_str())
    );
    for id in long_ids
        .iter()
        .chain([&"ev-poison".to_string(), &"ev-big".to_string()])
    {
        assert!(
            store.by_event(id).await.unwrap().is_empty(),
            "{:.20} started nothing",
            id
        );
    }
    let dead = eventually(15, "five messages in the dead-letter queue", || async {
        let got = drain_dead_letters(&names.dead_letter_queue).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    let mut codes: Vec<String> = dead.into_iter().filter_map(|(c, _)| c).collect();
    codes.extend(
        drain_dead_letters(&names.dead_letter_queue)
            .await
            .into_iter()
            .filter_map(|(c, _)| c),
    );
    codes.sort();
    assert_eq!(
        codes,
        ["EVT-100", "EVT-102", "EVT-102", "EVT-102", "EVT-107"]
    );

    let log = procs.all[worker].log_text();
    assert!(
        !log.contains("database is unreachable"),
        "intake took bad data for an outage:\n{log}"
    );
    assert_eq!(
        log.matches("the database refused to store an event")
            .count(),
        3,
        "the refused event was tried three times:\n{log}"
    );
    assert!(
        !log.contains(&"x".repeat(300)),
        "an over-long id is never logged whole"
    );
    procs.terminate(worker, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15_s_database_outage_loses_nothing_and_leaves_nothing_stuck() {
    const BATCH: usize = 20;
    let org = org().await;
    let people: Vec<(String, &str)> = (0..2 * BATCH)
        .map(|i| {
            let kind = if i % 2 == 0 {
                "offboarding.requested"
            } else {
                "license.reclaim.requested"
            };
            (format!("outage.{i}@example.com"), kind)
        })
        .collect();
    for (p, _) in &people {
        org.sim.add_user(SimUser {
            resource_viewer: true,
            ..SimUser::new(p)
        });
    }
    // Lookups are slow, so workflows are in flight when the database goes.
    org.sim.inject(
        Fault::new("/users", FaultKind::Delay(Duration::from_millis(400)))
            .method("GET")
            .times(80),
    );
    let (url, _) = fresh_database(Db::Postgres).await;
    let store = offboard::store::Store::open(&url).await.unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigFile::new(&pg_url_via(&proxy, &url), &names, &org.sim.base_url())
        .write(&dir.path().join("offboard.toml"));
    let mut procs = Procs::new();
    let worker = procs.serve("serve", &config, &dir.path().join("serve.log"));
    procs.wait_logs(&[worker], "consuming events", 60).await;

    let messages: Vec<(String, Vec<u8>)> = people
        .iter()
        .enumerate()
        .map(|(i, (p, kind))| {
            (
                kind.to_string(),
                event(&format!("ev-out-{i}"), kind, p, None),
            )
        })
        .collect();
    publish_many(&names, &messages[..BATCH]).await;
    eventually(30, "several workflows to be running", || async {
        let rows = store.list(None).await.unwrap();
        let running = rows.iter().filter(|r| r.state == "running").count();
        let done = rows.iter().filter(|r| r.finished_at.is_some()).count();
        (running >= 3 && done >= 2).then_some(())
    })
    .await;

    // The database goes away for 15 s while the rest of the events arrive.
    proxy.cut(Duration::from_secs(15));
    let mut pace = tokio::time::interval(Duration::from_secs(3));
    for chunk in messages[BATCH..].chunks(5) {
        pace.tick().await;
        publish_many(&names, chunk).await;
    }
    eventually(30, "the outage to end", || async {
        (!proxy.is_down()).then_some(())
    })
    .await;

    // Afterwards: every event has exactly one workflow and each one completed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = store.list(None).await.unwrap();
        let done = rows.len() >= people.len() && rows.iter().all(|r| r.finished_at.is_some());
        if done || tokio::time::Instant::now() >= deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stuck: Vec<String> = rows
        .iter()
        .filter(|r| r.finished_at.is_none())
        .map(|r| format!("{} {} ({})", r.event_id, r.state, r.id))
        .collect();
    assert!(
        stuck.is_empty(),
        "{} workflows still unfinished 60 s after the database came back: {stuck:?}",
        stuck.len()
    );
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for r in &rows {
        *per_event.entry(r.event_id.as_str()).or_default() += 1;
    }
    for i in 0..people.len() {
        let id = format!("ev-out-{i}");
        assert_eq!(
            per_event.get(id.as_str()).copied(),
            Some(1),
            "event {id} should have exactly one workflow"
        );
    }
    for r in &rows {
        assert_eq!(
            r.state, "completed",
            "{} ended {} {:?}",
            r.event_id, r.state, r.error_code
        );
    }
    let dead_rows = store.dead_letters().await.unwrap();
    assert!(
        dead_rows.is_empty(),
        "valid events were dead-lettered: {:?}",
        dead_rows
            .iter()
            .map(|d| (&d.code, &d.message))
            .collect::<Vec<_>>()
    );
    let dead = drain_dead_letters(&names.dead_letter_queue).await;
    assert!(
        dead.is_empty(),
        "{} messages in the dead-letter queue: {:?}",
        dead.len(),
        dead.iter().map(|(c, _)| c).collect::<Vec<_>>()
    );
    assert!(
        procs.all[worker].exited().is_none(),
        "serve exited during the outage:\n{}",
        procs.all[worker].log_text()
    );
    procs.terminate(worker, 30).await;
}

/// A message that keeps coming back unprocessed (every consumer that took it died before
/// acknowledging it) is recorded and dead-lettered with `EVT-106` one delivery before the
/// queue's limit, instead of being dropped by the broker without a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_up_to_the_limit_is_dead_lettered_with_evt_106() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    publish(
        &names,
        "license.reclaim.requested",
        &event("ev-bounced", "license.reclaim.requested", RECLAIM, None),
    )
    .await;
    // Consumers that take the message and give it back, as a crashing one would.
    let ch = channel().await;
    let returns = offboard::intake::DELIVERY_LIMIT - 1;
    for _ in 0..returns {
        let msg = eventually(10, "the message to be back on the queue", || async {
            ch.basic_get(
                names.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap()
        })
        .await;
        msg.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let service = serve(&engine);
    let rows = eventually(30, "the bounced message to be recorded", || async {
        let rows = engine.store().dead_letters().await.unwrap();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].code, "EVT-106");
    assert_eq!(rows[0].event_id.as_deref(), Some("ev-bounced"));
    let dead = eventually(
        15,
        "the bounced message in the dead-letter queue",
        || async {
            let got = drain_dead_letters(&names.dead_letter_queue).await;
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(dead[0].0.as_deref(), Some("EVT-106"));
    assert!(
        engine
            .store()
            .by_event("ev-bounced")
            .await
            .unwrap()
            .is_empty(),
        "a message that exhausted its deliveries starts nothing"
    );
    service.stop().await;
}
