//! Three `serve` processes on one PostgreSQL database over RabbitMQ, 300 events, while
//! workers are SIGKILLed and restarted every few seconds: every event gives one workflow
//! per connection, each ends, no write is repeated except one in flight at a kill, every
//! trail replays, and each completion event is published once.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use offboard_simulators::smartsheet::SimUser;
use support::procs::{
    all_ended, fold_problem, progress, publish_many, replay_all, trail_problems, ConfigFile, Procs,
    Watch,
};
use support::*;

const EVENTS: usize = 300;
const WORKERS: usize = 3;
const MAX_CONCURRENT: usize = 4;
const MAX_KILLS: usize = 8;
const KILL_EVERY: Duration = Duration::from_millis(1000);

struct Person {
    email: String,
    event_id: String,
    kind: &'static str,
    transfer_to: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_killed_and_restarted_drive_each_workflow_once() {
    let org = org().await;
    let people: Vec<Person> = (0..EVENTS)
        .map(|i| {
            let offboard = i % 2 == 0;
            Person {
                email: format!("mw.{i}@example.com"),
                event_id: format!("ev-mw-{i}"),
                kind: if offboard {
                    "offboarding.requested"
                } else {
                    "license.reclaim.requested"
                },
                // Every tenth leaver owns a group that moves to the recipient.
                transfer_to: (i % 10 == 0).then_some(RECIPIENT),
            }
        })
        .collect();
    for p in &people {
        let id = org.sim.add_user(SimUser {
            resource_viewer: true,
            group_admin: p.transfer_to.is_some(),
            ..SimUser::new(&p.email)
        });
        if p.transfer_to.is_some() {
            org.sim
                .add_group(&format!("group of {}", p.email), id, &[id]);
        }
    }

    let (url, _) = fresh_database(Db::Postgres).await;
    let store = offboard::store::Store::open(&url).await.unwrap();
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    // Every answer takes 100 ms, as a real API's would: the run then lasts long enough for
    // several kills however fast the engine gets.
    org.sim.inject(
        offboard_simulators::smartsheet::Fault::new(
            "/",
            offboard_simulators::smartsheet::FaultKind::Delay(Duration::from_millis(100)),
        )
        .times(u32::MAX),
    );
    let mut file = ConfigFile::new(&url, &names, &org.sim.base_url());
    file.max_concurrent_workflows = MAX_CONCURRENT;
    let config = file.write(&dir.path().join("offboard.toml"));
    let watch = Watch::start(&names, "workflow.*").await;

    let mut procs = Procs::new();
    let mut slots: Vec<usize> = Vec::new();
    for w in 0..WORKERS {
        let i = procs.serve(
            &format!("worker {w}"),
            &config,
            &dir.path().join(format!("w{w}-0.log")),
        );
        procs.wait_logs(&[i], "consuming events", 60).await;
        slots.push(i);
    }

    let messages: Vec<(String, Vec<u8>)> = people
        .iter()
        .map(|p| {
            (
                p.kind.to_string(),
                event(&p.event_id, p.kind, &p.email, p.transfer_to),
            )
        })
        .collect();
    publish_many(&names, &messages).await;

    // Kill one worker and start it again every few seconds, until all have ended.
    let mut kills: Vec<Instant> = Vec::new();
    let mut died_by_themselves: Vec<String> = Vec::new();
    let mut pace = tokio::time::interval(KILL_EVERY);
    pace.tick().await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        pace.tick().await;
        let (total, open) = progress(&store).await;
        if (total >= EVENTS as u64 && open == 0) || Instant::now() >= deadline {
            break;
        }
        for &i in &slots {
            if let Some(status) = procs.all[i].exited() {
                died_by_themselves.push(format!(
                    "{} ({status}):\n{}",
                    procs.all[i].label,
                    procs.all[i].log_text()
                ));
            }
        }
        assert!(
            died_by_themselves.is_empty(),
            "workers exited by themselves: {died_by_themselves:?}"
        );
        if kills.len() < MAX_KILLS {
            let w = kills.len() % WORKERS;
            kills.push(Instant::now());
            procs.kill(slots[w]);
            slots[w] = procs.serve(
                &format!("worker {w} (restart {})", kills.len()),
                &config,
                &dir.path().join(format!("w{w}-{}.log", kills.len())),
            );
        }
    }
    all_ended(&store, EVENTS, 120).await;
    let rows = store.list(None).await.unwrap();
    for &i in &slots {
        assert!(
            procs.all[i].exited().is_none(),
            "{} exited by itself:\n{}",
            procs.all[i].label,
            procs.all[i].log_text()
        );
    }
    // An entry whose writer was killed before publishing it is published by a sweeper
    // once the writer's claim lapses: wait for the outbox to drain while workers run.
    eventually(60, "every outbox entry to be published", || async {
        (store.outbox_len().await.unwrap() == 0).then_some(())
    })
    .await;
    for &i in &slots {
        procs.terminate(i, 30).await;
    }
    watch.flush(30).await;
    let kill_count = kills.len();
    eprintln!("{kill_count} workers killed");
    assert!(
        kill_count >= 2,
        "the run ended before two kills: too fast to prove anything"
    );

