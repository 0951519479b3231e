//! The engine's figures, printed (run with `cargo bench`; PostgreSQL on 127.0.0.1:5432 and
//! RabbitMQ on 127.0.0.1:5672, as for the tests). Every run drives licence reclaims (five
//! steps, five HTTP calls) against the in-process Smartsheet simulator, which answers at
//! once, with the request budget out of the way unless said otherwise:
//!
//! - end to end, PostgreSQL and SQLite, 1,000 and 5,000 events: published to RabbitMQ with
//!   confirms, consumed, driven, and their `workflow.completed` events received; workflows
//!   and steps per second, and on PostgreSQL the write transactions per workflow (transaction
//!   ids consumed: read-only transactions take none); each size five times, the sizes
//!   taking turns, with each size's median and the ratio of the medians;
//! - latency: one workflow at a time on an idle engine, publish → `workflow.completed`
//!   received, p50 and p99;
//! - engine: step transitions persisted per second with no broker in the way;
//! - in flight: 10,000 workflows waiting on `not_before`: peak resident memory, and how long
//!   the due query (a claim that finds nothing) takes;
//! - bulk: leavers on one connection at a request budget the simulator enforces: time
//!   against the lower bound (calls ÷ budget) and the 429s seen;
//! - replay: how fast the pure machine folds a trail;
//! - separate processes (`cargo bench --bench engine -- separate`): the release `serve`, the
//!   simulator and the publisher each in a process of their own, with the work per
//!   workflow of the engine, PostgreSQL and the broker (see `separate_process`).

#[path = "../tests/support/mod.rs"]
mod support;

mod separate_process;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use offboard::apps::AppClient;
use offboard::config::{AmqpNames, Config, Secret};
use offboard::domain::event;
use offboard::runtime::definitions::{stored, Registry};
use offboard::runtime::engine::Engine;
use offboard::service::Service;
use offboard::store::Store;
use offboard_simulators::smartsheet::{SimUser, SmartsheetSim};
use sea_orm::ConnectionTrait;
use support::{amqp_names, fresh_database, smartsheet_connection, Db, AMQP_URL};

const STEPS: usize = 5;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak resident set to the current one (Linux), so a section measures its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn user(i: usize) -> String {
    format!("user{i}@bench.example")
}

/// A simulator with an admin holding the bench token and `users` reclaimable users.
async fn simulator(users: usize) -> SmartsheetSim {
    let sim = SmartsheetSim::start().await.unwrap();
    let admin = sim.add_user(SimUser {
        admin: true,
        ..SimUser::new("admin@bench.example")
    });
    sim.add_token("bench-token", admin);
    for i in 0..users {
        sim.add_user(SimUser {
            resource_viewer: true,
            ..SimUser::new(&user(i))
        });
    }
    sim
}

/// An engine on a fresh database with broker names of its own, torn down after its section.
struct Setup {
    engine: Arc<Engine>,
    names: AmqpNames,
    _dir: Option<tempfile::TempDir>,
}

impl Setup {
    /// An engine on a fresh database of `db`, 64 workflows at a time.
    async fn new(db: Db, sim: &SmartsheetSim, requests_per_minute: u32) -> Setup {
        let names = amqp_names();
        let (url, dir) = fresh_database(db).await;
        let mut config = Config::defaults();
        config.database_url = url;
        config.amqp_url = AMQP_URL.to_string();
        config.amqp = AmqpNames {
            prefetch: 256,
            ..names.clone()
        };
        config.max_concurrent_workflows = 64;
        let mut conn = smartsheet_connection(&sim.base_url());
        conn.requests_per_minute = requests_per_minute;
        config.connections.clear();
        config.connections.insert("smartsheet".into(), conn.clone());
        let store = Store::open(&config.database_url).await.unwrap();
        let engine = Engine::new(store, config, Registry::load(None).unwrap());
        engine
            .use_client(
                "smartsheet",
                AppClient::new(&conn, Secret::new("bench-token")).unwrap(),
            )
            .await;
        Setup {
            engine: Arc::new(engine),
            names,
            _dir: dir,
        }
    }

