//! RabbitMQ: the topology (CONTRACT §1), the consumer that turns messages into workflows,
//! dead-lettering of messages that cannot become one, the publisher that drains the
//! outbox (§2) with publisher confirms, and `submit`'s one-shot publish. Connections are
//! re-established with growing delays when the broker goes away.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{redact_url, AmqpNames};
use crate::domain::event::{self, EventType, Rejection};
use crate::runtime::engine::Engine;

/// Opens a connection and a channel.
pub async fn open(url: &str) -> Result<(Connection, Channel), String> {
    open_named(url, "offboard").await
}

/// Opens a connection, named as the broker's tools will show it, and a channel.
pub async fn open_named(url: &str, name: &str) -> Result<(Connection, Channel), String> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let conn = Connection::connect(url, properties)
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ at {}: {e}", redact_url(url)))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open an AMQP channel: {e}"))?;
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
pub async fn consume(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut delays = reconnect_delays();
    while !*shutdown.borrow() {
        match consume_once(&engine, &mut shutdown).await {
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
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let names = &engine.config().amqp;
    let name = format!("offboard consumer {}", names.queue);
    let (conn, channel) = open_named(&engine.config().amqp_url, &name).await?;
    declare(&channel, names)
        .await
        .map_err(|e| format!("cannot declare the topology: {e}"))?;
    channel
        .basic_qos(names.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let dlx = conn.create_channel().await.map_err(|e| e.to_string())?;
    dlx.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut consumer = channel
        .basic_consume(
            names.queue.as_str().into(),
            format!("offboard-{}", std::process::id()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    info!(queue = %names.queue, "consuming events");
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = conn.close(200, "offboard is stopping".into()).await;
                return Ok(());
            }
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => handle(engine, &dlx, delivery).await?,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the consumer was cancelled by the broker".into()),
            },
        }
    }
}

/// Turns one delivery into workflows (ack after commit) or a dead letter (ack after the
/// dead letter is confirmed and recorded). A database failure leaves it for redelivery.
async fn handle(engine: &Arc<Engine>, dlx: &Channel, delivery: Delivery) -> Result<(), String> {
    let known: Vec<String> = engine.config().connections.keys().cloned().collect();
    let body = &delivery.data;
    let outcome = match event::parse(body, &known) {
        Err(rejection) => Err(rejection),
        Ok(request) => {
            let text = String::from_utf8_lossy(body);
            match engine.accept(&request, &text).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(rejection)) => Err(rejection),
                Err(e) => {
                    error!(error = %e, "could not store an event; it will be redelivered");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string());
                }
            }
        }
    };
    if let Err(rejection) = outcome {
        dead_letter(engine, dlx, &delivery, &rejection).await?;
    }
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn dead_letter(
    engine: &Arc<Engine>,
    dlx: &Channel,
    delivery: &Delivery,
    rejection: &Rejection,
) -> Result<(), String> {
    let event_id = serde_json::from_slice::<serde_json::Value>(&delivery.data)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
    warn!(code = %rejection.code, reason = %rejection.message, event_id = ?event_id, "event dead-lettered");
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
    let routing_key = delivery.routing_key.as_str().to_string();
    dlx.basic_publish(
        engine.config().amqp.dead_letter_exchange.as_str().into(),
        routing_key.as_str().into(),
        BasicPublishOptions::default(),
        &delivery.data,
        props,
    )
    .await
    .map_err(|e| e.to_string())?
    .await
    .map_err(|e| format!("the broker did not confirm a dead letter: {e}"))?;
    engine
        .store()
        .dead_letter(
            rejection.code.as_str(),
            &rejection.message,
            event_id.as_deref(),
            &routing_key,
            &delivery.data,
        )
        .await
        .map_err(|e| format!("cannot record a dead letter: {e}"))
}

/// Publishes outbox entries with confirms until `shutdown`, reconnecting as needed.
pub async fn publish_outbox(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut delays = reconnect_delays();
    while !*shutdown.borrow() {
        let result = async {
            let name = format!("offboard publisher {}", engine.config().amqp.exchange);
            let (_conn, channel) = open_named(&engine.config().amqp_url, &name).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            loop {
                for entry in engine
                    .store()
                    .unpublished(100)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    publish(
                        &channel,
                        &engine.config().amqp.exchange,
                        &entry.routing_key,
                        entry.body.as_bytes(),
                    )
                    .await?;
                    engine
                        .store()
                        .mark_published(entry.id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.changed() => return Ok::<(), String>(()),
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

/// Publishes one CloudEvents JSON message and waits for the broker's confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> Result<(), String> {
    let props = BasicProperties::default()
        .with_content_type("application/cloudevents+json".into())
        .with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    if confirm.is_nack() {
        return Err(format!("the broker refused a {routing_key} message"));
    }
    Ok(())
}

/// `offboard submit`: declares the topology and publishes one event with confirms.
pub async fn submit(
    url: &str,
    names: &AmqpNames,
    routing_key: &str,
    body: &[u8],
) -> Result<(), String> {
    let (conn, channel) = open(url).await?;
    declare(&channel, names)
        .await
        .map_err(|e| format!("cannot declare the topology: {e}"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    publish(&channel, &names.exchange, routing_key, body).await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
