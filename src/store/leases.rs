//! Leases: who may drive a workflow, and the fenced appends that drive it.
//!
//! A claim is one statement using the database's clock: it hands a fresh lease (owner and
//! an epoch one higher than the last) on workflows no live lease holds, skipping rows
//! another claimer is taking (`FOR UPDATE SKIP LOCKED`; SQLite has one writer at a time).
//! Every append is a compare-and-set on (owner, epoch, trail position): when another
//! process has claimed the workflow since, it is refused with
//! [`StoreError::LeaseLost`](super::StoreError::LeaseLost) and nothing is written; when
//! only a note (a duplicate delivery) moved the trail on, it is chained after the note.
//! Each append also extends the lease, so a holder that writes is never overtaken.

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DbBackend, EntityTrait, QueryResult, Statement, TransactionTrait, Value,
};

use super::entities::audit;
use super::outbox::{self, OutboxEntry};
use super::sql::{storable, Dialect};
use super::sqlite;
use super::{Store, StoreError};
use crate::domain::chain;
use crate::domain::machine::{Record, State, Status};

/// The right to drive one workflow: handed out by a claim, presented by every write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The process (worker id) that holds it.
    pub owner: String,
    /// Which claim of the workflow this is; a later claim makes earlier leases stale.
    pub epoch: i64,
}

/// Where a workflow's trail ends: the position and hash the next record chains to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailEnd {
    /// Position of the last record, from 1.
    pub seq: i32,
    /// Its hash.
    pub head: String,
}

/// A workflow claimed for driving, with what the driver needs to start.
#[derive(Debug)]
pub struct Claim {
    /// The workflow.
    pub id: String,
    /// The lease to present.
    pub lease: Lease,
    /// Where its trail ends.
    pub end: TrailEnd,
    /// Its state.
    pub state: State,
    /// The content hash of its definition.
    pub definition_hash: String,
    /// Who asked to cancel it, if anyone has.
    pub cancel_requested_by: Option<String>,
}

/// What an append presents: the workflow, the lease, and where the holder believes its
/// trail ends.
#[derive(Clone, Copy, Debug)]
pub struct Fence<'a> {
    /// The workflow.
    pub id: &'a str,
    /// The lease held on it.
    pub lease: &'a Lease,
    /// The end of its trail as the holder knows it.
    pub end: &'a TrailEnd,
}

/// What an append left behind.
#[derive(Debug)]
pub struct Appended {
    /// The trail's new end.
    pub end: TrailEnd,
    /// Who asked to cancel the workflow and has no answer yet (read in the same statement).
    pub cancel_requested_by: Option<String>,
    /// The outbox entry written with it, for the writer to publish at once.
    pub outbox: Option<outbox::Pending>,
}

/// One record of an append, chained (see [`chain::chain_after`]).
type Link<'r> = chain::Chained<'r, Record>;

/// An append ready to write: the compare-and-set update with its values (more are added
/// for the inserts), the chained records, the outbox entry and the time it is written at.
struct PreparedAppend<'a> {
    update: String,
    values: Vec<Value>,
    id: &'a str,
    lease: &'a Lease,
    links: &'a [Link<'a>],
    outbox_entry: &'a Option<OutboxEntry>,
    at: DateTime<Utc>,
}

/// What a matched append wrote: the pending cancel request it read, the outbox entry.
type Written = (Option<String>, Option<outbox::Pending>);

/// The SQL condition of a workflow that may be claimed by the scheduler now: due (see
/// `due_at`, which a claim sets to the end of its lease) and held by no live lease.
pub(crate) fn due_condition(d: Dialect) -> String {
    let now = d.now();
    format!("due_at <= {now} AND (lease_until IS NULL OR lease_until < {now})")
}

/// The SQL list of the statuses the scheduler drives, for `state IN (…)`: built from
/// [`Status::SCHEDULABLE`].
pub(crate) fn schedulable_states() -> &'static str {
    static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let quoted: Vec<String> = Status::SCHEDULABLE
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        quoted.join(", ")
    });
    &LIST
}

