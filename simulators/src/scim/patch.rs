//! PATCH (RFC 7644 §3.5.2) applied to a resource's attributes, free of I/O.
//!
//! The request must name the `PatchOp` message schema and hold `Operations`, each with
//! an `op` (`add`, `remove`, `replace`, case-insensitive), an optional `path` and a
//! `value`. Without a path, `add` and `replace` take an object of attributes. A path is
//! an attribute (`active`, `name.givenName`) or a value filter over a multi-valued
//! attribute (`members[value eq "…"]`, optionally `.subAttr`). Removing values a filter
//! does not match is a success (so a client can repeat a removal safely); replacing them
//! is `noTarget`. Read-only attributes (`id`, `meta`, a user's `groups`) give
//! `mutability`. Operations apply in order, all or nothing: the caller keeps the
//! original when an error comes back.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{element_matches, find_key, parse_patch_path, Filter, PatchPath};

/// The URN a PATCH request's `schemas` must hold.
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// One PATCH operation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Replace,
}

/// Applies a PATCH request body to `attrs`; `read_only` lists attribute names a client
/// may not change.
pub fn apply(
    attrs: &mut Map<String, Value>,
    request: &Value,
    read_only: &[&str],
) -> Result<(), ScimError> {
    let schemas_ok = request
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(PATCH_SCHEMA)));
    if !schemas_ok {
        return Err(ScimError::bad_request(
            "invalidSyntax",
            format!("schemas must hold {PATCH_SCHEMA}"),
        ));
    }
    let operations = request
        .get("Operations")
        .and_then(Value::as_array)
        .filter(|ops| !ops.is_empty())
        .ok_or_else(|| {
            ScimError::bad_request("invalidSyntax", "Operations must be a non-empty array")
        })?;
    for operation in operations {
        apply_one(attrs, operation, read_only)?;
    }
    Ok(())
}

fn apply_one(
    attrs: &mut Map<String, Value>,
    operation: &Value,
    read_only: &[&str],
) -> Result<(), ScimError> {
    let op = parse_op(operation)?;
    let value = operation.get("value");
    match (op, parse_path(operation)?) {
        (Op::Remove, None) => Err(ScimError::bad_request("noTarget", "remove needs a path")),
        (_, None) => {
            let Some(Value::Object(values)) = value else {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "without a path, value must be an object of attributes",
                ));
            };
            for (name, v) in values {
                writable(name, read_only)?;
                set_attr(attrs, name, v.clone(), op == Op::Add);
            }
            Ok(())
        }
        (_, Some(path)) => {
            writable(&path.attr.name, read_only)?;
            if op != Op::Remove && value.is_none() {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "add and replace need a value",
                ));
            }
            let target = extension_or_core(attrs, &path)?;
            match &path.filter {
                Some(filter) => apply_filtered(target, op, &path, filter, value),
                None => apply_plain(target, op, &path, value),
            }
        }
    }
}

fn parse_op(operation: &Value) -> Result<Op, ScimError> {
    let op = operation.get("op").and_then(Value::as_str).unwrap_or("");
    [
        ("add", Op::Add),
        ("remove", Op::Remove),
        ("replace", Op::Replace),
    ]
    .into_iter()
    .find(|(name, _)| op.eq_ignore_ascii_case(name))
    .map(|(_, op)| op)
    .ok_or_else(|| ScimError::bad_request("invalidSyntax", "op must be add, remove or replace"))
}

fn parse_path(operation: &Value) -> Result<Option<PatchPath>, ScimError> {
    match operation.get("path") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) => parse_patch_path(p)
            .map(Some)
            .map_err(|e| ScimError::bad_request("invalidPath", e.to_string())),
        Some(_) => Err(ScimError::bad_request(
            "invalidPath",
            "path must be a string",
        )),
    }
}

/// The attributes a path addresses: an extension's object for a path with an extension
/// schema URI (`urn:…:enterprise:2.0:User:employeeNumber`), else the resource's own.
fn extension_or_core<'a>(
    attrs: &'a mut Map<String, Value>,
    path: &PatchPath,
) -> Result<&'a mut Map<String, Value>, ScimError> {
    let Some(uri) = path
        .attr
        .uri
        .as_ref()
        .filter(|u| !u.to_ascii_lowercase().contains(":core:"))
    else {
        return Ok(attrs);
    };
    let key = find_key(attrs, uri).cloned().unwrap_or_else(|| uri.clone());
    match attrs
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(map) => Ok(map),
        _ => Err(ScimError::bad_request(
            "invalidPath",
            "not an extension object",
        )),
    }
}

fn writable(name: &str, read_only: &[&str]) -> Result<(), ScimError> {
    if read_only.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(ScimError::bad_request(
            "mutability",
            format!("attribute {name} is readOnly"),
        ));
    }
    Ok(())
}

/// Sets (`add` on a multi-valued attribute: appends new values; on a complex one:
/// merges) an attribute, matching its name case-insensitively.
fn set_attr(attrs: &mut Map<String, Value>, name: &str, value: Value, add: bool) {
    let key = find_key(attrs, name)
        .cloned()
        .unwrap_or_else(|| name.to_string());
    match (add, attrs.get_mut(&key), value) {
        (true, Some(Value::Array(existing)), Value::Array(new)) => {
            for v in new {
                if !existing.contains(&v) {
                    existing.push(v);
                }
            }
        }
        (true, Some(Value::Object(existing)), Value::Object(new)) => {
            for (k, v) in new {
                set_attr(existing, &k, v, false);
            }
        }
        (_, _, value) => {
            attrs.insert(key, value);
        }
    }
}

