//! What Postman writes change, for a dry run ([`crate::apps::dry_run`]): workspace roles
//! added or removed (`PATCH /workspaces/{id}/roles`) and SCIM deactivation
//! (`PATCH /scim/v2/Users/{id}`). Reads after the write answer as Postman would then: a
//! workspace's role list names the recipient as Admin (so `remove_workspace_roles` sees
//! that someone took over, as in the run), a deactivated SCIM user is `active: false`, and
//! `GET /users` / `GET /users/{id}` no longer list them (so `confirm_deprovisioned`
//! passes). Role lists read with SCIM ids (`?include=scim`) are left as Postman sends
//! them: planned changes name Postman ids, and no step reads such a list after a write.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::client::role_name;
use crate::apps::dry_run::{self, split, Model};

/// The effects of the writes planned on one Postman team.
#[derive(Debug, Default)]
pub struct PostmanModel {
    /// Emails of the team members reads returned, by Postman id.
    members: HashMap<String, String>,
    /// Names of the workspaces reads returned, by id.
    workspaces: HashMap<String, String>,
    /// SCIM user names (emails) reads returned, by SCIM id.
    scim_names: HashMap<String, String>,
    /// `active` as a planned SCIM patch set it, by SCIM id.
    scim_active: HashMap<String, bool>,
    /// Planned role changes per workspace: (add, user id, role id), in order.
    role_changes: HashMap<String, Vec<(bool, String, String)>>,
    /// The last role list read per workspace (with the planned changes), to answer a
    /// `PATCH` as Postman does: with the list after the change.
    roles_seen: HashMap<String, Value>,
}

impl PostmanModel {
    fn who(&self, id: &str) -> String {
        dry_run::person(self.members.get(id), id)
    }

    fn workspace(&self, id: &str) -> String {
        dry_run::thing("workspace", self.workspaces.get(id), id)
    }

    /// Whether a planned deactivation took the person with this email out of the team.
    fn deactivated(&self, email: &str) -> bool {
        self.scim_active.iter().any(|(id, active)| {
            !active
                && self
                    .scim_names
                    .get(id)
                    .is_some_and(|name| name.eq_ignore_ascii_case(email))
        })
    }

    fn learn_member(&mut self, member: &Value) {
        if let (Some(id), Some(email)) = (
            member.get("id").and_then(Value::as_i64),
            member.get("email").and_then(Value::as_str),
        ) {
            self.members.insert(id.to_string(), email.to_string());
        }
    }

    fn project_scim_user(&mut self, user: &mut Value) {
        let Some(id) = user.get("id").and_then(Value::as_str).map(str::to_string) else {
            return;
        };
        if let Some(name) = user.get("userName").and_then(Value::as_str) {
            self.scim_names.insert(id.clone(), name.to_string());
        }
        if let Some(active) = self.scim_active.get(&id) {
            user["active"] = json!(active);
        }
    }

    fn is_gone(&self, member: &Value) -> bool {
        member
            .get("email")
            .and_then(Value::as_str)
            .is_some_and(|e| self.deactivated(e))
    }
}

/// Applies one role change to a `{"roles": [{id, displayName, user: [...]}]}` body.
fn apply_change(body: &mut Value, add: bool, user: &str, role: &str) {
    let Some(roles) = body.get_mut("roles").and_then(Value::as_array_mut) else {
        return;
    };
    let entry = roles.iter_mut().find(|r| r["id"].as_str() == Some(role));
    match (entry, add) {
        (Some(entry), _) => {
            if let Some(users) = entry.get_mut("user").and_then(Value::as_array_mut) {
                users.retain(|u| u.as_str() != Some(user));
                if add {
                    users.push(json!(user));
                }
            }
        }
        (None, true) => {
            roles.push(json!({ "id": role, "displayName": role_name(role), "user": [user] }))
        }
        (None, false) => {}
    }
}

