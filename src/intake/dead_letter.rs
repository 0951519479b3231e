//! Dead letters: a rejected message recorded (with its code) and published to the
//! dead-letter exchange, the broker's confirm awaited before the delivery is acknowledged.

use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use tracing::warn;

use super::receive::Message;
use super::{BrokerError, CONFIRM_TIMEOUT};
use crate::domain::event::{self, Rejection};
use crate::runtime::engine::{Engine, EngineError};

/// Records a rejected message as a dead letter, counts and logs it.
pub(super) async fn record(
    engine: &Engine,
    message: &Message<'_>,
    rejection: &Rejection,
) -> Result<(), EngineError> {
    let event_id = readable_event_id(message.body);
    engine
        .store()
        .dead_letter(
            rejection.code.as_str(),
            &rejection.message,
            event_id.as_deref(),
            message.routing_key,
            message.body,
        )
        .await?;
    metrics::counter!("offboard_dead_letters_total", "code" => rejection.code.as_str())
        .increment(1);
    warn!(code = %rejection.code, reason = %rejection.message.escape_debug(), event_id = ?event_id, "event dead-lettered");
    Ok(())
}

/// The body's CloudEvent `id`, when it has one, cut to [`event::limits::ID`] bytes: a
/// dead letter names the event it was, even when the id is what was wrong with it.
fn readable_event_id(body: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let id = value.get("id")?.as_str()?;
    let mut end = id.len().min(event::limits::ID);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    Some(id[..end].to_string())
}

/// Publishes a rejected message (already recorded by [`receive`]) to the dead-letter
/// exchange with its code and waits for the broker's confirm.
pub(super) async fn publish_dead_letter(
    engine: &Engine,
    dlx: &Channel,
    delivery: &Delivery,
    rejection: &Rejection,
) -> Result<(), BrokerError> {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-error-code".into(),
        AMQPValue::LongString(rejection.code.as_str().into()),
    );
    headers.insert(
        "x-error-message".into(),
        AMQPValue::LongString(LongString::from(rejection.message.as_str())),
    );
    let mut props = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2);
    if let Some(ct) = delivery.properties.content_type() {
        props = props.with_content_type(ct.clone());
    }
    let confirm = dlx
        .basic_publish(
            engine.config().amqp.dead_letter_exchange.as_str().into(),
            delivery.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &delivery.data,
            props,
        )
        .await?;
    // Unconfirmed in time, the delivery is not acknowledged: it comes back after the
    // reconnect, and is recorded once more.
    tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| BrokerError::ConfirmTimeout {
            count: 1,
            secs: CONFIRM_TIMEOUT.as_secs(),
        })?
        .map_err(BrokerError::DeadLetterUnconfirmed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_names_the_event_even_by_an_over_long_id() {
        let body = serde_json::json!({ "id": "é".repeat(1000) }).to_string();
        let id = readable_event_id(body.as_bytes()).unwrap();
        assert!(id.len() <= event::limits::ID && id.starts_with('é'));
        assert_eq!(readable_event_id(b"not json"), None);
        assert_eq!(readable_event_id(br#"{"id":7}"#), None);
    }
}
