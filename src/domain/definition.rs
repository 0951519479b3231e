//! Declarative workflow definitions: the TOML files in `workflows/`, one per
//! (app, event type). A definition is an ordered list of steps, each naming an action and
//! its retry policy. Every workflow records the name, version and content hash of the
//! definition it started with and is run (and replayed) with that one to the end.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::EventType;
use super::retry::{RetryOverride, RetryPolicy};
use super::step::Outcome;

/// One step of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// The step's name, unique in its workflow (shown in `show` and `history`).
    pub name: String,
    /// The action performed, `app.action` (e.g. `smartsheet.find_user`).
    pub action: String,
    /// Overrides of the workflow's default retry policy.
    #[serde(default)]
    pub retry: RetryOverride,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    name: String,
    version: u32,
    app: String,
    event_type: EventType,
    outcome: Outcome,
    #[serde(default)]
    description: String,
    #[serde(default)]
    retry: RetryPolicy,
    steps: Vec<StepDef>,
    #[serde(default)]
    recheck_after: Vec<String>,
    #[serde(default)]
    recheck_action: super::recheck::RecheckAction,
}

/// A loaded, validated definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    /// E.g. `smartsheet-offboard`.
    pub name: String,
    /// Bumped by hand when the steps change meaning.
    pub version: u32,
    /// The app the steps talk to (`smartsheet`, `postman`).
    pub app: String,
    /// The event type this definition handles.
    pub event_type: EventType,
    /// The outcome when every step succeeds.
    pub outcome: Outcome,
    /// What the workflow does, for people.
    pub description: String,
    /// The steps, in order.
    pub steps: Vec<StepDef>,
    /// The default retry policy.
    pub retry: RetryPolicy,
    /// SHA-256 of the file's bytes, hex.
    pub hash: String,
    /// The file's text, kept so a workflow can be resumed or replayed with it later.
    pub source: String,
    /// When a completed workflow looks at the app again, after its completion
    /// (`recheck_after`, increasing; empty: never). Only for definitions whose outcome is
    /// `removed` (see [`super::recheck`]).
    pub recheck_after: Vec<std::time::Duration>,
    /// What a recheck that finds access back does besides reporting it.
    pub recheck_action: super::recheck::RecheckAction,
}

/// Names a definition version; stored with every workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionRef {
    /// Definition name.
    pub name: String,
    /// Definition version.
    pub version: u32,
    /// Content hash.
    pub hash: String,
}

/// Why a workflow file is refused.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// Not TOML, or not a workflow file's fields.
    #[error("{}", .0.message())]
    Syntax(#[from] toml::de::Error),
    /// Well-formed, but wrong: no steps, a name used twice, an unknown action, a retry
    /// policy out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Definition {
    /// Parses and validates a definition; `known_action` says whether an action exists.
    pub fn parse(
        source: &str,
        known_action: impl Fn(&str) -> bool,
    ) -> Result<Self, DefinitionError> {
        let file: DefinitionFile = toml::from_str(source)?;
        let invalid = |why: String| Err(DefinitionError::Invalid(why));
        if file.steps.is_empty() {
            return invalid("a workflow needs at least one step".into());
        }
        if let Some(why) = file.retry.problem() {
            return invalid(format!("default retry policy: {why}"));
        }
        for (i, step) in file.steps.iter().enumerate() {
            if file.steps[..i].iter().any(|s| s.name == step.name) {
                return invalid(format!("step name {:?} is used twice", step.name));
            }
            if !step.action.starts_with(&format!("{}.", file.app)) || !known_action(&step.action) {
                return invalid(format!(
                    "step {:?}: unknown action {:?} for app {:?}",
                    step.name, step.action, file.app
                ));
            }
            if let Some(why) = file.retry.with(&step.retry).problem() {
                return invalid(format!("step {:?} retry policy: {why}", step.name));
            }
        }
        let recheck_after = super::recheck::parse_offsets(&file.recheck_after)
            .map_err(|why| DefinitionError::Invalid(format!("recheck_after: {why}")))?;
        if !recheck_after.is_empty() && !file.outcome.ends_access() {
            return invalid(
                "recheck_after: only a workflow whose outcome is \"removed\" or \"deactivated\" rechecks"
                    .into(),
            );
        }
        Ok(Definition {
            recheck_after,
            recheck_action: file.recheck_action,
            name: file.name,
            version: file.version,
            app: file.app,
            event_type: file.event_type,
            outcome: file.outcome,
            description: file.description,
            retry: file.retry,
            steps: file.steps,
            hash: hex::encode(Sha256::digest(source.as_bytes())),
            source: source.to_string(),
        })
    }

    /// When recheck `index` falls due for a workflow that completed at `completed`, if the
    /// definition lists that many.
    pub fn recheck_due(
        &self,
        index: usize,
        completed: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let offset = chrono::Duration::from_std(*self.recheck_after.get(index)?).ok()?;
        Some(completed + offset)
    }

    /// The retry policy of step `index`.
    pub fn policy(&self, index: usize) -> RetryPolicy {
        self.retry.with(&self.steps[index].retry)
    }

    /// The reference stored with a workflow.
    pub fn reference(&self) -> DefinitionRef {
        DefinitionRef {
            name: self.name.clone(),
            version: self.version,
            hash: self.hash.clone(),
        }
    }
}

