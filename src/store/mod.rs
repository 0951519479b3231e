//! Persistence over sea-orm, for SQLite and PostgreSQL alike: received events (the
//! idempotency keys), workflows with their machine state, the hash-chained audit trail,
//! dead letters, the outbox of events to publish and the request budgets shared by every
//! process.
//!
//! A workflow is written only by the holder of its lease (`leases`): every append
//! presents the lease and the trail position it extends, and is refused with
//! [`StoreError::LeaseLost`] once another process has claimed the workflow.

mod budget;
mod console;
pub mod entities;
mod key_use;
mod leases;
mod outbox;
mod schema;
mod sql;
mod sqlite;
mod txn;

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::OnConflict;
use sea_orm::sqlx::postgres::PgSslMode;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, Insert, QueryFilter, QueryOrder, QueryTrait, Set, Statement,
    TransactionTrait,
};

use crate::domain::acceptance;
pub use crate::domain::acceptance::NewWorkflow;
use crate::domain::chain::{self, GENESIS};
use crate::domain::definition::Definition;
use crate::domain::event::Request;
use crate::domain::machine::{Record, State, Status};
pub use console::{DeadLetterRow, Gauges, WorkflowFilter};
use entities::{audit, dead_letter, definition, event, workflow};
pub use leases::{Appended, Claim, Fence, HeldLease, Lease, TrailEnd};
pub use outbox::{OutboxEntry, Pending};
pub use schema::{release_version, SchemaRefusal};
use sql::{printable, storable, Dialect};
use txn::Txn;

/// What `prune` removed, and what it left because a live lease holds it.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Workflows removed, with their trails.
    pub workflows: u64,
    /// Dead letters removed.
    pub dead_letters: u64,
    /// Finished workflows left in place: a worker or an operator holds them now.
    pub skipped: Vec<String>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// Another process claimed the workflow: this holder must stop before its next effect.
    #[error("lease lost: another worker has claimed the workflow")]
    LeaseLost,
    /// Stored data cannot be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A stored JSON value (a record, a request) cannot be read back.
    #[error("stored data is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    /// The schema belongs to another release than this one may run beside.
    #[error(transparent)]
    Schema(SchemaRefusal),
}

impl StoreError {
    /// Whether the database went away rather than refused this one operation: the pool
    /// could not hand out a connection, the connection broke (I/O, TLS, protocol, a
    /// closed pool, SQLite's worker gone), or the server said it is shutting down, out of
    /// connections or resources (SQLSTATE classes 08, 53, 57P) or, on SQLite, busy. Such a
    /// failure says nothing about the data: the same statement succeeds once the database
    /// is back. Anything else — a constraint, a value the server cannot index or store —
    /// is tied to what was being written.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Db(e) => outage(e),
            StoreError::LeaseLost
            | StoreError::Corrupt(_)
            | StoreError::Json(_)
            | StoreError::Schema(_) => false,
        }
    }
}

fn outage(e: &DbErr) -> bool {
    use sea_orm::{ConnAcquireErr, RuntimeErr};
    match e {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed)
        | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_outage(e)
        }
        _ => false,
    }
}

fn sqlx_outage(e: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    match e {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::BeginFailed => true,
        E::Database(db) => db.code().is_some_and(|code| unavailable_sqlstate(&code)),
        _ => false,
    }
}

/// Whether a server error code says the server is unavailable rather than the statement
/// wrong: PostgreSQL's connection exceptions (08…), insufficient resources (53…),
/// shutdowns (57P…); SQLite's `SQLITE_BUSY` and `SQLITE_LOCKED` (5, 6 and their extended
/// codes).
fn unavailable_sqlstate(code: &str) -> bool {
    let sqlite_busy = code
        .parse::<u32>()
        .is_ok_and(|n| matches!(n & 0xff, 5 | 6) && code.len() < 5);
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || sqlite_busy
}

/// A database handle.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Keys the audit chain (see [`chain`]); without it, links are plain SHA-256.
    audit_key: Option<chain::AuditKey>,
    /// Set once this handle has made sure the database records the key's use (see
    /// [`key_use`]); writers take the key only after that.
    key_recorded: Arc<tokio::sync::OnceCell<()>>,
    /// Definitions (by content hash) this handle has seen committed: definitions are
    /// never deleted, so an accept need not send them again.
    saved_definitions: Arc<StdMutex<HashSet<String>>>,
}

