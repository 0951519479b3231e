//! RabbitMQ: the topology (CONTRACT §1), the consumer that turns messages into workflows,
//! dead-lettering of messages that cannot become one, the publisher that drains the
//! outbox (§2) with publisher confirms, and `submit`'s one-shot publish. Connections are
//! re-established with growing delays when the broker goes away.

pub mod link;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::codes::Code;
use crate::config::{redact_url, AmqpNames, IntakeConfig};
use crate::domain::admission;
use crate::domain::event::{self, EventType, Rejection};
use crate::runtime::engine::{Engine, EngineError};
use crate::store::{Accepted, Pending};

/// How long connecting to the broker may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Declares exchanges, queues and bindings; safe to run any number of times.
pub async fn declare(channel: &Channel, names: &AmqpNames) -> lapin::Result<()> {
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
    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
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
    channel
        .queue_declare(names.queue.as_str().into(), queue, args)
        .await?;
    channel
        .queue_declare(
            names.dead_letter_queue.as_str().into(),
            queue,
            FieldTable::default(),
        )
        .await?;
    for t in EventType::ALL {
        channel
            .queue_bind(
                names.queue.as_str().into(),
                names.exchange.as_str().into(),
                t.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
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

fn reconnect_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Consumes events until `shutdown`, reconnecting whenever the broker connection drops.
/// The connection's status is lent to `link` while it is held (for readiness).
pub async fn consume(
    engine: Arc<Engine>,
    link: link::BrokerLink,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delays = reconnect_delays();
    while !*shutdown.borrow() {
        match consume_once(&engine, &link, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "event intake lost its broker connection");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

async fn consume_once(
    engine: &Arc<Engine>,
    link: &link::BrokerLink,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), BrokerError> {
    let names = &engine.config().amqp;
    let name = format!("offboard consumer {}", names.queue);
    let (conn, channel) = open_named(&engine.config().amqp_url, &name).await?;
    let _lent = link.hold(conn.status());
    declare(&channel, names)
        .await
        .map_err(BrokerError::Declare)?;
    channel
        .basic_qos(names.prefetch, BasicQosOptions::default())
        .await?;
    let dlx = conn.create_channel().await?;
    dlx.confirm_select(ConfirmSelectOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            names.queue.as_str().into(),
            format!("offboard-{}", std::process::id()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!(queue = %names.queue, "consuming events");
    // The whole prefetch window is handled at once (each delivery acked after its own
    // commit); the work loop's free places pace the accepts.
    let paused = Arc::new(AtomicBool::new(false));
    let stop = shutdown.clone();
    let mut handled = consumer
        .map(|delivery| {
            let (engine, dlx, shutdown) = (engine.clone(), dlx.clone(), stop.clone());
            let paused = paused.clone();
            async move { handle(&engine, &dlx, delivery?, shutdown, &paused).await }
        })
        .buffer_unordered(usize::from(names.prefetch.max(1)));
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = conn.close(200, "offboard is stopping".into()).await;
                return Ok(());
            }
            outcome = handled.next() => match outcome {
                Some(outcome) => outcome?,
                None => return Err(BrokerError::ConsumerCancelled),
            },
        }
    }
}

/// Why a delivery could not be handled.
enum HandleError {
    /// The broker connection failed: reconnect (the delivery comes back).
    Broker(BrokerError),
    /// The database failed: hold the delivery and try it again when the database is back.
    Store(EngineError),
}

/// Turns one delivery into workflows (ack after commit) or a dead letter (ack after the
/// dead letter is recorded and confirmed). While the database is unreachable the delivery
/// is held and tried again, so consumption pauses: no nack storm, and no valid event is
/// dead-lettered for an outage.
async fn handle(
    engine: &Arc<Engine>,
    dlx: &Channel,
    delivery: Delivery,
    mut shutdown: watch::Receiver<bool>,
    paused: &AtomicBool,
) -> Result<(), BrokerError> {
    let mut delays = reconnect_delays();
    loop {
        match try_handle(engine, dlx, &delivery).await {
            Ok(()) => break,
            Err(HandleError::Broker(e)) => return Err(e),
            Err(HandleError::Store(e)) => {
                let delay = delays
                    .next()
                    .unwrap_or(Duration::from_secs(30))
                    .min(Duration::from_secs(5));
                if !paused.swap(true, Ordering::SeqCst) {
                    error!(error = %e, "the database is unreachable; intake paused until it is back");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    // Unacknowledged, the delivery goes back to the queue when we close.
                    _ = shutdown.changed() => return Err(BrokerError::StoppedWaitingForDatabase),
                }
            }
        }
    }
    if paused.swap(false, Ordering::SeqCst) {
        info!("the database is back; intake resumed");
    }
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map(drop)
        .map_err(BrokerError::from)
}

/// A message as the intake reads it, whoever carried it: the broker's consumer, or
/// `offboard demo`, which has no broker.
pub struct Message<'a> {
    /// The CloudEvents JSON, as received.
    pub body: &'a [u8],
    /// Where it was published (the event type, by convention); kept with a dead letter.
    pub routing_key: &'a str,
    /// The `x-offboard-signature` header, if any.
    pub signature: Option<&'a str>,
    /// How many times the broker delivered it before (`x-delivery-count`), if it says.
    pub delivery_count: Option<i64>,
}

/// What became of a message.
#[derive(Debug)]
pub enum Received {
    /// Its workflows are stored (or it was a duplicate, or it is held by the brake).
    Accepted(Accepted),
    /// It was rejected and the dead letter recorded; the consumer still publishes it to
    /// the dead-letter exchange.
    DeadLettered(Rejection),
}

/// The broker-free half of handling a message, the same for the consumer and the demo:
/// the delivery limit, the signature, the parse, the allowed sources, then either the
/// event's workflows are stored ([`Engine::accept_reserved`], handed to this process's
/// work loop when one runs) or the rejection is recorded as a
/// dead letter. `Err` is a database failure: nothing was decided, try again later.
pub async fn receive(engine: &Engine, message: &Message<'_>) -> Result<Received, EngineError> {
    let rejection = match decide(engine, message).await? {
        Ok(accepted) => return Ok(Received::Accepted(accepted)),
        Err(rejection) => rejection,
    };
    let event_id = serde_json::from_slice::<serde_json::Value>(message.body)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
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
    Ok(Received::DeadLettered(rejection))
}

/// Accepts the message or says why not.
async fn decide(
    engine: &Engine,
    message: &Message<'_>,
) -> Result<Result<Accepted, Rejection>, EngineError> {
    if let Some(count) = message.delivery_count.filter(|n| *n >= DELIVERY_LIMIT - 1) {
        return Ok(Err(Rejection {
            code: Code::Evt106,
            message: format!("delivered {} times without being processed", count + 1),
        }));
    }
    if let Some(rejection) = signature_rejection(&engine.config().intake, message) {
        return Ok(Err(rejection));
    }
    let known: Vec<String> = engine.config().connections.keys().cloned().collect();
    let allowed = engine.config().intake.allowed_sources.as_deref();
    let request = match event::parse(message.body, &known)
        .and_then(|r| admission::check_source(allowed, &r.source).map(|()| r))
    {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let text = String::from_utf8_lossy(message.body);
    let place = engine.reserve().await;
    let accepted = engine.accept_reserved(&request, &text, place).await?;
    if let (Ok(_), Some(t)) = (&accepted, request.time) {
        metrics::histogram!("offboard_intake_lag_seconds")
            .record((chrono::Utc::now() - t).as_seconds_f64().max(0.0));
    }
    Ok(accepted)
}

/// [`receive`] for a broker delivery, then the rejected ones published to the
/// dead-letter exchange with their code, the broker's confirm awaited.
async fn try_handle(
    engine: &Arc<Engine>,
    dlx: &Channel,
    delivery: &Delivery,
) -> Result<(), HandleError> {
    let signature = delivery.properties.headers().as_ref().and_then(|h| {
        match h.inner().get(admission::SIGNATURE_HEADER) {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            _ => None,
        }
    });
    let message = Message {
        body: &delivery.data,
        routing_key: delivery.routing_key.as_str(),
        signature: signature.as_deref(),
        delivery_count: delivery_count(delivery),
    };
    match receive(engine, &message)
        .await
        .map_err(HandleError::Store)?
    {
        Received::Accepted(_) => Ok(()),
        Received::DeadLettered(rejection) => publish_dead_letter(engine, dlx, delivery, &rejection)
            .await
            .map_err(HandleError::Broker),
    }
}

/// Why a message's signature is refused, when `[intake] signing_key_env` asks for one.
fn signature_rejection(intake: &IntakeConfig, message: &Message<'_>) -> Option<Rejection> {
    let key = match intake.signing_key() {
        Ok(None) => return None,
        Ok(Some(key)) => key,
        Err(why) => {
            return Some(Rejection {
                code: Code::Evt105,
                message: why.to_string(),
            })
        }
    };
    admission::check_signature(key.expose().as_bytes(), message.body, message.signature).err()
}

/// How many times the broker delivered this message before (quorum queues count it).
fn delivery_count(delivery: &Delivery) -> Option<i64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-delivery-count")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Publishes a rejected message (already recorded by [`receive`]) to the dead-letter
/// exchange with its code and waits for the broker's confirm.
async fn publish_dead_letter(
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
    dlx.basic_publish(
        engine.config().amqp.dead_letter_exchange.as_str().into(),
        delivery.routing_key.as_str().into(),
        BasicPublishOptions::default(),
        &delivery.data,
        props,
    )
    .await?
    .await
    .map_err(BrokerError::DeadLetterUnconfirmed)?;
    Ok(())
}

/// How often a publisher looks for entries whose writer could not publish them.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// An entry handed over this recently is published without renewing its claim first
/// (the claim lasts 10 s): no sweeper can have taken it yet.
const FRESH: Duration = Duration::from_secs(3);

/// Publishes outbox entries with confirms until `shutdown`, reconnecting as needed: the
/// entries this process commits, right after their commit, and — every few seconds — any
/// entry whose writer's claim lapsed, claimed so that only one process publishes it.
/// Entries are published in batches (all confirms awaited together) and deleted in one
/// statement per batch.
pub async fn publish_outbox(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let Some(mut fresh) = engine.take_outbox() else {
        return;
    };
    let owner = engine.worker_id().to_string();
    let store = engine.store();
    let mut delays = reconnect_delays();
    // Entries taken but not confirmed when the broker went away: published first after
    // reconnecting (once their claim is renewed).
    let mut carried: Vec<Pending> = Vec::new();
    while !*shutdown.borrow() {
        let result = async {
            let name = format!("offboard publisher {}", engine.config().amqp.exchange);
            let (_conn, channel) = open_named(&engine.config().amqp_url, &name).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let exchange = &engine.config().amqp.exchange;
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                let batch = tokio::select! {
                    biased;
                    _ = shutdown.changed() => return Ok::<(), BrokerError>(()),
                    _ = std::future::ready(()), if !carried.is_empty() => {
                        renewed(store, &owner, std::mem::take(&mut carried)).await
                    }
                    Some(first) = fresh.recv() => {
                        let (mut recent, mut old) = (Vec::new(), Vec::new());
                        let mut next = Some(first);
                        while let Some((handed_at, pending)) = next {
                            if handed_at.elapsed() < FRESH {
                                recent.push(pending);
                            } else {
                                old.push(pending);
                            }
                            next = fresh.try_recv().ok();
                        }
                        recent.extend(renewed(store, &owner, old).await);
                        recent
                    }
                    _ = sweep.tick() => match store.sweep_outbox(&owner, 100).await {
                        Ok(found) => found,
                        Err(e) => {
                            warn!(error = %e, "cannot look for unpublished outbox entries");
                            Vec::new()
                        }
                    },
                };
                if batch.is_empty() {
                    continue;
                }
                if let Err(e) = publish_batch(&channel, exchange, &batch).await {
                    carried = batch;
                    return Err(e);
                }
                let ids: Vec<i64> = batch.iter().map(|p| p.id).collect();
                if let Err(e) = store.delete_outbox(&ids).await {
                    warn!(error = %e, "cannot delete published outbox entries");
                }
            }
        }
        .await;
        if let Err(e) = result {
            let delay = delays.next().unwrap_or(Duration::from_secs(30));
            warn!(error = %e, "event publisher lost its broker connection");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The entries whose claim `owner` could renew (a sweeper took the others over).
async fn renewed(store: &crate::store::Store, owner: &str, entries: Vec<Pending>) -> Vec<Pending> {
    let mut mine = Vec::with_capacity(entries.len());
    for p in entries {
        match store.reclaim_outbox(p.id, owner).await {
            Ok(true) => mine.push(p),
            Ok(false) => {}
            // Left claimed; a sweep publishes it once the claim lapses.
            Err(e) => warn!(error = %e, "cannot renew an outbox claim"),
        }
    }
    mine
}

/// Publishes every entry, then waits for all their confirms.
async fn publish_batch(
    channel: &Channel,
    exchange: &str,
    batch: &[Pending],
) -> Result<(), BrokerError> {
    let mut confirms = Vec::with_capacity(batch.len());
    for p in batch {
        confirms.push(
            send(
                channel,
                exchange,
                &p.entry.routing_key,
                p.entry.body.as_bytes(),
            )
            .await?,
        );
    }
    for (confirm, p) in confirms.into_iter().zip(batch) {
        confirmed(confirm.await?, &p.entry.routing_key)?;
    }
    Ok(())
}

/// Sends one CloudEvents JSON message; the returned future resolves to the broker's
/// confirm.
async fn send(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> Result<lapin::PublisherConfirm, BrokerError> {
    send_with(channel, exchange, routing_key, body, None).await
}

/// [`send`], with the `x-offboard-signature` header when `signature` is given.
async fn send_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<lapin::PublisherConfirm, BrokerError> {
    let mut props = BasicProperties::default()
        .with_content_type("application/cloudevents+json".into())
        .with_delivery_mode(2);
    if let Some(signature) = signature {
        let mut headers = FieldTable::default();
        headers.insert(
            admission::SIGNATURE_HEADER.into(),
            AMQPValue::LongString(signature.into()),
        );
        props = props.with_headers(headers);
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

fn confirmed(confirm: lapin::Confirmation, routing_key: &str) -> Result<(), BrokerError> {
    if confirm.is_nack() {
        return Err(BrokerError::Refused(routing_key.to_string()));
    }
    Ok(())
}

/// Publishes one CloudEvents JSON message and waits for the broker's confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> Result<(), BrokerError> {
    let confirm = send(channel, exchange, routing_key, body).await?.await?;
    confirmed(confirm, routing_key)
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

/// [`submit`] with a signature for the `x-offboard-signature` header, when given.
pub async fn submit_signed(
    url: &str,
    names: &AmqpNames,
    routing_key: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), BrokerError> {
    let (conn, channel) = open(url).await?;
    // A broker that accepted the connection but stops answering (declare, confirm) must
    // not hang the caller: the whole exchange has a bound, as connecting has.
    let exchange = async {
        declare(&channel, names)
            .await
            .map_err(BrokerError::Declare)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let confirm = send_with(&channel, &names.exchange, routing_key, body, signature)
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
