//! Shared test helpers: a fresh database per test (SQLite file or a new PostgreSQL
//! database), broker names unique to the test, an in-process service, publishing and
//! reading AMQP messages, and polling with a deadline instead of sleeping.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
use offboard::apps::AppClient;
use offboard::config::{AmqpNames, AppKind, Config, ConnectionConfig, Secret};
use offboard::runtime::definitions::Registry;
use offboard::runtime::engine::Engine;
use offboard::service::Service;
use offboard::store::entities::{audit, workflow};
use offboard::store::Store;
use offboard_simulators::smartsheet::{SimUser, SmartsheetSim};
use sea_orm::ConnectionTrait;

pub mod procs;

/// PostgreSQL server used by the tests.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// RabbitMQ server used by the tests.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The Smartsheet token tests use (the secret that must never leak).
pub const TOKEN: &str = "sk-test-4f9c2a71e0b3d8c6";
/// The audit chain's key every test process and every spawned binary uses (a secret too).
pub const AUDIT_KEY: &str = "audit-key-test-5b0e9d13c7a2f648";

/// [`AUDIT_KEY`] as the engine takes it.
pub fn audit_key() -> offboard::domain::chain::AuditKey {
    offboard::domain::chain::AuditKey::new(AUDIT_KEY).unwrap()
}

/// Which database back-end a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A new PostgreSQL database.
    Postgres,
}

/// A unique suffix for names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A database URL for a fresh, empty database. Keep the returned TempDir alive.
pub async fn fresh_database(db: Db) -> (String, Option<tempfile::TempDir>) {
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (
                format!("sqlite://{}/offboard.db?mode=rwc", dir.path().display()),
                Some(dir),
            )
        }
        Db::Postgres => {
            let name = format!("offboard_t_{}", unique());
            let admin = sea_orm::Database::connect(PG_ADMIN_URL)
                .await
                .expect("PostgreSQL on 127.0.0.1:5432");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            (format!("postgres://postgres@127.0.0.1:5432/{name}"), None)
        }
    }
}

/// The variables (besides `CARGO_PKG_*`) cargo sets in a test's environment.
const SET_FOR_TESTS: [&str; 8] = [
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// The release build of the `offboard` binary, for tests that check what ships: built
/// with `cargo build --release --locked --bin offboard` the first time a test of this
/// process asks (later calls wait for that build and share it), into the target directory
/// of the binary under test (`<target>/debug/offboard` → `<target>/release/offboard`), with
/// the features this test was compiled with. Blocks: call it from `spawn_blocking`. A test
/// run that is itself a release build (`cargo test --release`) gets its own binary back.
pub fn release_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tested = Path::new(env!("CARGO_BIN_EXE_offboard"));
            let profile_dir = tested
                .parent()
                .expect("the binary lies in a profile folder");
            if profile_dir.file_name() == Some(OsStr::new("release")) {
                return tested.to_path_buf();
            }
            let target = profile_dir
                .parent()
                .expect("a profile folder lies in a target folder");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut features = Vec::new();
            if cfg!(feature = "demo") {
                features.push("demo");
            }
            if cfg!(feature = "console") {
                features.push("console");
            }
            let mut build = Command::new(cargo);
            build
                .args(["build", "--release", "--locked", "--bin", "offboard"])
                .arg("--manifest-path")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .arg("--target-dir")
                .arg(target)
                .arg("--no-default-features");
            if !features.is_empty() {
                build.args(["--features", &features.join(",")]);
            }
            // What cargo sets for a running test and a shell does not have: a build script
            // watching one of them (ring watches CARGO_MANIFEST_DIR) would otherwise make
            // this build and a `cargo build --release` from a shell redo each other's work.
            for (name, _) in std::env::vars_os() {
                let text = name.to_string_lossy();
                if text.starts_with("CARGO_PKG_") || SET_FOR_TESTS.contains(&text.as_ref()) {
                    build.env_remove(&name);
                }
            }
            let out = build.output().expect("cargo runs");
            assert!(
                out.status.success(),
                "the release build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let built = target.join("release").join(tested.file_name().unwrap());
            assert!(built.is_file(), "{} was not built", built.display());
            built
        })
        .clone()
}

