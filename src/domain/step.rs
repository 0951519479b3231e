//! What an action hands back to the engine: facts it learned, or a coded error that says
//! whether trying again could help.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codes::Code;

/// How a finished workflow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The account was removed from the app.
    Removed,
    /// The account stays, its paid roles were taken away.
    Downgraded,
    /// The person had no account in the app; nothing was changed.
    Absent,
    /// The account stays but is inactive: sign-in blocked, its data kept (SCIM's
    /// `active: false`).
    Deactivated,
}

impl Outcome {
    /// The contract's spelling: `removed`, `downgraded`, `absent`, `deactivated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Removed => "removed",
            Outcome::Downgraded => "downgraded",
            Outcome::Absent => "absent",
            Outcome::Deactivated => "deactivated",
        }
    }

    /// Whether the person's access to the app ended (removed or deactivated): the
    /// outcomes a recheck later verifies.
    pub fn ends_access(self) -> bool {
        matches!(self, Outcome::Removed | Outcome::Deactivated)
    }
}

/// A successful step: the facts later steps need, and a line for the audit trail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    /// Facts learned (ids, entitlements before/after…), merged into the workflow's facts.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub facts: Map<String, Value>,
    /// Ends the workflow now with this outcome, skipping the remaining steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_with: Option<Outcome>,
    /// One line for a person reading the history ("reassigned 2 of 4 groups").
    pub summary: String,
}

impl StepOutput {
    /// An output with only a summary line.
    pub fn summary(text: impl Into<String>) -> Self {
        StepOutput {
            summary: text.into(),
            ..StepOutput::default()
        }
    }

    /// Adds one fact.
    pub fn fact(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.facts.insert(key.to_string(), value.into());
        self
    }
}

/// A failed step. `code` is what the workflow fails with if this is the last word:
/// for a transient error that is the app's "unavailable" code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepError {
    /// The stable code an admin looks up with `offboard explain`.
    pub code: Code,
    /// What happened, in one line, never containing a secret.
    pub message: String,
    /// Whether another attempt could succeed (429, 5xx, timeouts, connection errors).
    pub retryable: bool,
    /// The server's `Retry-After`, in milliseconds, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl StepError {
    /// An error no retry will fix.
    pub fn fatal(code: Code, message: impl Into<String>) -> Self {
        StepError {
            code,
            message: message.into(),
            retryable: false,
            retry_after_ms: None,
        }
    }

    /// A transient error; `code` is used if every attempt fails.
    pub fn transient(code: Code, message: impl Into<String>, retry_after_ms: Option<u64>) -> Self {
        StepError {
            code,
            message: message.into(),
            retryable: true,
            retry_after_ms,
        }
    }
}
