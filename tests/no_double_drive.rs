//! One `serve` (in process) with 1,000 licence reclaims at 4, 16 and 64 concurrent
//! workflows never drives a workflow twice: every workflow completes exactly once, every
//! write reaches Smartsheet once, and every trail reads as one driver's work.

mod support;

use std::collections::HashMap;

use offboard_simulators::smartsheet::SimUser;
use support::procs::{all_ended, publish_many, trail_problems};
use support::*;

/// The 1,000 events; `OFFBOARD_TEST_DRIVE_EVENTS` sets fewer for a quick local run.
fn events() -> usize {
    std::env::var("OFFBOARD_TEST_DRIVE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

async fn thousand_reclaims(concurrency: usize) {
    let count = events();
    let org = org().await;
    let people: Vec<String> = (0..count)
        .map(|i| format!("seat.{concurrency}.{i}@example.com"))
        .collect();
    for p in &people {
        org.sim.add_user(SimUser {
            resource_viewer: true,
            ..SimUser::new(p)
        });
    }
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let mut c = config(&url, names.clone(), &org.sim.base_url());
    c.max_concurrent_workflows = concurrency;
    c.connections
        .get_mut("smartsheet")
        .unwrap()
        .requests_per_minute = 600_000;
    let engine = engine(c, TOKEN).await;
    let service = serve(&engine);
    let kind = "license.reclaim.requested";
    let messages: Vec<(String, Vec<u8>)> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (kind.to_string(), event(&format!("ev-{i}"), kind, p, None)))
        .collect();
    publish_many(&names, &messages).await;
    let store = engine.store();
    all_ended(store, count, 600).await;
    service.stop().await;
    let rows = store.list(None).await.unwrap();

    assert_eq!(rows.len(), count, "one workflow per event");
    let mut bad = Vec::new();
    for row in &rows {
        if (row.state.as_str(), row.outcome.as_deref()) != ("completed", Some("downgraded")) {
            bad.push(format!("{}: {} {:?}", row.id, row.state, row.error_code));
            continue;
        }
        let problems = trail_problems(&trail(store, &row.id).await);
        if !problems.is_empty() {
            bad.push(format!("{}: {}", row.id, problems.join("; ")));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} workflows at {concurrency} concurrent were not driven once, e.g.:\n{}",
        bad.len(),
        count,
        bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );

    // Every write reached Smartsheet exactly once.
    let mut writes: HashMap<(String, String), usize> = HashMap::new();
    for call in org.sim.calls() {
        if call.method != "GET" {
            *writes.entry((call.method, call.path)).or_default() += 1;
        }
    }
    let repeated: Vec<_> = writes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} writes repeated, e.g. {:?}",
        repeated.len(),
        repeated.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(writes.len(), count, "one role write per person");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_4_concurrent_no_workflow_is_driven_twice() {
    thousand_reclaims(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_16_concurrent_no_workflow_is_driven_twice() {
    thousand_reclaims(16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_64_concurrent_no_workflow_is_driven_twice() {
    thousand_reclaims(64).await;
}
