//! Postman workflow actions (being written).

use super::client::Client;
use crate::apps::ActionContext;
use crate::codes::Code;
use crate::domain::step::{StepError, StepOutput};

/// Every action this module performs.
pub const ACTIONS: &[&str] = &[];

/// Performs one action.
pub async fn perform(
    _client: &Client,
    action: &str,
    _ctx: &ActionContext<'_>,
) -> Result<StepOutput, StepError> {
    Err(StepError::fatal(
        Code::Post199B,
        format!("unknown action {action}"),
    ))
}