    /// Drops the database and deletes the broker names, so the next section (and the
    /// next run) starts on a clean broker and server.
    async fn tear_down(self) {
        let url = self.engine.config().database_url.clone();
        drop(self.engine);
        support::delete_broker_names(&self.names).await;
        support::drop_database(&url).await;
    }
}

fn reclaim(id: &str, i: usize, not_before: Option<&str>) -> String {
    let mut data = serde_json::json!({"person": {"email": user(i)}});
    if let Some(t) = not_before {
        data["not_before"] = t.into();
    }
    serde_json::json!({"specversion": "1.0", "id": id, "source": "bench",
        "type": "license.reclaim.requested", "data": data})
    .to_string()
}

/// Completion events as they arrive: a consumer on a queue bound to `workflow.*`.
struct Completions {
    consumer: lapin::Consumer,
    _channel: lapin::Channel,
}

impl Completions {
    async fn watch(names: &AmqpNames) -> Completions {
        let (channel, queue) = support::watch_exchange(names, "workflow.*").await;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "bench".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Completions {
            consumer,
            _channel: channel,
        }
    }

    /// Waits for `n` completion events; returns when each arrived, by event id.
    async fn take(&mut self, n: usize) -> Vec<(String, Instant)> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let delivery = tokio::time::timeout(Duration::from_secs(120), self.consumer.next())
                .await
                .expect("completions stopped arriving")
                .unwrap()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
            assert_eq!(v["type"], "workflow.completed", "{v}");
            got.push((
                v["data"]["event_id"].as_str().unwrap().to_string(),
                Instant::now(),
            ));
        }
        got
    }
}

