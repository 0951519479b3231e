//! SCIM filters (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2): parsing and evaluation,
//! free of I/O.
//!
//! A filter is parsed into a [`Filter`] tree by a small recursive-descent parser that
//! follows the RFC's ABNF (Figure 1): `or` binds looser than `and`, `not` takes a
//! parenthesised filter, `attr[filter]` is a value path over a multi-valued complex
//! attribute. Attribute names are case-insensitive; string literals are JSON strings, so
//! `\"` and `\\` are decoded the JSON way and a literal such as `"a or b"` is one value,
//! never two conditions. The parser tolerates one thing the RFC's own examples do and its
//! ABNF does not: no space between an operator and its value (`members[value eq"…"]`,
//! RFC 7644 §3.5.2.2).
//!
//! Evaluation compares against a resource's JSON as the simulator would return it.
//! Strings compare case-insensitively unless the attribute is case-exact (RFC 7643:
//! `id`, `externalId`, `$ref`, and the `value` of `members` and `groups`, which are ids);
//! so `userName eq "BJensen"` finds `bjensen` while `externalId eq "ab"` does not find
//! `AB`. A multi-valued attribute matches when any of its values does; a multi-valued
//! complex attribute named without a sub-attribute is compared by its `value`.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// `attrPath op value`, e.g. `userName eq "bjensen"`.
    Compare {
        /// The attribute compared.
        path: AttrPath,
        /// The comparison.
        op: CompareOp,
        /// The literal: a string, number, boolean or null.
        value: Value,
    },
    /// `attrPath pr`: the attribute has a non-empty value.
    Present(AttrPath),
    /// Both sides match.
    And(Box<Filter>, Box<Filter>),
    /// Either side matches.
    Or(Box<Filter>, Box<Filter>),
    /// `not (filter)`.
    Not(Box<Filter>),
    /// `attr[filter]`: some value of a multi-valued complex attribute matches `filter`,
    /// whose attribute names are that attribute's sub-attributes.
    ValuePath {
        /// The multi-valued attribute.
        path: AttrPath,
        /// The condition on each of its values.
        filter: Box<Filter>,
    },
}

/// An attribute reference: `[schemaURI:]name[.subAttr]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URI prefix when given (e.g. the enterprise extension's URN).
    pub uri: Option<String>,
    /// The attribute name, as written.
    pub name: String,
    /// The sub-attribute, as written.
    pub sub: Option<String>,
}

/// A comparison operator of RFC 7644 Table 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Contains (strings).
    Co,
    /// Starts with (strings).
    Sw,
    /// Ends with (strings).
    Ew,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
}

/// A PATCH operation's `path`: `attrPath`, or `attr[filter]` optionally followed by
/// `.subAttr` (RFC 7644 §3.5.2, the `PATH` rule of Figure 1).
#[derive(Clone, Debug, PartialEq)]
pub struct PatchPath {
    /// The attribute (and sub-attribute, when no filter) targeted.
    pub attr: AttrPath,
    /// The value filter selecting some values of a multi-valued attribute.
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter (`emails[type eq "work"].value`).
    pub sub_after_filter: Option<String>,
}

/// Why a filter or path does not parse: what was expected, and where (a byte offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// Byte offset in the input where parsing stopped.
    pub at: usize,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.message, self.at)
    }
}

impl std::error::Error for FilterError {}

/// Parses a whole filter expression.
pub fn parse_filter(input: &str) -> Result<Filter, FilterError> {
    let mut p = Parser { input, pos: 0 };
    let filter = p.or_expr()?;
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.error("unexpected text after the filter"));
    }
    Ok(filter)
}