impl Model for PostmanModel {
    fn write(&mut self, method: &str, path: &str, body: Option<&Value>) -> (Value, String) {
        let (segments, _) = split(path);
        match (method, segments.as_slice(), body) {
            ("PATCH", ["workspaces", ws, "roles"], Some(body)) => {
                let ws = ws.to_string();
                let mut texts = Vec::new();
                let ops = body["roles"].as_array().cloned().unwrap_or_default();
                for op in &ops {
                    let add = op["op"].as_str() == Some("add");
                    for value in op["value"].as_array().into_iter().flatten() {
                        let user = value["id"].as_str().unwrap_or("").to_string();
                        let role = value["role"].as_str().unwrap_or("").to_string();
                        texts.push(if add {
                            format!("{} becomes {}", self.who(&user), role_name(&role))
                        } else {
                            format!("{} loses the {} role", self.who(&user), role_name(&role))
                        });
                        if let Some(seen) = self.roles_seen.get_mut(&ws) {
                            apply_change(seen, add, &user, &role);
                        }
                        self.role_changes
                            .entry(ws.clone())
                            .or_default()
                            .push((add, user, role));
                    }
                }
                let answer = self.roles_seen.get(&ws).cloned().unwrap_or(json!({}));
                (
                    answer,
                    format!("{}: {}", self.workspace(&ws), texts.join("; ")),
                )
            }
            ("PATCH", ["scim", "v2", "Users", id], Some(body)) => {
                let id = id.to_string();
                let active = body["Operations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|op| op["value"]["active"].as_bool());
                if let Some(active) = active {
                    self.scim_active.insert(id.clone(), active);
                }
                let name = self.scim_names.get(&id).cloned().unwrap_or_default();
                let verb = match active {
                    Some(false) => "deactivate",
                    Some(true) => "reactivate",
                    None => "change",
                };
                (
                    json!({
                        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "id": id,
                        "userName": name,
                        "active": active,
                    }),
                    format!(
                        "{verb} {name} (SCIM user {id}): out of the team, sign-in blocked, seat freed; account and data kept"
                    ),
                )
            }
            _ => (json!({}), format!("{method} {path}")),
        }
    }

    fn read(&mut self, path: &str, status: &mut u16, body: &mut Value) {
        let (segments, query) = split(path);
        let by_scim = query.iter().any(|(k, v)| k == "include" && v == "scim");
        match segments.as_slice() {
            ["users"] => {
                if let Some(Value::Array(members)) = body.get_mut("data") {
                    members.iter().for_each(|m| self.learn_member(m));
                    members.retain(|m| !self.is_gone(m));
                }
            }
            ["users", _] => {
                self.learn_member(body);
                if self.is_gone(body) {
                    *status = 404;
                    *body = json!({
                        "type": "https://api.postman.com/problems/not-found",
                        "title": "The requested resource was not found.",
                        "detail": "The requested resource was not found.",
                        "status": 404,
                    });
                }
            }
            ["workspaces"] => {
                for w in body["workspaces"].as_array().into_iter().flatten() {
                    if let (Some(id), Some(name)) = (w["id"].as_str(), w["name"].as_str()) {
                        self.workspaces.insert(id.to_string(), name.to_string());
                    }
                }
            }
            ["workspaces", ws, "roles"] if !by_scim => {
                for (add, user, role) in self.role_changes.get(*ws).into_iter().flatten() {
                    apply_change(body, *add, user, role);
                }
                self.roles_seen.insert(ws.to_string(), body.clone());
            }
            ["scim", "v2", "Users", _] => self.project_scim_user(body),
            ["scim", "v2", "Users"] => {
                if let Some(Value::Array(users)) = body.get_mut("Resources") {
                    users.iter_mut().for_each(|u| self.project_scim_user(u));
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
    fn a_planned_admin_shows_in_role_lists_and_a_deactivated_member_leaves_the_team() {
        let mut model = PostmanModel::default();
        let team = json!({"data": [{"id": 1, "email": "ada@example.com"}, {"id": 2, "email": "grace@example.com"}]});
        read_through(&mut model, "/users", team.clone());
        let roles = json!({"roles": [{"id": "3", "displayName": "Admin", "user": ["1"]}]});
        read_through(&mut model, "/workspaces/w1/roles", roles.clone());

        let change =
            json!({"roles": [{"op": "add", "path": "/user", "value": [{"id": "2", "role": "3"}]}]});
        let (answer, text) = model.write("PATCH", "/workspaces/w1/roles", Some(&change));
        assert_eq!(
            text,
            "workspace w1: grace@example.com (user 2) becomes Admin"
        );
        assert_eq!(answer["roles"][0]["user"], json!(["1", "2"]));
        let (_, again) = read_through(&mut model, "/workspaces/w1/roles", roles);
        assert_eq!(again["roles"][0]["user"], json!(["1", "2"]));

        let scim = json!({"id": "s1", "userName": "ada@example.com", "active": true});
        read_through(&mut model, "/scim/v2/Users/s1", scim.clone());
        let off = json!({"Operations": [{"op": "replace", "value": {"active": false}}]});
        model.write("PATCH", "/scim/v2/Users/s1", Some(&off));
        let (_, scim) = read_through(&mut model, "/scim/v2/Users/s1", scim);
        assert_eq!(scim["active"], false);
        let (_, team) = read_through(&mut model, "/users", team);
        assert_eq!(team["data"].as_array().unwrap().len(), 1);
        let member = json!({"id": 1, "email": "ada@example.com"});
        let (status, _) = read_through(&mut model, "/users/1", member);
        assert_eq!(status, 404);
    }
}
