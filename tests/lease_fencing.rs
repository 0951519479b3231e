//! A lease holder that is paused (SIGSTOP) in the middle of a step for longer than its
//! lease loses the workflow to another process, which finishes it. When the first one
//! resumes, its next append is refused (`lease lost`) and it makes no further call: the
//! trail still replays and the workflow is completed once.

mod support;

use std::time::Duration;

use offboard_simulators::smartsheet::{Fault, FaultKind};
use support::procs::{cli, signal, ConfigFile, Procs};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_that_lost_its_lease_makes_no_call_and_appends_nothing() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let config =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.path().join("offboard.toml"));
    let store = offboard::store::Store::open(&url).await.unwrap();
    let mut procs = Procs::new();

    // A alone first, so it is A that takes the workflow.
    let a = procs.serve("A", &config, &dir.path().join("a.log"));
    procs.wait_logs(&[a], "consuming events", 60).await;
    // The role write (revoke-licenses, before the removal) hangs: A is mid-step.
    org.sim
        .inject(Fault::new("/users/", FaultKind::Delay(Duration::from_secs(5))).method("PUT"));
    publish(
        &names,
        "offboarding.requested",
        &event("ev-fence", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    eventually(30, "A's role write to reach Smartsheet", || async {
        org.sim
            .calls()
            .iter()
            .any(|c| c.method == "PUT" && c.path.starts_with("/users/"))
            .then_some(())
    })
    .await;
    signal(procs.all[a].pid(), "STOP");

    // B takes over once A's 2 s lease has lapsed, and finishes the workflow.
    let b = procs.serve("B", &config, &dir.path().join("b.log"));
    let wf = finished(&store, "ev-fence", 1, 60).await.remove(0);
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("removed")),
        "B finished the workflow"
    );
    assert!(org.sim.user(org.leaver).is_none());
    let calls_when_b_finished = org.sim.calls().len();
    let trail_when_b_finished = trail(&store, &wf.id).await.len();

    // A resumes: it gets the answer to its old PUT and must find its lease gone.
    signal(procs.all[a].pid(), "CONT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let made_calls = org.sim.calls().len() > calls_when_b_finished;
        let appended = trail(&store, &wf.id).await.len() > trail_when_b_finished;
        if made_calls || appended || procs.all[a].log_text().contains("lease lost") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A neither logged `lease lost` nor did anything within 20 s of SIGCONT:\n{}",
            procs.all[a].log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop both; A's last chance to misbehave is its graceful stop.
    let a_status = procs.terminate(a, 30).await;
    procs.terminate(b, 30).await;

    let late: Vec<String> = org.sim.calls()[calls_when_b_finished..]
        .iter()
        .map(|c| format!("{} {}?{} -> {}", c.method, c.path, c.query, c.status))
        .collect();
    assert!(
        late.is_empty(),
        "A called Smartsheet after B had finished the workflow: {late:?}"
    );
    let records = trail(&store, &wf.id).await;
    let appended: Vec<String> = records[trail_when_b_finished..]
        .iter()
        .map(|r| format!("{} {}", r.seq, r.kind))
        .collect();
    assert!(
        appended.is_empty(),
        "A appended to the trail after losing its lease: {appended:?}"
    );
    let completed = records.iter().filter(|r| r.kind == "completed").count();
    assert_eq!(completed, 1, "the workflow completed once");
    let row = store.get(&wf.id).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.outcome.as_deref()),
        ("completed", Some("removed"))
    );
    let a_log = procs.all[a].log_text();
    assert!(
        a_log.contains("lease lost"),
        "A's log has no `lease lost` warning:\n{a_log}"
    );
    assert!(a_status.is_some(), "A did not stop on SIGTERM");

    let (code, out, err) = cli(&config, &["replay", &wf.id]);
    assert_eq!(code, 0, "replay failed:\n{out}{err}");
}
