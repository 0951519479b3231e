//! The consumer: deliveries from the request queue (and from queues an earlier release
//! left) handled a prefetch window at a time, each acknowledged after what it created is
//! committed; paused while the database is unreachable, a message the database refuses
//! dead-lettered after a few tries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::dead_letter::{publish_dead_letter, record};
use super::receive::{receive, Message, Received};
use super::{link, open_named, reconnect_delays, topology, BrokerError};
use crate::codes::Code;
use crate::domain::admission::{self, SignatureHeaders};
use crate::domain::event::Rejection;
use crate::runtime::engine::{Engine, EngineError};

/// How many times a message is tried whose storing fails for a reason of its own (the
/// database answered, and refused) before it is dead-lettered with `EVT-107`.
const STORE_ATTEMPTS: u32 = 3;

/// The wait before trying such a message again, doubled each time.
const STORE_RETRY_DELAY: Duration = Duration::from_millis(100);

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