/// Parses a PATCH operation's `path`.
pub fn parse_patch_path(input: &str) -> Result<PatchPath, FilterError> {
    let mut p = Parser { input, pos: 0 };
    p.skip_ws();
    let attr = p.attr_path()?;
    let mut path = PatchPath {
        attr,
        filter: None,
        sub_after_filter: None,
    };
    if p.eat("[") {
        if path.attr.sub.is_some() {
            return Err(p.error("a value filter follows an attribute, not a sub-attribute"));
        }
        path.filter = Some(p.or_expr()?);
        p.skip_ws();
        if !p.eat("]") {
            return Err(p.error("expected ']'"));
        }
        if p.eat(".") {
            path.sub_after_filter = Some(p.name()?);
        }
    }
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.error("unexpected text after the path"));
    }
    Ok(path)
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn error(&self, message: &str) -> FilterError {
        FilterError {
            at: self.pos,
            message: message.to_string(),
        }
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start_matches([' ', '\t', '\n', '\r']);
        self.pos = self.input.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// Eats a keyword (case-insensitive) that is followed by a space, `(` or the end.
    fn eat_keyword(&mut self, word: &str) -> bool {
        let rest = self.rest();
        let Some(head) = rest.get(..word.len()) else {
            return false;
        };
        let next = rest[word.len()..].chars().next();
        if head.eq_ignore_ascii_case(word) && next.is_none_or(|c| c == ' ' || c == '(') {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn or_expr(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and_expr()?;
        loop {
            self.skip_ws();
            if !self.eat_keyword("or") {
                return Ok(left);
            }
            let right = self.and_expr()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
    }

    fn and_expr(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        loop {
            self.skip_ws();
            if !self.eat_keyword("and") {
                return Ok(left);
            }
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        self.skip_ws();
        if self.eat_keyword("not") {
            self.skip_ws();
            if !self.rest().starts_with('(') {
                return Err(self.error("expected '(' after 'not'"));
            }
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or_expr()?;
            self.skip_ws();
            if !self.eat(")") {
                return Err(self.error("expected ')'"));
            }
            return Ok(inner);
        }
        self.attr_expr()
    }

    fn attr_expr(&mut self) -> Result<Filter, FilterError> {
        let path = self.attr_path()?;
        if self.eat("[") {
            if path.sub.is_some() {
                return Err(self.error("a value filter follows an attribute, not a sub-attribute"));
            }
            let filter = self.or_expr()?;
            self.skip_ws();
            if !self.eat("]") {
                return Err(self.error("expected ']'"));
            }
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(filter),
            });
        }
        self.skip_ws();
        if self.eat_keyword("pr") {
            return Ok(Filter::Present(path));
        }
        let op = self.compare_op()?;
        self.skip_ws();
        let value = self.comp_value()?;
        Ok(Filter::Compare { path, op, value })
    }

    fn compare_op(&mut self) -> Result<CompareOp, FilterError> {
        const OPS: [(&str, CompareOp); 9] = [
            ("eq", CompareOp::Eq),
            ("ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("gt", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("lt", CompareOp::Lt),
            ("le", CompareOp::Le),
        ];
        let head = self.rest().get(..2).unwrap_or("");
        let found = OPS.iter().find(|(word, _)| head.eq_ignore_ascii_case(word));
        match found {
            Some((_, op)) => {
                self.pos += 2;
                Ok(*op)
            }
            None => {
                Err(self.error("expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"))
            }
        }
    }

    /// A JSON literal: a string (decoded as JSON), `true`, `false`, `null` or a number.
    fn comp_value(&mut self) -> Result<Value, FilterError> {
        let rest = self.rest();
        if rest.starts_with('"') {
            let end = string_end(rest).ok_or_else(|| self.error("unterminated string"))?;
            let literal = &rest[..end];
            let value = serde_json::from_str::<String>(literal)
                .map_err(|_| self.error("invalid JSON string"))?;
            self.pos += end;
            return Ok(Value::String(value));
        }
        let len = rest.find([' ', ')', ']']).unwrap_or(rest.len());
        let word = &rest[..len];
        let value = match word.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => match serde_json::from_str::<serde_json::Number>(word) {
                Ok(n) => Value::Number(n),
                Err(_) => {
                    return Err(
                        self.error("expected a value (a JSON string, number, true, false or null)")
                    )
                }
            },
        };
        self.pos += len;
        Ok(value)
    }

    fn name(&mut self) -> Result<String, FilterError> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$'))
            .unwrap_or(rest.len());
        let first_ok = rest
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '$');
        if len == 0 || !first_ok {
            return Err(self.error("expected an attribute name"));
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    /// `[URI ":"] ATTRNAME ["." subAttr]`; a URI is recognised by its `urn:` start.
    fn attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_-$:.".contains(c)))
            .unwrap_or(rest.len());
        let token = &rest[..len];
        let (uri, local) = if token.len() > 4 && token[..4].eq_ignore_ascii_case("urn:") {
            match token.rfind(':') {
                Some(i) => (Some(token[..i].to_string()), &token[i + 1..]),
                None => (None, token),
            }
        } else {
            (None, token)
        };
        let (name, sub) = match local.split_once('.') {
            Some((n, s)) => (n, Some(s)),
            None => (local, None),
        };
        let valid = |s: &str| {
            s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-$".contains(c))
        };
        if !valid(name) || sub.is_some_and(|s| !valid(s)) {
            return Err(self.error("expected an attribute path"));
        }
        self.pos += len;
        Ok(AttrPath {
            uri,
            name: name.to_string(),
            sub: sub.map(str::to_string),
        })
    }
}

/// The byte length of the JSON string literal at the start of `text` (quotes included).
fn string_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// The key of `object` equal to `name` ignoring case.
pub fn find_key<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a String> {
    object.keys().find(|k| k.eq_ignore_ascii_case(name))
}

fn get_ci<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(find_key(object, name)?)
}

