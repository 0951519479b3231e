//! A cancel asked while the removal is already in flight cannot undo it: the workflow
//! ends `completed` (`removed`), its completion event goes out, and the trail records the
//! refused cancel after the `completed` record.

mod support;

use std::time::Duration;

use offboard_simulators::smartsheet::{Fault, FaultKind};
use support::procs::{cli, ConfigFile, Watch};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_removal_leaves_the_workflow_completed() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let watch = Watch::start(&names, "workflow.*").await;
    let service = serve(&engine);
    let dir = tempfile::tempdir().unwrap();
    let config_path =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.path().join("offboard.toml"));

    // The removal hangs for a while: the cancel arrives while it is in flight.
    org.sim
        .inject(Fault::new("/users", FaultKind::Delay(Duration::from_secs(3))).method("DELETE"));
    publish(
        &names,
        "offboarding.requested",
        &event(
            "ev-cancel",
            "offboarding.requested",
            LEAVER,
            Some(RECIPIENT),
        ),
    )
    .await;
    eventually(30, "the DELETE to reach Smartsheet", || async {
        org.sim
            .calls()
            .iter()
            .any(|c| c.method == "DELETE")
            .then_some(())
    })
    .await;
    let id = engine.store().by_event("ev-cancel").await.unwrap()[0]
        .id
        .clone();
    // An operator cancels from the command line (another process, as in real life).
    let cancel = {
        let config_path = config_path.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || cli(&config_path, &["cancel", &id, "--by", "alice"]))
    };
    let (code, out, err) = cancel.await.unwrap();
    eprintln!("offboard cancel exited {code}: {out}{err}");

    let wf = finished(engine.store(), "ev-cancel", 1, 60).await.remove(0);
    assert!(
        org.sim.user(org.leaver).is_none(),
        "the DELETE went through"
    );
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("removed")),
        "a cancel during the last step must not turn a removal into `cancelled`"
    );

    watch.flush(30).await;
    let events = watch.counts();
    assert_eq!(
        events.get(&id).map(Vec::as_slice),
        Some(&["workflow.completed".to_string()][..]),
        "one workflow.completed for the workflow; got {events:?}"
    );

    let records = trail(engine.store(), &id).await;
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    let completed = kinds.iter().position(|k| *k == "completed");
    let refused = kinds.iter().position(|k| *k == "cancel_refused");
    assert!(
        matches!((completed, refused), (Some(c), Some(r)) if c < r),
        "the trail should hold `cancel_refused` after `completed`: {kinds:?}"
    );
    assert!(!kinds.contains(&"cancelled"), "{kinds:?}");
    let (code, out, err) = cli(&config_path, &["replay", &id]);
    assert_eq!(code, 0, "replay failed:\n{out}{err}");
    service.stop().await;
}
