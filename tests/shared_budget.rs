//! A connection's `requests_per_minute` is one budget for every process using it: two
//! `serve` processes on one Smartsheet connection together stay within it.

mod support;

use std::time::Duration;

use offboard_simulators::smartsheet::SimUser;
use support::procs::{all_ended, publish_many, ConfigFile, Procs};
use support::*;

const PER_MINUTE: u32 = 120; // one request every 500 ms, shared
const WINDOW: Duration = Duration::from_secs(5);
const ALLOWED_IN_WINDOW: usize = 10 + 2; // 5 s of budget plus a small burst allowance
const WORKFLOWS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_connection_share_its_request_budget() {
    let org = org().await;
    let people: Vec<String> = (0..WORKFLOWS)
        .map(|i| format!("budget.{i}@example.com"))
        .collect();
    for p in &people {
        org.sim.add_user(SimUser {
            resource_viewer: true,
            ..SimUser::new(p)
        });
    }
    let (url, _) = fresh_database(Db::Postgres).await;
    let store = offboard::store::Store::open(&url).await.unwrap();
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let mut file = ConfigFile::new(&url, &names, &org.sim.base_url());
    file.requests_per_minute = PER_MINUTE;
    file.lease_secs = 5;
    let config = file.write(&dir.path().join("offboard.toml"));
    let mut procs = Procs::new();
    let a = procs.serve("A", &config, &dir.path().join("a.log"));
    procs.wait_logs(&[a], "consuming events", 60).await;
    let b = procs.serve("B", &config, &dir.path().join("b.log"));
    procs.wait_logs(&[b], "consuming events", 60).await;
    // Only the workflows' requests count (the start-up checks are behind us).
    org.sim.clear_calls();

    let messages: Vec<(String, Vec<u8>)> = people
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let kind = "license.reclaim.requested";
            (
                kind.to_string(),
                event(&format!("ev-budget-{i}"), kind, p, None),
            )
        })
        .collect();
    publish_many(&names, &messages).await;
    all_ended(&store, WORKFLOWS, 180).await;
    for r in store.list(None).await.unwrap() {
        assert_eq!(r.state, "completed", "{} {:?}", r.id, r.error_code);
    }
    // Both did work, so the budget really was shared between two processes.
    for i in [a, b] {
        assert!(
            procs.all[i].log_text().contains("step started"),
            "{} ran no step, so the test proves nothing",
            procs.all[i].label
        );
    }

    let mut arrivals = org.sim.arrivals();
    arrivals.sort();
    assert!(
        arrivals.len() >= 3 * WORKFLOWS,
        "{} requests",
        arrivals.len()
    );
    let mut worst = (0, 0usize);
    for (i, start) in arrivals.iter().enumerate() {
        let n = arrivals[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < WINDOW)
            .count();
        if n > worst.1 {
            worst = (i, n);
        }
    }
    assert!(
        worst.1 <= ALLOWED_IN_WINDOW,
        "{} requests within {WINDOW:?} (from request #{}); {PER_MINUTE}/min allows {ALLOWED_IN_WINDOW}",
        worst.1,
        worst.0
    );
}
