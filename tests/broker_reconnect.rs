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
    service.stop().await;
}
