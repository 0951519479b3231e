//! Helpers of the SCIM suites (`scim_flow`, `scim_codes`): a seeded SCIM simulator, the
//! `scim` connection as a user writes it, an engine over RabbitMQ and a fresh database,
//! events, and the `offboard` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use offboard::apps::AppClient;
use offboard::config::{Config, ConnectionConfig, Secret};
use offboard::runtime::definitions::Registry;
use offboard::runtime::engine::Engine;
use offboard::store::entities::workflow;
use offboard::store::Store;
use offboard_simulators::scim::{ScimCall, ScimGroup, ScimOptions, ScimSim, ScimUser};
use serde_json::json;

use crate::support::*;

pub const SCIM_TOKEN: &str = "scim-test-7d1e44b09a3c";
pub const SCIM_TOKEN_ENV: &str = "OFFBOARD_TEST_SCIM_TOKEN";
pub const OFFBOARDING: &str = "offboarding.requested";
pub const RECLAIM: &str = "license.reclaim.requested";

/// A provider with a token, the leaver in two groups with a colleague, and the colleague.
pub struct Provider {
    pub sim: ScimSim,
    pub leaver: String,
    pub colleague: String,
    pub groups: Vec<String>,
}

pub const LEAVER: &str = "ada@example.com";
pub const COLLEAGUE: &str = "grace@example.com";

pub async fn provider(options: ScimOptions) -> Provider {
    let sim = ScimSim::start_with(options).await.unwrap();
    sim.add_token(SCIM_TOKEN);
    let leaver = sim.add_user(ScimUser::new(LEAVER).with_external_id("E1001"));
    let colleague = sim.add_user(ScimUser::new(COLLEAGUE).with_external_id("E1002"));
    let groups = ["Engineering", "Paid seats"]
        .iter()
        .map(|name| sim.add_group(ScimGroup::new(name, &[&leaver, &colleague])))
        .collect();
    Provider {
        sim,
        leaver,
        colleague,
        groups,
    }
}

/// The `scim` connection to `url`, read from TOML as a user writes it, with `settings`
/// lines added (`match = …`, `offboard = …`, `requests_per_minute = …`).
pub fn scim_connection(url: &str, settings: &str) -> ConnectionConfig {
    let rpm = if settings.contains("requests_per_minute") {
        ""
    } else {
        "requests_per_minute = 6000\n"
    };
    let text = format!(
        "[connections.scim]\napp = \"scim\"\nbase_url = \"{url}\"\ntoken_env = \"{SCIM_TOKEN_ENV}\"\ntimeout_secs = 5\n{rpm}{settings}\n"
    );
    Config::parse(&text).unwrap().connections["scim"].clone()
}

/// The engine for one `scim` connection, its client holding `token`.
pub async fn scim_engine(database_url: &str, conn: ConnectionConfig, token: &str) -> Arc<Engine> {
    scim_engine_in(database_url, conn, token, None).await
}

/// [`scim_engine`] with the workflow definitions of `workflows` (the shipped ones when
/// `None`).
pub async fn scim_engine_in(
    database_url: &str,
    conn: ConnectionConfig,
    token: &str,
    workflows: Option<&Path>,
) -> Arc<Engine> {
    let mut config = Config::defaults();
    config.workflows_dir = workflows.map(Path::to_path_buf);
    config.database_url = database_url.to_string();
    config.amqp_url = AMQP_URL.to_string();
    config.amqp = amqp_names();
    config.connections.clear();
    config.connections.insert("scim".into(), conn.clone());
    let registry = Registry::load(config.workflows_dir.as_deref()).unwrap();
    let store = Store::open(database_url)
        .await
        .unwrap()
        .with_audit_key(audit_key());
    let engine = Engine::new(store, config, registry).with_lease(Duration::from_secs(3));
    let client = AppClient::new(&conn, Secret::new(token)).unwrap();
    engine.use_client("scim", client).await;
    Arc::new(engine)
}

/// An event for `email` (and an `employee_id` when given).
pub fn scim_event(
    id: &str,
    kind: &str,
    email: &str,
    employee_id: Option<&str>,
    transfer_to: Option<&str>,
) -> Vec<u8> {
    let mut data = json!({ "person": { "email": email } });
    if let Some(e) = employee_id {
        data["person"]["employee_id"] = json!(e);
    }
    if let Some(t) = transfer_to {
        data["transfer_to"] = json!({ "email": t });
    }
    json!({"specversion": "1.0", "id": id, "source": "test", "type": kind, "data": data})
        .to_string()
        .into_bytes()
}

