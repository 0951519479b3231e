//! SCIM filters and matching, pure: the filter that finds the person (RFC 7644 §3.4.2.2),
//! the `members` value path a group PATCH removes (§3.5.2.2), and the exact comparison
//! every returned resource must pass before offboard believes the provider's answer.
//!
//! A filter's comparison value is a JSON value (the RFC's ABNF: `compValue = false / null
//! / true / number / string`, "rules from JSON"), so a string is written as a JSON string
//! literal: `"` and `\` escaped by a backslash, control characters as `\uXXXX`. A value
//! such as `x" or userName pr or "` then stays one string and cannot widen the filter to
//! other users. The whole filter is URL-encoded afterwards, as every query value is.

use serde_json::Value;

use crate::config::ScimMatch;

/// What the person is looked up by: the connection's `match` attribute and the value the
/// event gives for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Which attribute.
    pub attribute: ScimMatch,
    /// The value (the event's email, or its `employee_id` for `externalId`).
    pub value: String,
}

impl Lookup {
    /// The `/Users` filter for this lookup, its value escaped: `userName eq "…"`,
    /// `emails[value eq "…"]` or `externalId eq "…"`.
    pub fn filter(&self) -> String {
        let value = json_string(&self.value);
        match self.attribute {
            ScimMatch::UserName => format!("userName eq {value}"),
            ScimMatch::Email => format!("emails[value eq {value}]"),
            ScimMatch::ExternalId => format!("externalId eq {value}"),
        }
    }

    /// Whether `user` (a SCIM User resource) holds exactly this value: `userName` and
    /// email values compared without case (RFC 7643 makes them `caseExact: false`),
    /// `externalId` exactly (`caseExact: true`). A provider whose filter is looser than
    /// asked (or ignored) cannot make offboard act on someone else.
    pub fn matches(&self, user: &Value) -> bool {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        match self.attribute {
            ScimMatch::UserName => text(user.get("userName"))
                .is_some_and(|name| name.to_lowercase() == self.value.to_lowercase()),
            ScimMatch::Email => emails(user)
                .iter()
                .any(|email| email.to_lowercase() == self.value.to_lowercase()),
            ScimMatch::ExternalId => text(user.get("externalId")).as_deref() == Some(&self.value),
        }
    }

    /// The attribute's name as SCIM spells it, for messages.
    pub fn attribute_name(&self) -> &'static str {
        match self.attribute {
            ScimMatch::UserName => "userName",
            ScimMatch::Email => "emails",
            ScimMatch::ExternalId => "externalId",
        }
    }
}

/// The `/Groups` filter for the groups that list `user_id` among their members.
pub fn members_filter(user_id: &str) -> String {
    format!("members[value eq {}]", json_string(user_id))
}

/// The PATCH path that selects the member `user_id` of a group (RFC 7644 §3.5.2.2's
/// example: `members[value eq "2819c223…"]`).
pub fn member_path(user_id: &str) -> String {
    members_filter(user_id)
}

/// A user's email values (`emails[].value`).
pub fn emails(user: &Value) -> Vec<String> {
    user.get("emails")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter_map(|e| e.get("value").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `value` as a JSON string literal: quoted, `"` and `\` and control characters escaped.
fn json_string(value: &str) -> String {
    Value::from(value).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lookup(attribute: ScimMatch, value: &str) -> Lookup {
        Lookup {
            attribute,
            value: value.into(),
        }
    }

    #[test]
    fn filters_escape_their_value_as_a_json_string() {
        let cases = [
            (
                ScimMatch::UserName,
                "bjensen@example.com",
                r#"userName eq "bjensen@example.com""#,
            ),
            (ScimMatch::Email, "a@b.co", r#"emails[value eq "a@b.co"]"#),
            (ScimMatch::ExternalId, r#"E"1"#, r#"externalId eq "E\"1""#),
            (ScimMatch::ExternalId, r"E\1", r#"externalId eq "E\\1""#),
            (
                ScimMatch::ExternalId,
                r#"x" or userName pr or "y"#,
                r#"externalId eq "x\" or userName pr or \"y""#,
            ),
            (
                ScimMatch::ExternalId,
                "a\u{1}b\n",
                r#"externalId eq "a\u0001b\n""#,
            ),
        ];
        for (attribute, value, expected) in cases {
            assert_eq!(lookup(attribute, value).filter(), expected, "{value:?}");
        }
        assert_eq!(member_path(r#"2819"c"#), r#"members[value eq "2819\"c"]"#);
    }

    #[test]
    fn only_an_exact_match_counts() {
        let user = json!({
            "userName": "BJensen@Example.com",
            "externalId": "E1001",
            "emails": [{"value": "babs@Jensen.org", "type": "home"}, {"value": "bjensen@example.com"}]
        });
        let cases = [
            (ScimMatch::UserName, "bjensen@example.com", true),
            (ScimMatch::UserName, "bjensen@example.co", false),
            (ScimMatch::Email, "BABS@jensen.org", true),
            (ScimMatch::Email, "jensen.org", false),
            (ScimMatch::ExternalId, "E1001", true),
            (ScimMatch::ExternalId, "e1001", false),
            (ScimMatch::ExternalId, "E100", false),
        ];
        for (attribute, value, expected) in cases {
            assert_eq!(
                lookup(attribute, value).matches(&user),
                expected,
                "{attribute:?} {value}"
            );
        }
        assert!(!lookup(ScimMatch::ExternalId, "E1").matches(&json!({"userName": "E1"})));
    }
}
