//! The provider's data: users and groups as JSON attributes with a version each, and
//! the rules that keep them consistent, free of HTTP.
//!
//! Group membership lives on the groups (`members`); a user's read-only `groups`
//! attribute (RFC 7643 §4.1.2) is derived from them whenever the user is rendered, so
//! the two can never disagree. Deleting a user takes it out of every group. A
//! resource's version (its ETag, `W/"n"`) changes when its own attributes do; a user's
//! version does not change when a group gains or loses it, as with providers that
//! compute `groups` on read.

use serde_json::{json, Map, Value};

use super::error::ScimError;
use super::filter::find_key;
use super::patch;

/// The core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// Users or Groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/Users`.
    User,
    /// `/Groups`.
    Group,
}

impl Kind {
    /// The `meta.resourceType` and the word used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    /// The endpoint under the SCIM root.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }

    fn schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }

    /// Attributes a client may not set (silently dropped from POST and PUT bodies,
    /// refused with `mutability` in PATCH).
    fn read_only(self) -> &'static [&'static str] {
        match self {
            Kind::User => &["id", "meta", "groups"],
            Kind::Group => &["id", "meta"],
        }
    }
}

/// One stored user or group.
#[derive(Clone, Debug)]
pub struct Resource {
    /// The provider-assigned id.
    pub id: String,
    /// Bumped on every change; the ETag is `W/"<version>"`.
    pub version: u64,
    /// `meta.created`.
    pub created: String,
    /// `meta.lastModified`.
    pub last_modified: String,
    /// Every client-writable attribute, `schemas` included.
    pub attrs: Map<String, Value>,
}

impl Resource {
    /// The weak ETag of the current version.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }

    /// An attribute by name, case-insensitively.
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs.get(find_key(&self.attrs, name)?)
    }

    fn touch(&mut self) {
        self.version += 1;
        self.last_modified = crate::kit::now_iso();
    }
}

/// How resources are rendered, from the provider's options.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The SCIM root URL, for `meta.location` and `$ref`.
    pub base: &'a str,
    /// Whether `meta.version` is shown.
    pub etags: bool,
    /// Whether users carry their `groups`.
    pub user_groups: bool,
}

/// The users and groups of the simulated provider.
#[derive(Debug, Default)]
pub struct Directory {
    users: Vec<Resource>,
    groups: Vec<Resource>,
    next_seq: u64,
}

impl Directory {
    /// Every resource of a kind, in creation order.
    pub fn all(&self, kind: Kind) -> &[Resource] {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    fn all_mut(&mut self, kind: Kind) -> &mut Vec<Resource> {
        match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    /// The resource with this id.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Resource> {
        self.all(kind).iter().find(|r| r.id == id)
    }

    /// The resource with this id, or the 404 SCIM answers for it.
    pub fn find(&self, kind: Kind, id: &str) -> Result<&Resource, ScimError> {
        self.get(kind, id)
            .ok_or_else(|| ScimError::not_found(kind.name(), id))
    }

    fn find_mut(&mut self, kind: Kind, id: &str) -> Result<&mut Resource, ScimError> {
        self.all_mut(kind)
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| ScimError::not_found(kind.name(), id))
    }

    /// Stores a new resource from a POST body (or a seed); `id` is used when given and
    /// free, else one is assigned. Returns the id.
    pub fn create(
        &mut self,
        kind: Kind,
        body: &Value,
        id: Option<&str>,
    ) -> Result<String, ScimError> {
        let attrs = writable_attrs(kind, body)?;
        self.validate(kind, &attrs, None)?;
        let id = match id {
            Some(id) if self.get(kind, id).is_some() || id.is_empty() => {
                return Err(
                    ScimError::new(409, format!("{} {id} exists", kind.name())).typed("uniqueness")
                )
            }
            Some(id) => id.to_string(),
            None => self.fresh_id(),
        };
        let now = crate::kit::now_iso();
        self.all_mut(kind).push(Resource {
            id: id.clone(),
            version: 1,
            created: now.clone(),
            last_modified: now,
            attrs,
        });
        Ok(id)
    }

    fn fresh_id(&mut self) -> String {
        loop {
            self.next_seq += 1;
            let id = crate::kit::uuid_from_seq(self.next_seq);
            if self.get(Kind::User, &id).is_none() && self.get(Kind::Group, &id).is_none() {
                return id;
            }
        }
    }

    /// PUT: replaces every writable attribute.
    pub fn replace(&mut self, kind: Kind, id: &str, body: &Value) -> Result<(), ScimError> {
        self.find(kind, id)?;
        let attrs = writable_attrs(kind, body)?;
        self.validate(kind, &attrs, Some(id))?;
        let resource = self.find_mut(kind, id)?;
        resource.attrs = attrs;
        resource.touch();
        Ok(())
    }