/// Whether an attribute holds ids or URIs, compared case-exactly (RFC 7643 `caseExact`).
fn case_exact(path: &AttrPath, parent: Option<&str>) -> bool {
    let last = path.sub.as_deref().unwrap_or(&path.name);
    let parent = if path.sub.is_some() {
        Some(path.name.as_str())
    } else {
        parent
    };
    let id_list = parent
        .is_some_and(|p| p.eq_ignore_ascii_case("members") || p.eq_ignore_ascii_case("groups"));
    ["id", "externalId", "$ref"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(last))
        || (id_list && last.eq_ignore_ascii_case("value"))
}

/// Every value `path` reaches in `resource` (flattening multi-valued attributes).
fn values_at<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let root = match &path.uri {
        Some(uri) if !uri.to_ascii_lowercase().contains(":core:") => match get_ci(resource, uri) {
            Some(ext) => ext,
            None => return Vec::new(),
        },
        _ => resource,
    };
    let Some(attr) = get_ci(root, &path.name) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match attr {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let sub = match (&path.sub, attr.is_array()) {
        (Some(sub), _) => Some(sub.as_str()),
        (None, true) => Some("value"),
        (None, false) => None,
    };
    items
        .into_iter()
        .filter_map(|item| match (sub, item) {
            (Some(sub), Value::Object(_)) => get_ci(item, sub),
            (_, other) => Some(other),
        })
        .collect()
}

/// Whether `resource` (a resource's JSON) matches `filter`.
pub fn matches(filter: &Filter, resource: &Value) -> bool {
    matches_in(filter, resource, None)
}

fn matches_in(filter: &Filter, resource: &Value, parent: Option<&str>) -> bool {
    match filter {
        Filter::And(a, b) => matches_in(a, resource, parent) && matches_in(b, resource, parent),
        Filter::Or(a, b) => matches_in(a, resource, parent) || matches_in(b, resource, parent),
        Filter::Not(inner) => !matches_in(inner, resource, parent),
        Filter::Present(path) => values_at(resource, path).iter().any(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }),
        Filter::Compare { path, op, value } => {
            let exact = case_exact(path, parent);
            values_at(resource, path)
                .iter()
                .any(|v| compare(v, *op, value, exact))
        }
        Filter::ValuePath { path, filter } => {
            let root = match &path.uri {
                Some(uri) if !uri.to_ascii_lowercase().contains(":core:") => get_ci(resource, uri),
                _ => Some(resource),
            };
            let items = root.and_then(|r| get_ci(r, &path.name));
            let items: Vec<&Value> = match items {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(other) => vec![other],
                None => Vec::new(),
            };
            items
                .into_iter()
                .any(|item| matches_in(filter, item, Some(&path.name)))
        }
    }
}

