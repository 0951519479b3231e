//! The workflow definitions in force: read from `workflows_dir` when configured (or
//! `./workflows` when present), else the copies built into the binary. Validated at start;
//! one definition per (app, event type).

use std::collections::HashMap;
use std::path::Path;

use crate::apps::known_action;
use crate::domain::definition::Definition;
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
];

/// Definitions by (app, event type).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_key: HashMap<(String, EventType), Definition>,
}

impl Registry {
    /// Loads every `*.toml` in `dir`, or the built-in set when `dir` is `None`.
    pub fn load(dir: Option<&Path>) -> Result<Registry, String> {
        let files: Vec<(String, String)> = match dir {
            None => BUILTIN
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
            Some(dir) => {
                let entries = std::fs::read_dir(dir)
                    .map_err(|e| format!("cannot read workflows from {}: {e}", dir.display()))?;
                let mut files = Vec::new();
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "toml") {
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
                .map_err(|e| format!("workflow {name}: {e}"))?;
            let key = (def.app.clone(), def.event_type);
            if registry.by_key.contains_key(&key) {
                return Err(format!(
                    "workflow {name}: a second definition for {} {}",
                    def.app,
                    def.event_type.as_str()
                ));
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

/// Parses a definition stored with a workflow (the version it started with).
pub fn stored(source: &str) -> Result<Definition, String> {
    Definition::parse(source, known_action)
}