fn apply_plain(
    attrs: &mut Map<String, Value>,
    op: Op,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let name = &path.attr.name;
    match (&path.attr.sub, op) {
        (None, Op::Remove) => {
            if let Some(key) = find_key(attrs, name).cloned() {
                attrs.remove(&key);
            }
        }
        (None, _) => set_attr(
            attrs,
            name,
            value.cloned().unwrap_or(Value::Null),
            op == Op::Add,
        ),
        (Some(sub), _) => {
            let key = find_key(attrs, name)
                .cloned()
                .unwrap_or_else(|| name.clone());
            let parent = attrs
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(parent) = parent else {
                return Err(ScimError::bad_request(
                    "invalidPath",
                    format!("{name} has no sub-attributes"),
                ));
            };
            match op {
                Op::Remove => {
                    if let Some(k) = find_key(parent, sub).cloned() {
                        parent.remove(&k);
                    }
                }
                _ => set_attr(
                    parent,
                    sub,
                    value.cloned().unwrap_or(Value::Null),
                    op == Op::Add,
                ),
            }
        }
    }
    Ok(())
}

fn apply_filtered(
    attrs: &mut Map<String, Value>,
    op: Op,
    path: &PatchPath,
    filter: &Filter,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let name = &path.attr.name;
    if op == Op::Add {
        return Err(ScimError::bad_request(
            "invalidPath",
            "add takes an attribute path, not a value filter",
        ));
    }
    let Some(key) = find_key(attrs, name).cloned() else {
        return match op {
            Op::Remove => Ok(()),
            _ => Err(ScimError::bad_request(
                "noTarget",
                format!("no value of {name} matches"),
            )),
        };
    };
    let Some(Value::Array(items)) = attrs.get_mut(&key) else {
        return Err(ScimError::bad_request(
            "invalidPath",
            format!("{name} is not multi-valued"),
        ));
    };
    let hits: Vec<usize> = (0..items.len())
        .filter(|&i| element_matches(filter, &items[i], name))
        .collect();
    match (op, &path.sub_after_filter) {
        (Op::Remove, None) => {
            let mut i = 0;
            items.retain(|_| {
                i += 1;
                !hits.contains(&(i - 1))
            });
            if items.is_empty() {
                attrs.remove(&key);
            }
        }
        (Op::Remove, Some(sub)) => {
            for &i in &hits {
                if let Some(object) = items[i].as_object_mut() {
                    if let Some(k) = find_key(object, sub).cloned() {
                        object.remove(&k);
                    }
                }
            }
        }
        (_, sub) => {
            if hits.is_empty() {
                return Err(ScimError::bad_request(
                    "noTarget",
                    format!("no value of {name} matches"),
                ));
            }
            let new = value.cloned().unwrap_or(Value::Null);
            for &i in &hits {
                match (sub, items[i].as_object_mut()) {
                    (Some(sub), Some(object)) => set_attr(object, sub, new.clone(), false),
                    _ => items[i] = new.clone(),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(attrs: Value, ops: Value) -> Result<Value, ScimError> {
        let mut map = attrs.as_object().cloned().unwrap();
        let request = json!({"schemas": [PATCH_SCHEMA], "Operations": ops});
        apply(&mut map, &request, &["id", "meta", "groups"]).map(|_| Value::Object(map))
    }

    #[test]
    fn replace_remove_and_add_follow_the_rfc() {
        let group = json!({"displayName": "G", "members": [{"value": "a"}, {"value": "b"}]});
        let out = patch(
            group.clone(),
            json!([{"op": "Remove", "path": "members[value eq \"a\"]"}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "b"}]));
        // Removing a member that is not there succeeds and changes nothing.
        let out = patch(
            group.clone(),
            json!([{"op": "remove", "path": "members[value eq \"zz\"]"}]),
        )
        .unwrap();
        assert_eq!(out, group);
        let out = patch(
            group.clone(),
            json!([{"op": "add", "path": "members", "value": [{"value": "c"}, {"value": "a"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"].as_array().unwrap().len(), 3);
        let out = patch(
            json!({"active": true}),
            json!([{"op": "REPLACE", "path": "Active", "value": false}]),
        )
        .unwrap();
        assert_eq!(out, json!({"active": false}));
        let out = patch(
            json!({"active": true, "name": {"givenName": "B"}}),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .unwrap();
        assert_eq!(out["active"], json!(false));
        assert_eq!(out["name"]["givenName"], "B");
    }

    #[test]
    fn bad_requests_get_the_rfc_scim_types() {
        let cases = [
            (json!([{"op": "remove"}]), "noTarget"),
            (json!([{"op": "move", "path": "active"}]), "invalidSyntax"),
            (
                json!([{"op": "replace", "path": "groups", "value": []}]),
                "mutability",
            ),
            (
                json!([{"op": "replace", "path": "members[value eq", "value": 1}]),
                "invalidPath",
            ),
            (
                json!([{"op": "replace", "path": "members[value eq \"zz\"]", "value": {}}]),
                "noTarget",
            ),
            (json!([{"op": "replace", "value": false}]), "invalidValue"),
        ];
        for (ops, scim_type) in cases {
            let err = patch(json!({"members": [{"value": "a"}]}), ops.clone()).unwrap_err();
            assert_eq!(err.scim_type, Some(scim_type), "{ops}");
        }
        let mut map = Map::new();
        let err = apply(
            &mut map,
            &json!({"Operations": [{"op": "remove", "path": "x"}]}),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.scim_type, Some("invalidSyntax"));
    }
}
