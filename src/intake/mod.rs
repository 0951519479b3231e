//! RabbitMQ: the connection, the topology (CONTRACT §1), and what comes in through it.
//! The consumer turns messages into workflows (`consumer.rs`, the broker-free half in
//! `receive.rs`), messages that cannot become one are dead-lettered (`dead_letter.rs`),
//! and `publish.rs` sends one event with confirms (`offboard submit`, the HTTP intake). The
//! completion events going out live in [`crate::outbox`]. Connections are re-established
//! with growing delays when the broker goes away.

mod consumer;
mod dead_letter;
pub mod link;
mod message;
mod publish;
mod receive;
pub mod topology;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::{redact_url, AmqpNames};
use crate::domain::event::EventType;

pub use consumer::consume;
pub use message::Message;
pub use publish::{publish, signature_headers, submit, submit_signed};
pub(crate) use publish::{send, within_confirm_timeout};
pub use receive::{receive, Received};

/// How long connecting to the broker may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the broker may take to confirm a publish (a completion event, a dead letter)
/// before the publish counts as failed: an outbox entry then stays in the outbox for the
/// sweeper, a delivery is not acknowledged.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The quorum queue's delivery limit, set explicitly: a message delivered this many times
/// without an ack is dropped by the broker to the dead-letter exchange. offboard
/// dead-letters it itself one delivery earlier, with `EVT-106`, so it is recorded.
pub const DELIVERY_LIMIT: i64 = 20;

/// Why talking to the broker failed. Each variant keeps lapin's error as its source; the
/// message names the step (connect, channel, declare, confirm) that failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker did not complete the handshake in time.
    #[error("cannot connect to RabbitMQ at {url}: no answer within {secs} s")]
    ConnectTimeout {
        /// The broker's URL, password hidden.
        url: String,
        /// How long it was given.
        secs: u64,
    },
    /// The broker refused the connection or could not be reached.
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        /// The broker's URL, password hidden.
        url: String,
        /// What lapin said.
        #[source]
        source: lapin::Error,
    },
    /// No channel was opened in time.
    #[error("cannot open an AMQP channel: no answer")]
    ChannelTimeout,
    /// The broker refused a channel.
    #[error("cannot open an AMQP channel: {0}")]
    Channel(#[source] lapin::Error),
    /// Exchanges, queues or bindings could not be declared.
    #[error("cannot declare the topology: {0}")]
    Declare(#[source] lapin::Error),
    /// Any other AMQP operation failed (qos, consume, publish, ack, the connection).
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// The broker answered a publish with a nack.
    #[error("the broker refused a {0} message")]
    Refused(String),
    /// The broker did not confirm in time.
    #[error("RabbitMQ did not confirm the event within {0} s")]
    Unconfirmed(u64),
    /// The broker did not confirm a dead letter.
    #[error("the broker did not confirm a dead letter: {0}")]
    DeadLetterUnconfirmed(#[source] lapin::Error),
    /// The broker did not confirm published messages within [`CONFIRM_TIMEOUT`].
    #[error("RabbitMQ did not confirm {count} message(s) within {secs} s")]
    ConfirmTimeout {
        /// How many were waiting.
        count: usize,
        /// How long they waited.
        secs: u64,
    },
    /// The broker cancelled the consumer.
    #[error("the consumer was cancelled by the broker")]
    ConsumerCancelled,
    /// Asked to stop while a delivery waited for the database.
    #[error("stopping while the database is unreachable")]
    StoppedWaitingForDatabase,
}

/// Opens a connection and a channel.
pub async fn open(url: &str) -> Result<(Connection, Channel), BrokerError> {
    open_named(url, "offboard").await
}

/// Opens a connection, named as the broker's tools will show it, and a channel; gives up
/// after ten seconds (a port that accepts TCP but never speaks AMQP included).
pub async fn open_named(url: &str, name: &str) -> Result<(Connection, Channel), BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
        .await
        .map_err(|_| BrokerError::ConnectTimeout {
            url: redact_url(url),
            secs: CONNECT_TIMEOUT.as_secs(),
        })?
        .map_err(|source| BrokerError::Connect {
            url: redact_url(url),
            source,
        })?;
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, conn.create_channel())
        .await
        .map_err(|_| BrokerError::ChannelTimeout)?
        .map_err(BrokerError::Channel)?;
    Ok((conn, channel))
}

/// Declares exchanges, queues and bindings under the configured names; safe to run any
/// number of times on a broker this release's topology is in place on (or none is).
/// Against a request queue a previous release declared with other arguments it fails
/// with `PRECONDITION_FAILED`: `serve`, `submit` and the consumer use
/// [`topology::declare_upgrading`], which moves to a versioned queue instead.
pub async fn declare(channel: &Channel, names: &AmqpNames) -> lapin::Result<()> {
    declare_exchanges(channel, names).await?;
    channel
        .queue_declare(
            names.queue.as_str().into(),
            durable_queue(),
            request_queue_args(names),
        )
        .await?;
    route_requests(channel, &names.queue, names, Routing::Bind).await
}

/// The options of every queue offboard declares.
fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// The request queue's arguments in this release: quorum, dead letters to the
/// dead-letter exchange, [`DELIVERY_LIMIT`]. Changing them needs a new
/// [`topology::QUEUE_REVISION`].
fn request_queue_args(names: &AmqpNames) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(names.dead_letter_exchange.as_str().into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args
}

/// The exchanges, the dead-letter queue and its binding.
async fn declare_exchanges(channel: &Channel, names: &AmqpNames) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            names.exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            names.dead_letter_queue.as_str().into(),
            durable_queue(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            names.dead_letter_queue.as_str().into(),
            names.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Whether [`route_requests`] gives a queue the event types' routing keys or takes them away.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Routing {
    /// The queue receives every event type published to the exchange.
    Bind,
    /// The queue receives no more events (a queue being retired by an upgrade).
    Unbind,
}

/// Binds `queue` to every event type's routing key on the exchange, or unbinds it.
pub(crate) async fn route_requests(
    channel: &Channel,
    queue: &str,
    names: &AmqpNames,
    routing: Routing,
) -> lapin::Result<()> {
    for t in EventType::ALL {
        let (queue, exchange, key) = (
            queue.into(),
            names.exchange.as_str().into(),
            t.as_str().into(),
        );
        match routing {
            Routing::Bind => {
                let options = QueueBindOptions::default();
                channel
                    .queue_bind(queue, exchange, key, options, FieldTable::default())
                    .await?
            }
            Routing::Unbind => {
                channel
                    .queue_unbind(queue, exchange, key, FieldTable::default())
                    .await?
            }
        }
    }
    Ok(())
}

/// Growing, jittered delays between reconnections to the broker (0.5 s up to 30 s).
pub(crate) fn reconnect_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}
