//! Incoming events: a CloudEvents 1.0 message (structured JSON mode) becomes a
//! [`Request`], or a [`Rejection`] carrying the `EVT-…` code it is dead-lettered with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes::Code;

/// Largest body accepted; anything bigger is rejected with EVT-100.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The longest values an event may carry, in bytes of UTF-8; a longer one is refused with
/// `EVT-102` before anything touches the database (an id of a few thousand bytes is past
/// what PostgreSQL can index, and no HR system needs more).
pub mod limits {
    /// `id`: the idempotency key, stored and indexed.
    pub const ID: usize = 256;
    /// `source`.
    pub const SOURCE: usize = 256;
    /// An email address (RFC 5321's 256-byte path, less its angle brackets).
    pub const EMAIL: usize = 254;
    /// `data.person.employee_id`.
    pub const EMPLOYEE_ID: usize = 256;
    /// `data.reason`.
    pub const REASON: usize = 1024;
    /// One name in `data.connections`.
    pub const CONNECTION_NAME: usize = 64;
    /// How many names `data.connections` may list.
    pub const CONNECTIONS: usize = 32;
}

/// How much of a refused value a rejection message quotes.
const QUOTED_CHARS: usize = 64;

/// What the HR system asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// Remove the account (`offboarding.requested`).
    #[serde(rename = "offboarding.requested")]
    Offboarding,
    /// Keep the account, take the paid roles away (`license.reclaim.requested`).
    #[serde(rename = "license.reclaim.requested")]
    LicenseReclaim,
}

impl EventType {
    /// Every event type, in contract order.
    pub const ALL: [EventType; 2] = [EventType::Offboarding, EventType::LicenseReclaim];

    /// The CloudEvents `type` (and AMQP routing key).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Offboarding => "offboarding.requested",
            EventType::LicenseReclaim => "license.reclaim.requested",
        }
    }

    /// Parses the CloudEvents `type`.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A validated request: one event, possibly fanning out to several connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The event `id`: the idempotency key.
    pub event_id: String,
    /// The event `source` (who asked: workday, bamboohr, cli…).
    pub source: String,
    /// Offboarding or license reclaim.
    pub event_type: EventType,
    /// The event `time`, when given.
    pub time: Option<DateTime<Utc>>,
    /// The person leaving (lower-cased).
    pub person_email: String,
    /// The HR system's id for the person, when given.
    pub employee_id: Option<String>,
    /// Who receives the person's data (lower-cased), when given.
    pub transfer_to: Option<String>,
    /// The connections named by the event; `None` means all configured ones.
    pub connections: Option<Vec<String>>,
    /// Do nothing before this time.
    pub not_before: Option<DateTime<Utc>>,
    /// Free text from HR (termination, role change…).
    pub reason: Option<String>,
}

/// Why a message cannot become a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// EVT-100 … EVT-103.
    pub code: Code,
    /// One line saying what is wrong.
    pub message: String,
}

