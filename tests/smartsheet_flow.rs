//! Smartsheet workflows end to end: real RabbitMQ, a real database (SQLite and
//! PostgreSQL), the Smartsheet simulator standing in for the API.

mod support;

use std::time::Duration;

use offboard_simulators::smartsheet::{Fault, FaultKind, SimCall};
use serde_json::Value;
use support::*;

fn writes(calls: &[SimCall]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| {
            format!(
                "{} {}{}",
                c.method,
                c.path,
                if c.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", c.query)
                }
            )
        })
        .collect()
}

async fn offboard_and_reclaim(db: Db) {
    let org = org().await;
    let (url, _dir) = fresh_database(db).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let (watch_ch, watch_q) = watch_exchange(&names, "workflow.*").await;
    let service = serve(&engine);

    publish(
        &names,
        "offboarding.requested",
        &event("ev-off", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    let off = finished(engine.store(), "ev-off", 1, 30).await;
    assert_eq!(
        (off[0].state.as_str(), off[0].outcome.as_deref()),
        ("completed", Some("removed"))
    );

    // Owned groups (and only those) reassigned, then the flags, then the DELETE.
    let w = writes(&org.sim.calls());
    let expected = vec![
        format!("PUT /groups/{}", org.leaver_groups[0]),
        format!("PUT /groups/{}", org.leaver_groups[1]),
        format!("PUT /users/{}", org.leaver),
        format!(
            "DELETE /users/{}?removeFromSharing=true&transferTo={}&transferSheets=true",
            org.leaver, org.recipient
        ),
    ];
    assert_eq!(w, expected);
    let flags = org
        .sim
        .calls()
        .into_iter()
        .find(|c| c.method == "PUT" && c.path.starts_with("/users/"))
        .unwrap();
    assert_eq!(
        flags.body.unwrap(),
        serde_json::json!({"licensedSheetCreator": false, "resourceViewer": false, "groupAdmin": false})
    );
    for g in &org.leaver_groups {
        assert_eq!(org.sim.group(*g).unwrap().owner_id, org.recipient);
    }
    // Groups the leaver did not own keep their owners, and were never written to.
    let group_writes: Vec<String> = org
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.method == "PUT" && c.path.starts_with("/groups/"))
        .map(|c| c.path)
        .collect();
    for g in &org.other_groups {
        assert!(
            !group_writes.contains(&format!("/groups/{g}")),
            "group {g} was not the leaver's, yet it was written to: {group_writes:?}"
        );
    }
    assert_eq!(group_writes.len(), org.leaver_groups.len());
    assert_eq!(
        org.sim.group(org.other_groups[0]).unwrap().owner_id,
        org.admin
    );
    assert_eq!(
        org.sim.group(org.other_groups[1]).unwrap().owner_id,
        org.recipient
    );
    assert!(org.sim.user(org.leaver).is_none());
    assert_eq!(org.sim.user(org.recipient).unwrap().sheet_count, 7);

    // License reclaim: the three flags false, the account kept, no DELETE.
    org.sim.clear_calls();
    org.sim.update_user(org.reclaim, |u| u.group_admin = true);
    publish(
        &names,
        "license.reclaim.requested",
        &event(
            "ev-lic",
            "license.reclaim.requested",
            RECLAIM,
            Some(RECIPIENT),
        ),
    )
    .await;
    let lic = finished(engine.store(), "ev-lic", 1, 30).await;
    assert_eq!(lic[0].outcome.as_deref(), Some("downgraded"));
    let user = org.sim.user(org.reclaim).unwrap();
    assert!(!user.licensed_sheet_creator && !user.resource_viewer && !user.group_admin);
    assert!(writes(&org.sim.calls())
        .iter()
        .all(|w| !w.starts_with("DELETE")));

    // Both outcomes were published as workflow.completed events.
    let out = take(&watch_ch, &watch_q, 2, 10).await;
    let mut seen: Vec<(String, String)> = out
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_slice(&d.data).unwrap();
            (
                v["type"].as_str().unwrap().to_string(),
                v["data"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("workflow.completed".into(), "downgraded".into()),
            ("workflow.completed".into(), "removed".into())
        ]
    );
    service.stop().await;
    assert_eq!(
        writes_by_read_only_steps(engine.store()).await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_and_license_reclaim_over_amqp_on_sqlite() {
    offboard_and_reclaim(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_and_license_reclaim_over_amqp_on_postgres() {
    offboard_and_reclaim(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_id_starts_one_workflow() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let service = serve(&engine);
    let body = event("ev-dup", "license.reclaim.requested", RECLAIM, None);
    publish(&names, "license.reclaim.requested", &body).await;
    publish(&names, "license.reclaim.requested", &body).await;
    finished(engine.store(), "ev-dup", 1, 30).await;
    // Once the queue is drained and the repeat is on record, still exactly one workflow
    // exists for the id.
    let ch = channel().await;
    eventually(10, "the request queue to drain", || async {
        queue_is_empty(&ch, &names.queue).await.then_some(())
    })
    .await;
    let id = engine.store().by_event("ev-dup").await.unwrap()[0]
        .id
        .clone();
    eventually(10, "the repeated delivery to be noted", || async {
        let trail = engine.store().trail(&id).await.unwrap();
        trail
            .iter()
            .any(|r| r.kind == "duplicate_received")
            .then_some(())
    })
    .await;
    assert_eq!(engine.store().list(None).await.unwrap().len(), 1);
    let puts = org.sim.calls().iter().filter(|c| c.method == "PUT").count();
    assert_eq!(puts, 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_dead_lettered_with_their_code_and_good_ones_still_run() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let service = serve(&engine);
    let oversize = format!(
        "{{\"specversion\":\"1.0\",\"pad\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "EVT-100"),
        (oversize.into_bytes(), "EVT-100"),
        (br#"{"specversion":"1.0","id":"x1","source":"t","type":"user.hired","data":{}}"#.to_vec(), "EVT-101"),
        (br#"{"id":"x2","source":"t","type":"offboarding.requested","data":{}}"#.to_vec(), "EVT-101"),
        (br#"{"specversion":"1.0","id":"x3","source":"t","type":"offboarding.requested","data":{"person":{}}}"#.to_vec(), "EVT-102"),
        (br#"{"specversion":"1.0","id":"x4","source":"t","type":"offboarding.requested","data":{"person":{"email":"a@example.com"},"connections":["jira"]}}"#.to_vec(), "EVT-103"),
    ];
    for (body, _) in &cases {
        publish(&names, "offboarding.requested", body).await;
    }
    publish(
        &names,
        "license.reclaim.requested",
        &event("ev-good", "license.reclaim.requested", RECLAIM, None),
    )
    .await;
    let good = finished(engine.store(), "ev-good", 1, 30).await;
    assert_eq!(good[0].outcome.as_deref(), Some("downgraded"));

    let ch = channel().await;
    let dead = take(&ch, &names.dead_letter_queue, cases.len(), 10).await;
    let codes: Vec<String> = dead
        .iter()
        .map(|d| {
            let headers = d.properties.headers().as_ref().unwrap();
            let code = headers.inner().get("x-error-code").unwrap();
            assert!(headers.inner().contains_key("x-error-message"));
            match code {
                lapin::types::AMQPValue::LongString(s) => s.to_string(),
                other => panic!("unexpected header {other:?}"),
            }
        })
        .collect();
    let expected: Vec<String> = cases.iter().map(|(_, c)| c.to_string()).collect();
    assert_eq!(codes, expected);
    let recorded: Vec<String> = engine
        .store()
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.code)
        .collect();
    assert_eq!(recorded, expected);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_errors_then_success_completes() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    org.sim.inject(
        Fault::new(
            "/users",
            FaultKind::Error {
                status: 500,
                error_code: 4000,
                retry_after_secs: None,
            },
        )
        .method("GET")
        .times(2),
    );
    let request = offboard::domain::event::parse(
        &event("ev-5xx", "license.reclaim.requested", RECLAIM, None),
        &["smartsheet".into()],
    )
    .unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    engine
        .run_until_settled(Duration::from_secs(30))
        .await
        .unwrap();
    let wf = &engine.store().by_event("ev-5xx").await.unwrap()[0];
    assert_eq!(wf.outcome.as_deref(), Some("downgraded"));
    // The call was retried on its own, inside the step's first attempt.
    let state = engine.store().load(&wf.id).await.unwrap().unwrap().state;
    assert_eq!(state.steps[0].attempts, 1);
    let records = trail(engine.store(), &wf.id).await;
    assert!(records.iter().all(|r| r.kind != "step_failed"));
    // Every try is in the trail: two 500s, then the 200.
    let statuses: Vec<Value> = records
        .iter()
        .filter(|r| r.kind == "api_call")
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|b| b.to_string().contains("/users?email="))
        .map(|b| b["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![Value::from(500), Value::from(500), Value::from(200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    org.sim.inject(
        Fault::new(
            "/users",
            FaultKind::Error {
                status: 429,
                error_code: 4003,
                retry_after_secs: Some(2),
            },
        )
        .method("GET")
        .times(1),
    );
    let request = offboard::domain::event::parse(
        &event("ev-429", "license.reclaim.requested", RECLAIM, None),
        &["smartsheet".into()],
    )
    .unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    engine
        .run_until_settled(Duration::from_secs(30))
        .await
        .unwrap();
    let wf = &engine.store().by_event("ev-429").await.unwrap()[0];
    assert_eq!(wf.outcome.as_deref(), Some("downgraded"));
    // The call was retried within the step's attempt, after the wait the server asked for.
    let records = trail(engine.store(), &wf.id).await;
    assert!(records.iter().all(|r| r.kind != "step_failed"));
    let (calls, arrivals) = (org.sim.calls(), org.sim.arrivals());
    let gets: Vec<_> = calls
        .iter()
        .zip(arrivals)
        .filter(|(c, _)| c.path == "/users")
        .collect();
    assert_eq!((gets[0].0.status, gets[1].0.status), (429, 200));
    let waited = gets[1].1 - gets[0].1;
    assert!(waited >= Duration::from_secs(2), "waited only {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_fails_with_smt_100_b() {
    let org = org().await;
    org.sim.expire_token(TOKEN);
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    let request = offboard::domain::event::parse(
        &event("ev-exp", "offboarding.requested", LEAVER, Some(RECIPIENT)),
        &["smartsheet".into()],
    )
    .unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    engine
        .run_until_settled(Duration::from_secs(30))
        .await
        .unwrap();
    let wf = &engine.store().by_event("ev-exp").await.unwrap()[0];
    assert_eq!(
        (wf.state.as_str(), wf.error_code.as_deref()),
        ("failed", Some("SMT-100-B"))
    );
    assert!(org.sim.calls().iter().all(|c| c.method == "GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_user_completes_as_absent_without_writes() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Postgres).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    let request = offboard::domain::event::parse(
        &event(
            "ev-abs",
            "offboarding.requested",
            "nobody@example.com",
            Some(RECIPIENT),
        ),
        &["smartsheet".into()],
    )
    .unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    engine
        .run_until_settled(Duration::from_secs(30))
        .await
        .unwrap();
    let wf = &engine.store().by_event("ev-abs").await.unwrap()[0];
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("absent"))
    );
    assert!(org.sim.calls().iter().all(|c| c.method == "GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workflows_share_the_connections_request_budget() {
    let org = org().await;
    for i in 0..3 {
        org.sim
            .add_user(offboard_simulators::smartsheet::SimUser::new(&format!(
                "seat{i}@example.com"
            )));
    }
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let mut cfg = config(&url, amqp_names(), &org.sim.base_url());
    cfg.connections
        .get_mut("smartsheet")
        .unwrap()
        .requests_per_minute = 300; // one per 200 ms
    let engine = engine(cfg, TOKEN).await;
    for i in 0..3 {
        let body = event(
            &format!("ev-rpm-{i}"),
            "license.reclaim.requested",
            &format!("seat{i}@example.com"),
            None,
        );
        let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
        engine.accept(&request, "{}").await.unwrap().unwrap();
    }
    engine
        .run_until_settled(Duration::from_secs(60))
        .await
        .unwrap();
    for i in 0..3 {
        let wf = &engine
            .store()
            .by_event(&format!("ev-rpm-{i}"))
            .await
            .unwrap()[0];
        assert_eq!(wf.outcome.as_deref(), Some("downgraded"));
    }
    // The three ran side by side (their steps interleave), yet requests stayed paced.
    let calls = org.sim.calls();
    // One read of the group list, shared by the three (the connection's client keeps it
    // for two seconds), so 13 requests instead of 15.
    let lists = calls
        .iter()
        .filter(|c| c.method == "GET" && c.path == "/groups")
        .count();
    assert_eq!(lists, 1, "the three leavers share one group list");
    assert!(calls.len() >= 13, "{}", calls.len());
    let arrivals = org.sim.arrivals();
    // 300 a minute is one slot every 200 ms: n requests span at least n - 1 slots (a
    // little slack for the first request leaving late on a busy machine).
    let span = *arrivals.last().unwrap() - arrivals[0];
    let floor = Duration::from_millis(200) * (arrivals.len() as u32 - 1);
    assert!(
        span + Duration::from_millis(150) >= floor,
        "{} requests in {span:?}, faster than the budget allows",
        arrivals.len()
    );
}