/// A two-step definition of a made-up app `x` (actions `x.find` and `x.remove`, the
/// second with its own retry limit), for the domain's tests.
#[cfg(test)]
pub(crate) const SAMPLE: &str = r#"
name = "x-offboard"
version = 3
app = "x"
event_type = "offboarding.requested"
outcome = "removed"
[retry]
initial_interval_ms = 10
multiplier = 2.0
max_interval_ms = 100
max_attempts = 3
jitter = 0.0
[[steps]]
name = "find"
action = "x.find"
[[steps]]
name = "remove"
action = "x.remove"
retry = { max_attempts = 7 }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn known(a: &str) -> bool {
        ["x.find", "x.remove"].contains(&a)
    }

    #[test]
    fn parses_steps_policies_and_hash() {
        let d = Definition::parse(SAMPLE, known).unwrap();
        assert_eq!(d.steps.len(), 2);
        assert_eq!(d.policy(0).max_attempts, 3);
        assert_eq!(d.policy(1).max_attempts, 7);
        assert_eq!(d.hash.len(), 64);
        let other = Definition::parse(&SAMPLE.replace("version = 3", "version = 4"), known);
        assert_ne!(other.unwrap().hash, d.hash);
    }

    #[test]
    fn refuses_unknown_actions_and_bad_policies() {
        let unknown = SAMPLE.replace("x.remove\"", "x.delete_everything\"");
        assert!(Definition::parse(&unknown, known)
            .unwrap_err()
            .to_string()
            .contains("unknown action"));
        let bad = SAMPLE.replace("max_attempts = 7", "max_attempts = 0");
        assert!(Definition::parse(&bad, known)
            .unwrap_err()
            .to_string()
            .contains("max_attempts"));
        let dup = SAMPLE.replace("name = \"remove\"", "name = \"find\"");
        assert!(Definition::parse(&dup, known)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn rechecks_are_parsed_and_only_for_removals() {
        let with = SAMPLE.replace("[retry]", "recheck_after = [\"24h\", \"30d\"]\n[retry]");
        let d = Definition::parse(&with, known).unwrap();
        assert_eq!(d.recheck_after.len(), 2);
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(d.recheck_due(0, at), Some(at + chrono::Duration::hours(24)));
        assert_eq!(d.recheck_due(2, at), None);
        assert!(Definition::parse(SAMPLE, known)
            .unwrap()
            .recheck_after
            .is_empty());
        let bad = SAMPLE.replace("[retry]", "recheck_after = [\"24\"]\n[retry]");
        assert!(Definition::parse(&bad, known)
            .unwrap_err()
            .to_string()
            .contains("recheck_after"));
        let downgrade = with.replace("outcome = \"removed\"", "outcome = \"downgraded\"");
        assert!(Definition::parse(&downgrade, known).is_err());
    }
}
