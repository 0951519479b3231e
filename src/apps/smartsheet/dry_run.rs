//! What Smartsheet writes change, for a dry run ([`crate::apps::dry_run`]): a group's new
//! owner (`PUT /groups/{id}`), a user's changed flags (`PUT /users/{id}`), a removed user
//! (`DELETE /users/{id}`). Reads of those resources after the write answer as Smartsheet
//! would then: the group with its new `ownerId`, the user with the flags set, a removed
//! user "not found" (404, errorCode 1020) — which is what `confirm_removed` waits for.
//! Names and emails seen in reads describe the writes.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::client::USER_NOT_FOUND;
use crate::apps::dry_run::{self, split, Model};

/// The effects of the writes planned on one Smartsheet account.
#[derive(Debug, Default)]
pub struct SmartsheetModel {
    /// Emails of the users reads returned, by id.
    emails: HashMap<i64, String>,
    /// Names and owners of the groups reads returned, as Smartsheet reported them.
    groups: HashMap<i64, (String, Option<i64>)>,
    /// Users a planned `DELETE` removed.
    removed: HashSet<i64>,
    /// Fields a planned `PUT /users/{id}` set.
    user_fields: HashMap<i64, Map<String, Value>>,
    /// Owners a planned `PUT /groups/{id}` gave.
    owners: HashMap<i64, Value>,
}

const SUCCESS: &str = "SUCCESS";

impl SmartsheetModel {
    fn who(&self, id: i64) -> String {
        dry_run::person(self.emails.get(&id), id)
    }

    fn learn_user(&mut self, user: &Value) {
        if let (Some(id), Some(email)) = (
            user.get("id").and_then(Value::as_i64),
            user.get("email").and_then(Value::as_str),
        ) {
            self.emails.insert(id, email.to_string());
        }
    }

    /// Learns a user from a read and shows the planned changes on it.
    fn project_user(&mut self, user: &mut Value) {
        self.learn_user(user);
        let fields = user
            .get("id")
            .and_then(Value::as_i64)
            .and_then(|id| self.user_fields.get(&id));
        if let (Some(fields), Some(object)) = (fields, user.as_object_mut()) {
            object.extend(fields.clone());
        }
    }

    /// Learns a group from a read and shows its planned owner.
    fn project_group(&mut self, group: &mut Value) {
        let Some(id) = group.get("id").and_then(Value::as_i64) else {
            return;
        };
        let name = group.get("name").and_then(Value::as_str).unwrap_or("");
        let owner = group.get("ownerId").and_then(Value::as_i64);
        self.groups.insert(id, (name.to_string(), owner));
        if let Some(new_owner) = self.owners.get(&id) {
            group["ownerId"] = new_owner.clone();
        }
    }

    fn is_removed(&self, user: &Value) -> bool {
        user.get("id")
            .and_then(Value::as_i64)
            .is_some_and(|id| self.removed.contains(&id))
    }
}

impl Model for SmartsheetModel {
    fn write(&mut self, method: &str, path: &str, body: Option<&Value>) -> (Value, String) {
        let (segments, query) = split(path);
        let id = segments.get(1).and_then(|s| s.parse::<i64>().ok());
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match (method, segments.first().copied(), id, body) {
            ("PUT", Some("groups"), Some(id), Some(body)) => {
                let owner = body.get("ownerId").cloned().unwrap_or(Value::Null);
                let (name, before) = self.groups.get(&id).cloned().unwrap_or_default();
                let from = before.map_or("unknown".to_string(), |o| self.who(o));
                let to = owner.as_i64().map_or(owner.to_string(), |o| self.who(o));
                self.owners.insert(id, owner.clone());
                let result = json!({ "id": id, "name": name, "ownerId": owner });
                (
                    json!({ "message": SUCCESS, "resultCode": 0, "result": result }),
                    format!("group {name:?} (group {id}): owner {from} -> {to}"),
                )
            }
            ("PUT", Some("users"), Some(id), Some(Value::Object(fields))) => {
                self.user_fields
                    .entry(id)
                    .or_default()
                    .extend(fields.clone());
                let changes: Vec<String> =
                    fields.iter().map(|(k, v)| format!("{k} -> {v}")).collect();
                let mut result = Value::Object(fields.clone());
                result["id"] = json!(id);
                (
                    json!({ "message": SUCCESS, "resultCode": 0, "result": result }),
                    format!("user {}: {}", self.who(id), changes.join(", ")),
                )
            }
            ("DELETE", Some("users"), Some(id), _) => {
                self.removed.insert(id);
                let mut text = format!("remove user {} from the account", self.who(id));
                if param("removeFromSharing") == Some("true") {
                    text.push_str(" and from all sharing");
                }
                if let Some(to) = param("transferTo").and_then(|t| t.parse::<i64>().ok()) {
                    text.push_str(&format!("; their sheets go to {}", self.who(to)));
                }
                (json!({ "message": SUCCESS, "resultCode": 0 }), text)
            }
            _ => (
                json!({ "message": SUCCESS, "resultCode": 0 }),
                format!("{method} {path}"),
            ),
        }
    }

    fn read(&mut self, path: &str, status: &mut u16, body: &mut Value) {
        let (segments, _) = split(path);
        match segments.as_slice() {
            ["users", id] => match id.parse::<i64>() {
                Ok(id) if self.removed.contains(&id) => {
                    *status = 404;
                    *body = json!({
                        "errorCode": USER_NOT_FOUND,
                        "message": "User not found",
                        "refId": "offboard-plan",
                    });
                }
                _ => self.project_user(body),
            },
            ["users"] => {
                if let Some(Value::Array(users)) = body.get_mut("data") {
                    users.retain(|u| !self.is_removed(u));
                    users.iter_mut().for_each(|u| self.project_user(u));
                }
            }
            ["groups", _] => self.project_group(body),
            ["groups"] => {
                if let Some(Value::Array(groups)) = body.get_mut("data") {
                    groups.iter_mut().for_each(|g| self.project_group(g));
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
    fn reads_after_planned_writes_answer_as_smartsheet_would_then() {
        let mut model = SmartsheetModel::default();
        let user = json!({"id": 7, "email": "ada@example.com", "licensedSheetCreator": true});
        read_through(&mut model, "/users/7", user.clone());
        let group = json!({"id": 3, "name": "Launch", "ownerId": 7});
        read_through(&mut model, "/groups/3", group.clone());

        let (_, text) = model.write("PUT", "/groups/3", Some(&json!({"ownerId": 8})));
        assert_eq!(
            text,
            "group \"Launch\" (group 3): owner ada@example.com (user 7) -> user 8"
        );
        let (_, again) = read_through(&mut model, "/groups/3", group);
        assert_eq!(again["ownerId"], 8);

        let unlicensed = json!({"licensedSheetCreator": false});
        model.write("PUT", "/users/7", Some(&unlicensed));
        let (_, seen) = read_through(&mut model, "/users/7", user.clone());
        assert_eq!(seen["licensedSheetCreator"], false);

        let (_, text) = model.write(
            "DELETE",
            "/users/7?removeFromSharing=true&transferTo=8&transferSheets=true",
            None,
        );
        assert_eq!(text, "remove user ada@example.com (user 7) from the account and from all sharing; their sheets go to user 8");
        let (status, gone) = read_through(&mut model, "/users/7", user);
        assert_eq!(
            (status, gone["errorCode"].as_i64()),
            (404, Some(USER_NOT_FOUND))
        );
    }
}
