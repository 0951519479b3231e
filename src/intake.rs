//! RabbitMQ: the topology (CONTRACT §1), the consumer that turns messages into workflows,
//! dead-lettering of messages that cannot become one, the publisher that drains the
//! outbox (§2) with publisher confirms, and `submit`'s one-shot publish. Connections are
//! re-established with growing delays when the broker goes away.

pub mod link;
pub mod topology;

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
use crate::domain::admission::{self, SignatureHeaders, SignaturePolicy, Signed};
use crate::domain::event::{self, EventType, Rejection};
use crate::runtime::engine::{Engine, EngineError};
use crate::store::{Accepted, Pending};

/// How long connecting to the broker may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the broker may take to confirm a publish (a completion event, a dead letter)
/// before the publish counts as failed: an outbox entry then stays in the outbox for the
/// sweeper, a delivery is not acknowledged.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a message is tried whose storing fails for a reason of its own (the
/// database answered, and refused) before it is dead-lettered with `EVT-107`.
const STORE_ATTEMPTS: u32 = 3;

/// The wait before trying such a message again, doubled each time.
const STORE_RETRY_DELAY: Duration = Duration::from_millis(100);

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
    bind_requests(channel, &names.queue, names).await
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

/// Binds `queue` to every event type's routing key on the exchange.
async fn bind_requests(channel: &Channel, queue: &str, names: &AmqpNames) -> lapin::Result<()> {
    for t in EventType::ALL {
        channel
            .queue_bind(
                queue.into(),
                names.exchange.as_str().into(),
                t.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
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
    let topology = topology::declare_upgrading(&conn, names)
        .await
        .map_err(BrokerError::Declare)?;
    channel
        .basic_qos(names.prefetch, BasicQosOptions::default())
        .await?;
    let dlx = conn.create_channel().await?;
    dlx.confirm_select(ConfirmSelectOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            topology.queue.as_str().into(),
            format!("offboard-{}", std::process::id()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!(queue = %topology.queue, "consuming events");
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
    // Queues an earlier release left are drained beside this one's, then deleted.
    let drains = futures_util::future::try_join_all(
        topology
            .retiring
            .iter()
            .map(|queue| drain_retiring(engine, &conn, &dlx, queue, &stop, &paused)),
    );
    tokio::pin!(drains);
    let mut draining = !topology.retiring.is_empty();
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
            drained = &mut drains, if draining => {
                drained?;
                draining = false;
            }
        }
    }
}

/// How often a retiring queue is looked at: whether it is empty, whether it may go.
const RETIRE_CHECK: Duration = Duration::from_secs(1);

/// Consumes a request queue an earlier release left (see [`topology`]) one message at a
/// time until it is empty, then deletes it; while an older worker still consumes it the
/// delete is refused and draining goes on.
async fn drain_retiring(
    engine: &Arc<Engine>,
    conn: &Connection,
    dlx: &Channel,
    queue: &str,
    shutdown: &watch::Receiver<bool>,
    paused: &AtomicBool,
) -> Result<(), BrokerError> {
    let mut check = tokio::time::interval(RETIRE_CHECK);
    info!(queue = %queue, "draining a request queue an earlier release left");
    loop {
        if topology::load(conn, queue).await?.is_none() {
            return Ok(());
        }
        let channel = conn.create_channel().await?;
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                format!("offboard-{}-retiring", std::process::id()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        loop {
            tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(delivery) => {
                        handle(engine, dlx, delivery?, shutdown.clone(), paused).await?
                    }
                    // Deleted by another worker that drained it first.
                    None => return Ok(()),
                },
                _ = check.tick() => match topology::load(conn, queue).await? {
                    Some(load) if load.messages > 0 => {}
                    _ => break,
                },
            }
        }
        // Closing hands back anything delivered since the count; the delete then refuses.
        channel.close(200, "retiring queue drained".into()).await?;
        if topology::retire(conn, queue).await? {
            info!(queue = %queue, "deleted the drained request queue of an earlier release");
            return Ok(());
        }
        check.tick().await;
    }
}

/// Why a delivery could not be handled.
enum HandleError {
    /// The broker connection failed: reconnect (the delivery comes back).
    Broker(BrokerError),
    /// The database failed: see [`is_outage`].
    Store(EngineError),
}

/// Whether an engine error is the database going away (hold the delivery until it is
/// back) rather than a refusal tied to the message (try it a few times, then dead-letter).
fn is_outage(e: &EngineError) -> bool {
    matches!(e, EngineError::Store(s) if s.is_outage())
}

/// Turns one delivery into workflows (ack after commit) or a dead letter (ack after the
/// dead letter is recorded and confirmed). While the database is unreachable the delivery
/// is held and tried again, so consumption pauses: no nack storm, and no valid event is
/// dead-lettered for an outage. A message the database refuses while reachable is tried
/// [`STORE_ATTEMPTS`] times, then dead-lettered with `EVT-107`: no message holds an intake
/// place for long.
async fn handle(
    engine: &Arc<Engine>,
    dlx: &Channel,
    delivery: Delivery,
    mut shutdown: watch::Receiver<bool>,
    paused: &AtomicBool,
) -> Result<(), BrokerError> {
    let mut delays = reconnect_delays();
    let mut refusals = 0;
    loop {
        let outcome = if refusals < STORE_ATTEMPTS {
            try_handle(engine, dlx, &delivery).await
        } else {
            dead_letter_unstorable(engine, dlx, &delivery, refusals).await
        };
        let delay = match outcome {
            Ok(()) => break,
            Err(HandleError::Broker(e)) => return Err(e),
            Err(HandleError::Store(e)) if is_outage(&e) => {
                if !paused.swap(true, Ordering::SeqCst) {
                    error!(error = %e, "the database is unreachable; intake paused until it is back");
                }
                delays
                    .next()
                    .unwrap_or(Duration::from_secs(30))
                    .min(Duration::from_secs(5))
            }
            Err(HandleError::Store(e)) => {
                refusals += 1;
                warn!(error = %e, attempt = refusals, of = STORE_ATTEMPTS, "the database refused to store an event");
                STORE_RETRY_DELAY * 2u32.pow(refusals - 1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            // Unacknowledged, the delivery goes back to the queue when we close.
            _ = shutdown.changed() => return Err(BrokerError::StoppedWaitingForDatabase),
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
    /// The signature headers it came with.
    pub signature: SignatureHeaders<'a>,
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
/// the delivery limit, the signature, the parse (with its bounds), the allowed sources
/// and recipients, then either the event's workflows are stored
/// ([`Engine::accept_reserved`], handed to this process's work loop when one runs) or the
/// rejection is recorded as a dead letter. `Err` is a database failure: nothing was
/// decided.
pub async fn receive(engine: &Engine, message: &Message<'_>) -> Result<Received, EngineError> {
    let rejection = match decide(engine, message).await? {
        Ok(accepted) => return Ok(Received::Accepted(accepted)),
        Err(rejection) => rejection,
    };
    record(engine, message, &rejection).await?;
    Ok(Received::DeadLettered(rejection))
}

/// Records a rejected message as a dead letter, counts and logs it.
async fn record(
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
    let intake = &engine.config().intake;
    if let Some(rejection) = signature_rejection(intake, message) {
        return Ok(Err(rejection));
    }
    let known: Vec<String> = engine.config().connections.keys().cloned().collect();
    let request = match event::parse(message.body, &known).and_then(|r| {
        admission::check_source(intake.allowed_sources.as_deref(), &r.source)?;
        admission::check_recipient(
            intake.recipient_domains.as_deref(),
            r.transfer_to.as_deref(),
        )?;
        Ok(r)
    }) {
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
    let headers = delivery.properties.headers().as_ref();
    let header = |name: &str| headers.and_then(|h| text_header(h, name));
    let (id, timestamp, signature, legacy) = (
        header(admission::WEBHOOK_ID),
        header(admission::WEBHOOK_TIMESTAMP),
        header(admission::WEBHOOK_SIGNATURE),
        header(admission::LEGACY_SIGNATURE),
    );
    let message = Message {
        body: &delivery.data,
        routing_key: delivery.routing_key.as_str(),
        signature: SignatureHeaders {
            id: id.as_deref(),
            timestamp: timestamp.as_deref(),
            signature: signature.as_deref(),
            legacy: legacy.as_deref(),
        },
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

/// Dead-letters a delivery the database refused `refusals` times with `EVT-107`. When
/// even its record is refused (and the database is up), it is published to the
/// dead-letter exchange unrecorded rather than held: the error is logged.
async fn dead_letter_unstorable(
    engine: &Arc<Engine>,
    dlx: &Channel,
    delivery: &Delivery,
    refusals: u32,
) -> Result<(), HandleError> {
    let rejection = Rejection {
        code: Code::Evt107,
        message: format!("the database refused to store the event {refusals} times"),
    };
    let message = Message {
        body: &delivery.data,
        routing_key: delivery.routing_key.as_str(),
        signature: SignatureHeaders::default(),
        delivery_count: None,
    };
    match record(engine, &message, &rejection).await {
        Ok(()) => {}
        Err(e) if is_outage(&e) => return Err(HandleError::Store(e)),
        Err(e) => {
            error!(error = %e, code = %rejection.code, "cannot record a dead letter; publishing it unrecorded")
        }
    }
    publish_dead_letter(engine, dlx, delivery, &rejection)
        .await
        .map_err(HandleError::Broker)
}

/// A text header's value (AMQP long or short string), as the intake reads it.
fn text_header(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Why a message's signature is refused, when `[intake] signing_key_env` asks for one.
fn signature_rejection(intake: &IntakeConfig, message: &Message<'_>) -> Option<Rejection> {
    let keys = match intake.signing_keys() {
        Ok(keys) => keys,
        Err(why) => {
            return Some(Rejection {
                code: Code::Evt105,
                message: why.to_string(),
            })
        }
    };
    let policy = SignaturePolicy {
        keys: &keys,
        tolerance_secs: intake.signature_tolerance_secs,
        accept_legacy: intake.accept_legacy_signatures,
    };
    let now = chrono::Utc::now().timestamp();
    admission::check_signature(&policy, &message.signature, message.body, now).err()
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
                match publish_batch(&channel, exchange, &batch).await {
                    Ok(()) => {}
                    // Left claimed in the outbox: once the claim lapses, a sweep (this
                    // process's, after the reconnect, or another's) publishes them.
                    Err(e @ BrokerError::ConfirmTimeout { .. }) => {
                        warn!(error = %e, "completion events left in the outbox for the sweeper");
                        return Err(e);
                    }
                    Err(e) => {
                        carried = batch;
                        return Err(e);
                    }
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

/// Publishes every entry, then waits for all their confirms, for at most
/// [`CONFIRM_TIMEOUT`].
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
                None,
            )
            .await?,
        );
    }
    let keys = batch.iter().map(|p| p.entry.routing_key.as_str());
    within_confirm_timeout(confirms.into_iter().zip(keys)).await
}

/// Waits for each confirm (and checks it is an ack), all within [`CONFIRM_TIMEOUT`].
async fn within_confirm_timeout<'a, C>(
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
async fn send(
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

    #[test]
    fn a_dead_letter_names_the_event_even_by_an_over_long_id() {
        let body = serde_json::json!({ "id": "é".repeat(1000) }).to_string();
        let id = readable_event_id(body.as_bytes()).unwrap();
        assert!(id.len() <= event::limits::ID && id.starts_with('é'));
        assert_eq!(readable_event_id(b"not json"), None);
        assert_eq!(readable_event_id(br#"{"id":7}"#), None);
    }
}
