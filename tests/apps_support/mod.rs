//! Test helpers for the connectors, beside `support/`: clients whose per-call retries
//! wait milliseconds instead of seconds, so a test that drives an app through every
//! retry ends quickly, and a way to run one action at a time against a simulator.

#![allow(dead_code)]

use std::time::Duration;

use offboard::apps::http::CallLog;
use offboard::apps::retry::CallRetry;
use offboard::apps::{ActionContext, AppClient};
use offboard::config::{AppKind, ConnectionConfig, Secret};
use offboard::domain::event::EventType;
use offboard::domain::machine::WorkflowRequest;
use offboard::domain::step::{StepError, StepOutput};
use offboard::runtime::engine::Engine;
use serde_json::{Map, Value};

/// Per-call retries in milliseconds, giving up after 300 ms: a call failing for good
/// fails its step quickly, and the workflow's own (durable) retries are what is tested.
pub fn quick_retry() -> CallRetry {
    CallRetry {
        initial: Duration::from_millis(5),
        factor: 2.0,
        max_delay: Duration::from_millis(50),
        budget: Duration::from_millis(300),
    }
}

/// Replaces the engine's client for `connection` with one that retries calls as `retry` says.
pub async fn retry_calls(engine: &Engine, connection: &str, token: &str, retry: CallRetry) {
    let conn = engine.config().connections[connection].clone();
    let client = match conn.app {
        AppKind::Smartsheet | AppKind::Scim => AppClient::new(&conn, Secret::new(token)).unwrap(),
        AppKind::Postman => AppClient::Postman(
            offboard::apps::postman::client::Client::with_keys(
                &conn,
                Secret::new(token),
                Secret::new(token),
            )
            .unwrap(),
        ),
    };
    engine
        .use_client(connection, client.with_call_retry(retry))
        .await;
}

/// A connection of `app` to `url` for clients built by hand.
pub fn connection(app: AppKind, url: &str) -> ConnectionConfig {
    ConnectionConfig {
        timeout_secs: 5,
        ..ConnectionConfig::new(app, url, "UNUSED", 60_000)
    }
}

/// A request as a workflow carries it.
pub fn request(
    app: &str,
    event_type: EventType,
    email: &str,
    transfer_to: Option<&str>,
) -> WorkflowRequest {
    WorkflowRequest {
        event_id: "ev-1".into(),
        source: "test".into(),
        event_time: None,
        event_type,
        connection: app.into(),
        app: app.into(),
        person_email: email.into(),
        transfer_to: transfer_to.map(str::to_string),
        not_before: None,
        employee_id: None,
    }
}

/// Runs actions one at a time, keeping the facts they learn, as the engine would.
pub struct Steps {
    pub client: AppClient,
    pub request: WorkflowRequest,
    pub facts: Map<String, Value>,
}

impl Steps {
    /// Steps of `request` run with `client`.
    pub fn new(client: AppClient, request: WorkflowRequest) -> Steps {
        Steps {
            client,
            request,
            facts: Map::new(),
        }
    }

    /// Performs one action; its facts are kept when it succeeds.
    pub async fn run(&mut self, action: &str) -> Result<StepOutput, StepError> {
        let log = CallLog::discard();
        let ctx = ActionContext {
            request: &self.request,
            facts: &self.facts,
            calls: &log,
        };
        let out = self.client.perform(action, &ctx).await?;
        self.facts.extend(out.facts.clone());
        Ok(out)
    }
}
