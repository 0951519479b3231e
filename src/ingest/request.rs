//! What an HTTP request to `POST /events` asks, decided without I/O: its mode under the
//! CloudEvents HTTP binding (from `Content-Type` and any `ce-*` headers), the events a
//! body holds, and each event checked by the AMQP intake's own code (`event::parse`,
//! then `admission`'s allowed sources and recipients).

use serde_json::value::RawValue;

use crate::codes::Code;
use crate::config::IntakeConfig;
use crate::domain::admission;
use crate::domain::event::{self, EventType, Rejection};

/// The largest request body taken, in bytes (1 MiB); a larger one is answered 413.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The most events a batch may hold.
pub const MAX_BATCH: usize = 500;

/// The media type of one event in structured mode.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The media type of a batch of events.
pub const BATCH: &str = "application/cloudevents-batch+json";

/// How a request carries its events (CloudEvents HTTP binding, §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One event, the whole body (`application/cloudevents+json`, or `application/json`).
    Structured,
    /// A JSON array of events (`application/cloudevents-batch+json`).
    Batch,
}

/// The request's mode from its `Content-Type` (parameters such as `charset` ignored) and
/// whether it has `ce-*` headers, or why it is refused (415): binary mode's attributes
/// travel in headers the signature does not cover, so it is not accepted. Plain
/// `application/json` is read as structured mode, for senders that cannot set the type,
/// unless `ce-*` headers say it is binary mode's data.
pub fn mode(content_type: Option<&str>, has_ce_headers: bool) -> Result<Mode, String> {
    let media = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some(STRUCTURED) => Ok(Mode::Structured),
        Some(BATCH) => Ok(Mode::Batch),
        // With ce-* headers, any other type is binary mode's data type (JSON included).
        _ if has_ce_headers => Err(format!(
            "binary mode (ce-* headers) is not accepted: its attributes would sit outside the signed body; send the event in structured mode as {STRUCTURED}"
        )),
        Some("application/json") => Ok(Mode::Structured),
        Some(other) => Err(format!(
            "Content-Type {other:?} is not accepted; send {STRUCTURED} or {BATCH}"
        )),
        None => Err(format!(
            "the request has no Content-Type; send {STRUCTURED} or {BATCH}"
        )),
    }
}

/// The body of each event a request holds, byte for byte as sent: the body itself in
/// structured mode, each element of the array in a batch (1 to [`MAX_BATCH`]).
pub fn split(mode: Mode, body: &[u8]) -> Result<Vec<Vec<u8>>, Rejection> {
    if mode == Mode::Structured {
        return Ok(vec![body.to_vec()]);
    }
    let refuse = |message: String| Rejection {
        code: Code::Evt100,
        message,
    };
    let events: Vec<Box<RawValue>> = serde_json::from_slice(body)
        .map_err(|e| refuse(format!("a batch must be a JSON array of events: {e}")))?;
    if events.is_empty() {
        return Err(refuse("the batch holds no events".into()));
    }
    if events.len() > MAX_BATCH {
        return Err(refuse(format!(
            "the batch holds {} events, over the limit of {MAX_BATCH}",
            events.len()
        )));
    }
    Ok(events
        .into_iter()
        .map(|e| e.get().as_bytes().to_vec())
        .collect())
}

/// One event ready to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Admitted {
    /// Its CloudEvent `id`.
    pub id: String,
    /// Its type: the routing key it is published with.
    pub event_type: EventType,
    /// Its body, as sent.
    pub body: Vec<u8>,
}

/// An event refused, by its place in the request (0 for a single event).
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    /// Its index in the batch.
    pub index: usize,
    /// Why.
    pub rejection: Rejection,
}

