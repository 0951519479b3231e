//! The apps offboard drives. Each app has a client (typed calls over one
//! [`transport::Transport`] per API it speaks: an [`http::ApiHttp`], each call retried on
//! its own by [`retry::CallRetry`]), actions (the workflow steps
//! named in `workflows/`), an error mapping to the catalog's codes and a connection check.
//! The simulators that tests and `offboard demo` run against are the separate
//! `offboard-simulators` crate; they meet these clients only over HTTP.

pub mod api_error;
pub mod dry_run;
pub mod failure;
pub mod http;
pub mod postman;
mod reply;
pub mod retry;
pub mod scim;
pub mod smartsheet;
pub mod transport;

use serde_json::{Map, Value};

use crate::codes::Code;
use crate::config::{AppKind, ConnectionConfig};
use crate::domain::definition::Definition;
use crate::domain::machine::WorkflowRequest;
use crate::domain::step::{StepError, StepOutput};
use http::CallLog;
use transport::Transported;

/// What an action may read: the request, the facts earlier steps learned, and where to
/// report its HTTP calls.
pub struct ActionContext<'a> {
    /// What the workflow is asked to do.
    pub request: &'a WorkflowRequest,
    /// Facts from earlier steps.
    pub facts: &'a Map<String, Value>,
    /// Where calls are recorded.
    pub calls: &'a CallLog,
}

impl ActionContext<'_> {
    /// A fact as an integer id.
    pub fn fact_i64(&self, key: &str) -> Option<i64> {
        self.facts.get(key).and_then(Value::as_i64)
    }

    /// A fact as a string.
    pub fn fact_str(&self, key: &str) -> Option<&str> {
        self.facts.get(key).and_then(Value::as_str)
    }
}

/// Why a connection's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Its token is not in the environment.
    #[error(transparent)]
    Token(#[from] crate::config::ConfigError),
    /// The HTTP client could not be set up (TLS roots, for one).
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The result of checking one connection.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// `None` when everything the workflows need works.
    pub problem: Option<(Code, String)>,
    /// Problems that do not stop offboarding (e.g. no audit logs on this plan).
    pub warnings: Vec<(Code, String)>,
}

/// A client for one configured connection.
// One per connection for the life of the process: boxing a variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AppClient {
    /// A Smartsheet account.
    Smartsheet(smartsheet::client::Client),
    /// A Postman team.
    Postman(postman::client::Client),
    /// A SCIM 2.0 service provider.
    Scim(scim::client::Client),
}

impl AppClient {
    /// Builds the client for a connection, reading its token from the environment.
    pub fn connect(name: &str, config: &ConnectionConfig) -> Result<AppClient, ClientError> {
        AppClient::new(config, config.token(name)?)
    }

    /// Builds the client for a connection with a token in hand.
    pub fn new(
        config: &ConnectionConfig,
        token: crate::config::Secret,
    ) -> Result<AppClient, ClientError> {
        Ok(match config.app {
            AppKind::Smartsheet => {
                AppClient::Smartsheet(smartsheet::client::Client::new(config, token)?)
            }
            AppKind::Postman => AppClient::Postman(postman::client::Client::new(config, token)?),
            AppKind::Scim => AppClient::Scim(scim::client::Client::new(config, token)?),
        })
    }

    /// Builds the client a run uses for a connection. A token that cannot be read fails
    /// the way a rejected one does during a run (`SMT-100-B`, `POST-100-B`).
    pub fn for_run(name: &str, config: &ConnectionConfig) -> Result<AppClient, StepError> {
        AppClient::connect(name, config).map_err(|message| {
            let code = match config.app {
                AppKind::Smartsheet => Code::Smt100B,
                AppKind::Postman => Code::Post100B,
                AppKind::Scim => Code::Scim100B,
            };
            StepError::fatal(code, message.to_string())
        })
    }

