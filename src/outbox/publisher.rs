//! The outbox publisher: completion events published with confirms right after the
//! commit that wrote them, and a sweeper for those whose writer could not.

use std::time::{Duration, Instant};

use lapin::options::ConfirmSelectOptions;
use lapin::Channel;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::config::Config;
use crate::intake::{open_named, reconnect_delays, send, within_confirm_timeout, BrokerError};
use crate::store::{Pending, Store};

/// How often a publisher looks for entries whose writer could not publish them.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// An entry handed over this recently is published without renewing its claim first
/// (the claim lasts 10 s): no sweeper can have taken it yet.
const FRESH: Duration = Duration::from_secs(3);

/// What a publisher works with, handed over by the process that runs it (the runtime
/// writes the entries; the publisher needs none of its parts).
pub struct Outbox {
    /// The entries this process's commits hand over, with when they were handed over.
    pub fresh: mpsc::UnboundedReceiver<(Instant, Pending)>,
    /// The database holding the outbox.
    pub store: Store,
    /// The worker id entries are claimed under.
    pub owner: String,
    /// The broker's URL and names.
    pub config: Config,
}

/// Publishes outbox entries with confirms until `shutdown`, reconnecting as needed: the
/// entries this process commits, right after their commit, and — every few seconds — any
/// entry whose writer's claim lapsed, claimed so that only one process publishes it.
/// Entries are published in batches (all confirms awaited together) and deleted in one
/// statement per batch.
pub async fn publish_outbox(outbox: Outbox, mut shutdown: watch::Receiver<bool>) {
    let Outbox {
        mut fresh,
        store,
        owner,
        config,
    } = outbox;
    let store = &store;
    let mut delays = reconnect_delays();
    // Entries taken but not confirmed when the broker went away: published first after
    // reconnecting (once their claim is renewed).
    let mut carried: Vec<Pending> = Vec::new();
    while !*shutdown.borrow() {
        let result = async {
            let name = format!("offboard publisher {}", config.amqp.exchange);
            let (_conn, channel) = open_named(&config.amqp_url, &name).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let exchange = &config.amqp.exchange;
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                let batch = tokio::select! {
                    biased;
                    _ = shutdown.changed() => return Ok::<(), BrokerError>(()),
                    _ = std::future::ready(()), if !carried.is_empty() => {
                        renewed(store, &owner, std::mem::take(&mut carried)).await
                    }
                    Some(first) = fresh.recv() => {
                        handed_over(first, &mut fresh, store, &owner).await
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

/// The entries handed over by this process's commits, `first` and any others waiting:
/// those handed over within [`FRESH`] as they are, older ones only if their claim could
/// be renewed.
async fn handed_over(
    first: (Instant, Pending),
    fresh: &mut mpsc::UnboundedReceiver<(Instant, Pending)>,
    store: &Store,
    owner: &str,
) -> Vec<Pending> {
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
    recent.extend(renewed(store, owner, old).await);
    recent
}

/// The entries whose claim `owner` could renew (a sweeper took the others over).
async fn renewed(store: &Store, owner: &str, entries: Vec<Pending>) -> Vec<Pending> {
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
