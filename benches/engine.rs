//! Throughput and memory figures, printed (run with `cargo bench`):
//! - replay: how fast the pure machine folds a trail (records per second);
//! - end to end: license reclaims driven against the Smartsheet simulator on SQLite
//!   (workflows per second, with the requests-per-minute budget set out of the way), and
//!   the process's peak resident memory afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use offboard::apps::smartsheet::simulator::{SimUser, SmartsheetSim};
use offboard::apps::AppClient;
use offboard::config::{AppKind, Config, ConnectionConfig, Secret};
use offboard::domain::event;
use offboard::runtime::definitions::{stored, Registry};
use offboard::runtime::engine::Engine;
use offboard::store::Store;

const WORKFLOWS: usize = 200;
const FOLDS: usize = 2_000;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    let sim = SmartsheetSim::start().await.unwrap();
    let admin = sim.add_user(SimUser {
        admin: true,
        ..SimUser::new("admin@bench.example")
    });
    sim.add_token("bench-token", admin);
    for i in 0..WORKFLOWS {
        sim.add_user(SimUser {
            resource_viewer: true,
            ..SimUser::new(&format!("user{i}@bench.example"))
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.database_url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    config.max_concurrent_workflows = 16;
    let conn = ConnectionConfig {
        app: AppKind::Smartsheet,
        base_url: sim.base_url(),
        token_env: "UNUSED".into(),
        requests_per_minute: 6_000_000,
        timeout_secs: 10,
    };
    config.connections.clear();
    config.connections.insert("smartsheet".into(), conn.clone());
    let store = Store::open(&config.database_url).await.unwrap();
    let engine = Arc::new(Engine::new(store, config, Registry::load(None).unwrap()));
    engine
        .use_client(
            "smartsheet",
            AppClient::new(&conn, Secret::new("bench-token")).unwrap(),
        )
        .await;

    let known = vec!["smartsheet".to_string()];
    let started = Instant::now();
    for i in 0..WORKFLOWS {
        let body = serde_json::json!({"specversion": "1.0", "id": format!("bench-{i}"), "source": "bench",
            "type": "license.reclaim.requested", "data": {"person": {"email": format!("user{i}@bench.example")}}})
        .to_string();
        let request = event::parse(body.as_bytes(), &known).unwrap();
        engine.accept(&request, &body).await.unwrap().unwrap();
    }
    let accepted = started.elapsed();
    engine
        .run_until_settled(Duration::from_secs(600))
        .await
        .unwrap();
    let total = started.elapsed();
    let done = engine.store().list(None).await.unwrap();
    assert!(done
        .iter()
        .all(|w| w.outcome.as_deref() == Some("downgraded")));
    println!("end to end: {WORKFLOWS} license reclaims on SQLite in {:.2} s ({:.1} workflows/s; intake {:.1} events/s)",
        total.as_secs_f64(), WORKFLOWS as f64 / total.as_secs_f64(), WORKFLOWS as f64 / accepted.as_secs_f64());

    // Replay speed: fold one workflow's real trail many times.
    let id = &done[0].id;
    let loaded = engine.store().load(id).await.unwrap().unwrap();
    let def = stored(&loaded.definition_source).unwrap();
    let trail: Vec<_> = engine
        .store()
        .trail(id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.at, serde_json::from_str(&r.body).unwrap()))
        .collect();
    let t = Instant::now();
    for _ in 0..FOLDS {
        let state = offboard::domain::machine::fold(&def, &trail).unwrap();
        assert_eq!(state, loaded.state);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "replay: folded a {}-record trail {FOLDS} times in {:.3} s ({:.0} records/s)",
        trail.len(),
        secs,
        (trail.len() * FOLDS) as f64 / secs
    );
    if let Some(kib) = peak_rss_kib() {
        println!("memory: peak resident set {:.1} MiB", kib as f64 / 1024.0);
    }
}
