//! `offboard demo`: the whole pipeline on embedded defaults — a fresh SQLite file, the
//! built-in app simulators seeded with a small organisation, and sample events (one of
//! them malformed) fed through the same intake path the broker consumer uses. Progress is
//! logged as it happens; each workflow's audit trail is printed at the end.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::views::describe;
use super::{db, fail, Outcome, EXIT_FAILURE, EXIT_OK};
use crate::apps::postman::client::Client as PostmanClient;
use crate::apps::AppClient;
use crate::config::{AppKind, Config, ConnectionConfig, Secret};
use crate::intake::{self, Message, Received};
use crate::runtime::definitions::Registry;
use crate::runtime::engine::Engine;
use crate::store::Store;
use offboard_simulators::postman::PostmanSim;
use offboard_simulators::scim::{ScimDemoSeed, ScimSim};
use offboard_simulators::smartsheet::SmartsheetSim;

/// Runs the demo.
pub async fn run() -> Outcome {
    crate::telemetry::init("info");
    let dir = std::env::temp_dir().join(format!("offboard-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let database_url = format!("sqlite://{}/offboard.db?mode=rwc", dir.display());

    let smartsheet = SmartsheetSim::start().await.map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot start the Smartsheet simulator: {e}"),
        )
    })?;
    let seed = smartsheet.seed_demo();
    let postman = PostmanSim::start().await.map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot start the Postman simulator: {e}"),
        )
    })?;
    let postman_seed = postman.seed_demo();

    let mut config = Config::defaults();
    config.database_url = database_url.clone();
    config.connections.clear();
    let smartsheet_conn = ConnectionConfig {
        app: AppKind::Smartsheet,
        base_url: smartsheet.base_url(),
        token_env: "OFFBOARD_DEMO_SMARTSHEET_TOKEN".into(),
        requests_per_minute: 600,
        timeout_secs: 10,
        protected: Vec::new(),
        allow_admins: false,
        scim_match: None,
        offboard: None,
        remove_from_groups: None,
    };
    let smartsheet_client = AppClient::new(&smartsheet_conn, Secret::new(seed.token.clone()))
        .map_err(|e| fail(EXIT_FAILURE, e))?;
    config
        .connections
        .insert("smartsheet".into(), smartsheet_conn);
    let postman_conn = ConnectionConfig {
        app: AppKind::Postman,
        base_url: postman.base_url(),
        token_env: "OFFBOARD_DEMO_POSTMAN_API_KEY".into(),
        requests_per_minute: 6000,
        timeout_secs: 10,
        protected: Vec::new(),
        allow_admins: false,
        scim_match: None,
        offboard: None,
        remove_from_groups: None,
    };
    let postman_client = AppClient::Postman(
        PostmanClient::with_keys(
            &postman_conn,
            Secret::new(postman_seed.api_key.clone()),
            Secret::new(postman_seed.scim_key.clone()),
        )
        .map_err(|e| fail(EXIT_FAILURE, e))?,
    );
    config.connections.insert("postman".into(), postman_conn);
    let (scim, scim_seed, scim_conn, scim_client) = scim_app().await?;
    config.connections.insert("scim".into(), scim_conn);
    let registry = Registry::load(None).map_err(|e| fail(EXIT_FAILURE, e))?;
    let key = super::audit_key::resolve(&database_url).map_err(|e| fail(EXIT_FAILURE, e))?;
    let mut store = Store::open(&database_url).await.map_err(db)?;
    if let Some(key) = key {
        store = store.with_audit_key(key);
    }
    let engine = Arc::new(Engine::new(store, config, registry));
    engine.use_client("smartsheet", smartsheet_client).await;
    engine.use_client("postman", postman_client).await;
    engine.use_client("scim", scim_client).await;

    let events = [
        json!({"specversion": "1.0", "id": "demo-001", "source": "workday", "type": "offboarding.requested",
               "time": chrono::Utc::now().to_rfc3339(),
               "data": {"person": {"email": seed.leaver_email}, "transfer_to": {"email": seed.recipient_email}, "reason": "termination"}}),
        json!({"specversion": "1.0", "id": "demo-002", "source": "bamboohr", "type": "license.reclaim.requested",
               "data": {"person": {"email": seed.reclaim_email}, "reason": "inactive seat"}}),
        json!({"specversion": "1.0", "id": "demo-003", "source": "workday", "type": "offboarding.requested",
               "data": {"person": {"email": "nobody@northwind.example"}}}),
        json!({"specversion": "1.0", "id": "demo-004", "source": "workday", "type": "offboarding.requested",
               "data": {"person": {"name": "no email here"}}}),
        json!({"specversion": "1.0", "id": "demo-001", "source": "workday", "type": "offboarding.requested",
               "data": {"person": {"email": seed.leaver_email}}}),
    ];
    println!(
        "offboard demo: {} sample events against the built-in Smartsheet simulator",
        events.len()
    );
    println!("database: {database_url}\n");
    for ev in &events {
        let body = ev.to_string();
        let id = ev["id"].as_str().unwrap_or("?");
        // What the consumer does with a delivery, minus the broker.
        let message = Message {
            body: body.as_bytes(),
            routing_key: ev["type"].as_str().unwrap_or_default(),
            signature: Default::default(),
            delivery_count: None,
        };
        match intake::receive(&engine, &message)
            .await
            .map_err(|e| fail(EXIT_FAILURE, e.to_string()))?
        {
            Received::Accepted(accepted) => println!("event {id}: {accepted:?}"),
            Received::DeadLettered(r) => {
                println!("event {id}: dead-lettered with {} ({})", r.code, r.message)
            }
        }
    }
    println!();
    engine
        .run_until_settled(Duration::from_secs(30))
        .await
        .map_err(|e| fail(EXIT_FAILURE, e.to_string()))?;

    let store = engine.store();
    let rows = store
        .list(None)
        .await
        .map_err(|e| fail(EXIT_FAILURE, e.to_string()))?;
    for row in rows.iter().rev() {
        let loaded = store
            .load(&row.id)
            .await
            .map_err(|e| fail(EXIT_FAILURE, e.to_string()))?;
        let steps: Vec<String> = loaded
            .map(|l| l.state.steps.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        println!(
            "\n== {} {} {} -> {} {}",
            row.app,
            row.event_type,
            row.person_email,
            row.state,
            row.outcome
                .clone()
                .or(row.error_code.clone())
                .unwrap_or_default()
        );
        println!("   workflow {}", row.id);
        for record in store
            .trail(&row.id)
            .await
            .map_err(|e| fail(EXIT_FAILURE, e.to_string()))?
        {
            println!("   {}", describe(&record, &steps));
        }
    }
    let leaver = smartsheet.user_by_email(&seed.leaver_email);
    let reclaimed = smartsheet.user_by_email(&seed.reclaim_email);
    println!(
        "\nSmartsheet now: leaver present = {}, reclaimed user licensed = {}",
        leaver.is_some(),
        reclaimed.is_some_and(|u| u.licensed_sheet_creator)
    );
    println!(
        "SCIM app now: leaver active = {:?}, in {} groups; reclaimed user active = {:?}",
        scim.user_active(&scim_seed.leaver_id),
        scim.user_groups(&scim_seed.leaver_id).len(),
        scim.user_active(&scim_seed.reclaim_id)
    );
    println!("\nLook around: OFFBOARD_DATABASE_URL='{database_url}' offboard list   (then show / history / replay ID)");
    Ok(EXIT_OK)
}

/// A SCIM app for the demo: the in-process SCIM simulator seeded with the same people
/// (the leaver in two groups), the `scim` connection to it and its client.
async fn scim_app() -> Result<(ScimSim, ScimDemoSeed, ConnectionConfig, AppClient), super::Failure>
{
    let sim = ScimSim::start().await.map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot start the SCIM simulator: {e}"),
        )
    })?;
    let seed = sim.seed_demo();
    let text = format!(
        "[connections.scim]\napp = \"scim\"\nbase_url = \"{}\"\ntoken_env = \"OFFBOARD_DEMO_SCIM_TOKEN\"\nrequests_per_minute = 6000\n",
        sim.base_url()
    );
    let conn = Config::parse(&text)
        .map_err(|e| fail(EXIT_FAILURE, e))?
        .connections
        .remove("scim")
        .unwrap_or_else(|| unreachable!("the text names the connection"));
    let client = AppClient::new(&conn, Secret::new(seed.token.clone()))
        .map_err(|e| fail(EXIT_FAILURE, e))?;
    Ok((sim, seed, conn, client))
}