/// The process that accepts an event and drives its workflows at once, and the lease it
/// takes on them.
#[derive(Clone, Copy, Debug)]
pub struct HandOff<'a> {
    /// Its worker id.
    pub owner: &'a str,
    /// The lease's length.
    pub lease_secs: f64,
}

/// What became of an event handed to [`Store::accept`].
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored, with the ids of its workflows.
    New(Vec<String>),
    /// Stored past the mass-offboarding brake: its workflows that end an account are
    /// `held`; the others (a Smartsheet licence reclaim beside a Postman one) run.
    Held {
        /// The workflows held until an operator releases them.
        held: Vec<String>,
        /// The event's other workflows, which run as usual.
        running: Vec<String>,
        /// Workflows ending an account created in the last hour, these included.
        in_last_hour: u64,
    },
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

/// How much of a dead letter's body is kept byte for byte.
pub const DEAD_LETTER_RAW_BYTES: usize = 64 * 1024;
/// How much of a dead letter's event id and routing key is kept.
const DEAD_LETTER_ID_BYTES: usize = 256;
/// How much of a dead letter's message is kept.
const DEAD_LETTER_TEXT_BYTES: usize = 4096;

/// The longest start of `text` that fits in `bytes` bytes, cut at a character boundary.
fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Connections to PostgreSQL per process unless configured (`database_pool_size`): enough
/// for the workflows in flight, intake and the publisher to write side by side.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// Whether a PostgreSQL URL names this machine and says nothing of TLS.
fn loopback_without_sslmode(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let local = matches!(
        parsed.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1") | None
    );
    local && !parsed.query_pairs().any(|(k, _)| k == "sslmode")
}

/// PostgreSQL advisory-lock key every accept holds while counting for the brake
/// ("brake" in ASCII).
const BRAKE_LOCK: i64 = 0x0062_7261_6b65;

/// PostgreSQL advisory-lock key held while migrating ("offboard" in ASCII), so processes
/// starting together migrate one after the other instead of racing on `CREATE TABLE`.
const MIGRATION_LOCK: i64 = 0x6f66_6662_6f61_7264;