fn reject(code: Code, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// Parses and validates one message body against the connections that exist.
pub fn parse(body: &[u8], known_connections: &[String]) -> Result<Request, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(reject(
            Code::Evt100,
            format!(
                "body is {} bytes, over the {MAX_BODY_BYTES}-byte limit",
                body.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| reject(Code::Evt100, format!("body is not JSON: {e}")))?;
    let Value::Object(root) = value else {
        return Err(reject(Code::Evt101, "body is not a JSON object"));
    };
    let attr = |name: &str| root.get(name).and_then(Value::as_str);
    if attr("specversion") != Some("1.0") {
        return Err(reject(Code::Evt101, "specversion must be \"1.0\""));
    }
    let event_id = context_attribute(attr("id"), "id", limits::ID)?;
    let source = context_attribute(attr("source"), "source", limits::SOURCE)?;
    let type_name = attr("type").ok_or_else(|| reject(Code::Evt101, "type is missing"))?;
    let event_type = EventType::parse(type_name).ok_or_else(|| {
        reject(
            Code::Evt101,
            format!("unknown event type {:?}", quoted(type_name)),
        )
    })?;
    let time = optional_time(root.get("time"), "time")?;

    let data = root
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| reject(Code::Evt102, "data is missing or not an object"))?;
    let person = data.get("person");
    let person_email = person
        .and_then(|p| p.get("email"))
        .and_then(Value::as_str)
        .ok_or_else(|| reject(Code::Evt102, "data.person.email is missing"))?;
    let person_email = valid_email(person_email, "data.person.email")?;
    let employee_id = employee_id(person)?;
    let transfer_to = transfer_to(data.get("transfer_to"), &person_email)?;
    let connections = connections(data.get("connections"), known_connections)?;
    let not_before = optional_time(data.get("not_before"), "data.not_before")?;
    let reason = data
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(reason) = &reason {
        bounded(reason, "data.reason", limits::REASON)?;
    }
    Ok(Request {
        event_id: event_id.to_string(),
        source: source.to_string(),
        event_type,
        time,
        person_email,
        employee_id,
        transfer_to,
        connections,
        not_before,
        reason,
    })
}

/// A required CloudEvents context attribute (`id`, `source`): present, not blank, at
/// most `limit` bytes, printable.
fn context_attribute<'a>(
    value: Option<&'a str>,
    name: &str,
    limit: usize,
) -> Result<&'a str, Rejection> {
    let value = value
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| reject(Code::Evt101, format!("{name} is missing or empty")))?;
    bounded(value, name, limit)?;
    printable(value, name)?;
    Ok(value)
}

/// `data.person.employee_id`, when given: bounded and printable.
fn employee_id(person: Option<&Value>) -> Result<Option<String>, Rejection> {
    let Some(id) = person
        .and_then(|p| p.get("employee_id"))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    bounded(id, "data.person.employee_id", limits::EMPLOYEE_ID)?;
    printable(id, "data.person.employee_id")?;
    Ok(Some(id.to_string()))
}

/// `data.transfer_to.email`, when given: a valid address, not the person's own.
fn transfer_to(value: Option<&Value>, person_email: &str) -> Result<Option<String>, Rejection> {
    let email = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(t) => t
            .get("email")
            .and_then(Value::as_str)
            .ok_or_else(|| reject(Code::Evt102, "data.transfer_to is given without an email"))?,
    };
    let email = valid_email(email, "data.transfer_to.email")?;
    if email == person_email {
        return Err(reject(
            Code::Evt102,
            "data.transfer_to.email is the person being offboarded",
        ));
    }
    Ok(Some(email))
}

/// `data.connections`, when given: a non-empty list of configured names, each kept once.
fn connections(
    value: Option<&Value>,
    known_connections: &[String],
) -> Result<Option<Vec<String>>, Rejection> {
    let items = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(reject(
                Code::Evt102,
                "data.connections must be a list of names",
            ))
        }
    };
    if items.len() > limits::CONNECTIONS {
        return Err(reject(
            Code::Evt102,
            format!(
                "data.connections lists {} names, over the limit of {}",
                items.len(),
                limits::CONNECTIONS
            ),
        ));
    }
    let mut names = Vec::new();
    for item in items {
        let name = item
            .as_str()
            .ok_or_else(|| reject(Code::Evt102, "data.connections must be a list of names"))?;
        bounded(name, "a name in data.connections", limits::CONNECTION_NAME)?;
        if !known_connections.iter().any(|k| k == name) {
            return Err(reject(
                Code::Evt103,
                format!("connection {name:?} is not configured"),
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        return Err(reject(Code::Evt102, "data.connections is an empty list"));
    }
    Ok(Some(names))
}

fn optional_time(value: Option<&Value>, field: &str) -> Result<Option<DateTime<Utc>>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| reject(Code::Evt102, format!("{field} is not an RFC 3339 time"))),
        Some(_) => Err(reject(Code::Evt102, format!("{field} must be a string"))),
    }
}

