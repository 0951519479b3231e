//! `offboard plan` (issue 12): for each app and event type, the plan made against a
//! simulator lists exactly the writes the real run then makes against an identical fresh
//! simulator — same order, same paths and parameters, same bodies — and the plan itself
//! leaves the simulator's write log empty. A run that would stop names its code (exit 3),
//! and the binary is driven once from outside, as an operator would.

mod support;

use offboard::apps::AppClient;
use offboard::config::{Config, Secret};
use offboard::domain::event::{EventType, Request};
use offboard::domain::step::Outcome;
use offboard::runtime::definitions::Registry;
use offboard::runtime::dry_run::{self, Plan};
use serde_json::Value;
use support::procs::{cli, ConfigFile};
use support::*;

/// The simulators' types this test reads, in one place.
mod sims {
    pub use offboard::apps::postman::client::Client as PostmanClient;
    pub use offboard_simulators::postman::SimCall as PostmanCall;
    pub use offboard_simulators::smartsheet::SimCall as SmartsheetCall;
}

/// One write as the simulator logged it or the plan listed it: method, path with query,
/// body.
type Write = (String, String, Option<Value>);

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

fn smartsheet_writes(calls: &[sims::SmartsheetCall]) -> Vec<Write> {
    calls
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| {
            (
                c.method.clone(),
                with_query(&c.path, &c.query),
                c.body.clone(),
            )
        })
        .collect()
}

fn postman_writes(calls: &[sims::PostmanCall]) -> Vec<Write> {
    calls
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| {
            (
                c.method.clone(),
                with_query(&c.path, &c.query),
                c.body.clone(),
            )
        })
        .collect()
}

fn planned_writes(plan: &Plan) -> Vec<Write> {
    plan.connections
        .iter()
        .flat_map(|c| &c.writes)
        .map(|w| {
            (
                w.write.method.clone(),
                w.write.path.clone(),
                w.write.body.clone(),
            )
        })
        .collect()
}

fn request(event_type: EventType, email: &str, transfer_to: Option<&str>) -> Request {
    Request {
        event_id: format!("plan-test-{}", unique()),
        source: "test".into(),
        event_type,
        time: None,
        person_email: email.to_string(),
        employee_id: None,
        transfer_to: transfer_to.map(str::to_string),
        connections: None,
        not_before: None,
        reason: None,
    }
}

/// Plans `request` on `config`'s one connection, its client holding `key`.
async fn plan(config: &Config, request: &Request, key: &str) -> Plan {
    let registry = Registry::load(None).unwrap();
    dry_run::plan_with(config, &registry, request, |_, conn| {
        Ok(match conn.app {
            offboard::config::AppKind::Smartsheet | offboard::config::AppKind::Scim => {
                AppClient::new(conn, Secret::new(key)).unwrap()
            }
            offboard::config::AppKind::Postman => AppClient::Postman(
                sims::PostmanClient::with_keys(conn, Secret::new(key), Secret::new(key)).unwrap(),
            ),
        })
    })
    .await
    .unwrap()
}

/// Runs `request` for real through the engine (stored, claimed, driven by the runner)
/// until it ends; returns its state and outcome.
async fn run(
    engine: &std::sync::Arc<offboard::runtime::engine::Engine>,
    request: &Request,
) -> (String, Option<String>) {
    engine.accept(request, "{}").await.unwrap().unwrap();
    engine
        .run_until_settled(std::time::Duration::from_secs(0))
        .await
        .unwrap();
    let rows = engine.store().by_event(&request.event_id).await.unwrap();
    assert_eq!(rows.len(), 1);
    (rows[0].state.clone(), rows[0].outcome.clone())
}

