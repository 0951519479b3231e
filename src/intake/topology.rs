//! Upgrading the request queue in place (issue 23, README "Upgrading").
//!
//! A queue's arguments cannot change once it is declared: a release declaring
//! `offboard.requests` with other arguments than the one that made it is refused with
//! `PRECONDITION_FAILED`. RabbitMQ advises policies for properties that change, but AMQP
//! 0-9-1 cannot set them (that needs the management plugin, which offboard does not
//! require), so a release whose queue arguments differ moves to a queue of its own:
//!
//! 1. the configured name when it is free or already has this release's arguments (a new
//!    install keeps the contract's `offboard.requests`), otherwise the versioned name
//!    `<queue>.v<QUEUE_REVISION>`;
//! 2. that queue is bound to every routing key *before* the queue an earlier release
//!    left is unbound, so a published event always has a queue to go to;
//! 3. the consumer drains the earlier queue beside its own and deletes it once it is empty
//!    and no one else consumes it (an older worker still running keeps it alive).
//!
//! The configured name is preferred: a versioned queue is used only while the configured
//! one still has an earlier release's arguments. Once that one is gone, the next start
//! declares the configured name afresh and drains the versioned queue like any other.
//!
//! Every step is idempotent and runs on each (re)connection, so processes converge on
//! the same queue whichever starts first.

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::Connection;

use super::{declare_exchanges, durable_queue, request_queue_args, route_requests, Routing};
use crate::config::AmqpNames;

/// The revision of the request queue's arguments. 1: quorum with dead letters, no delivery
/// limit (releases before the fenced-lease work); 2: [`super::DELIVERY_LIMIT`] added.
/// Raise it whenever `request_queue_args` changes.
pub const QUEUE_REVISION: u32 = 2;

/// AMQP reply codes that close a channel and that the upgrade expects.
const NOT_FOUND: u16 = 404;
const PRECONDITION_FAILED: u16 = 406;

/// Where requests are consumed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The queue bound to the routing keys, with this release's arguments.
    pub queue: String,
    /// Queues earlier releases left, unbound now, to drain and delete.
    pub retiring: Vec<String>,
}

/// The name of the request queue of `revision` for the configured `base` name: the base
/// name itself for the first, `<base>.v<revision>` after.
pub fn revision_name(base: &str, revision: u32) -> String {
    if revision <= 1 {
        base.to_string()
    } else {
        format!("{base}.v{revision}")
    }
}

/// Every request queue name a release up to this one may have declared, oldest first.
pub fn known_names(base: &str) -> Vec<String> {
    (1..=QUEUE_REVISION)
        .map(|r| revision_name(base, r))
        .collect()
}

/// Declares the topology as [`super::declare`] does, moving to a versioned request queue
/// when an earlier release left the configured one with other arguments (see the module).
pub async fn declare_upgrading(conn: &Connection, names: &AmqpNames) -> lapin::Result<Topology> {
    let channel = conn.create_channel().await?;
    declare_exchanges(&channel, names).await?;
    let queue = if declares(conn, &names.queue, names).await? {
        names.queue.clone()
    } else {
        revision_name(&names.queue, QUEUE_REVISION)
    };
    channel
        .queue_declare(
            queue.as_str().into(),
            durable_queue(),
            request_queue_args(names),
        )
        .await?;
    route_requests(&channel, &queue, names, Routing::Bind).await?;
    let mut retiring = Vec::new();
    for name in known_names(&names.queue) {
        if name != queue && exists(conn, &name).await? {
            route_requests(&channel, &name, names, Routing::Unbind).await?;
            retiring.push(name);
        }
    }
    channel.close(200, "topology declared".into()).await?;
    Ok(Topology { queue, retiring })
}

/// What a queue holds and who reads it, from a passive declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLoad {
    /// Messages ready for delivery.
    pub messages: u32,
    /// Consumers attached (an older worker still draining it counts).
    pub consumers: u32,
}

/// What `queue` holds, `None` once it is gone.
pub async fn load(conn: &Connection, queue: &str) -> lapin::Result<Option<QueueLoad>> {
    let channel = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => {
            channel.close(200, "counted".into()).await?;
            Ok(Some(QueueLoad {
                messages: q.message_count(),
                consumers: q.consumer_count(),
            }))
        }
        Err(e) if reply_code(&e) == Some(NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes a retiring queue once it is empty and no one consumes it; whether it is gone.
/// Quorum queues refuse the `if-empty` and `if-unused` flags of `queue.delete` (with a
/// connection error), so both are checked here first. The queue is unbound, so nothing
/// new reaches it between the check and the delete.
pub async fn retire(conn: &Connection, queue: &str) -> lapin::Result<bool> {
    match load(conn, queue).await? {
        None => Ok(true),
        Some(QueueLoad {
            messages: 0,
            consumers: 0,
        }) => {
            let channel = conn.create_channel().await?;
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
            channel.close(200, "retired".into()).await?;
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

/// Whether `queue` exists (a passive declare, on a channel of its own: a 404 closes it).
async fn exists(conn: &Connection, queue: &str) -> lapin::Result<bool> {
    load(conn, queue).await.map(|l| l.is_some())
}

/// Declares `queue` with this release's arguments; `false` when it exists with others
/// (the 406 closes the channel, so it has one of its own).
async fn declares(conn: &Connection, queue: &str, names: &AmqpNames) -> lapin::Result<bool> {
    let channel = conn.create_channel().await?;
    match channel
        .queue_declare(queue.into(), durable_queue(), request_queue_args(names))
        .await
    {
        Ok(_) => {
            channel.close(200, "declared".into()).await?;
            Ok(true)
        }
        Err(e) if reply_code(&e) == Some(PRECONDITION_FAILED) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The AMQP reply code a channel was closed with, when that is what happened.
fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_revision_keeps_the_configured_name_and_later_ones_are_suffixed() {
        assert_eq!(revision_name("offboard.requests", 1), "offboard.requests");
        assert_eq!(
            revision_name("offboard.requests", 2),
            "offboard.requests.v2"
        );
        assert_eq!(
            known_names("q"),
            (1..=QUEUE_REVISION)
                .map(|r| revision_name("q", r))
                .collect::<Vec<_>>()
        );
        assert_eq!(known_names("q")[0], "q");
    }
}