/// Checks every event as the AMQP intake would (the signature aside, checked on the
/// request): all are admitted, or every refused one is returned (a batch is all or
/// nothing).
pub fn check(
    bodies: Vec<Vec<u8>>,
    known_connections: &[String],
    intake: &IntakeConfig,
) -> Result<Vec<Admitted>, Vec<Refused>> {
    let mut admitted = Vec::with_capacity(bodies.len());
    let mut refused = Vec::new();
    for (index, body) in bodies.into_iter().enumerate() {
        let checked = event::parse(&body, known_connections).and_then(|r| {
            admission::check_source(intake.allowed_sources.as_deref(), &r.source)?;
            admission::check_recipient(
                intake.recipient_domains.as_deref(),
                r.transfer_to.as_deref(),
            )?;
            Ok(r)
        });
        match checked {
            Ok(r) => admitted.push(Admitted {
                id: r.event_id,
                event_type: r.event_type,
                body,
            }),
            Err(rejection) => refused.push(Refused { index, rejection }),
        }
    }
    if refused.is_empty() {
        Ok(admitted)
    } else {
        Err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, email: &str) -> String {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"hr","type":"offboarding.requested","data":{{"person":{{"email":"{email}"}}}}}}"#
        )
    }

    #[test]
    fn the_mode_follows_the_http_binding_and_binary_mode_is_refused() {
        assert_eq!(mode(Some(STRUCTURED), false), Ok(Mode::Structured));
        assert_eq!(
            mode(Some("Application/JSON; charset=utf-8"), false),
            Ok(Mode::Structured)
        );
        assert_eq!(mode(Some(BATCH), false), Ok(Mode::Batch));
        // Structured mode wins over stray ce-* headers (the binding says so).
        assert_eq!(mode(Some(STRUCTURED), true), Ok(Mode::Structured));
        for data_type in ["application/json", "application/xml"] {
            let binary = mode(Some(data_type), true).unwrap_err();
            assert!(binary.contains("binary mode"), "{binary}");
        }
        let other = mode(Some("text/plain"), false).unwrap_err();
        assert!(other.contains("\"text/plain\""), "{other}");
        assert!(mode(None, false).is_err());
    }

    #[test]
    fn a_batch_is_split_byte_for_byte_and_bounded() {
        let (a, b) = (event("a", "a@example.com"), event("b", "b@example.com"));
        let body = format!("[ {a},\n{b} ]");
        let parts = split(Mode::Batch, body.as_bytes()).unwrap();
        assert_eq!(parts, [a.into_bytes(), b.into_bytes()]);
        assert_eq!(split(Mode::Structured, b"{}").unwrap(), [b"{}".to_vec()]);
        for bad in ["{}", "[]", "not json"] {
            let r = split(Mode::Batch, bad.as_bytes()).unwrap_err();
            assert_eq!(r.code, Code::Evt100, "{bad}");
        }
        let over = format!("[{}]", vec!["{}"; MAX_BATCH + 1].join(","));
        let r = split(Mode::Batch, over.as_bytes()).unwrap_err();
        assert!(r.message.contains("501 events"), "{}", r.message);
    }

    #[test]
    fn every_event_is_checked_by_the_intakes_code_and_a_batch_is_all_or_nothing() {
        let known = ["smartsheet".to_string()];
        let intake = IntakeConfig {
            allowed_sources: Some(vec!["hr".into()]),
            ..IntakeConfig::default()
        };
        let good = event("e1", "ada@example.com");
        let ok = check(vec![good.clone().into_bytes()], &known, &intake).unwrap();
        assert_eq!(ok[0].id, "e1");
        assert_eq!(ok[0].event_type, EventType::Offboarding);
        assert_eq!(ok[0].body, good.as_bytes());

        let bad_email = event("e2", "not-an-email");
        let stranger = good.replace(r#""source":"hr""#, r#""source":"intern""#);
        let refused = check(
            vec![
                good.into_bytes(),
                bad_email.into_bytes(),
                stranger.into_bytes(),
                b"[1]".to_vec(),
            ],
            &known,
            &intake,
        )
        .unwrap_err();
        let found: Vec<(usize, Code)> = refused
            .iter()
            .map(|r| (r.index, r.rejection.code))
            .collect();
        assert_eq!(
            found,
            [(1, Code::Evt102), (2, Code::Evt104), (3, Code::Evt101)]
        );
    }
}
