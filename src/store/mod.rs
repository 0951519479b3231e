//! Persistence over sea-orm, for SQLite and PostgreSQL alike: received events (the
//! idempotency keys), workflows with their machine state, the hash-chained audit trail,
//! dead letters, and the outbox of events to publish. Every change to a workflow appends
//! its records and updates its row in one transaction.

pub mod entities;

use std::time::Duration;

use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use crate::domain::chain::{self, GENESIS};
use crate::domain::definition::Definition;
use crate::domain::event::Request;
use crate::domain::machine::{Record, State, Status};
use entities::{audit, dead_letter, definition, event, outbox, workflow};

/// A database handle.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

/// A workflow to create for an accepted event.
pub struct NewWorkflow {
    /// Its id.
    pub id: String,
    /// The definition it runs with.
    pub definition: Definition,
    /// Its first record (`Created`).
    pub created: Record,
    /// The state after that record.
    pub state: State,
}

/// What became of an event handed to [`Store::accept`].
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored, with this many workflows.
    New(usize),
    /// The id was seen before; nothing was stored.
    Duplicate,
}

/// A workflow loaded for running or replaying.
pub struct Loaded {
    /// The row.
    pub row: workflow::Model,
    /// The machine state.
    pub state: State,
    /// The definition source it started with.
    pub definition_source: String,
}

/// An event to publish once the transaction that decided it commits.
pub struct OutboxEntry {
    /// AMQP routing key.
    pub routing_key: String,
    /// CloudEvents JSON.
    pub body: String,
}