    // One workflow per event and connection, each completed.
    let mut per_event: HashMap<&str, Vec<&offboard::store::entities::workflow::Model>> =
        HashMap::new();
    for r in &rows {
        per_event.entry(r.event_id.as_str()).or_default().push(r);
    }
    for p in &people {
        let wfs = per_event
            .get(p.event_id.as_str())
            .cloned()
            .unwrap_or_default();
        assert_eq!(wfs.len(), 1, "{}: {} workflows", p.event_id, wfs.len());
        let expected = if p.kind == "offboarding.requested" {
            "removed"
        } else {
            "downgraded"
        };
        assert_eq!(
            (wfs[0].state.as_str(), wfs[0].outcome.as_deref()),
            ("completed", Some(expected)),
            "{} ended {:?}",
            p.event_id,
            wfs[0].error_code
        );
    }
    assert_eq!(rows.len(), EVENTS);

    // No write repeated, except one in flight when a worker was killed: between two
    // arrivals of the same write there must be a kill.
    let calls = org.sim.calls();
    let arrivals = org.sim.arrivals();
    let mut writes: HashMap<(String, String), Vec<Instant>> = HashMap::new();
    for (call, at) in calls.iter().zip(&arrivals) {
        if call.method == "PUT" || call.method == "DELETE" {
            writes
                .entry((call.method.clone(), call.path.clone()))
                .or_default()
                .push(*at);
        }
    }
    let mut repeats = 0;
    let mut unexplained = Vec::new();
    for ((method, path), times) in &writes {
        for pair in times.windows(2) {
            repeats += 1;
            if !kills.iter().any(|k| pair[0] <= *k && *k <= pair[1]) {
                unexplained.push(format!(
                    "{method} {path} twice, {:?} apart, no kill between",
                    pair[1] - pair[0]
                ));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} repeated writes with no kill between them, e.g. {:?}",
        unexplained.len(),
        unexplained.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        repeats <= kill_count * MAX_CONCURRENT,
        "{repeats} repeated writes for {kill_count} kills"
    );

    // Every trail reads as one driver's work and folds to the stored state; the binary's
    // `replay` (chain included) is run on every trail a restarted worker resumed, and a few.
    let mut bad = Vec::new();
    let mut resumed = Vec::new();
    for r in &rows {
        let records = trail(&store, &r.id).await;
        let mut problems = trail_problems(&records);
        problems.extend(fold_problem(&store, &r.id).await);
        if !problems.is_empty() {
            bad.push(format!("{}: {}", r.id, problems.join("; ")));
        }
        let starts = records.iter().filter(|x| x.kind == "step_started").count();
        let steps: std::collections::HashSet<Option<i32>> = records
            .iter()
            .filter(|x| x.kind == "step_started")
            .map(|x| x.step)
            .collect();
        if starts > steps.len() {
            resumed.push(r.id.clone());
        }
    }
    assert!(
        bad.is_empty(),
        "{} trails are not one driver's work, e.g.:\n{}",
        bad.len(),
        bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    eprintln!("{} workflows were resumed after a kill", resumed.len());
    let mut sample: Vec<String> = resumed.into_iter().take(40).collect();
    sample.extend(rows.iter().take(10).map(|r| r.id.clone()));
    let failed = replay_all(&config, &sample, 4).await;
    assert!(
        failed.is_empty(),
        "{} trails do not replay, e.g. {:?}",
        failed.len(),
        failed.iter().take(5).collect::<Vec<_>>()
    );

    // Each completion event was published once: a duplicate is tolerated only for an
    // entry whose publisher was killed between the broker's confirm and marking it sent.
    let published = watch.counts();
    let mut duplicates = 0;
    for r in &rows {
        let keys = published.get(&r.id).cloned().unwrap_or_default();
        assert!(
            !keys.is_empty(),
            "no workflow.completed was published for {}",
            r.id
        );
        assert!(
            keys.iter().all(|k| k == "workflow.completed"),
            "{}: {keys:?}",
            r.id
        );
        duplicates += keys.len() - 1;
    }
    let most = published.values().map(Vec::len).max().unwrap_or(0);
    assert!(
        duplicates <= kill_count && most <= 2,
        "{duplicates} duplicate completion events (one published {most} times) for {kill_count} kills"
    );
    assert_eq!(published.len(), EVENTS, "events for unknown workflows");
}