impl Store {
    /// Connects with timeouts and the default pool (SQLite: one writer, so one
    /// connection), without touching the schema: for verbs that only read.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with_pool(url, DEFAULT_POOL_SIZE).await
    }

    /// [`Store::connect`] with a pool of `pool_size` PostgreSQL connections.
    pub async fn connect_with_pool(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let mut options = ConnectOptions::new(url.to_string());
        options
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // One writer: one connection. WAL with `synchronous = NORMAL` commits without
            // an fsync per transaction and keeps readers off the writer's back; other
            // processes on the same file wait for the lock rather than fail. A file cannot
            // hang up, so the connection is never pinged: every checkout would otherwise
            // cost a round trip to the connection's thread on the one writer's path.
            options
                .max_connections(1)
                .test_before_acquire(false)
                .map_sqlx_sqlite_opts(|o| {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                });
        } else {
            // A connection in steady use is not pinged before each checkout (that would
            // double the round trips of a step's one-statement commit); one idle long
            // enough for a server, proxy or firewall to have dropped it is.
            options
                .max_connections(pool_size)
                .test_before_acquire_if_idle_for(Duration::from_secs(10));
            if loopback_without_sslmode(url) {
                // TLS to a database on this machine costs CPU and protects nothing.
                options.map_sqlx_postgres_opts(|o| o.ssl_mode(PgSslMode::Disable));
            }
        }
        Ok(Store {
            db: Database::connect(options).await?,
            audit_key: None,
            key_recorded: Arc::default(),
            saved_definitions: Arc::default(),
        })
    }

    /// Connects and brings the schema up to date. On PostgreSQL the migrations run under
    /// an advisory lock on a connection of their own, so any number of processes may
    /// start together.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with_pool(url, DEFAULT_POOL_SIZE).await
    }

    /// [`Store::open`] with a pool of `pool_size` PostgreSQL connections.
    pub async fn open_with_pool(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let store = Store::connect_with_pool(url, pool_size).await?;
        if store.backend() == DbBackend::Postgres {
            let mut options = ConnectOptions::new(url.to_string());
            options
                .max_connections(1)
                .connect_timeout(Duration::from_secs(10))
                .sqlx_logging(false);
            let single = Database::connect(options).await?;
            let lock = |f: &str| {
                sea_orm::Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!("SELECT {f}($1)"),
                    [MIGRATION_LOCK.into()],
                )
            };
            single.execute_raw(lock("pg_advisory_lock")).await?;
            let migrated = match schema::refuse_newer(&single).await {
                Ok(()) => Migrator::up(&single, None).await.map_err(StoreError::from),
                Err(e) => Err(e),
            };
            single.execute_raw(lock("pg_advisory_unlock")).await?;
            single.close().await?;
            migrated?;
        } else {
            schema::refuse_newer(&store.db).await?;
            Migrator::up(&store.db, None).await?;
        }
        Ok(store)
    }

    /// This store with the audit key: every record it writes from now on is linked with
    /// an HMAC under `key`, and replays check keyed links with it.
    pub fn with_audit_key(mut self, key: chain::AuditKey) -> Store {
        self.audit_key = Some(key);
        self.key_recorded = Arc::default();
        self
    }

    /// The audit key, if this store has one.
    pub fn audit_key(&self) -> Option<&chain::AuditKey> {
        self.audit_key.as_ref()
    }

    /// The raw connection (tests use it to tamper with rows).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    fn dialect(&self) -> Dialect {
        Dialect(self.backend())
    }

    /// Stores an event and its workflows in one transaction, unless its id was seen before.
    ///
    /// With `brake` (`max_offboardings_per_hour`), an event whose workflows that end an
    /// account ([`NewWorkflow::ends_account`]: every offboarding, a Postman licence
    /// reclaim) bring those of the last hour past the limit creates them `held` (a `held`
    /// record right after `created`); its other workflows run. The count is taken in the
    /// same transaction, after the event's own insert, under a lock every process takes
    /// (PostgreSQL: a transaction-scoped advisory lock; SQLite: the single writer's lock),
    /// so it holds across processes.
    ///
    /// With `hand_off`, each workflow with a `start` record is created with it, already
    /// leased to the process that will drive it at once: no claim, no separate commit of
    /// the first step's start. Those claims are returned beside what was accepted.
    pub async fn accept(
        &self,
        request: &Request,
        body: &str,
        workflows: &[NewWorkflow],
        brake: Option<u32>,
        hand_off: Option<HandOff<'_>>,
    ) -> Result<(Accepted, Vec<Claim>), StoreError> {
        let key = self.writing_key().await?;
        let now = chain::stored_time(Utc::now());
        let insert = event_insert(request, body, now).build(self.backend());
        let (mut txn, inserted) = Txn::begin(&self.db, insert).await?;
        if inserted.is_empty() {
            txn.rollback().await?;
            return Ok((Accepted::Duplicate, Vec::new()));
        }
        let ending = acceptance::account_endings(workflows);
        let held = match brake {
            Some(limit) if ending > 0 => {
                let earlier = self.account_endings_since(&mut txn, now).await?;
                acceptance::brake(limit, earlier, ending)
            }
            _ => None,
        };
        // Everything else is known now, and goes in one batch with the commit.
        let mut writes = Vec::new();
        let mut leased = Vec::new();
        for wf in workflows {
            let opening = wf
                .opening(held.as_ref(), hand_off.is_some(), now)
                .map_err(|v| StoreError::Corrupt(format!("workflow {}: {v}", wf.id)))?;
            let hand_off = hand_off.filter(|_| opening.leased);
            leased.extend(self.open_workflow(key, wf, opening, hand_off, now, &mut writes)?);
        }
        txn.commit(writes).await?;
        self.saved_definitions
            .lock()
            .expect("definitions lock")
            .extend(workflows.iter().map(|w| w.definition.hash.clone()));
        Ok((accepted(workflows, held), leased))
    }

    /// Adds to `writes` what creates one workflow as `opening` says: its definition if
    /// not stored yet, its row, its first records chained, and with `hand_off` the lease
    /// to the process that drives it at once (whose claim is returned).
    fn open_workflow(
        &self,
        key: Option<&chain::AuditKey>,
        wf: &NewWorkflow,
        opening: acceptance::Opening<'_>,
        hand_off: Option<HandOff<'_>>,
        now: DateTime<Utc>,
        writes: &mut Vec<Statement>,
    ) -> Result<Option<Claim>, StoreError> {
        let backend = self.backend();
        let saved = self
            .saved_definitions
            .lock()
            .expect("definitions lock")
            .contains(&wf.definition.hash);
        if !saved {
            writes.push(definition_insert(&wf.definition, now).build(backend));
        }
        let trail = opening.trail.iter().map(|r| (now, *r));
        let links = chain::chain_after(key, 0, GENESIS, trail)?;
        let (seq, head) = links.last().map_or((0, GENESIS.to_string()), |link| {
            (link.seq, link.hash.clone())
        });
        let state = opening.state;
        writes.push(workflow::Entity::insert(row_for(wf, &state, seq, &head, now)?).build(backend));
        writes.push(
            audit::Entity::insert_many(links.iter().map(|l| leases::audit_row(&wf.id, l)))
                .build(backend),
        );
        let Some(hand_off) = hand_off else {
            return Ok(None);
        };
        let (lease_stmt, lease) = leases::lease_new(self.dialect(), &wf.id, &hand_off);
        writes.push(lease_stmt);
        Ok(Some(Claim {
            id: wf.id.clone(),
            lease,
            end: TrailEnd { seq, head },
            state,
            definition_hash: wf.definition.hash.clone(),
            cancel_requested_by: None,
        }))
    }

    /// Workflows ending an account created in the hour before `now` (inside an accept's
    /// transaction, under the brake's lock, before its own workflows are written).
    async fn account_endings_since(
        &self,
        txn: &mut Txn,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let d = self.dialect();
        if self.backend() == DbBackend::Postgres {
            txn.query(d.stmt("SELECT pg_advisory_xact_lock($1)", vec![BRAKE_LOCK.into()]))
                .await?;
        }
        let rows = txn
            .query(d.stmt(
                "SELECT COUNT(*) AS n FROM workflows WHERE ends_account AND created_at > $1",
                vec![(now - chrono::Duration::hours(1)).into()],
            ))
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("COUNT returned no row".into()))?;
        let n: i64 = row.try_get("", "n")?;
        Ok(n.max(0) as u64)
    }

    /// Records a message that could not become a workflow: its first
    /// [`DEAD_LETTER_RAW_BYTES`] byte for byte, the whole body's size and SHA-256, and every
    /// text escaped and bounded so that any input can be stored — whoever sent it, a dead
    /// letter costs at most a few tens of KiB.
    pub async fn dead_letter(
        &self,
        code: &str,
        message: &str,
        event_id: Option<&str>,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), StoreError> {
        use sha2::Digest as _;
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(4096)]);
        dead_letter::ActiveModel {
            received_at: Set(Utc::now()),
            code: Set(code.to_string()),
            message: Set(printable(prefix(message, DEAD_LETTER_TEXT_BYTES))),
            event_id: Set(event_id.map(|id| printable(prefix(id, DEAD_LETTER_ID_BYTES)))),
            routing_key: Set(printable(prefix(routing_key, DEAD_LETTER_ID_BYTES))),
            body: Set(printable(&excerpt)),
            raw: Set(Some(body[..body.len().min(DEAD_LETTER_RAW_BYTES)].to_vec())),
            body_size: Set(Some(i64::try_from(body.len()).unwrap_or(i64::MAX))),
            body_sha256: Set(Some(hex::encode(sha2::Sha256::digest(body)))),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        Ok(())
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<dead_letter::Model>, StoreError> {
        Ok(dead_letter::Entity::find()
            .order_by_asc(dead_letter::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// When the next workflow falls due: the earliest future `due_at` (a timer, or a
    /// lease that would lapse should its holder die), read off the due index. A workflow
    /// already past its `due_at` is either claimable now or held by a live lease, whose
    /// end the serve loop's one-second look catches.
    ///
    /// "Future" is read on the database's clock, as [`Store::any_due`] and the claims
    /// read "due": on this process's clock, a `due_at` it has just passed but SQLite's
    /// millisecond clock has not would be neither future nor due, and a caller waiting
    /// for the next wake-up would take the workflow for settled.
    pub async fn next_wake(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        use sea_orm::sea_query::Expr;
        use sea_orm::{ExprTrait, QuerySelect};
        let next: Option<Option<DateTime<Utc>>> = workflow::Entity::find()
            .select_only()
            .column(workflow::Column::DueAt)
            .filter(Expr::col(workflow::Column::DueAt).gt(Expr::cust(self.dialect().now())))
            .order_by_asc(workflow::Column::DueAt)
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(next.flatten())
    }

    /// Whether any unfinished workflow could be claimed now (due and not leased).
    pub async fn any_due(&self) -> Result<bool, StoreError> {
        let d = self.dialect();
        let sql = format!(
            "SELECT id FROM workflows WHERE {due} LIMIT 1",
            due = leases::due_condition(d)
        );
        Ok(self.db.query_one_raw(d.stmt(&sql, vec![])).await?.is_some())
    }

    /// Asks the worker running a workflow to cancel it at its next step boundary; `false`
    /// when the workflow has already ended.
    pub async fn request_cancel(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let d = self.dialect();
        let done = self
            .db
            .execute_raw(d.stmt(
                &format!(
                    "UPDATE workflows SET cancel_requested_by = $1 \
                     WHERE id = $2 AND state IN ({})",
                    leases::schedulable_states()
                ),
                vec![by.into(), id.into()],
            ))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One workflow row.
    pub async fn get(&self, id: &str) -> Result<Option<workflow::Model>, StoreError> {
        Ok(workflow::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?)
    }

    /// A definition's source, by content hash.
    pub async fn definition_source(&self, hash: &str) -> Result<String, StoreError> {
        definition::Entity::find_by_id(hash.to_string())
            .one(&self.db)
            .await?
            .map(|d| d.source)
            .ok_or_else(|| StoreError::Corrupt(format!("definition {hash} is missing")))
    }

    /// A workflow with its state and definition.
    pub async fn load(&self, id: &str) -> Result<Option<Loaded>, StoreError> {
        let Some(row) = self.get(id).await? else {
            return Ok(None);
        };
        let state = serde_json::from_str(&row.state_json)?;
        let definition_source = self.definition_source(&row.definition_hash).await?;
        Ok(Some(Loaded {
            row,
            state,
            definition_source,
        }))
    }

    /// Workflows, newest first, optionally only those in one state.
    pub async fn list(&self, state: Option<Status>) -> Result<Vec<workflow::Model>, StoreError> {
        let mut q = workflow::Entity::find()
            .order_by_desc(workflow::Column::CreatedAt)
            .order_by_desc(workflow::Column::Id);
        if let Some(s) = state {
            q = q.filter(workflow::Column::State.eq(s.as_str()));
        }
        Ok(q.all(&self.db).await?)
    }

    /// The workflows an event created.
    pub async fn by_event(&self, event_id: &str) -> Result<Vec<workflow::Model>, StoreError> {
        Ok(workflow::Entity::find()
            .filter(workflow::Column::EventId.eq(event_id))
            .order_by_asc(workflow::Column::Connection)
            .all(&self.db)
            .await?)
    }

    /// Removes finished workflows `ids` with their audit records (and their events once no
    /// workflow refers to them), and dead letters received before `before`, in one
    /// transaction. A workflow under a live lease (an operator's `retry` resuming it, say)
    /// is skipped, not removed: its rows are locked first, so a retry that claims it
    /// afterwards finds it gone rather than half removed.
    pub async fn prune(&self, ids: &[String], before: DateTime<Utc>) -> Result<Pruned, StoreError> {
        let d = self.dialect();
        let txn = self.db.begin().await?;
        let mut pruned = Pruned::default();
        for chunk in ids.chunks(500) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 1)).collect();
            let values: Vec<sea_orm::Value> = chunk.iter().map(|id| id.as_str().into()).collect();
            let rows = txn
                .query_all_raw(d.stmt(
                    &format!(
                        "SELECT id, event_id, lease_until < {now} AS lapsed, \
                         lease_until IS NULL AS unleased FROM workflows \
                         WHERE finished_at IS NOT NULL AND id IN ({}) {lock}",
                        list.join(", "),
                        now = d.now(),
                        lock = d.for_update(),
                    ),
                    values,
                ))
                .await?;
            let mut gone = Vec::new();
            let mut events = Vec::new();
            for row in rows {
                let id: String = row.try_get("", "id")?;
                let free = row.try_get::<bool>("", "unleased")?
                    || row.try_get::<Option<bool>>("", "lapsed")?.unwrap_or(false);
                if free {
                    gone.push(id);
                    events.push(row.try_get::<String>("", "event_id")?);
                } else {
                    pruned.skipped.push(id);
                }
            }
            audit::Entity::delete_many()
                .filter(audit::Column::WorkflowId.is_in(gone.iter().cloned()))
                .exec(&txn)
                .await?;
            pruned.workflows += workflow::Entity::delete_many()
                .filter(workflow::Column::Id.is_in(gone))
                .exec(&txn)
                .await?
                .rows_affected;
            for event_id in events {
                txn.execute_raw(d.stmt(
                    "DELETE FROM events WHERE id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM workflows WHERE event_id = $1)",
                    vec![event_id.into()],
                ))
                .await?;
            }
        }
        pruned.dead_letters = dead_letter::Entity::delete_many()
            .filter(dead_letter::Column::ReceivedAt.lt(before))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(pruned)
    }

    /// A workflow's trail, by position.
    pub async fn trail(&self, id: &str) -> Result<Vec<audit::Model>, StoreError> {
        Ok(audit::Entity::find()
            .filter(audit::Column::WorkflowId.eq(id))
            .order_by_asc(audit::Column::Seq)
            .order_by_asc(audit::Column::Id)
            .all(&self.db)
            .await?)
    }
}

/// The insert of an accepted event, doing nothing (and returning no id) when its id was
/// seen before.
fn event_insert(request: &Request, body: &str, now: DateTime<Utc>) -> Insert<event::ActiveModel> {
    let mut insert = event::Entity::insert(event::ActiveModel {
        id: Set(request.event_id.clone()),
        event_type: Set(request.event_type.as_str().to_string()),
        source: Set(request.source.clone()),
        event_time: Set(request.time),
        body: Set(storable(body)),
        received_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(event::Column::Id)
            .do_nothing()
            .to_owned(),
    );
    insert.query().returning_col(event::Column::Id);
    insert
}

/// What became of an event whose `workflows` were stored, with the brake's `held`
/// verdict.
fn accepted(workflows: &[NewWorkflow], held: Option<Record>) -> Accepted {
    let ids = |ends_account: bool| {
        workflows
            .iter()
            .filter(|w| w.ends_account == ends_account)
            .map(|w| w.id.clone())
            .collect()
    };
    match held {
        Some(Record::Held { in_last_hour, .. }) => Accepted::Held {
            held: ids(true),
            running: ids(false),
            in_last_hour,
        },
        _ => Accepted::New(workflows.iter().map(|w| w.id.clone()).collect()),
    }
}

/// The insert of a definition, unless one with its hash is stored already.
fn definition_insert(
    def: &Definition,
    now: DateTime<Utc>,
) -> sea_orm::Insert<definition::ActiveModel> {
    definition::Entity::insert(definition::ActiveModel {
        hash: Set(def.hash.clone()),
        name: Set(def.name.clone()),
        version: Set(def.version as i32),
        source: Set(def.source.clone()),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(definition::Column::Hash)
            .do_nothing()
            .to_owned(),
    )
}

/// The row of a new workflow whose trail ends at position `seq` with `head`, in `state`.
fn row_for(
    wf: &NewWorkflow,
    state: &State,
    seq: i32,
    head: &str,
    now: DateTime<Utc>,
) -> Result<workflow::ActiveModel, StoreError> {
    let r = &wf.state.request;
    Ok(workflow::ActiveModel {
        id: Set(wf.id.clone()),
        event_id: Set(r.event_id.clone()),
        connection: Set(r.connection.clone()),
        app: Set(r.app.clone()),
        event_type: Set(r.event_type.as_str().to_string()),
        person_email: Set(r.person_email.clone()),
        transfer_to: Set(r.transfer_to.clone()),
        state: Set(state.status.as_str().to_string()),
        outcome: Set(None),
        error_code: Set(None),
        error_message: Set(None),
        definition_hash: Set(wf.definition.hash.clone()),
        state_json: Set(serde_json::to_string(state)?),
        trail_head: Set(head.to_string()),
        trail_seq: Set(seq),
        wake_at: Set(state.wake_at),
        due_at: Set(leases::due_after(state, now)),
        lease_owner: Set(None),
        lease_until: Set(None),
        lease_epoch: Set(0),
        cancel_requested_by: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
        ends_account: Set(wf.ends_account),
    })
}
