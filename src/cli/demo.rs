//! `offboard demo`: the whole pipeline on embedded defaults — a fresh SQLite file, the
//! built-in app simulators seeded with a small organisation, and sample events (one of
//! them malformed) fed through the same intake path the broker consumer uses. Progress is
//! logged as it happens; each workflow's audit trail is printed at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::views::{describe, terminal_safe};
use super::{db, fail, Failure, Outcome, EXIT_FAILURE, EXIT_OK};
use crate::apps::postman::client::Client as PostmanClient;
use crate::apps::AppClient;
use crate::config::{AppKind, Config, ConnectionConfig, Secret};
use crate::intake::{self, Message, Received};
use crate::runtime::definitions::Registry;
use crate::runtime::engine::Engine;
use crate::store::{Accepted, Store};
use offboard_simulators::postman::PostmanSim;
use offboard_simulators::scim::{ScimDemoSeed, ScimSim};
use offboard_simulators::smartsheet::{DemoSeed, SmartsheetSim};

/// Runs the demo: the apps started, the events fed, the workflows driven to their end,
/// then what each trail says and what Smartsheet looks like afterwards.
pub async fn run() -> Outcome {
    crate::telemetry::init("info");
    let database_url = fresh_database()?;
    let mut apps = Apps::start().await?;
    let engine = apps.engine(&database_url).await?;
    let events = sample_events(&apps.smartsheet_seed);
    outln!("{}", header(events.len(), &engine.config().connections));
    outln!("database: {database_url}\n");
    for event in &events {
        outln!("{}", feed(&engine, event).await?);
    }
    outln!();
    engine
        .run_until_settled(Duration::from_secs(30))
        .await
        .map_err(|e| fail(EXIT_FAILURE, e))?;
    print_trails(engine.store()).await?;
    let seed = &apps.smartsheet_seed;
    let leaver = apps.smartsheet.user_by_email(&seed.leaver_email);
    let reclaimed = apps.smartsheet.user_by_email(&seed.reclaim_email);
    outln!(
        "\nSmartsheet now: leaver present = {}, reclaimed user licensed = {}",
        leaver.is_some(),
        reclaimed.is_some_and(|u| u.licensed_sheet_creator)
    );
    let (scim, scim_seed) = (&apps.scim, &apps.scim_seed);
    outln!(
        "SCIM app now: leaver active = {}, in {} groups; reclaimed user active = {}",
        scim.user_active(&scim_seed.leaver_id).unwrap_or(false),
        scim.user_groups(&scim_seed.leaver_id).len(),
        scim.user_active(&scim_seed.reclaim_id).unwrap_or(false)
    );
    outln!("\nLook around: OFFBOARD_DATABASE_URL='{database_url}' offboard list   (then show / history / replay ID)");
    Ok(EXIT_OK)
}

/// A new SQLite database in a directory of its own under the system's temporary one.
fn fresh_database() -> Result<String, Failure> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("offboard-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    Ok(format!("sqlite://{}/offboard.db?mode=rwc", dir.display()))
}

/// The demo's organisation: each app's simulator, seeded, and one connection to each
/// with its client (until the engine takes them). The simulators stop when this is
/// dropped.
struct Apps {
    smartsheet: SmartsheetSim,
    smartsheet_seed: DemoSeed,
    _postman: PostmanSim,
    scim: ScimSim,
    scim_seed: ScimDemoSeed,
    connections: Vec<(String, ConnectionConfig, AppClient)>,
}

impl Apps {
    /// Starts and seeds the simulators and builds a client for each.
    async fn start() -> Result<Apps, Failure> {
        let cannot_start = |app: &str, e: &dyn std::fmt::Display| {
            fail(
                EXIT_FAILURE,
                format!("cannot start the {app} simulator: {e}"),
            )
        };
        let smartsheet = SmartsheetSim::start()
            .await
            .map_err(|e| cannot_start("Smartsheet", &e))?;
        let smartsheet_seed = smartsheet.seed_demo();
        let postman = PostmanSim::start()
            .await
            .map_err(|e| cannot_start("Postman", &e))?;
        let postman_seed = postman.seed_demo();

        let smartsheet_conn = demo_connection(AppKind::Smartsheet, smartsheet.base_url(), 600);
        let smartsheet_client =
            AppClient::new(&smartsheet_conn, Secret::new(smartsheet_seed.token.clone()))
                .map_err(|e| fail(EXIT_FAILURE, e))?;
        let postman_conn = demo_connection(AppKind::Postman, postman.base_url(), 6000);
        let postman_client = AppClient::Postman(
            PostmanClient::with_keys(
                &postman_conn,
                Secret::new(postman_seed.api_key.clone()),
                Secret::new(postman_seed.scim_key.clone()),
            )
            .map_err(|e| fail(EXIT_FAILURE, e))?,
        );
        let (scim, scim_seed, scim_conn, scim_client) = scim_app().await?;
        Ok(Apps {
            smartsheet,
            smartsheet_seed,
            _postman: postman,
            scim,
            scim_seed,
            connections: vec![
                ("smartsheet".into(), smartsheet_conn, smartsheet_client),
                ("postman".into(), postman_conn, postman_client),
                ("scim".into(), scim_conn, scim_client),
            ],
        })
    }