    /// PATCH: applies the operations to a copy, validates it, then stores it.
    pub fn patch(&mut self, kind: Kind, id: &str, request: &Value) -> Result<(), ScimError> {
        let mut attrs = self.find(kind, id)?.attrs.clone();
        patch::apply(&mut attrs, request, kind.read_only())?;
        self.validate(kind, &attrs, Some(id))?;
        let resource = self.find_mut(kind, id)?;
        resource.attrs = attrs;
        resource.touch();
        Ok(())
    }

    /// DELETE; a deleted user also leaves every group.
    pub fn delete(&mut self, kind: Kind, id: &str) -> Result<(), ScimError> {
        self.find(kind, id)?;
        self.all_mut(kind).retain(|r| r.id != id);
        for group in &mut self.groups {
            let before = member_ids(group).len();
            let key = find_key(&group.attrs, "members").cloned();
            if let Some(Value::Array(members)) = key.and_then(|k| group.attrs.get_mut(&k)) {
                members.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
            }
            if member_ids(group).len() != before {
                group.touch();
            }
        }
        Ok(())
    }

    /// Bumps a resource's version as if another client had just changed it.
    pub fn touch(&mut self, kind: Kind, id: &str) {
        if let Ok(r) = self.find_mut(kind, id) {
            r.touch();
        }
    }

    /// Sets a user's `active` directly (a change made outside SCIM, e.g. in the app's UI).
    pub fn set_active(&mut self, id: &str, active: bool) {
        if let Ok(r) = self.find_mut(Kind::User, id) {
            let key = find_key(&r.attrs, "active")
                .cloned()
                .unwrap_or_else(|| "active".to_string());
            r.attrs.insert(key, Value::Bool(active));
            r.touch();
        }
    }

    /// The groups `user_id` is a direct member of.
    pub fn groups_of(&self, user_id: &str) -> Vec<&Resource> {
        self.groups
            .iter()
            .filter(|g| member_ids(g).contains(&user_id))
            .collect()
    }

    fn validate(
        &self,
        kind: Kind,
        attrs: &Map<String, Value>,
        own_id: Option<&str>,
    ) -> Result<(), ScimError> {
        let get = |name: &str| attrs.get(find_key(attrs, name)?);
        match kind {
            Kind::User => {
                let user_name = match get("userName") {
                    Some(Value::String(s)) if !s.trim().is_empty() => s,
                    _ => {
                        return Err(ScimError::bad_request(
                            "invalidValue",
                            "userName is required",
                        ))
                    }
                };
                let taken = self.users.iter().any(|u| {
                    Some(u.id.as_str()) != own_id
                        && u.attr("userName")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
                });
                if taken {
                    return Err(ScimError::new(
                        409,
                        format!("userName {user_name} is already taken"),
                    )
                    .typed("uniqueness"));
                }
                if get("active").is_some_and(|a| !a.is_boolean()) {
                    return Err(ScimError::bad_request(
                        "invalidValue",
                        "active must be a boolean",
                    ));
                }
            }
            Kind::Group => {
                if !matches!(get("displayName"), Some(Value::String(s)) if !s.trim().is_empty()) {
                    return Err(ScimError::bad_request(
                        "invalidValue",
                        "displayName is required",
                    ));
                }
                self.validate_members(get("members"))?;
            }
        }
        Ok(())
    }