/// Whether one value of `filter`'s attribute matches inside a value path, for PATCH:
/// `element` is one value of the multi-valued attribute named `parent`.
pub fn element_matches(filter: &Filter, element: &Value, parent: &str) -> bool {
    matches_in(filter, element, Some(parent))
}

fn compare(actual: &Value, op: CompareOp, expected: &Value, exact: bool) -> bool {
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            let (a, e) = if exact {
                (a.clone(), e.clone())
            } else {
                (a.to_lowercase(), e.to_lowercase())
            };
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                _ => ordered(a.cmp(&e), op),
            }
        }
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (
                a.as_f64().unwrap_or(f64::NAN),
                e.as_f64().unwrap_or(f64::NAN),
            );
            a.partial_cmp(&e).is_some_and(|o| ordered(o, op))
        }
        (Value::Bool(a), Value::Bool(e)) => match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            _ => false,
        },
        (_, Value::Null) => op == CompareOp::Ne,
        _ => op == CompareOp::Ne,
    }
}

fn ordered(ordering: Ordering, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// Whether the filter names `attr` anywhere (as an attribute or a value path), so a
/// provider can refuse or ignore filters on an attribute it does not index.
pub fn mentions(filter: &Filter, attr: &str) -> bool {
    match filter {
        Filter::And(a, b) | Filter::Or(a, b) => mentions(a, attr) || mentions(b, attr),
        Filter::Not(inner) => mentions(inner, attr),
        Filter::Present(path) | Filter::Compare { path, .. } => {
            path.name.eq_ignore_ascii_case(attr)
        }
        Filter::ValuePath { path, .. } => path.name.eq_ignore_ascii_case(attr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(filter: &str, resource: &Value, expected: bool) {
        let parsed = parse_filter(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(matches(&parsed, resource), expected, "{filter}");
    }

    #[test]
    fn operators_precedence_and_case_rules_follow_the_rfc() {
        let user = json!({
            "userName": "BJensen", "externalId": "Ab-1", "active": true,
            "emails": [{"value": "b@example.com", "type": "work"}, {"value": "babs@jensen.org"}],
            "name": {"familyName": "Jensen"}
        });
        for (filter, expected) in [
            (r#"username eq "bjensen""#, true),
            (r#"externalId eq "ab-1""#, false),
            (r#"externalId eq "Ab-1""#, true),
            (r#"userName ne "bjensen""#, false),
            (r#"name.familyName co "ens""#, true),
            (r#"userName sw "bj" and active eq true"#, true),
            (r#"userName sw "x" or active eq false"#, false),
            (r#"not (active eq false)"#, true),
            (r#"emails[type eq "work" and value co "example"]"#, true),
            (r#"emails co "jensen.org""#, true),
            (r#"title pr"#, false),
            (
                r#"userName eq "x" or (emails.value ew ".org" and active eq true)"#,
                true,
            ),
        ] {
            check(filter, &user, expected);
        }
    }

    #[test]
    fn string_literals_are_json_strings() {
        let odd = json!({"externalId": "a\"b\\c or d"});
        check(r#"externalId eq "a\"b\\c or d""#, &odd, true);
        check(r#"externalId eq "a\"b\\c""#, &odd, false);
        assert!(parse_filter(r#"userName eq "unterminated"#).is_err());
        assert!(parse_filter(r#"userName eq bjensen"#).is_err());
        assert!(parse_filter(r#"userName zz "x""#).is_err());
        assert!(parse_filter(r#"(userName eq "x""#).is_err());
    }

    #[test]
    fn patch_paths_parse_with_value_filters_and_sub_attributes() {
        let path = parse_patch_path(r#"members[value eq"2819c223"]"#).unwrap();
        assert_eq!(path.attr.name, "members");
        assert!(path.filter.is_some());
        let path = parse_patch_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(path.sub_after_filter.as_deref(), Some("value"));
        let path = parse_patch_path("name.givenName").unwrap();
        assert_eq!(path.attr.sub.as_deref(), Some("givenName"));
        let path = parse_patch_path(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        )
        .unwrap();
        assert_eq!(path.attr.name, "employeeNumber");
        assert!(parse_patch_path("members[value eq \"x\"").is_err());
    }
}