/// Broker names unique to one test, so tests can run side by side.
pub fn amqp_names() -> AmqpNames {
    let u = unique();
    AmqpNames {
        exchange: format!("offboard.t.{u}"),
        queue: format!("offboard.t.{u}.requests"),
        dead_letter_exchange: format!("offboard.t.{u}.dlx"),
        dead_letter_queue: format!("offboard.t.{u}.dead"),
        prefetch: 8,
    }
}

/// Deletes the queues and exchanges [`amqp_names`] named. The bench calls it after each
/// section: every idle quorum queue left behind keeps a Raft member that the broker goes
/// on servicing, so leftovers slow every later run.
pub async fn delete_broker_names(names: &AmqpNames) {
    let ch = channel().await;
    for queue in [&names.queue, &names.dead_letter_queue] {
        ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    for exchange in [&names.exchange, &names.dead_letter_exchange] {
        ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
}

/// Drops a PostgreSQL database [`fresh_database`] made (a SQLite file goes with its
/// TempDir), closing whatever connections are still open to it.
pub async fn drop_database(url: &str) {
    let Some(name) = url.strip_prefix("postgres://postgres@127.0.0.1:5432/") else {
        return;
    };
    let admin = sea_orm::Database::connect(PG_ADMIN_URL).await.unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}

/// A Smartsheet simulator with an admin holding [`TOKEN`], a leaver who owns two of four
/// groups, and a recipient who is a group admin.
pub struct Org {
    pub sim: SmartsheetSim,
    pub admin: i64,
    pub leaver: i64,
    pub recipient: i64,
    pub reclaim: i64,
    pub leaver_groups: Vec<i64>,
    pub other_groups: Vec<i64>,
}

pub const LEAVER: &str = "ada@example.com";
pub const RECIPIENT: &str = "grace@example.com";
pub const RECLAIM: &str = "linus@example.com";

/// Starts and seeds a simulator.
pub async fn org() -> Org {
    let sim = SmartsheetSim::start().await.unwrap();
    let admin = sim.add_user(SimUser {
        admin: true,
        ..SimUser::new("admin@example.com")
    });
    sim.add_token(TOKEN, admin);
    let leaver = sim.add_user(SimUser {
        group_admin: true,
        resource_viewer: true,
        sheet_count: 7,
        ..SimUser::new(LEAVER)
    });
    let recipient = sim.add_user(SimUser {
        group_admin: true,
        ..SimUser::new(RECIPIENT)
    });
    let reclaim = sim.add_user(SimUser {
        resource_viewer: true,
        ..SimUser::new(RECLAIM)
    });
    let leaver_groups = vec![
        sim.add_group("Engineering", leaver, &[leaver, recipient]),
        sim.add_group("Launch", leaver, &[leaver]),
    ];
    let other_groups = vec![
        sim.add_group("Finance", admin, &[admin]),
        sim.add_group("Everyone", recipient, &[admin, leaver, recipient]),
    ];
    Org {
        sim,
        admin,
        leaver,
        recipient,
        reclaim,
        leaver_groups,
        other_groups,
    }
}

/// A configuration for one test: its database, broker names, one Smartsheet connection.
pub fn config(database_url: &str, names: AmqpNames, smartsheet_url: &str) -> Config {
    let mut c = Config::defaults();
    c.database_url = database_url.to_string();
    c.amqp_url = AMQP_URL.to_string();
    c.amqp = names;
    c.connections.clear();
    c.connections
        .insert("smartsheet".into(), smartsheet_connection(smartsheet_url));
    c
}

/// The Smartsheet connection of [`config`].
pub fn smartsheet_connection(url: &str) -> ConnectionConfig {
    ConnectionConfig {
        timeout_secs: 5,
        ..ConnectionConfig::new(
            AppKind::Smartsheet,
            url,
            "OFFBOARD_TEST_SMARTSHEET_TOKEN",
            6000,
        )
    }
}

/// An engine over `config`, its Smartsheet client holding `token`.
pub async fn engine(config: Config, token: &str) -> Arc<Engine> {
    let registry = Registry::load(config.workflows_dir.as_deref()).unwrap();
    let store = Store::open(&config.database_url)
        .await
        .unwrap()
        .with_audit_key(audit_key());
    let conn = config.connections["smartsheet"].clone();
    let engine = Engine::new(store, config, registry).with_lease(Duration::from_secs(3));
    engine
        .use_client(
            "smartsheet",
            AppClient::new(&conn, Secret::new(token)).unwrap(),
        )
        .await;
    Arc::new(engine)
}

/// Starts the service (consumer, outbox, workers) in this process.
pub fn serve(engine: &Arc<Engine>) -> Service {
    Service::start(engine.clone())
}

/// Opens a channel to the test broker.
pub async fn channel() -> Channel {
    offboard::intake::open(AMQP_URL).await.unwrap().1
}

/// Declares the topology and publishes a raw body with a routing key (with confirms).
pub async fn publish(names: &AmqpNames, routing_key: &str, body: &[u8]) {
    offboard::intake::submit(AMQP_URL, names, routing_key, body)
        .await
        .unwrap();
}

/// A CloudEvents offboarding/reclaim event.
pub fn event(id: &str, kind: &str, email: &str, transfer_to: Option<&str>) -> Vec<u8> {
    let mut data = serde_json::json!({ "person": { "email": email } });
    if let Some(t) = transfer_to {
        data["transfer_to"] = serde_json::json!({ "email": t });
    }
    serde_json::json!({
        "specversion": "1.0", "id": id, "source": "test", "type": kind,
        "time": "2026-11-20T17:00:00Z", "data": data,
    })
    .to_string()
    .into_bytes()
}

/// What a finished command left: its exit code (-1 when a signal ended it), its stdout
/// and its stderr.
pub fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` to its end off the async workers, so the simulators this process serves
/// keep answering meanwhile; see [`outcome`].
pub async fn run_to_end(mut cmd: Command) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap();
    outcome(out.unwrap())
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the workflows of `event_id` have all ended; returns them.
pub async fn finished(
    store: &Store,
    event_id: &str,
    count: usize,
    secs: u64,
) -> Vec<workflow::Model> {
    eventually(secs, &format!("workflows of {event_id} to end"), || async {
        let rows = store.by_event(event_id).await.unwrap();
        (rows.len() == count && rows.iter().all(|r| r.finished_at.is_some())).then_some(rows)
    })
    .await
}

/// A workflow's trail as (kind, body JSON).
pub async fn trail(store: &Store, id: &str) -> Vec<audit::Model> {
    store.trail(id).await.unwrap()
}

/// Declares a queue bound to `key` on the test exchange, to watch outgoing events.
pub async fn watch_exchange(names: &AmqpNames, key: &str) -> (Channel, String) {
    let ch = channel().await;
    offboard::intake::declare(&ch, names).await.unwrap();
    let q = format!("{}.watch.{}", names.exchange, unique());
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        q.as_str().into(),
        names.exchange.as_str().into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    (ch, q)
}

/// Takes up to `n` messages from a queue, waiting at most `secs`.
pub async fn take(ch: &Channel, queue: &str, n: usize, secs: u64) -> Vec<lapin::message::Delivery> {
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            format!("t-{}", unique()).into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => got.push(d),
            _ => break,
        }
    }
    got
}

/// How many messages are ready in a queue right now: a passive declare reads the count
/// without taking one.
pub async fn ready_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// Whether a queue is empty right now.
pub async fn queue_is_empty(ch: &Channel, queue: &str) -> bool {
    ready_count(ch, queue).await == 0
}

// ---------------------------------------------------------------------------
// Postman
// ---------------------------------------------------------------------------

/// The Postman API key tests use; the simulated team accepts it as API key and SCIM key.
pub const POSTMAN_KEY: &str = "PMAK-test-7e21c9d04ab3f518";
/// The environment variable the Postman connection of the tests reads its key from.
pub const POSTMAN_TOKEN_ENV: &str = "OFFBOARD_TEST_POSTMAN_API_KEY";

/// A Postman simulator filled by `seed_demo()`, whose admin also holds [`POSTMAN_KEY`].
pub struct Team {
    pub sim: offboard_simulators::postman::PostmanSim,
    pub seed: offboard_simulators::postman::DemoSeed,
}

/// Starts and seeds a Postman simulator.
pub async fn postman_team() -> Team {
    let sim = offboard_simulators::postman::PostmanSim::start()
        .await
        .unwrap();
    let seed = sim.seed_demo();
    sim.add_api_key(POSTMAN_KEY, seed.admin_id);
    sim.add_scim_key(POSTMAN_KEY);
    Team { sim, seed }
}

/// A Postman connection to `url`, its key in [`POSTMAN_TOKEN_ENV`].
pub fn postman_connection(url: &str) -> ConnectionConfig {
    ConnectionConfig {
        timeout_secs: 5,
        ..ConnectionConfig::new(AppKind::Postman, url, POSTMAN_TOKEN_ENV, 6000)
    }
}

/// A configuration for one test with a single connection, `postman`.
pub fn postman_config(database_url: &str, names: AmqpNames, postman_url: &str) -> Config {
    let mut c = Config::defaults();
    c.database_url = database_url.to_string();
    c.amqp_url = AMQP_URL.to_string();
    c.amqp = names;
    c.connections.clear();
    c.connections
        .insert("postman".into(), postman_connection(postman_url));
    c
}

/// Hands the engine a Postman client for the `postman` connection of its configuration,
/// sending `key` as API key and as SCIM key.
pub async fn use_postman(engine: &Engine, key: &str) {
    let conn = engine.config().connections["postman"].clone();
    let client = offboard::apps::postman::client::Client::with_keys(
        &conn,
        Secret::new(key),
        Secret::new(key),
    )
    .unwrap();
    engine
        .use_client("postman", AppClient::Postman(client))
        .await;
}

/// An engine over `config` (which has a `postman` connection), its Postman client holding `key`.
pub async fn postman_engine(config: Config, key: &str) -> Arc<Engine> {
    let registry = Registry::load(config.workflows_dir.as_deref()).unwrap();
    let store = Store::open(&config.database_url)
        .await
        .unwrap()
        .with_audit_key(audit_key());
    let engine = Engine::new(store, config, registry).with_lease(Duration::from_secs(3));
    use_postman(&engine, key).await;
    Arc::new(engine)
}

/// The Smartsheet workflow files shipped in `workflows/`.
pub const SMARTSHEET_WORKFLOWS: [&str; 2] = [
    "smartsheet-offboard.toml",
    "smartsheet-license-reclaim.toml",
];

/// The Postman workflow files shipped in `workflows/`.
pub const POSTMAN_WORKFLOWS: [&str; 2] = ["postman-offboard.toml", "postman-license-reclaim.toml"];

/// The shipped workflow files `names`, copied to a fresh folder with millisecond step
/// retries (the same number of attempts), so a test sees many retries in little time.
pub fn fast_workflows(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    for name in names {
        let text = std::fs::read_to_string(shipped.join(name)).unwrap();
        let text = edit(
            &text,
            "initial_interval_ms = 1000",
            "initial_interval_ms = 10",
        );
        let text = edit(&text, "max_interval_ms = 300000", "max_interval_ms = 40");
        // Not every file has a step with its own 2 s policy.
        let text = text.replace("initial_interval_ms = 2000", "initial_interval_ms = 10");
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// `text` with `from` replaced by `to`; panics when `from` is not there, so a fixture edit
/// that stopped matching the shipped file fails loudly instead of testing the original.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the fixture no longer contains {from:?}"
    );
    text.replace(from, to)
}

/// Every request that is not a GET, in the trails of all workflows in `store`, made by a
/// step whose action is declared read-only (`apps::reads_only`): the runner performs such
/// steps without committing their start first, so they must never write.
pub async fn writes_by_read_only_steps(store: &Store) -> Vec<String> {
    let mut found = Vec::new();
    for row in store.list(None).await.unwrap() {
        let loaded = store.load(&row.id).await.unwrap().unwrap();
        let def = offboard::runtime::definitions::stored(&loaded.definition_source).unwrap();
        for record in store.trail(&row.id).await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&record.body).unwrap();
            if record.kind != "api_call" || v["method"] == "GET" {
                continue;
            }
            let action = &def.steps[v["step"].as_u64().unwrap() as usize].action;
            if offboard::apps::reads_only(action) {
                found.push(format!("{action}: {} {}", v["method"], v["path"]));
            }
        }
    }
    found
}