/// Refuses a value longer than `limit` bytes, saying how long it is (not what it holds).
fn bounded(value: &str, field: &str, limit: usize) -> Result<(), Rejection> {
    if value.len() > limit {
        return Err(reject(
            Code::Evt102,
            format!(
                "{field} is {} bytes, over the limit of {limit}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The start of a value for a rejection message: at most [`QUOTED_CHARS`] characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_string(),
    }
}

/// Refuses a value holding control characters (NUL, CR, LF, ESC…): such a value could
/// forge a log line, reach a terminal, or be unstorable (PostgreSQL text cannot hold 0x00).
fn printable(value: &str, field: &str) -> Result<(), Rejection> {
    if value.chars().any(char::is_control) {
        return Err(reject(
            Code::Evt102,
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

/// Accepts an employee id as an event's `data.person.employee_id` is accepted: at most
/// 256 bytes, no control characters; kept exactly as given (a SCIM `externalId` is
/// compared case-exactly).
pub fn valid_employee_id(raw: &str, field: &str) -> Result<String, Rejection> {
    bounded(raw, field, limits::EMPLOYEE_ID)?;
    printable(raw, field)?;
    Ok(raw.to_string())
}

/// Accepts `local@domain.tld` without spaces or control characters; returns it lower-cased.
pub fn valid_email(raw: &str, field: &str) -> Result<String, Rejection> {
    bounded(raw.trim(), field, limits::EMAIL)?;
    let email = raw.trim().to_lowercase();
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
                && email.len() <= limits::EMAIL
        }
        None => false,
    };
    if ok {
        Ok(email)
    } else {
        Err(reject(
            Code::Evt102,
            format!("{field} is not a valid email address"),
        ))
    }
}

/// Builds the CloudEvents JSON for a request (used by `offboard submit`).
pub fn to_cloudevent(request: &Request) -> Value {
    let mut data = serde_json::json!({ "person": { "email": request.person_email } });
    if let Some(id) = &request.employee_id {
        data["person"]["employee_id"] = Value::from(id.as_str());
    }
    if let Some(to) = &request.transfer_to {
        data["transfer_to"] = serde_json::json!({ "email": to });
    }
    if let Some(c) = &request.connections {
        data["connections"] = Value::from(c.clone());
    }
    if let Some(t) = request.not_before {
        data["not_before"] = Value::from(t.to_rfc3339());
    }
    if let Some(r) = &request.reason {
        data["reason"] = Value::from(r.as_str());
    }
    let mut event = serde_json::json!({
        "specversion": "1.0",
        "id": request.event_id,
        "source": request.source,
        "type": request.event_type.as_str(),
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(t) = request.time {
        event["time"] = Value::from(t.to_rfc3339());
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        vec!["smartsheet".into(), "postman".into()]
    }

    const GOOD: &str = r#"{"specversion":"1.0","id":"wd-1","source":"workday",
        "type":"offboarding.requested","time":"2026-11-20T17:00:00Z",
        "data":{"person":{"email":"Ada@Example.com","employee_id":"E1"},
        "transfer_to":{"email":"grace@example.com"},"connections":["smartsheet"],
        "not_before":"2026-11-21T00:00:00Z","reason":"termination"}}"#;

    #[test]
    fn a_complete_event_becomes_a_request() {
        let r = parse(GOOD.as_bytes(), &known()).unwrap();
        assert_eq!(r.event_id, "wd-1");
        assert_eq!(r.event_type, EventType::Offboarding);
        assert_eq!(r.person_email, "ada@example.com");
        assert_eq!(r.transfer_to.as_deref(), Some("grace@example.com"));
        assert_eq!(r.connections, Some(vec!["smartsheet".to_string()]));
        assert_eq!(
            r.not_before.unwrap().to_rfc3339(),
            "2026-11-21T00:00:00+00:00"
        );
        let again = parse(to_cloudevent(&r).to_string().as_bytes(), &known()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn each_malformed_event_gets_its_code() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        let cases: &[(&str, Code)] = &[
            ("not json", Code::Evt100),
            (big.as_str(), Code::Evt100),
            ("[1,2]", Code::Evt101),
            (
                r#"{"id":"1","source":"s","type":"offboarding.requested"}"#,
                Code::Evt101,
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"user.hired","data":{}}"#,
                Code::Evt101,
            ),
            (
                r#"{"specversion":"1.0","id":"","source":"s","type":"offboarding.requested"}"#,
                Code::Evt101,
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"offboarding.requested","data":{"person":{}}}"#,
                Code::Evt102,
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"offboarding.requested","data":{"person":{"email":"nope"}}}"#,
                Code::Evt102,
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"offboarding.requested","data":{"person":{"email":"a@b.co"},"not_before":"tomorrow"}}"#,
                Code::Evt102,
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"offboarding.requested","data":{"person":{"email":"a@b.co"},"transfer_to":{"email":"a@b.co"}}}"#,
                Code::Evt102,
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"offboarding.requested","data":{"person":{"email":"a@b.co"},"connections":["jira"]}}"#,
                Code::Evt103,
            ),
        ];
        for (body, code) in cases {
            let got = parse(body.as_bytes(), &known()).unwrap_err();
            assert_eq!(got.code, *code, "{body:.80}: {}", got.message);
        }
    }

    /// An event with `field` set to `value` (JSON), the rest as in [`GOOD`].
    fn with(pointer: &str, value: Value) -> Vec<u8> {
        let mut event: Value = serde_json::from_str(GOOD).unwrap();
        *event.pointer_mut(pointer).unwrap() = value;
        event.to_string().into_bytes()
    }

    #[test]
    fn values_past_their_limit_are_evt_102_and_at_it_pass() {
        let long = |n: usize| Value::from("x".repeat(n));
        let email = |n: usize| Value::from(format!("{}@example.com", "a".repeat(n - 12)));
        let names = |n: usize| Value::from(vec!["smartsheet"; n]);
        /// A value of the given length in bytes.
        type OfLength = fn(usize) -> Value;
        let cases: [(&str, OfLength, usize); 7] = [
            ("/id", long, limits::ID),
            ("/source", long, limits::SOURCE),
            ("/data/person/email", email, limits::EMAIL),
            ("/data/transfer_to/email", email, limits::EMAIL),
            ("/data/person/employee_id", long, limits::EMPLOYEE_ID),
            ("/data/reason", long, limits::REASON),
            ("/data/connections", names, limits::CONNECTIONS),
        ];
        for (pointer, value, limit) in &cases {
            assert!(
                parse(&with(pointer, value(*limit)), &known()).is_ok(),
                "{pointer} at its limit of {limit}"
            );
            let over = parse(&with(pointer, value(limit + 1)), &known()).unwrap_err();
            assert_eq!(over.code, Code::Evt102, "{pointer}: {}", over.message);
            assert!(over.message.contains("limit"), "{}", over.message);
        }
        // The ids that once held an intake slot: refused at once, and not quoted.
        for n in [3_000, 20_000, 200_000] {
            let r = parse(&with("/id", long(n)), &known()).unwrap_err();
            assert_eq!(r.code, Code::Evt102);
            assert!(r.message.len() < 100, "{}", r.message);
        }
        let long_name = Value::from(vec!["x".repeat(limits::CONNECTION_NAME + 1)]);
        let r = parse(&with("/data/connections", long_name), &known()).unwrap_err();
        assert_eq!(r.code, Code::Evt102, "{}", r.message);
        let r = parse(&with("/type", long(10_000)), &known()).unwrap_err();
        assert_eq!(r.code, Code::Evt101);
        assert!(r.message.len() < 100, "an unknown type is quoted in part");
    }

    #[test]
    fn an_employee_id_from_the_command_line_is_checked_like_an_events() {
        let tricky = r#"E"9\ or userName pr or ""#;
        assert_eq!(valid_employee_id(tricky, "--employee-id").unwrap(), tricky);
        for bad in ["E1\n".to_string(), "x".repeat(limits::EMPLOYEE_ID + 1)] {
            let e = valid_employee_id(&bad, "--employee-id").unwrap_err();
            assert_eq!(e.code, Code::Evt102);
            assert!(e.message.starts_with("--employee-id"), "{}", e.message);
        }
    }
}