/// `due_at` of a workflow `state` leaves behind when its holder gives the lease back: its
/// wake-up time (a completed workflow's next recheck too), `at` when it can run now,
/// nothing when nobody needs to look at it.
pub(crate) fn due_after(state: &State, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    state.is_schedulable().then(|| state.wake_at.unwrap_or(at))
}

const CLAIM_RETURNING: &str =
    "id, lease_epoch, trail_seq, trail_head, state_json, definition_hash, cancel_requested_by";

fn claim_from(row: &QueryResult, owner: &str) -> Result<Claim, StoreError> {
    let state_json: String = row.try_get("", "state_json")?;
    Ok(Claim {
        id: row.try_get("", "id")?,
        lease: Lease {
            owner: owner.to_string(),
            epoch: row.try_get("", "lease_epoch")?,
        },
        end: TrailEnd {
            seq: row.try_get("", "trail_seq")?,
            head: row.try_get("", "trail_head")?,
        },
        state: serde_json::from_str(&state_json)?,
        definition_hash: row.try_get("", "definition_hash")?,
        cancel_requested_by: row.try_get("", "cancel_requested_by")?,
    })
}

/// A lease this process holds, as the database sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    /// The workflow.
    pub id: String,
    /// The epoch of the claim that holds it.
    pub epoch: i64,
    /// Who asked to cancel it, if anyone has and no drive has answered yet.
    pub cancel_requested_by: Option<String>,
}

fn held_lease(row: &QueryResult) -> Result<HeldLease, StoreError> {
    Ok(HeldLease {
        id: row.try_get("", "id")?,
        epoch: row.try_get("", "lease_epoch")?,
        cancel_requested_by: row.try_get("", "cancel_requested_by")?,
    })
}

