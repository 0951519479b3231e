//! When the broker drops offboard's connections, intake and the event publisher come back
//! by themselves and nothing is lost.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

/// Closes every broker connection whose client-supplied name contains `needle`, using
/// `rabbitmqctl` as an operator (or a broker restart) would; returns how many.
fn close_connections(needle: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl is on the machine that runs RabbitMQ");
    let text = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<String> = text
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    for pid in &pids {
        let status = Command::new("rabbitmqctl")
            .args([
                "-q",
                "close_connection",
                pid,
                "closed by the reconnect test",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    pids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_and_publisher_reconnect_after_the_broker_drops_them() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let (watch_ch, watch_q) = watch_exchange(&names, "workflow.*").await;
    let service = serve(&engine);

    publish(
        &names,
        "license.reclaim.requested",
        &event("ev-before", "license.reclaim.requested", RECLAIM, None),
    )
    .await;
    finished(engine.store(), "ev-before", 1, 30).await;
    assert_eq!(take(&watch_ch, &watch_q, 1, 10).await.len(), 1);

    let closed = close_connections(&names.queue) + close_connections(&names.exchange);
    assert!(
        closed >= 2,
        "closed {closed} connections (consumer and publisher expected)"
    );

    publish(
        &names,
        "offboarding.requested",
        &event("ev-after", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    let after = finished(engine.store(), "ev-after", 1, 60).await;
    assert_eq!(after[0].outcome.as_deref(), Some("removed"));
    let out = take(&watch_ch, &watch_q, 1, 30).await;
    let v: Value = serde_json::from_slice(&out[0].data).unwrap();
    assert_eq!(v["data"]["event_id"], "ev-after");
    // Confirmed entries are pruned from the outbox, so it does not grow with history.
    eventually(10, "the outbox to be emptied", || async {
        (engine.store().outbox_len().await.unwrap() == 0).then_some(())
    })
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_publishes_events_that_the_service_runs() {
    let org = org().await;
    let (url, dir) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let service = serve(&engine);
    let config_file = dir.as_ref().unwrap().path().join("offboard.toml");
    std::fs::write(
        &config_file,
        format!(
            "amqp_url = \"{AMQP_URL}\"\n[amqp]\nexchange = \"{}\"\nqueue = \"{}\"\ndead_letter_exchange = \"{}\"\ndead_letter_queue = \"{}\"\n[connections.smartsheet]\napp = \"smartsheet\"\nbase_url = \"{}\"\ntoken_env = \"UNUSED\"\n",
            names.exchange, names.queue, names.dead_letter_exchange, names.dead_letter_queue, org.sim.base_url()
        ),
    )
    .unwrap();
    let submit = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_offboard"))
            .env("OFFBOARD_AUDIT_KEY", support::AUDIT_KEY)
            .arg("submit")
            .args(args)
            .arg("--config")
            .arg(&config_file)
            .output()
            .unwrap()
    };
    let out = submit(&[
        "--email",
        LEAVER,
        "--transfer-to",
        RECIPIENT,
        "--connection",
        "smartsheet",
        "--id",
        "cli-1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cli-1");
    let out = submit(&["--type", "license.reclaim.requested", "--email", RECLAIM]);
    assert!(out.status.success());
    let generated = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let first = finished(engine.store(), "cli-1", 1, 30).await;
    assert_eq!(first[0].outcome.as_deref(), Some("removed"));
    let second = finished(engine.store(), &generated, 1, 30).await;
    assert_eq!(second[0].outcome.as_deref(), Some("downgraded"));
    // Bad arguments: one line, exit 2, nothing published.
    for bad in [
        vec!["--email", "not-an-email"],
        vec!["--email", LEAVER, "--type", "user.hired"],
        vec!["--email", LEAVER, "--connection", "jira"],
        vec![],
    ] {
        let out = submit(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1,
            "{bad:?}"
        );
    }
    service.stop().await;
}
