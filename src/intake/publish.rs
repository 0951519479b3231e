//! Publishing with publisher confirms: one event (`offboard submit`, the HTTP intake, a
//! bulk submit), and the send and confirm wait the outbox publisher shares.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use super::{open, topology, BrokerError, CONFIRM_TIMEOUT, CONNECT_TIMEOUT};
use crate::config::AmqpNames;
use crate::domain::admission::{self, Signed};

/// Waits for each confirm (and checks it is an ack), all within [`CONFIRM_TIMEOUT`].
pub(crate) async fn within_confirm_timeout<'a, C>(
    confirms: impl ExactSizeIterator<Item = (C, &'a str)>,
) -> Result<(), BrokerError>
where
    C: std::future::IntoFuture<Output = lapin::Result<lapin::Confirmation>>,
{
    let count = confirms.len();
    let all = async {
        for (confirm, routing_key) in confirms {
            confirmed(confirm.await?, routing_key)?;
        }
        Ok(())
    };
    tokio::time::timeout(CONFIRM_TIMEOUT, all)
        .await
        .unwrap_or(Err(BrokerError::ConfirmTimeout {
            count,
            secs: CONFIRM_TIMEOUT.as_secs(),
        }))
}

/// Sends one CloudEvents JSON message, with the Standard Webhooks headers when `signed`;
/// the returned future resolves to the broker's confirm.
pub(crate) async fn send(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    signed: Option<&Signed>,
) -> Result<lapin::PublisherConfirm, BrokerError> {
    let mut props = BasicProperties::default()
        .with_content_type("application/cloudevents+json".into())
        .with_delivery_mode(2);
    if let Some(signed) = signed {
        props = props.with_headers(signature_headers(signed));
    }
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .map_err(BrokerError::from)
}

/// The AMQP headers carrying a Standard Webhooks signature.
pub fn signature_headers(signed: &Signed) -> FieldTable {
    let mut headers = FieldTable::default();
    for (name, value) in [
        (admission::WEBHOOK_ID, signed.id.clone()),
        (admission::WEBHOOK_TIMESTAMP, signed.timestamp.to_string()),
        (admission::WEBHOOK_SIGNATURE, signed.signature.clone()),
    ] {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    headers
}

fn confirmed(confirm: lapin::Confirmation, routing_key: &str) -> Result<(), BrokerError> {
    if confirm.is_nack() {
        return Err(BrokerError::Refused(routing_key.to_string()));
    }
    Ok(())
}

/// Publishes one CloudEvents JSON message (signed when `signed` is given) and waits for
/// the broker's confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    signed: Option<&Signed>,
) -> Result<(), BrokerError> {
    let confirm = send(channel, exchange, routing_key, body, signed).await?;
    within_confirm_timeout(std::iter::once((confirm, routing_key))).await
}

/// `offboard submit`: declares the topology and publishes one event with confirms.
pub async fn submit(
    url: &str,
    names: &AmqpNames,
    routing_key: &str,
    body: &[u8],
) -> Result<(), BrokerError> {
    submit_signed(url, names, routing_key, body, None).await
}

/// [`submit`] with the Standard Webhooks headers of `signed`, when given.
pub async fn submit_signed(
    url: &str,
    names: &AmqpNames,
    routing_key: &str,
    body: &[u8],
    signed: Option<&Signed>,
) -> Result<(), BrokerError> {
    let (conn, channel) = open(url).await?;
    // A broker that accepted the connection but stops answering (declare, confirm) must
    // not hang the caller: the whole exchange has a bound, as connecting has.
    let exchange = async {
        topology::declare_upgrading(&conn, names)
            .await
            .map_err(BrokerError::Declare)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let confirm = send(&channel, &names.exchange, routing_key, body, signed)
            .await?
            .await?;
        confirmed(confirm, routing_key)
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(BrokerError::Unconfirmed(CONNECT_TIMEOUT.as_secs())));
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "done".into())).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A confirm that never comes fails the wait after [`CONFIRM_TIMEOUT`] instead of
    /// holding the publisher forever (time is paused: the test takes no wall time).
    #[tokio::test(start_paused = true)]
    async fn a_confirm_that_never_comes_times_out() {
        let never = std::future::pending::<lapin::Result<lapin::Confirmation>>();
        let started = tokio::time::Instant::now();
        let e = within_confirm_timeout(std::iter::once((never, "workflow.completed")))
            .await
            .unwrap_err();
        assert!(
            matches!(e, BrokerError::ConfirmTimeout { count: 1, secs: 10 }),
            "{e}"
        );
        assert_eq!(started.elapsed(), CONFIRM_TIMEOUT);
        let nack = std::future::ready(Ok(lapin::Confirmation::Nack(None)));
        let e = within_confirm_timeout(std::iter::once((nack, "workflow.failed")))
            .await
            .unwrap_err();
        assert!(matches!(e, BrokerError::Refused(_)), "{e}");
        let ack = std::future::ready(Ok(lapin::Confirmation::Ack(None)));
        assert!(
            within_confirm_timeout(std::iter::once((ack, "workflow.completed")))
                .await
                .is_ok()
        );
    }
}