impl Store {
    /// Claims up to `limit` due workflows for `owner` for `lease_secs`, longest due first,
    /// skipping `in_flight` (workflows this process still drives: a lease of its own that
    /// lapsed during a database outage is not claimed again beside the drive that holds it).
    pub async fn claim_due(
        &self,
        owner: &str,
        lease_secs: f64,
        limit: usize,
        in_flight: &[String],
    ) -> Result<Vec<Claim>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let d = self.dialect();
        let skip = if in_flight.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = (0..in_flight.len())
                .map(|i| format!("${}", i + 3))
                .collect();
            format!(" AND id NOT IN ({})", list.join(", "))
        };
        let sql = format!(
            "UPDATE workflows SET lease_owner = $1, lease_epoch = lease_epoch + 1, \
             lease_until = {until}, due_at = {until} \
             WHERE id IN (SELECT id FROM workflows WHERE {due}{skip} \
                          ORDER BY due_at LIMIT $2 {lock}) \
             RETURNING {CLAIM_RETURNING}",
            until = d.later(lease_secs),
            due = due_condition(d),
            lock = d.skip_locked(),
        );
        let mut values: Vec<Value> = vec![owner.into(), (limit as i64).into()];
        values.extend(in_flight.iter().map(|id| id.as_str().into()));
        let rows = self.db.query_all_raw(d.stmt(&sql, values)).await?;
        rows.iter().map(|r| claim_from(r, owner)).collect()
    }

    /// Claims one workflow, whatever its state, if no live lease holds it (an operator's
    /// retry or cancel goes through the same fence as a worker).
    pub async fn claim(
        &self,
        id: &str,
        owner: &str,
        lease_secs: f64,
    ) -> Result<Option<Claim>, StoreError> {
        let d = self.dialect();
        let sql = format!(
            "UPDATE workflows SET lease_owner = $1, lease_epoch = lease_epoch + 1, \
             lease_until = {until}, due_at = CASE WHEN due_at IS NULL THEN NULL ELSE {until} END \
             WHERE id = $2 AND (lease_until IS NULL OR lease_until < {now}) \
             RETURNING {CLAIM_RETURNING}",
            until = d.later(lease_secs),
            now = d.now(),
        );
        let row = self
            .db
            .query_one_raw(d.stmt(&sql, vec![owner.into(), id.into()]))
            .await?;
        row.map(|r| claim_from(&r, owner)).transpose()
    }

    /// Extends the leases `owner` holds, each under the epoch it was claimed with (the
    /// drives it has in flight, and no others: a lease claimed again since is not
    /// extended for the drive that lost it). Returns the leases extended, each with the
    /// cancel request waiting on it.
    pub async fn renew(
        &self,
        owner: &str,
        leases: &[(String, i64)],
        lease_secs: f64,
    ) -> Result<Vec<HeldLease>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.dialect();
        let pairs: Vec<String> = (0..leases.len())
            .map(|i| format!("(id = ${} AND lease_epoch = ${})", 2 * i + 2, 2 * i + 3))
            .collect();
        let sql = format!(
            "UPDATE workflows SET lease_until = {until} WHERE lease_owner = $1 AND ({}) \
             RETURNING id, lease_epoch, cancel_requested_by",
            pairs.join(" OR "),
            until = d.later(lease_secs),
        );
        let mut values: Vec<Value> = vec![owner.into()];
        for (id, epoch) in leases {
            values.push(id.as_str().into());
            values.push((*epoch).into());
        }
        let rows = self.db.query_all_raw(d.stmt(&sql, values)).await?;
        rows.iter().map(held_lease).collect()
    }

    /// The cancel requests waiting on the leases `owner` holds (a cheap look through a
    /// partial index, made every second while drives are in flight, so a cancel asked
    /// from another process reaches the drive between its calls).
    pub async fn cancel_requests(&self, owner: &str) -> Result<Vec<HeldLease>, StoreError> {
        let d = self.dialect();
        let rows = self
            .db
            .query_all_raw(d.stmt(
                "SELECT id, lease_epoch, cancel_requested_by FROM workflows \
                 WHERE cancel_requested_by IS NOT NULL AND lease_owner = $1",
                vec![owner.into()],
            ))
            .await?;
        rows.iter().map(held_lease).collect()
    }

    /// Gives a lease back; with `defer_until`, the workflow is not due before then (a run
    /// that stopped on an error is not retried in a tight loop).
    pub async fn release(
        &self,
        id: &str,
        lease: &Lease,
        defer_until: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let d = self.dialect();
        let (defer, wake) = if defer_until.is_some() {
            (", wake_at = $4", "$4")
        } else {
            ("", "wake_at")
        };
        let sql = format!(
            "UPDATE workflows SET lease_owner = NULL, lease_until = NULL{defer}, \
             due_at = CASE WHEN state IN ({schedulable}) \
                      OR (state = '{completed}' AND wake_at IS NOT NULL) \
                      THEN COALESCE({wake}, {now}) END \
             WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3",
            now = d.now(),
            schedulable = schedulable_states(),
            completed = Status::Completed.as_str(),
        );
        let mut values: Vec<Value> =
            vec![id.into(), lease.owner.as_str().into(), lease.epoch.into()];
        if let Some(at) = defer_until {
            values.push(at.into());
        }
        self.db.execute_raw(d.stmt(&sql, values)).await?;
        Ok(())
    }

    /// Appends records (each with its time) to a workflow's trail and stores its new state,
    /// atomically, if the fence's lease still holds; an outbox entry, if any, is written
    /// with them. With `extend_secs` the lease is extended by that much; without, this
    /// append gives it back (the holder has nothing more to do now).
    pub async fn append(
        &self,
        fence: Fence<'_>,
        records: &[(DateTime<Utc>, Record)],
        state: &State,
        outbox_entry: Option<OutboxEntry>,
        extend_secs: Option<f64>,
    ) -> Result<Appended, StoreError> {
        let clear_cancel = records
            .iter()
            .any(|(_, r)| matches!(r, Record::Cancelled { .. } | Record::CancelRefused { .. }));
        let Fence { id, lease, end } = fence;
        let mut end = end.clone();
        // A note appended by a non-holder (a duplicate delivery) moves the trail on; the
        // holder then chains after it. Each retry follows a note that landed, so a burst
        // of redeliveries is absorbed; the bound only stops a trail that never settles.
        for _ in 0..64 {
            match self
                .try_append(
                    Fence {
                        id,
                        lease,
                        end: &end,
                    },
                    records,
                    state,
                    &outbox_entry,
                    extend_secs,
                    clear_cancel,
                )
                .await?
            {
                Ok(appended) => return Ok(appended),
                Err(moved) => end = moved,
            }
        }
        Err(StoreError::Corrupt(format!(
            "workflow {id}: the trail kept moving under its lease holder"
        )))
    }

    async fn try_append(
        &self,
        fence: Fence<'_>,
        records: &[(DateTime<Utc>, Record)],
        state: &State,
        outbox_entry: &Option<OutboxEntry>,
        extend_secs: Option<f64>,
        clear_cancel: bool,
    ) -> Result<Result<Appended, TrailEnd>, StoreError> {
        let Fence { id, lease, end } = fence;
        let d = self.dialect();
        let key = self.writing_key().await?;
        // Chain the records first: the row update carries the new head.
        let links = chain::chain_after(
            key,
            end.seq,
            &end.head,
            records.iter().map(|(at, r)| (*at, r)),
        )?;
        let (seq, prev, updated_at) = match links.last() {
            Some(last) => (last.seq, last.hash.clone(), last.at),
            None => (end.seq, end.head.clone(), chain::stored_time(Utc::now())),
        };
        let new_end = TrailEnd {
            seq,
            head: prev.clone(),
        };
        let (update, values) = fenced_update(
            d,
            fence,
            &new_end,
            updated_at,
            state,
            extend_secs,
            clear_cancel,
        )?;
        // The event carries the trail's final link, so a copy kept outside the database
        // can confirm the trail later.
        let outbox_entry = outbox_entry
            .as_ref()
            .map(|entry| outbox::with_trail_head(entry, &prev))
            .transpose()?;
        let append = PreparedAppend {
            update,
            values,
            id,
            lease,
            links: &links,
            outbox_entry: &outbox_entry,
            at: updated_at,
        };
        let written = if self.backend() == DbBackend::Postgres {
            self.append_in_one_statement(append).await?
        } else {
            self.append_in_transaction(append).await?
        };
        let Some((cancel_requested_by, outbox)) = written else {
            return self.why_refused(id, lease).await.map(Err);
        };
        Ok(Ok(Appended {
            end: TrailEnd { seq, head: prev },
            cancel_requested_by,
            outbox,
        }))
    }

    /// PostgreSQL: the compare-and-set update, the audit rows and the outbox entry in one
    /// statement (its own transaction), so a step boundary costs one round trip. The
    /// inserts only happen when the update matched its row.
    async fn append_in_one_statement(
        &self,
        mut append: PreparedAppend<'_>,
    ) -> Result<Option<Written>, StoreError> {
        let d = self.dialect();
        let (audit, outbox) = append.guarded_inserts(d, "EXISTS (SELECT 1 FROM w)");
        let mut sql = format!("WITH w AS ({})", append.update);
        if let Some(audit) = audit {
            sql += &format!(", a AS ({audit})");
        }
        let outbox_id = match outbox {
            Some(insert) => {
                sql += &format!(", o AS ({insert})");
                "(SELECT id FROM o)"
            }
            None => "NULL::bigint",
        };
        sql += &format!(" SELECT cancel_requested_by, {outbox_id} AS outbox_id FROM w");
        let Some(row) = self.db.query_one_raw(d.stmt(&sql, append.values)).await? else {
            return Ok(None);
        };
        let outbox = append
            .outbox_entry
            .as_ref()
            .map(|entry| pending(&row, "outbox_id", entry))
            .transpose()?;
        Ok(Some((row.try_get("", "cancel_requested_by")?, outbox)))
    }

    /// SQLite (no writes inside `WITH`): the same writes as consecutive statements sent
    /// together with their `BEGIN` and `COMMIT`, so a step boundary costs one trip to the
    /// connection's thread (see [`sqlite`]). Each insert runs only when the statement
    /// before it changed rows, that is when the compare-and-set matched; when it did not,
    /// the transaction commits nothing.
    async fn append_in_transaction(
        &self,
        mut append: PreparedAppend<'_>,
    ) -> Result<Option<Written>, StoreError> {
        let d = self.dialect();
        // Right after the update, `changes()` is 1 when it matched; after the audit
        // insert, it counts the rows that insert wrote.
        let (audit, outbox) = append.guarded_inserts(d, "changes() > 0");
        let sql = [Some(append.update), audit, outbox]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        let rows = sqlite::transaction(
            self.db.get_sqlite_connection_pool(),
            d.stmt(&sql, append.values),
        )
        .await?;
        // The update's row, then (with an outbox entry) the entry's id.
        let Some(updated) = rows.first() else {
            return Ok(None);
        };
        // A pending cancel request stays until a `cancelled` or `cancel_refused` record
        // answers it, so one asked during the last step is seen here and answered.
        let cancel: Option<String> = updated.try_get("", "cancel_requested_by")?;
        let outbox = match (append.outbox_entry, rows.get(1)) {
            (Some(entry), Some(row)) => Some(pending(row, "id", entry)?),
            (Some(_), None) => return Err(StoreError::Corrupt("outbox insert lost".into())),
            (None, _) => None,
        };
        Ok(Some((cancel, outbox)))
    }

    /// After a refused compare-and-set: the lease is gone, or only the trail moved on.
    async fn why_refused(&self, id: &str, lease: &Lease) -> Result<TrailEnd, StoreError> {
        let row = self.get(id).await?.ok_or(StoreError::LeaseLost)?;
        if row.lease_owner.as_deref() != Some(lease.owner.as_str())
            || row.lease_epoch != lease.epoch
        {
            return Err(StoreError::LeaseLost);
        }
        Ok(TrailEnd {
            seq: row.trail_seq,
            head: row.trail_head,
        })
    }

    /// Appends a record that changes no state (a note for auditors), whoever holds the
    /// workflow: the row is locked by moving its trail position first.
    pub async fn append_note(
        &self,
        id: &str,
        at: DateTime<Utc>,
        record: &Record,
    ) -> Result<(), StoreError> {
        let d = self.dialect();
        let key = self.writing_key().await?;
        let txn = self.db.begin().await?;
        let row = txn
            .query_one_raw(d.stmt(
                "UPDATE workflows SET trail_seq = trail_seq + 1 WHERE id = $1 \
                 RETURNING trail_seq, trail_head",
                vec![id.into()],
            ))
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("workflow {id} vanished")))?;
        let seq: i32 = row.try_get("", "trail_seq")?;
        let prev: String = row.try_get("", "trail_head")?;
        let hash = insert_record(&txn, key, id, seq, &prev, at, record).await?;
        let answered = if matches!(record, Record::CancelRefused { .. }) {
            ", cancel_requested_by = NULL"
        } else {
            ""
        };
        txn.execute_raw(d.stmt(
            &format!("UPDATE workflows SET trail_head = $1{answered} WHERE id = $2"),
            vec![hash.into(), id.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }
}

/// The compare-and-set update of an append: the new `state` and trail end (`new_end`,
/// written at `updated_at`) stored if the fence's lease and trail position still hold;
/// the lease extended by `extend_secs` or given back; a pending cancel request cleared
/// when the records answer it. Returns the SQL and its values ($1–$14, $15 when `due_at`
/// is set).
fn fenced_update(
    d: Dialect,
    fence: Fence<'_>,
    new_end: &TrailEnd,
    updated_at: DateTime<Utc>,
    state: &State,
    extend_secs: Option<f64>,
    clear_cancel: bool,
) -> Result<(String, Vec<Value>), StoreError> {
    let Fence { id, lease, end } = fence;
    let (seq, prev) = (new_end.seq, &new_end.head);
    let finished = state.status.is_final();
    // While the holder keeps the lease, `due_at` stays where the claim put it (the end
    // of the first lease): the due query passes over a held row by its lease, and an
    // update that leaves every indexed column alone stays on its page (PostgreSQL's
    // HOT update), so the per-step update adds no index entries. Given back, the
    // workflow is due as its state says.
    let (lease_set, due) = match extend_secs {
        Some(secs) if state.is_schedulable() => (
            format!(
                "lease_until = {until}, due_at = COALESCE(due_at, {until})",
                until = d.later(secs)
            ),
            None,
        ),
        Some(secs) => (
            format!("lease_until = {}, due_at = $15", d.later(secs)),
            Some(due_after(state, updated_at)),
        ),
        None => (
            "lease_owner = NULL, lease_until = NULL, due_at = $15".to_string(),
            Some(due_after(state, updated_at)),
        ),
    };
    // `finished_at` keeps the time of the end: records after it (rechecks, notes) do
    // not move it; a workflow reopened by `retry` has none.
    let update = format!(
        "UPDATE workflows SET state = $1, outcome = $2, error_code = $3, error_message = $4, \
         state_json = $5, trail_head = $6, trail_seq = $7, wake_at = $8, updated_at = $9, \
         finished_at = CASE WHEN $10 IS NULL THEN NULL ELSE COALESCE(finished_at, $10) END, \
         {lease_set}{cancel} \
         WHERE id = $11 AND lease_owner = $12 AND lease_epoch = $13 AND trail_seq = $14 \
         RETURNING cancel_requested_by",
        cancel = if clear_cancel {
            ", cancel_requested_by = NULL"
        } else {
            ""
        },
    );
    let mut values: Vec<Value> = vec![
        state.status.as_str().into(),
        state.outcome.map(|o| o.as_str().to_string()).into(),
        state.error_code.map(|c| c.as_str().to_string()).into(),
        state.error_message.as_deref().map(storable).into(),
        serde_json::to_string(state)?.into(),
        prev.clone().into(),
        seq.into(),
        state.wake_at.into(),
        updated_at.into(),
        (finished.then_some(updated_at)).into(),
        id.into(),
        lease.owner.as_str().into(),
        lease.epoch.into(),
        end.seq.into(),
    ];
    if let Some(due) = due {
        values.push(due.into());
    }
    Ok((update, values))
}

/// The PostgreSQL types of the audit columns an append inserts, in insert order.
const AUDIT_COLUMN_TYPES: [&str; 8] = [
    "text",
    "int",
    "timestamptz",
    "text",
    "int",
    "text",
    "text",
    "text",
];

impl PreparedAppend<'_> {
    /// The audit rows and the outbox entry as `INSERT … SELECT … WHERE {only_if}`
    /// statements (either `None` when there is nothing to insert), their values appended
    /// to the update's. The outbox entry is claimed by the lease's holder, which publishes
    /// it right after the commit.
    fn guarded_inserts(&mut self, d: Dialect, only_if: &str) -> (Option<String>, Option<String>) {
        let values = &mut self.values;
        let audit = (!self.links.is_empty()).then(|| {
            let rows: Vec<String> = self
                .links
                .iter()
                .map(|link| {
                    let n = values.len();
                    values.extend([
                        self.id.into(),
                        link.seq.into(),
                        link.at.into(),
                        link.record.kind().into(),
                        link.record.step().map(|s| s as i32).into(),
                        link.body.as_str().into(),
                        link.prev.as_str().into(),
                        link.hash.as_str().into(),
                    ]);
                    let params: Vec<String> = AUDIT_COLUMN_TYPES
                        .iter()
                        .enumerate()
                        .map(|(i, ty)| d.typed(n + i + 1, ty))
                        .collect();
                    format!("({})", params.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO audit_records (workflow_id, seq, at, kind, step, body, prev_hash, hash) \
                 SELECT * FROM (VALUES {}) AS v WHERE {only_if}",
                rows.join(", ")
            )
        });
        let outbox = self.outbox_entry.as_ref().map(|entry| {
            let n = values.len();
            values.extend([
                entry.routing_key.as_str().into(),
                entry.body.as_str().into(),
                self.at.into(),
                self.lease.owner.as_str().into(),
            ]);
            format!(
                "INSERT INTO outbox (routing_key, body, created_at, claimed_by, claimed_until) \
                 SELECT {}, {}, {}, {}, {until} WHERE {only_if} RETURNING id",
                d.typed(n + 1, "text"),
                d.typed(n + 2, "text"),
                d.typed(n + 3, "timestamptz"),
                d.typed(n + 4, "text"),
                until = d.later(outbox::CLAIM_SECS),
            )
        });
        (audit, outbox)
    }
}

/// The outbox entry an append inserted, its id read from `column` of `row`.
fn pending(
    row: &sea_orm::QueryResult,
    column: &str,
    entry: &OutboxEntry,
) -> Result<outbox::Pending, StoreError> {
    Ok(outbox::Pending {
        id: row.try_get("", column)?,
        entry: entry.clone(),
    })
}

/// Inserts one chained record, keyed with `key` if given; returns its link.
pub(crate) async fn insert_record(
    db: &impl ConnectionTrait,
    key: Option<&chain::AuditKey>,
    id: &str,
    seq: i32,
    prev: &str,
    at: DateTime<Utc>,
    record: &Record,
) -> Result<String, StoreError> {
    let mut links = chain::chain_after(key, seq - 1, prev, [(at, record)])?;
    let link = links.pop().expect("one record chains to one link");
    audit::Entity::insert(audit_row(id, &link))
        .exec_without_returning(db)
        .await?;
    Ok(link.hash)
}

/// The statement that leases a workflow being created (epoch 1) to the process handing it
/// off to itself, on the database's clock like every claim; and the lease.
pub(crate) fn lease_new(d: Dialect, id: &str, hand_off: &super::HandOff<'_>) -> (Statement, Lease) {
    let sql = format!(
        "UPDATE workflows SET lease_owner = $1, lease_epoch = 1, lease_until = {until}, \
         due_at = {until} WHERE id = $2",
        until = d.later(hand_off.lease_secs),
    );
    let lease = Lease {
        owner: hand_off.owner.to_string(),
        epoch: 1,
    };
    (d.stmt(&sql, vec![hand_off.owner.into(), id.into()]), lease)
}

/// The audit row of one chained record of workflow `id`.
pub(crate) fn audit_row(id: &str, link: &Link<'_>) -> audit::ActiveModel {
    use sea_orm::Set;
    audit::ActiveModel {
        workflow_id: Set(id.to_string()),
        seq: Set(link.seq),
        at: Set(link.at),
        kind: Set(link.record.kind().to_string()),
        step: Set(link.record.step().map(|s| s as i32)),
        body: Set(link.body.clone()),
        prev_hash: Set(link.prev.clone()),
        hash: Set(link.hash.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_list_of_schedulable_states_is_the_domain_s() {
        assert_eq!(schedulable_states(), "'pending', 'running', 'retrying'");
        for status in Status::ALL {
            let listed = schedulable_states().contains(&format!("'{}'", status.as_str()));
            assert_eq!(listed, status.is_schedulable(), "{}", status.as_str());
        }
    }
}