    /// The same client with writes turned off (see [`dry_run`]): returns it and the dry
    /// run that collects the writes it would have made.
    pub fn dry_run(self) -> (AppClient, std::sync::Arc<dry_run::DryRun>) {
        match self {
            AppClient::Smartsheet(c) => {
                let plan = dry_run::DryRun::new(smartsheet::dry_run::SmartsheetModel::default());
                (AppClient::Smartsheet(c.with_dry_run(plan.clone())), plan)
            }
            AppClient::Postman(c) => {
                let plan = dry_run::DryRun::new(postman::dry_run::PostmanModel::default());
                (AppClient::Postman(c.with_dry_run(plan.clone())), plan)
            }
            AppClient::Scim(c) => {
                let plan = dry_run::DryRun::new(scim::dry_run::ScimModel::default());
                (AppClient::Scim(c.with_dry_run(plan.clone())), plan)
            }
        }
    }

    /// The same client retrying each HTTP call as `retry` says (tests shorten the waits).
    pub fn with_call_retry(self, retry: retry::CallRetry) -> AppClient {
        match self {
            AppClient::Smartsheet(c) => AppClient::Smartsheet(c.with_call_retry(retry)),
            AppClient::Postman(c) => AppClient::Postman(c.with_call_retry(retry)),
            AppClient::Scim(c) => AppClient::Scim(c.with_call_retry(retry)),
        }
    }

    /// Performs one workflow action.
    pub async fn perform(
        &self,
        action: &str,
        ctx: &ActionContext<'_>,
    ) -> Result<StepOutput, StepError> {
        use failure::settle;
        match self {
            AppClient::Smartsheet(c) => {
                let result = smartsheet::actions::perform(c, action, ctx).await;
                settle(result, |e, area| {
                    smartsheet::errors::run_error(c, e, area, ctx.calls)
                })
                .await
            }
            AppClient::Postman(c) => {
                let result = postman::actions::perform(c, action, ctx).await;
                settle(result, |e, area| {
                    postman::errors::run_error(c, e, area, ctx.calls)
                })
                .await
            }
            AppClient::Scim(c) => {
                let result = scim::actions::perform(c, action, ctx).await;
                settle(
                    result,
                    |e, area| async move { scim::errors::run_error(e, area) },
                )
                .await
            }
        }
    }

    /// Shares the connection's request budget with every process using `source` (all
    /// of the connection's API clients draw on the one budget).
    pub fn share_budget(&self, connection: &str, source: std::sync::Arc<dyn http::SlotSource>) {
        match self {
            AppClient::Smartsheet(c) => c.share_budget(connection, source),
            AppClient::Postman(c) => c.share_budget(connection, source),
            AppClient::Scim(c) => c.share_budget(connection, source),
        }
    }

    /// Checks credentials, role and plan.
    pub async fn check(&self) -> CheckReport {
        match self {
            AppClient::Smartsheet(c) => smartsheet::check::run(c).await,
            AppClient::Postman(c) => postman::check::run(c).await,
            AppClient::Scim(c) => scim::check::run(c).await,
        }
    }
}

/// Whether an action only reads from its app (unknown actions count as writing).
pub fn reads_only(action: &str) -> bool {
    smartsheet::actions::READ_ONLY.contains(&action)
        || postman::actions::READ_ONLY.contains(&action)
        || scim::actions::READ_ONLY.contains(&action)
}

/// Whether a workflow running `definition` removes or deactivates an account: it runs an
/// action that does (Smartsheet's user removal, Postman's SCIM deactivation — which a
/// Postman licence reclaim runs too — and a SCIM app's deactivation or deletion, which a
/// SCIM licence reclaim runs too). The mass-offboarding brake counts and holds exactly
/// these; a Smartsheet licence reclaim, which keeps the account, is not braked.
pub fn ends_account(definition: &Definition) -> bool {
    definition.steps.iter().any(|step| {
        smartsheet::actions::ENDS_ACCOUNT.contains(&step.action.as_str())
            || postman::actions::ENDS_ACCOUNT.contains(&step.action.as_str())
            || scim::actions::ENDS_ACCOUNT.contains(&step.action.as_str())
    })
}

/// Whether a workflow file may name this action.
pub fn known_action(name: &str) -> bool {
    smartsheet::actions::ACTIONS.contains(&name)
        || postman::actions::ACTIONS.contains(&name)
        || scim::actions::ACTIONS.contains(&name)
}
