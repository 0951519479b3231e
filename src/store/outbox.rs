//! The outbox: `workflow.completed` / `workflow.failed` events written in the same
//! transaction as the record that ended the workflow, then published with confirms.
//!
//! Each entry is claimed: first by the process that wrote it, which publishes it right
//! after its commit; if that process dies or cannot publish, its claim lapses and a
//! sweeper in any process claims it (`FOR UPDATE SKIP LOCKED`). An entry is deleted once
//! the broker confirms it, so in normal operation each is published once, however many
//! processes run.

use sea_orm::{ConnectionTrait, DbErr, QueryResult};

use super::{Store, StoreError};

/// How long a claim on an entry holds before a sweeper may take it: the writer publishes
/// within milliseconds, so this only bounds how long a dead writer's entries wait.
pub(crate) const CLAIM_SECS: f64 = 10.0;

/// An event to publish once the transaction that decided it commits.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    /// AMQP routing key.
    pub routing_key: String,
    /// CloudEvents JSON.
    pub body: String,
}

/// A stored entry, claimed by the process holding it.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Row id.
    pub id: i64,
    /// What to publish.
    pub entry: OutboxEntry,
}

fn pending_from(row: &QueryResult) -> Result<Pending, DbErr> {
    Ok(Pending {
        id: row.try_get("", "id")?,
        entry: OutboxEntry {
            routing_key: row.try_get("", "routing_key")?,
            body: row.try_get("", "body")?,
        },
    })
}

/// `entry` with `data.trail_head` set to `head`, the final link of the workflow's audit
/// chain (known before the commit: the store computes every link from the fence's end).
pub(crate) fn with_trail_head(entry: &OutboxEntry, head: &str) -> Result<OutboxEntry, StoreError> {
    let mut body: serde_json::Value = serde_json::from_str(&entry.body)?;
    if let Some(data) = body.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.insert("trail_head".into(), head.into());
    }
    Ok(OutboxEntry {
        routing_key: entry.routing_key.clone(),
        body: body.to_string(),
    })
}

impl Store {
    /// Renews `owner`'s claim on an entry just before publishing it; `false` when a
    /// sweeper took it over (it then publishes it, not us).
    pub async fn reclaim_outbox(&self, id: i64, owner: &str) -> Result<bool, StoreError> {
        let d = self.dialect();
        let sql = format!(
            "UPDATE outbox SET claimed_until = {until} WHERE id = $1 AND claimed_by = $2",
            until = d.later(CLAIM_SECS),
        );
        let done = self
            .db
            .execute_raw(d.stmt(&sql, vec![id.into(), owner.into()]))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims up to `limit` entries whose claim lapsed (their writer died or could not
    /// publish), oldest first.
    pub async fn sweep_outbox(&self, owner: &str, limit: u64) -> Result<Vec<Pending>, StoreError> {
        let d = self.dialect();
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until = {until} \
             WHERE id IN (SELECT id FROM outbox \
                          WHERE claimed_until IS NULL OR claimed_until < {now} \
                          ORDER BY id LIMIT $2 {lock}) \
             RETURNING id, routing_key, body",
            until = d.later(CLAIM_SECS),
            now = d.now(),
            lock = d.skip_locked(),
        );
        let rows = self
            .db
            .query_all_raw(d.stmt(&sql, vec![owner.into(), (limit as i64).into()]))
            .await?;
        Ok(rows.iter().map(pending_from).collect::<Result<_, _>>()?)
    }

    /// Removes entries the broker confirmed.
    pub async fn delete_outbox(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let d = self.dialect();
        let list: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!("DELETE FROM outbox WHERE id IN ({})", list.join(", "));
        self.db
            .execute_raw(d.stmt(&sql, ids.iter().map(|&i| i.into()).collect()))
            .await?;
        Ok(())
    }

    /// How many entries wait to be published (for tests and operators).
    pub async fn outbox_len(&self) -> Result<u64, StoreError> {
        let d = self.dialect();
        let row = self
            .db
            .query_one_raw(d.stmt("SELECT COUNT(*) AS n FROM outbox", vec![]))
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0) as u64)
    }
}