/// Publishes an event and waits for its one workflow to end.
pub async fn run(engine: &Arc<Engine>, event: Vec<u8>, kind: &str, id: &str) -> workflow::Model {
    publish(&engine.config().amqp, kind, &event).await;
    finished(engine.store(), id, 1, 40).await.remove(0)
}

/// The writes (not GET) the provider received, as `METHOD path`.
pub fn writes(calls: &[ScimCall]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

/// An `offboard.toml` naming this database and the `scim` connection.
pub fn config_file(dir: &Path, database_url: &str, conn_url: &str) -> PathBuf {
    config_file_with(dir, database_url, conn_url, "")
}

/// [`config_file`] with `settings` lines added to the connection.
pub fn config_file_with(dir: &Path, database_url: &str, conn_url: &str, settings: &str) -> PathBuf {
    let path = dir.join("offboard.toml");
    std::fs::write(
        &path,
        format!(
            "database_url = \"{database_url}\"\n[connections.scim]\napp = \"scim\"\nbase_url = \"{conn_url}\"\ntoken_env = \"{SCIM_TOKEN_ENV}\"\ntimeout_secs = 5\n{settings}\n"
        ),
    )
    .unwrap();
    path
}

/// Runs the binary (off the async workers, so the simulator keeps answering).
pub async fn offboard(config: &Path, args: &[&str], token: &str) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offboard"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("OFFBOARD_AUDIT_KEY", AUDIT_KEY)
        .env(SCIM_TOKEN_ENV, token)
        .env_remove("OFFBOARD_CONFIG")
        .env_remove("OFFBOARD_DATABASE_URL")
        .env("NO_COLOR", "1");
    run_to_end(cmd).await
}

/// One workflow on a fresh database: the engine, and the workflow once ended.
pub async fn one(
    p: &Provider,
    settings: &str,
    event: Vec<u8>,
    kind: &str,
    id: &str,
) -> (workflow::Model, String) {
    let (url, _dir) = fresh_database(Db::Postgres).await;
    let engine = scim_engine(
        &url,
        scim_connection(&p.sim.base_url(), settings),
        SCIM_TOKEN,
    )
    .await;
    let service = serve(&engine);
    let wf = run(&engine, event, kind, id).await;
    service.stop().await;
    (wf, url)
}

/// What a provider without PATCH shows after the leaver's offboarding: both groups and
/// then the user were PUT back as just read (the user with `active` false), and the
/// leaver is inactive and in no group while the colleague stays.
pub fn assert_deactivated_by_puts(p: &Provider) {
    let calls = p.sim.calls();
    assert_eq!(
        writes(&calls),
        [
            format!("PUT /Groups/{}", p.groups[0]),
            format!("PUT /Groups/{}", p.groups[1]),
            format!("PUT /Users/{}", p.leaver),
        ]
    );
    let put_user = calls
        .iter()
        .rfind(|c| c.method == "PUT")
        .and_then(|c| c.body.clone())
        .unwrap();
    assert_eq!(
        (put_user["active"].clone(), put_user["userName"].clone()),
        (json!(false), json!(LEAVER))
    );
    assert_eq!(p.sim.user_active(&p.leaver), Some(false));
    assert!(p.sim.user_groups(&p.leaver).is_empty());
    assert_eq!(
        p.sim.group_members(&p.groups[0]),
        std::slice::from_ref(&p.colleague)
    );
}

/// What a provider with ETags shows after the leaver's offboarding with one write raced:
/// every write carried a weak `If-Match`, exactly one got 412, and that write was sent
/// again after a fresh read; the leaver is inactive and in no group.
pub fn assert_if_match_and_one_race_lost(p: &Provider) {
    let calls = p.sim.calls();
    let sent: Vec<&ScimCall> = calls.iter().filter(|c| c.method != "GET").collect();
    assert!(
        sent.iter()
            .all(|c| c.if_match.as_deref().is_some_and(|v| v.starts_with("W/\""))),
        "{sent:?}"
    );
    assert_eq!(sent.iter().filter(|c| c.status == 412).count(), 1);
    let lost = calls.iter().position(|c| c.status == 412).unwrap();
    assert_eq!(calls[lost + 1].method, "GET");
    assert_eq!(
        (
            calls[lost + 2].method.as_str(),
            calls[lost + 2].path.as_str()
        ),
        (calls[lost].method.as_str(), calls[lost].path.as_str())
    );
    assert_eq!(p.sim.user_active(&p.leaver), Some(false));
    assert!(p.sim.user_groups(&p.leaver).is_empty());
}
