//! What SCIM writes change, for a dry run ([`crate::apps::dry_run`]): a user deactivated
//! (PATCH `replace active false`, or PUT with `active: false`), deleted, or taken out of a
//! group (PATCH `remove members[value eq …]`, or PUT of the group). Reads after the write
//! answer as the provider would then: the user inactive or 404, the group without the
//! member, so `confirm` passes in the plan as in the run.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::client::urlencode_segment;
use crate::apps::dry_run::{self, split, Model};

/// The effects of the writes planned on one SCIM provider. Users and groups are keyed by
/// their id as it appears in a path.
#[derive(Debug, Default)]
pub struct ScimModel {
    /// `userName`s that reads returned, by path id.
    names: HashMap<String, String>,
    /// Group display names that reads returned, by path id.
    groups: HashMap<String, String>,
    /// Users deactivated.
    inactive: HashSet<String>,
    /// Users deleted.
    deleted: HashSet<String>,
    /// Memberships removed: (group path id, user id).
    left: HashSet<(String, String)>,
}

impl ScimModel {
    fn user(&self, id: &str) -> String {
        dry_run::thing("SCIM user", self.names.get(id), id)
    }

    fn group(&self, id: &str) -> String {
        dry_run::thing("group", self.groups.get(id), id)
    }

    /// The user as the planned writes leave it: inactive, out of the groups it left.
    fn adjust_user(&self, user: &mut Value) {
        let id = user
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if self.inactive.contains(&urlencode_segment(&id)) {
            user["active"] = Value::Bool(false);
        }
        if let Some(groups) = user.get_mut("groups").and_then(Value::as_array_mut) {
            groups.retain(|g| {
                let group = g.get("value").and_then(Value::as_str).unwrap_or_default();
                !self.left.contains(&(urlencode_segment(group), id.clone()))
            });
        }
    }

    /// The group as the planned writes leave it: without the members taken out.
    fn adjust_group(&self, group: &mut Value) {
        let id = urlencode_segment(group.get("id").and_then(Value::as_str).unwrap_or_default());
        if let Some(members) = group.get_mut("members").and_then(Value::as_array_mut) {
            members.retain(|m| {
                let user = m.get("value").and_then(Value::as_str).unwrap_or_default();
                !self.left.contains(&(id.clone(), user.to_string()))
            });
        }
    }

    fn deleted_user(&self, user: &Value) -> bool {
        let id = user.get("id").and_then(Value::as_str).unwrap_or_default();
        self.deleted.contains(&urlencode_segment(id))
    }
}

/// The user id a PATCH `remove` path selects (`members[value eq "…"]`).
fn removed_member(path: &str) -> Option<String> {
    let quoted = path.strip_prefix("members[value eq ")?.strip_suffix(']')?;
    serde_json::from_str(quoted).ok()
}

/// Whether PATCH operations set `active` to false (with a path, or as a value object).
fn deactivates(operations: &[Value]) -> bool {
    operations.iter().any(|op| {
        let replace = op
            .get("op")
            .and_then(Value::as_str)
            .is_some_and(|o| o.eq_ignore_ascii_case("replace"));
        let value = op.get("value");
        replace
            && match op.get("path").and_then(Value::as_str) {
                Some(path) => path == "active" && value == Some(&Value::Bool(false)),
                None => value.and_then(|v| v.get("active")) == Some(&Value::Bool(false)),
            }
    })
}

impl Model for ScimModel {
    fn write(&mut self, method: &str, path: &str, body: Option<&Value>) -> (Value, String) {
        let (segments, _) = split(path);
        let operations = body
            .and_then(|b| b.get("Operations"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let description = match (method, segments.as_slice()) {
            ("PATCH", ["Users", id]) if deactivates(&operations) => {
                self.inactive.insert(id.to_string());
                format!("deactivate {} (active = false)", self.user(id))
            }
            ("PUT", ["Users", id])
                if body.and_then(|b| b.get("active")) == Some(&Value::Bool(false)) =>
            {
                self.inactive.insert(id.to_string());
                format!("deactivate {} (PUT with active = false)", self.user(id))
            }
            ("DELETE", ["Users", id]) => {
                self.deleted.insert(id.to_string());
                format!("delete {}", self.user(id))
            }
            ("PATCH", ["Groups", id]) => {
                let removed: Vec<String> = operations
                    .iter()
                    .filter_map(|op| removed_member(op.get("path")?.as_str()?))
                    .collect();
                for user in &removed {
                    self.left.insert((id.to_string(), user.clone()));
                }
                let who: Vec<String> = removed
                    .iter()
                    .map(|u| self.user(&urlencode_segment(u)))
                    .collect();
                format!("take {} out of {}", who.join(", "), self.group(id))
            }
            ("PUT", ["Groups", id]) => format!("replace the members of {}", self.group(id)),
            _ => format!("{method} {path}"),
        };
        (json!({}), description)
    }

    fn read(&mut self, path: &str, status: &mut u16, body: &mut Value) {
        let (segments, _) = split(path);
        match segments.as_slice() {
            ["Users", id] => {
                if let Some(name) = body.get("userName").and_then(Value::as_str) {
                    self.names.insert(id.to_string(), name.to_string());
                }
                if self.deleted.contains(*id) {
                    *status = 404;
                    *body = json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                        "status": "404",
                        "detail": "deleted in this plan"
                    });
                    return;
                }
                self.adjust_user(body);
            }
            ["Groups", id] => {
                if let Some(name) = body.get("displayName").and_then(Value::as_str) {
                    self.groups.insert(id.to_string(), name.to_string());
                }
                self.adjust_group(body);
            }
            ["Users"] | ["Groups"] => {
                let users = segments == ["Users"];
                let Some(resources) = body.get_mut("Resources").and_then(Value::as_array_mut)
                else {
                    return;
                };
                resources.retain(|r| !(users && self.deleted_user(r)));
                for resource in resources.iter_mut() {
                    let id = urlencode_segment(
                        resource
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    );
                    if users {
                        if let Some(name) = resource.get("userName").and_then(Value::as_str) {
                            self.names.insert(id, name.to_string());
                        }
                        self.adjust_user(resource);
                    } else {
                        if let Some(name) = resource.get("displayName").and_then(Value::as_str) {
                            self.groups.insert(id, name.to_string());
                        }
                        self.adjust_group(resource);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::dry_run::read_through;

    #[test]
    fn planned_writes_show_in_later_reads() {
        let mut model = ScimModel::default();
        let user = json!({"id": "u 1", "userName": "ada@example.com", "active": true, "groups": [{"value": "g1"}, {"value": "g2"}]});
        read_through(&mut model, "/Users/u%201", user.clone());
        let remove = json!({"Operations": [{"op": "remove", "path": "members[value eq \"u 1\"]"}]});
        let (_, said) = model.write("PATCH", "/Groups/g1", Some(&remove));
        assert_eq!(
            said,
            "take SCIM user \"ada@example.com\" (u%201) out of group g1"
        );
        let off = json!({"Operations": [{"op": "replace", "path": "active", "value": false}]});
        model.write("PATCH", "/Users/u%201", Some(&off));
        let (_, seen) = read_through(&mut model, "/Users/u%201", user.clone());
        assert_eq!(seen["active"], false);
        assert_eq!(seen["groups"], json!([{"value": "g2"}]));
        model.write("DELETE", "/Users/u%201", None);
        let (status, _) = read_through(&mut model, "/Users/u%201", user);
        assert_eq!(status, 404);
    }
}
