//! The workflow definitions in force: read from `workflows_dir` when configured (or
//! `./workflows` when present), else the copies built into the binary. Validated at start;
//! one definition per (app, event type).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::apps::known_action;
use crate::domain::definition::{Definition, DefinitionError};
use crate::domain::event::EventType;

/// The definitions shipped in `workflows/`, built in.
const BUILTIN: &[(&str, &str)] = &[
    (
        "smartsheet-offboard.toml",
        include_str!("../../workflows/smartsheet-offboard.toml"),
    ),
    (
        "smartsheet-license-reclaim.toml",
        include_str!("../../workflows/smartsheet-license-reclaim.toml"),
    ),
    (
        "postman-offboard.toml",
        include_str!("../../workflows/postman-offboard.toml"),
    ),
    (
        "postman-license-reclaim.toml",
        include_str!("../../workflows/postman-license-reclaim.toml"),
    ),
    (
        "scim-offboard.toml",
        include_str!("../../workflows/scim-offboard.toml"),
    ),
    (
        "scim-license-reclaim.toml",
        include_str!("../../workflows/scim-license-reclaim.toml"),
    ),
];

/// Why the definitions cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The folder cannot be listed.
    #[error("cannot read workflows from {}: {source}", dir.display())]
    ReadDir {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file in it cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid definition.
    #[error("workflow {name}: {source}")]
    Invalid {
        /// The file.
        name: String,
        /// What is wrong with it.
        #[source]
        source: DefinitionError,
    },
    /// Two files define the same (app, event type).
    #[error("workflow {name}: a second definition for {app} {event_type}")]
    Twice {
        /// The second file.
        name: String,
        /// The app.
        app: String,
        /// The event type.
        event_type: &'static str,
    },
}

/// Definitions by (app, event type).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_key: HashMap<(String, EventType), Definition>,
}

impl Registry {
    /// Loads every `*.toml` in `dir`, or the built-in set when `dir` is `None`.
    pub fn load(dir: Option<&Path>) -> Result<Registry, RegistryError> {
        let files: Vec<(String, String)> = match dir {
            None => BUILTIN
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
            Some(dir) => {
                let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::ReadDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
                let mut files = Vec::new();
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "toml") {
                        let text = std::fs::read_to_string(&path).map_err(|source| {
                            RegistryError::Read {
                                path: path.clone(),
                                source,
                            }
                        })?;
                        files.push((path.display().to_string(), text));
                    }
                }
                files.sort();
                files
            }
        };
        let mut registry = Registry::default();
        for (name, text) in files {
            let def = Definition::parse(&text, known_action)
                .and_then(rechecks_read_only)
                .map_err(|source| RegistryError::Invalid {
                    name: name.clone(),
                    source,
                })?;
            let key = (def.app.clone(), def.event_type);
            if registry.by_key.contains_key(&key) {
                return Err(RegistryError::Twice {
                    name,
                    app: def.app,
                    event_type: def.event_type.as_str(),
                });
            }
            registry.by_key.insert(key, def);
        }
        Ok(registry)
    }

    /// The definition for an app and event type.
    pub fn get(&self, app: &str, event_type: EventType) -> Option<&Definition> {
        self.by_key.get(&(app.to_string(), event_type))
    }
}

/// Refuses a definition that rechecks with a first step that writes: a recheck runs the
/// first step (the `find` lookup) again, and must change nothing in the app.
fn rechecks_read_only(def: Definition) -> Result<Definition, DefinitionError> {
    let lookup = &def.steps[0].action;
    if !def.recheck_after.is_empty() && !crate::apps::reads_only(lookup) {
        return Err(DefinitionError::Invalid(format!(
            "recheck_after: a recheck runs the first step again, and {lookup:?} writes"
        )));
    }
    Ok(def)
}

/// Parses a definition stored with a workflow (the version it started with).
pub fn stored(source: &str) -> Result<Definition, DefinitionError> {
    Definition::parse(source, known_action)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recheck runs the first step again, so a definition whose first step writes may
    /// not recheck; the shipped ones pass.
    #[test]
    fn only_a_definition_that_starts_with_a_read_may_recheck() {
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/workflows/smartsheet-offboard.toml"
        ))
        .unwrap();
        let def = Definition::parse(&shipped, known_action).unwrap();
        assert_eq!(def.recheck_after.len(), 2);
        assert!(rechecks_read_only(def).is_ok());
        let writing_first = shipped.replacen(
            "action = \"smartsheet.find_user\"",
            "action = \"smartsheet.remove_user\"",
            1,
        );
        let def = Definition::parse(&writing_first, known_action).unwrap();
        let why = rechecks_read_only(def).unwrap_err().to_string();
        assert!(why.contains("recheck_after"), "{why}");
    }
}