    fn validate_members(&self, members: Option<&Value>) -> Result<(), ScimError> {
        let members = match members {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(m)) => m,
            Some(_) => {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "members must be an array",
                ))
            }
        };
        for member in members {
            let Some(value) = member.get("value").and_then(Value::as_str) else {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "each member needs a value",
                ));
            };
            if self.get(Kind::User, value).is_none() && self.get(Kind::Group, value).is_none() {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    format!("member {value} does not exist"),
                ));
            }
        }
        Ok(())
    }

    /// The resource's JSON as the provider returns it.
    pub fn render(&self, kind: Kind, resource: &Resource, view: View<'_>) -> Value {
        let mut out = resource.attrs.clone();
        // RFC 7643 §4.1.1: a password is never returned.
        out.retain(|k, _| !k.eq_ignore_ascii_case("password"));
        if !out.contains_key("schemas") {
            out.insert("schemas".to_string(), json!([kind.schema()]));
        }
        out.insert("id".to_string(), json!(resource.id));
        match kind {
            Kind::User if view.user_groups => {
                let groups: Vec<Value> = self
                    .groups_of(&resource.id)
                    .iter()
                    .map(|g| {
                        json!({
                            "value": g.id,
                            "$ref": format!("{}/Groups/{}", view.base, g.id),
                            "display": g.attr("displayName").cloned().unwrap_or(Value::Null),
                            "type": "direct",
                        })
                    })
                    .collect();
                if !groups.is_empty() {
                    out.insert("groups".to_string(), Value::Array(groups));
                }
            }
            Kind::User => {}
            Kind::Group => {
                if let Some(key) = find_key(&resource.attrs, "members").cloned() {
                    let members = self.render_members(&resource.attrs[&key], view.base);
                    out.insert(key, members);
                }
            }
        }
        let mut meta = json!({
            "resourceType": kind.name(),
            "created": resource.created,
            "lastModified": resource.last_modified,
            "location": format!("{}/{}/{}", view.base, kind.endpoint(), resource.id),
        });
        if view.etags {
            meta["version"] = json!(resource.etag());
        }
        out.insert("meta".to_string(), meta);
        Value::Object(out)
    }

    /// Members with `$ref`, `type` and `display` filled in where the client left them out.
    fn render_members(&self, members: &Value, base: &str) -> Value {
        let Value::Array(members) = members else {
            return members.clone();
        };
        let rendered = members.iter().map(|m| {
            let mut m = m.clone();
            let id = m
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let (kind, target) = match self.get(Kind::User, &id) {
                Some(u) => (Kind::User, Some(u)),
                None => (Kind::Group, self.get(Kind::Group, &id)),
            };
            if let (Value::Object(obj), Some(target)) = (&mut m, target) {
                obj.entry("$ref")
                    .or_insert_with(|| json!(format!("{base}/{}/{id}", kind.endpoint())));
                obj.entry("type").or_insert_with(|| json!(kind.name()));
                let display = target
                    .attr("displayName")
                    .or_else(|| target.attr("userName"))
                    .cloned()
                    .unwrap_or(Value::Null);
                obj.entry("display").or_insert(display);
            }
            m
        });
        Value::Array(rendered.collect())
    }
}

/// The ids listed in a group's `members`.
pub fn member_ids(group: &Resource) -> Vec<&str> {
    match group.attr("members") {
        Some(Value::Array(members)) => members
            .iter()
            .filter_map(|m| m.get("value").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

/// A POST or PUT body's attributes without the read-only ones.
fn writable_attrs(kind: Kind, body: &Value) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(body) = body else {
        return Err(ScimError::bad_request(
            "invalidSyntax",
            "the body must be a JSON object",
        ));
    };
    let mut attrs = body.clone();
    attrs.retain(|k, _| !kind.read_only().iter().any(|r| r.eq_ignore_ascii_case(k)));
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: View<'static> = View {
        base: "http://sim/scim/v2",
        etags: true,
        user_groups: true,
    };

    fn user(dir: &mut Directory, name: &str) -> String {
        dir.create(Kind::User, &json!({"userName": name}), None)
            .unwrap()
    }

    #[test]
    fn a_users_groups_follow_membership_and_deletion() {
        let mut dir = Directory::default();
        let (a, b) = (user(&mut dir, "a"), user(&mut dir, "b"));
        let body = json!({"displayName": "G", "members": [{"value": a}, {"value": b}]});
        let g = dir.create(Kind::Group, &body, None).unwrap();
        let rendered = dir.render(Kind::User, dir.get(Kind::User, &a).unwrap(), VIEW);
        assert_eq!(rendered["groups"][0]["value"], json!(g));
        assert_eq!(rendered["meta"]["version"], "W/\"1\"");
        let group = dir.render(Kind::Group, dir.get(Kind::Group, &g).unwrap(), VIEW);
        assert_eq!(group["members"][0]["display"], "a");
        assert_eq!(
            group["members"][0]["$ref"],
            json!(format!("http://sim/scim/v2/Users/{a}"))
        );

        dir.delete(Kind::User, &a).unwrap();
        let group = dir.get(Kind::Group, &g).unwrap();
        assert_eq!(member_ids(group), vec![b.as_str()]);
        assert_eq!(group.version, 2);
    }

    #[test]
    fn writes_keep_the_directory_consistent() {
        let mut dir = Directory::default();
        let a = user(&mut dir, "Babs");
        let taken = dir.create(Kind::User, &json!({"userName": "BABS"}), None);
        assert_eq!(taken.unwrap_err().status, 409);
        let ghost = json!({"displayName": "G", "members": [{"value": "nobody"}]});
        let err = dir.create(Kind::Group, &ghost, None).unwrap_err();
        assert_eq!(err.scim_type, Some("invalidValue"));
        let put = json!({"userName": "Babs", "active": "no", "groups": []});
        assert_eq!(
            dir.replace(Kind::User, &a, &put).unwrap_err().scim_type,
            Some("invalidValue")
        );
        let put = json!({"userName": "Babs", "id": "other", "groups": [{"value": "x"}]});
        dir.replace(Kind::User, &a, &put).unwrap();
        let stored = dir.get(Kind::User, &a).unwrap();
        assert!(stored.attr("groups").is_none() && stored.attr("id").is_none());
        assert_eq!(stored.version, 2);
    }
}