    /// An engine on `database_url` with the embedded workflows and these connections
    /// (their clients handed over to it).
    async fn engine(&mut self, database_url: &str) -> Result<Arc<Engine>, Failure> {
        let connections = std::mem::take(&mut self.connections);
        let mut config = Config::defaults();
        config.database_url = database_url.to_string();
        config.connections = connections
            .iter()
            .map(|(name, conn, _)| (name.clone(), conn.clone()))
            .collect();
        let registry = Registry::load(None).map_err(|e| fail(EXIT_FAILURE, e))?;
        let key = super::audit_key::resolve(database_url).map_err(|e| fail(EXIT_FAILURE, e))?;
        let mut store = Store::open(database_url).await.map_err(db)?;
        if let Some(key) = key {
            store = store.with_audit_key(key);
        }
        let engine = Arc::new(Engine::new(store, config, registry));
        for (name, _, client) in connections {
            engine.use_client(&name, client).await;
        }
        Ok(engine)
    }
}

/// A connection to a simulator: its token is handed to the client directly (the
/// environment variable is named for the config's sake, never read).
fn demo_connection(app: AppKind, base_url: String, requests_per_minute: u32) -> ConnectionConfig {
    let token_env = format!("OFFBOARD_DEMO_{}_TOKEN", app.as_str().to_uppercase());
    ConnectionConfig {
        timeout_secs: 10,
        ..ConnectionConfig::new(app, base_url, token_env, requests_per_minute)
    }
}

/// The demo's events: a leaver, a seat to reclaim, someone no app knows, a malformed
/// event and the leaver's event delivered again.
fn sample_events(seed: &DemoSeed) -> [Value; 5] {
    [
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
    ]
}

/// The demo's first line, naming every connection it runs (and its app, when the
/// connection is named otherwise).
fn header<'a>(
    events: usize,
    connections: impl IntoIterator<Item = (&'a String, &'a ConnectionConfig)>,
) -> String {
    let names: Vec<String> = connections
        .into_iter()
        .map(|(name, conn)| match conn.app.as_str() {
            app if app == name => name.clone(),
            app => format!("{name} ({app})"),
        })
        .collect();
    format!(
        "offboard demo: {events} sample events through {} connections ({}), each against its app's built-in simulator",
        names.len(),
        names.join(", ")
    )
}

/// Hands one event to the intake as the consumer would (minus the broker) and says
/// what became of it.
async fn feed(engine: &Engine, event: &Value) -> Result<String, Failure> {
    let body = event.to_string();
    let id = terminal_safe(event["id"].as_str().unwrap_or("?"));
    let message = Message {
        body: body.as_bytes(),
        routing_key: event["type"].as_str().unwrap_or_default(),
        signature: Default::default(),
        delivery_count: None,
    };
    let received = intake::receive(engine, &message)
        .await
        .map_err(|e| fail(EXIT_FAILURE, e))?;
    Ok(format!("event {id}: {}", received_in_words(&received)))
}

/// What became of an event, in words.
fn received_in_words(received: &Received) -> String {
    let workflows = |n: usize| match n {
        1 => "1 workflow".to_string(),
        n => format!("{n} workflows"),
    };
    match received {
        Received::Accepted(Accepted::New(ids)) => {
            format!("accepted, {} started", workflows(ids.len()))
        }
        Received::Accepted(Accepted::Held { held, running, .. }) => format!(
            "accepted, {} held by the mass-offboarding brake, {} started",
            workflows(held.len()),
            workflows(running.len())
        ),
        Received::Accepted(Accepted::Duplicate) => {
            "already received; nothing new started".to_string()
        }
        Received::DeadLettered(r) => format!(
            "rejected with {} ({}) and dead-lettered",
            r.code,
            terminal_safe(&r.message)
        ),
    }
}

/// Each workflow's heading and audit trail, oldest first.
async fn print_trails(store: &Store) -> Result<(), Failure> {
    let rows = store.list(None).await.map_err(db)?;
    for row in rows.iter().rev() {
        let loaded = store.load(&row.id).await.map_err(db)?;
        let steps: Vec<String> = loaded
            .map(|l| l.state.steps.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        let ending = row.outcome.as_ref().or(row.error_code.as_ref());
        outln!(
            "\n== {} {} {} -> {} {}",
            row.app,
            row.event_type,
            terminal_safe(&row.person_email),
            row.state,
            ending.map(String::as_str).unwrap_or_default()
        );
        outln!("   workflow {}", row.id);
        for record in store.trail(&row.id).await.map_err(db)? {
            outln!("   {}", describe(&record, &steps));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Code;
    use crate::domain::event::Rejection;

    #[test]
    fn what_became_of_an_event_reads_as_words() {
        let new = Received::Accepted(Accepted::New(vec!["a".into(), "b".into()]));
        assert_eq!(received_in_words(&new), "accepted, 2 workflows started");
        let held = Received::Accepted(Accepted::Held {
            held: vec!["a".into()],
            running: vec![],
            in_last_hour: 40,
        });
        assert_eq!(
            received_in_words(&held),
            "accepted, 1 workflow held by the mass-offboarding brake, 0 workflows started"
        );
        let again = Received::Accepted(Accepted::Duplicate);
        assert_eq!(
            received_in_words(&again),
            "already received; nothing new started"
        );
        let bad = Received::DeadLettered(Rejection {
            code: Code::Evt102,
            message: "data.person.email is missing\u{1b}[2J".into(),
        });
        assert_eq!(
            received_in_words(&bad),
            "rejected with EVT-102 (data.person.email is missing\\u{1b}[2J) and dead-lettered"
        );
    }

    #[test]
    fn the_header_names_every_connection() {
        let conn = |app| demo_connection(app, "http://127.0.0.1:1".into(), 60);
        let connections = [
            ("postman".to_string(), conn(AppKind::Postman)),
            ("sheets".to_string(), conn(AppKind::Smartsheet)),
        ];
        let line = header(5, connections.iter().map(|(n, c)| (n, c)));
        assert_eq!(
            line,
            "offboard demo: 5 sample events through 2 connections (postman, sheets (smartsheet)), each against its app's built-in simulator"
        );
    }
}