/// Publishes every body with confirms, all confirms awaited together.
async fn publish_all(names: &AmqpNames, bodies: &[String]) {
    let channel = support::channel().await;
    offboard::intake::declare(&channel, names).await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::with_capacity(bodies.len());
    for body in bodies {
        confirms.push(
            channel
                .basic_publish(
                    names.exchange.as_str().into(),
                    "license.reclaim.requested".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
}

/// The PostgreSQL transaction id counter (each write transaction takes one id).
async fn xid(store: &Store) -> Option<i64> {
    let db = store.connection();
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return None;
    }
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT txid_current() AS x",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "x").ok()
}

/// Drives `n` events end to end on a fresh database; returns workflows per second.
async fn end_to_end(db: Db, label: &str, n: usize) -> f64 {
    let sim = simulator(n).await;
    let setup = Setup::new(db, &sim, 6_000_000).await;
    let (engine, names) = (&setup.engine, &setup.names);
    let mut completions = Completions::watch(names).await;
    let service = Service::start(engine.clone());
    let bodies: Vec<String> = (0..n)
        .map(|i| reclaim(&format!("e2e-{i}"), i, None))
        .collect();
    let xid_before = xid(engine.store()).await;
    let started = Instant::now();
    publish_all(names, &bodies).await;
    let published = started.elapsed();
    let done = completions.take(n).await;
    let secs = done.last().unwrap().1.duration_since(started).as_secs_f64();
    if std::env::var_os("BENCH_TRACE").is_some() {
        let mut buckets = vec![0usize; secs as usize + 1];
        for (_, t) in &done {
            buckets[t.duration_since(started).as_secs() as usize] += 1;
        }
        println!("published in {published:?}; per second: {buckets:?}");
    }
    let xid_after = xid(engine.store()).await;
    service.stop().await;
    let writes = match (xid_before, xid_after) {
        (Some(a), Some(b)) => format!(
            ", {:.1} write transactions per workflow",
            (b - a - 1) as f64 / n as f64
        ),
        _ => String::new(),
    };
    println!(
        "end to end, {label}, {n} events: {:.2} s, {:.0} workflows/s, {:.0} steps/s{writes}",
        secs,
        n as f64 / secs,
        (n * STEPS) as f64 / secs
    );
    setup.tear_down().await;
    n as f64 / secs
}

/// Runs every size `repeats` times, the sizes taking turns (so a drift of the machine's
/// speed touches each alike), and prints each size's median rate and, with two sizes,
/// the ratio of the larger's to the smaller's.
async fn end_to_end_sizes(db: Db, label: &str, sizes: &[usize], repeats: usize) {
    let mut rates = vec![Vec::with_capacity(repeats); sizes.len()];
    for _ in 0..repeats {
        for (i, &n) in sizes.iter().enumerate() {
            rates[i].push(end_to_end(db, label, n).await);
        }
    }
    let medians: Vec<f64> = rates
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect();
    for (n, median) in sizes.iter().zip(&medians) {
        println!(
            "end to end, {label}, {n} events, median of {repeats}: {median:.0} workflows/s, {:.0} steps/s",
            median * STEPS as f64
        );
    }
    if let [small, large] = medians[..] {
        println!(
            "end to end, {label}: {} events at {:.2} x the rate of {}",
            sizes[1],
            large / small,
            sizes[0]
        );
    }
}

async fn latency(db: Db, label: &str, samples: usize) {
    let sim = simulator(samples).await;
    let setup = Setup::new(db, &sim, 6_000_000).await;
    let (engine, names) = (&setup.engine, &setup.names);
    let mut completions = Completions::watch(names).await;
    let service = Service::start(engine.clone());
    let channel = support::channel().await;
    offboard::intake::declare(&channel, names).await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // Warm up: connections, definitions, the first claim.
    publish_all(names, &[reclaim("warm", 0, None)]).await;
    completions.take(1).await;
    let mut times = Vec::with_capacity(samples);
    for i in 1..samples {
        let body = reclaim(&format!("lat-{i}"), i, None);
        let sent = Instant::now();
        channel
            .basic_publish(
                names.exchange.as_str().into(),
                "license.reclaim.requested".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        let (_, at) = completions.take(1).await.remove(0);
        times.push(at.duration_since(sent));
    }
    service.stop().await;
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "latency, {label}, publish -> workflow.completed, one at a time on an idle engine: p50 {:.1} ms, p99 {:.1} ms ({} samples)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        times.len()
    );
    setup.tear_down().await;
}

/// Step transitions persisted per second, events accepted straight into the engine.
async fn engine_only(db: Db, label: &str, n: usize) {
    let sim = simulator(n).await;
    let setup = Setup::new(db, &sim, 6_000_000).await;
    let engine = &setup.engine;
    let known = vec!["smartsheet".to_string()];
    for i in 0..n {
        let body = reclaim(&format!("eng-{i}"), i, None);
        let request = event::parse(body.as_bytes(), &known).unwrap();
        engine.accept(&request, &body).await.unwrap().unwrap();
    }
    let started = Instant::now();
    engine
        .run_until_settled(Duration::from_secs(600))
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let done = engine.store().list(None).await.unwrap();
    assert!(done
        .iter()
        .all(|w| w.outcome.as_deref() == Some("downgraded")));
    println!(
        "engine, {label}, {n} workflows accepted then driven: {:.0} step transitions/s ({:.0} workflows/s)",
        (n * STEPS) as f64 / secs,
        n as f64 / secs
    );
    setup.tear_down().await;
}

async fn in_flight(n: usize) {
    let sim = simulator(0).await;
    let setup = Setup::new(Db::Postgres, &sim, 6_000_000).await;
    let engine = &setup.engine;
    reset_peak_rss();
    let known = vec!["smartsheet".to_string()];
    let later = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    for i in 0..n {
        let body = reclaim(&format!("wait-{i}"), i, Some(&later));
        let request = event::parse(body.as_bytes(), &known).unwrap();
        engine.accept(&request, &body).await.unwrap().unwrap();
    }
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        let claims = engine
            .store()
            .claim_due("bench", 15.0, 64, &[])
            .await
            .unwrap();
        assert!(claims.is_empty());
    }
    let per_query = started.elapsed() / rounds;
    println!(
        "in flight, PostgreSQL, {n} workflows waiting on not_before: due query {:.2} ms, peak resident set {:.1} MiB",
        per_query.as_secs_f64() * 1e3,
        peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    setup.tear_down().await;
}

async fn bulk(leavers: usize, per_minute: u32) {
    let sim = simulator(leavers).await;
    sim.set_rate_limit(Some(per_minute));
    let setup = Setup::new(Db::Postgres, &sim, per_minute).await;
    let (engine, names) = (&setup.engine, &setup.names);
    let mut completions = Completions::watch(names).await;
    let service = Service::start(engine.clone());
    let bodies: Vec<String> = (0..leavers)
        .map(|i| reclaim(&format!("bulk-{i}"), i, None))
        .collect();
    sim.clear_calls();
    let started = Instant::now();
    publish_all(names, &bodies).await;
    completions.take(leavers).await;
    let secs = started.elapsed().as_secs_f64();
    service.stop().await;
    let calls = sim.calls();
    let limited = calls.iter().filter(|c| c.status == 429).count();
    let bound = calls.len() as f64 / (f64::from(per_minute) / 60.0);
    println!(
        "bulk, PostgreSQL, {leavers} leavers at {per_minute} requests/min: {:.1} s for {} calls, lower bound {:.1} s ({:+.1} %), {limited} answered 429",
        secs,
        calls.len(),
        bound,
        (secs / bound - 1.0) * 100.0
    );
    setup.tear_down().await;
}

async fn replay() {
    let sim = simulator(1).await;
    let setup = Setup::new(Db::Sqlite, &sim, 6_000_000).await;
    let engine = &setup.engine;
    let known = vec!["smartsheet".to_string()];
    let body = reclaim("replay", 0, None);
    let request = event::parse(body.as_bytes(), &known).unwrap();
    engine.accept(&request, &body).await.unwrap().unwrap();
    engine
        .run_until_settled(Duration::from_secs(60))
        .await
        .unwrap();
    let id = engine.store().list(None).await.unwrap()[0].id.clone();
    let loaded = engine.store().load(&id).await.unwrap().unwrap();
    let def = stored(&loaded.definition_source).unwrap();
    let trail: Vec<_> = engine
        .store()
        .trail(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.at, serde_json::from_str(&r.body).unwrap()))
        .collect();
    let folds = 5_000;
    let t = Instant::now();
    for _ in 0..folds {
        let state = offboard::domain::machine::fold(&def, &trail).unwrap();
        assert_eq!(state, loaded.state);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "replay: folded a {}-record trail {folds} times in {:.3} s ({:.0} records/s)",
        trail.len(),
        secs,
        (trail.len() * folds) as f64 / secs
    );
    setup.tear_down().await;
}

#[tokio::main]
async fn main() {
    if separate_process::run_simulator_role().await {
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    // `cargo bench -- NAME` runs only the sections whose name contains NAME.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    if wanted("in_flight") {
        in_flight(10_000).await;
    }
    if wanted("latency") {
        let samples = std::env::var("BENCH_LATENCY_SAMPLES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(201);
        latency(Db::Postgres, "PostgreSQL", samples).await;
        latency(Db::Sqlite, "SQLite", samples).await;
    }
    // `BENCH_EVENTS=5000` runs the end-to-end sections at that size only.
    let sizes: Vec<usize> = match std::env::var("BENCH_EVENTS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) => vec![1_000, 5_000],
    };
    // `BENCH_REPEAT=1` runs each size once.
    let repeats = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    if wanted("end_to_end_postgres") {
        end_to_end_sizes(Db::Postgres, "PostgreSQL", &sizes, repeats).await;
    }
    if wanted("separate") {
        let repeats = std::env::var("BENCH_REPEAT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2)
            .max(1);
        separate_process::sizes(&sizes, repeats, 200).await;
    }
    if wanted("end_to_end_sqlite") {
        end_to_end_sizes(Db::Sqlite, "SQLite", &sizes, repeats).await;
    }
    if wanted("engine") {
        engine_only(Db::Postgres, "PostgreSQL", 2_000).await;
        engine_only(Db::Sqlite, "SQLite", 2_000).await;
    }
    if wanted("bulk") {
        bulk(1_000, 3_000).await;
    }
    if wanted("replay") {
        replay().await;
    }
    if let Some(kib) = peak_rss_kib() {
        println!(
            "memory: peak resident set since the in-flight section {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
}