async fn smartsheet_case(event_type: EventType, expected: Outcome, writes: usize) {
    // The plan, against one simulator…
    let planned_org = org().await;
    let planned_config = config("sqlite::memory:", amqp_names(), &planned_org.sim.base_url());
    let req = request(event_type, LEAVER, Some(RECIPIENT));
    let plan = plan(&planned_config, &req, TOKEN).await;
    assert!(plan.would_succeed, "{plan:#?}");
    assert_eq!(plan.connections[0].outcome, Some(expected));
    assert!(!plan.connections[0].reads.is_empty());
    assert_eq!(
        smartsheet_writes(&planned_org.sim.calls()),
        vec![],
        "the plan wrote"
    );

    // …the run, against a fresh identical one.
    let run_org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let engine = engine(config(&url, amqp_names(), &run_org.sim.base_url()), TOKEN).await;
    let (state, outcome) = run(&engine, &req).await;
    assert_eq!(
        (state.as_str(), outcome.as_deref()),
        ("completed", Some(expected.as_str()))
    );

    let done = smartsheet_writes(&run_org.sim.calls());
    assert_eq!(done.len(), writes, "{done:#?}");
    assert_eq!(planned_writes(&plan), done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smartsheet_offboarding_plan_lists_the_writes_the_run_makes() {
    // Two group owners, the flags, the DELETE with its transfer.
    smartsheet_case(EventType::Offboarding, Outcome::Removed, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smartsheet_reclaim_plan_lists_the_writes_the_run_makes() {
    // Two group owners, then the flags; the account stays.
    smartsheet_case(EventType::LicenseReclaim, Outcome::Downgraded, 3).await;
}

async fn postman_case(event_type: EventType, expected: Outcome, writes: usize) {
    let planned_team = postman_team().await;
    let config = postman_config(
        "sqlite::memory:",
        amqp_names(),
        &planned_team.sim.base_url(),
    );
    let s = planned_team.seed.clone();
    let req = request(event_type, &s.leaver_email, Some(&s.recipient_email));
    let plan = plan(&config, &req, POSTMAN_KEY).await;
    assert!(plan.would_succeed, "{plan:#?}");
    assert_eq!(plan.connections[0].outcome, Some(expected));
    assert_eq!(
        postman_writes(&planned_team.sim.calls()),
        vec![],
        "the plan wrote"
    );

    let run_team = postman_team().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let engine = postman_engine(
        postman_config(&url, amqp_names(), &run_team.sim.base_url()),
        POSTMAN_KEY,
    )
    .await;
    let (state, outcome) = run(&engine, &req).await;
    assert_eq!(
        (state.as_str(), outcome.as_deref()),
        ("completed", Some(expected.as_str()))
    );

    let done = postman_writes(&run_team.sim.calls());
    assert_eq!(done.len(), writes, "{done:#?}");
    assert_eq!(planned_writes(&plan), done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postman_offboarding_plan_lists_the_writes_the_run_makes() {
    // Hand-overs, then every role the leaver held (the Admin roles only because the
    // recipient took over: the plan must see its own hand-over), then SCIM.
    postman_case(EventType::Offboarding, Outcome::Removed, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postman_reclaim_plan_lists_the_writes_the_run_makes() {
    // Hand-overs, then SCIM; the roles stay.
    postman_case(EventType::LicenseReclaim, Outcome::Downgraded, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_would_stop_names_its_code_and_writes_nothing() {
    let org = org().await;
    let config = config("sqlite::memory:", amqp_names(), &org.sim.base_url());

    // A recipient who is not in the account cannot take the leaver's groups.
    let nobody = request(EventType::Offboarding, LEAVER, Some("nobody@example.com"));
    let plan = plan(&config, &nobody, TOKEN).await;
    let stop = plan.connections[0].stop.as_ref().expect("a stop");
    assert!(!plan.would_succeed);
    assert_eq!(
        (stop.code.as_str(), stop.step.as_deref()),
        ("SMT-110-B", Some("check-recipient"))
    );
    assert!(plan.connections[0].writes.is_empty());

    // A token Smartsheet rejects.
    let ok = request(EventType::Offboarding, LEAVER, Some(RECIPIENT));
    let plan = self::plan(&config, &ok, "not-a-token").await;
    let stop = plan.connections[0].stop.as_ref().expect("a stop");
    assert_eq!(
        (stop.code.as_str(), stop.step.as_deref()),
        ("SMT-100-B", Some("find-user"))
    );
    assert!(!stop.remedy.is_empty());

    assert_eq!(smartsheet_writes(&org.sim.calls()), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_the_plan_exits_3_on_a_stop_and_touches_no_database() {
    let org = org().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("offboard.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let path = ConfigFile::new(&url, &amqp_names(), &org.sim.base_url())
        .write(&dir.path().join("offboard.toml"));

    // A name from the app that would recolour the terminal, were it printed raw.
    org.sim
        .add_group("Ops\u{1b}[31m", org.leaver, &[org.leaver]);
    let (code, out, err) = cli(
        &path,
        &["plan", "--email", LEAVER, "--transfer-to", RECIPIENT],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let delete = format!(
        "DELETE /users/{}?removeFromSharing=true&transferTo={}&transferSheets=true",
        org.leaver, org.recipient
    );
    assert!(out.contains(&delete), "{out}");
    assert!(out.contains("would complete: removed"), "{out}");
    assert!(
        out.contains(&format!("PUT /groups/{}", org.leaver_groups[0])),
        "{out}"
    );
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
    assert!(
        !out.contains('\u{1b}') && out.contains("Ops\\u{1b}[31m"),
        "{out}"
    );

    let (code, out, err) = cli(
        &path,
        &[
            "plan",
            "--email",
            LEAVER,
            "--transfer-to",
            "nobody@example.com",
            "--json",
        ],
    );
    assert_eq!(code, 3, "{out}\n{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["would_succeed"], false);
    let smartsheet = &plan["connections"][0];
    assert_eq!(smartsheet["stop"]["code"], "SMT-110-B");
    assert_eq!(smartsheet["writes"], serde_json::json!([]));

    assert_eq!(smartsheet_writes(&org.sim.calls()), vec![]);
    assert!(!db.exists(), "plan opened the database");
}