fn json_err(e: serde_json::Error) -> DbErr {
    DbErr::Custom(format!("stored JSON is unreadable: {e}"))
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store, DbErr> {
        let mut options = ConnectOptions::new(url.to_string());
        options
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // One writer at a time is all SQLite offers; a single connection avoids
            // "database is locked" between our own tasks.
            options.max_connections(1);
        } else {
            options.max_connections(10);
        }
        let db = Database::connect(options).await?;
        Migrator::up(&db, None).await?;
        Ok(Store { db })
    }

    /// The raw connection (tests use it to tamper with rows).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Stores an event and its workflows, unless its id was seen before.
    pub async fn accept(
        &self,
        request: &Request,
        body: &str,
        workflows: &[NewWorkflow],
    ) -> Result<Accepted, DbErr> {
        if event::Entity::find_by_id(request.event_id.clone())
            .one(&self.db)
            .await?
            .is_some()
        {
            return Ok(Accepted::Duplicate);
        }
        let now = chain::stored_time(Utc::now());
        let txn = self.db.begin().await?;
        let inserted = event::ActiveModel {
            id: Set(request.event_id.clone()),
            event_type: Set(request.event_type.as_str().to_string()),
            source: Set(request.source.clone()),
            event_time: Set(request.time),
            body: Set(body.to_string()),
            received_at: Set(now),
        }
        .insert(&txn)
        .await;
        if inserted.is_err() {
            // Another consumer stored the same id a moment ago.
            txn.rollback().await?;
            let seen = event::Entity::find_by_id(request.event_id.clone())
                .one(&self.db)
                .await?;
            return match (seen, inserted) {
                (Some(_), _) => Ok(Accepted::Duplicate),
                (None, Err(e)) => Err(e),
                (None, Ok(_)) => unreachable!("insert failed above"),
            };
        }
        for wf in workflows {
            save_definition(&txn, &wf.definition, now).await?;
            let body = serde_json::to_string(&wf.created).map_err(json_err)?;
            row_for(wf, &chain::link(GENESIS, 1, now, &body), now)?
                .insert(&txn)
                .await?;
            insert_record(&txn, &wf.id, 1, GENESIS, now, &wf.created).await?;
        }
        txn.commit().await?;
        Ok(Accepted::New(workflows.len()))
    }

    /// Records a message that could not become a workflow.
    pub async fn dead_letter(
        &self,
        code: &str,
        message: &str,
        event_id: Option<&str>,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), DbErr> {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned();
        dead_letter::ActiveModel {
            received_at: Set(Utc::now()),
            code: Set(code.to_string()),
            message: Set(message.to_string()),
            event_id: Set(event_id.map(str::to_string)),
            routing_key: Set(routing_key.to_string()),
            body: Set(excerpt),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map(drop)
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<dead_letter::Model>, DbErr> {
        dead_letter::Entity::find()
            .order_by_asc(dead_letter::Column::Id)
            .all(&self.db)
            .await
    }

    /// Ids of unfinished workflows that are due and not claimed, oldest first.
    pub async fn due(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<String>, DbErr> {
        let open = [Status::Pending, Status::Running, Status::Retrying].map(|s| s.as_str());
        workflow::Entity::find()
            .select_only()
            .column(workflow::Column::Id)
            .filter(workflow::Column::State.is_in(open))
            .filter(
                workflow::Column::WakeAt
                    .is_null()
                    .or(workflow::Column::WakeAt.lte(now)),
            )
            .filter(
                workflow::Column::LeaseUntil
                    .is_null()
                    .or(workflow::Column::LeaseUntil.lt(now)),
            )
            .order_by_asc(workflow::Column::CreatedAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await
    }

    /// The earliest future wake-up among unfinished workflows.
    pub async fn next_wake(&self) -> Result<Option<DateTime<Utc>>, DbErr> {
        let open = [Status::Pending, Status::Retrying].map(|s| s.as_str());
        let next: Option<Option<DateTime<Utc>>> = workflow::Entity::find()
            .select_only()
            .column(workflow::Column::WakeAt)
            .filter(workflow::Column::State.is_in(open))
            .filter(workflow::Column::WakeAt.is_not_null())
            .order_by_asc(workflow::Column::WakeAt)
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(next.flatten())
    }

    /// Claims a workflow for `owner` until `until`, if nobody holds it.
    pub async fn claim(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let result = workflow::Entity::update_many()
            .col_expr(workflow::Column::LeaseOwner, Expr::value(owner))
            .col_expr(workflow::Column::LeaseUntil, Expr::value(until))
            .filter(workflow::Column::Id.eq(id))
            .filter(
                workflow::Column::LeaseUntil
                    .is_null()
                    .or(workflow::Column::LeaseUntil.lt(now))
                    .or(workflow::Column::LeaseOwner.eq(owner)),
            )
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Extends every claim `owner` holds.
    pub async fn renew(&self, owner: &str, until: DateTime<Utc>) -> Result<(), DbErr> {
        workflow::Entity::update_many()
            .col_expr(workflow::Column::LeaseUntil, Expr::value(until))
            .filter(workflow::Column::LeaseOwner.eq(owner))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Gives a claim back.
    pub async fn release(&self, id: &str, owner: &str) -> Result<(), DbErr> {
        workflow::Entity::update_many()
            .col_expr(
                workflow::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                workflow::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(workflow::Column::Id.eq(id))
            .filter(workflow::Column::LeaseOwner.eq(owner))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Keeps a workflow out of [`Store::due`] until `until` (after a run that stopped on an
    /// error, so a persistent fault is not retried in a tight loop).
    pub async fn defer(&self, id: &str, until: DateTime<Utc>) -> Result<(), DbErr> {
        workflow::Entity::update_many()
            .col_expr(workflow::Column::WakeAt, Expr::value(until))
            .filter(workflow::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Asks the worker running a workflow to cancel it at the next step boundary.
    pub async fn request_cancel(&self, id: &str, by: &str) -> Result<(), DbErr> {
        workflow::Entity::update_many()
            .col_expr(workflow::Column::CancelRequestedBy, Expr::value(by))
            .filter(workflow::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// One workflow row.
    pub async fn get(&self, id: &str) -> Result<Option<workflow::Model>, DbErr> {
        workflow::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
    }

    /// A workflow with its state and definition.
    pub async fn load(&self, id: &str) -> Result<Option<Loaded>, DbErr> {
        let Some(row) = self.get(id).await? else {
            return Ok(None);
        };
        let state = serde_json::from_str(&row.state_json).map_err(json_err)?;
        let definition_source = definition::Entity::find_by_id(row.definition_hash.clone())
            .one(&self.db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(format!("definition {}", row.definition_hash)))?
            .source;
        Ok(Some(Loaded {
            row,
            state,
            definition_source,
        }))
    }

    /// Workflows, newest first, optionally only those in one state.
    pub async fn list(&self, state: Option<Status>) -> Result<Vec<workflow::Model>, DbErr> {
        let mut q = workflow::Entity::find()
            .order_by_desc(workflow::Column::CreatedAt)
            .order_by_desc(workflow::Column::Id);
        if let Some(s) = state {
            q = q.filter(workflow::Column::State.eq(s.as_str()));
        }
        q.all(&self.db).await
    }

    /// The workflows an event created.
    pub async fn by_event(&self, event_id: &str) -> Result<Vec<workflow::Model>, DbErr> {
        workflow::Entity::find()
            .filter(workflow::Column::EventId.eq(event_id))
            .order_by_asc(workflow::Column::Connection)
            .all(&self.db)
            .await
    }

    /// A workflow's trail, by position.
    pub async fn trail(&self, id: &str) -> Result<Vec<audit::Model>, DbErr> {
        audit::Entity::find()
            .filter(audit::Column::WorkflowId.eq(id))
            .order_by_asc(audit::Column::Seq)
            .order_by_asc(audit::Column::Id)
            .all(&self.db)
            .await
    }

    /// Appends records to a workflow's trail and stores its new state, atomically; an
    /// outbox entry, if any, is written in the same transaction.
    pub async fn append(
        &self,
        id: &str,
        records: &[(DateTime<Utc>, Record)],
        state: &State,
        outbox_entry: Option<OutboxEntry>,
    ) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        let row = lock_workflow(&txn, id).await?;
        let (mut seq, mut prev) = last_link(&txn, id).await?;
        let mut last_at = row.updated_at;
        for (at, record) in records {
            let at = chain::stored_time(*at);
            seq += 1;
            prev = insert_record(&txn, id, seq, &prev, at, record).await?;
            last_at = at;
        }
        let mut active: workflow::ActiveModel = row.into();
        active.state = Set(state.status.as_str().to_string());
        active.outcome = Set(state.outcome.map(|o| o.as_str().to_string()));
        active.error_code = Set(state.error_code.map(|c| c.as_str().to_string()));
        active.error_message = Set(state.error_message.clone());
        active.state_json = Set(serde_json::to_string(state).map_err(json_err)?);
        active.trail_head = Set(prev);
        active.wake_at = Set(state.wake_at);
        active.updated_at = Set(last_at);
        if state.status.is_final() {
            active.finished_at = Set(Some(last_at));
            active.cancel_requested_by = Set(None);
        } else {
            active.finished_at = Set(None);
        }
        active.update(&txn).await?;
        if let Some(entry) = outbox_entry {
            outbox::ActiveModel {
                routing_key: Set(entry.routing_key),
                body: Set(entry.body),
                created_at: Set(last_at),
                published_at: Set(None),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
        txn.commit().await
    }

    /// Appends a record that changes no state, leaving the stored state as it is.
    pub async fn append_note(
        &self,
        id: &str,
        at: DateTime<Utc>,
        record: &Record,
    ) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        lock_workflow(&txn, id).await?;
        let (seq, prev) = last_link(&txn, id).await?;
        let hash = insert_record(&txn, id, seq + 1, &prev, at, record).await?;
        workflow::Entity::update_many()
            .col_expr(workflow::Column::TrailHead, Expr::value(hash))
            .filter(workflow::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await
    }

    /// Outbox entries not yet published, oldest first.
    pub async fn unpublished(&self, limit: u64) -> Result<Vec<outbox::Model>, DbErr> {
        outbox::Entity::find()
            .filter(outbox::Column::PublishedAt.is_null())
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Marks an outbox entry published.
    pub async fn mark_published(&self, id: i64) -> Result<(), DbErr> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::PublishedAt, Expr::value(Utc::now()))
            .filter(outbox::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map(drop)
    }
}

/// Reads a workflow row and, on PostgreSQL, locks it to the end of the transaction, so
/// appends to one trail take turns (SQLite's single connection already serialises them).
async fn lock_workflow(txn: &DatabaseTransaction, id: &str) -> Result<workflow::Model, DbErr> {
    let mut query = workflow::Entity::find_by_id(id.to_string());
    if txn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    query
        .one(txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("workflow {id}")))
}

/// The position and hash of a workflow's last record (0 and the genesis hash if none).
async fn last_link(db: &impl ConnectionTrait, id: &str) -> Result<(i32, String), DbErr> {
    let last: Option<(i32, String)> = audit::Entity::find()
        .select_only()
        .column(audit::Column::Seq)
        .column(audit::Column::Hash)
        .filter(audit::Column::WorkflowId.eq(id))
        .order_by_desc(audit::Column::Seq)
        .into_tuple()
        .one(db)
        .await?;
    Ok(last.unwrap_or((0, GENESIS.to_string())))
}

/// Inserts one chained record; returns its hash.
async fn insert_record(
    db: &impl ConnectionTrait,
    id: &str,
    seq: i32,
    prev: &str,
    at: DateTime<Utc>,
    record: &Record,
) -> Result<String, DbErr> {
    let at = chain::stored_time(at);
    let body = serde_json::to_string(record).map_err(json_err)?;
    let hash = chain::link(prev, seq, at, &body);
    audit::ActiveModel {
        workflow_id: Set(id.to_string()),
        seq: Set(seq),
        at: Set(at),
        kind: Set(record.kind().to_string()),
        step: Set(record.step().map(|s| s as i32)),
        body: Set(body),
        prev_hash: Set(prev.to_string()),
        hash: Set(hash.clone()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(hash)
}

async fn save_definition(
    db: &impl ConnectionTrait,
    def: &Definition,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let model = definition::ActiveModel {
        hash: Set(def.hash.clone()),
        name: Set(def.name.clone()),
        version: Set(def.version as i32),
        source: Set(def.source.clone()),
        created_at: Set(now),
    };
    definition::Entity::insert(model)
        .on_conflict(
            OnConflict::column(definition::Column::Hash)
                .do_nothing()
                .to_owned(),
        )
        .do_nothing()
        .exec(db)
        .await
        .map(drop)
}

fn row_for(
    wf: &NewWorkflow,
    head: &str,
    now: DateTime<Utc>,
) -> Result<workflow::ActiveModel, DbErr> {
    let r = &wf.state.request;
    Ok(workflow::ActiveModel {
        id: Set(wf.id.clone()),
        event_id: Set(r.event_id.clone()),
        connection: Set(r.connection.clone()),
        app: Set(r.app.clone()),
        event_type: Set(r.event_type.as_str().to_string()),
        person_email: Set(r.person_email.clone()),
        transfer_to: Set(r.transfer_to.clone()),
        state: Set(wf.state.status.as_str().to_string()),
        outcome: Set(None),
        error_code: Set(None),
        error_message: Set(None),
        definition_hash: Set(wf.definition.hash.clone()),
        state_json: Set(serde_json::to_string(&wf.state).map_err(json_err)?),
        trail_head: Set(head.to_string()),
        wake_at: Set(wf.state.wake_at),
        lease_owner: Set(None),
        lease_until: Set(None),
        cancel_requested_by: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    })
}
