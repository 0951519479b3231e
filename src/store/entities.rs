//! sea-orm entities, one module per table (see `migrations/` for the schema).

/// Events received (the idempotency keys).
pub mod event {
    use sea_orm::entity::prelude::*;

    /// A received event.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        /// CloudEvents id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// CloudEvents type.
        pub event_type: String,
        /// CloudEvents source.
        pub source: String,
        /// CloudEvents time.
        pub event_time: Option<DateTimeUtc>,
        /// The body as received.
        #[sea_orm(column_type = "Text")]
        pub body: String,
        /// When offboard accepted it.
        pub received_at: DateTimeUtc,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Workflow definitions, by content hash.
pub mod definition {
    use sea_orm::entity::prelude::*;

    /// A definition version.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "definitions")]
    pub struct Model {
        /// SHA-256 of the source.
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash: String,
        /// Definition name.
        pub name: String,
        /// Definition version.
        pub version: i32,
        /// The TOML text.
        #[sea_orm(column_type = "Text")]
        pub source: String,
        /// First stored.
        pub created_at: DateTimeUtc,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Workflows: one per (event, connection).
pub mod workflow {
    use sea_orm::entity::prelude::*;

    /// A workflow row; `state_json` is the whole machine state, the other columns are
    /// copies for querying.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workflows")]
    pub struct Model {
        /// Workflow id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The event that started it.
        pub event_id: String,
        /// Connection name.
        pub connection: String,
        /// App name.
        pub app: String,
        /// Event type.
        pub event_type: String,
        /// The person.
        pub person_email: String,
        /// The recipient.
        pub transfer_to: Option<String>,
        /// Status.
        pub state: String,
        /// Outcome when completed.
        pub outcome: Option<String>,
        /// Error code (failed, or the last failure while retrying).
        pub error_code: Option<String>,
        /// Error message.
        #[sea_orm(column_type = "Text", nullable)]
        pub error_message: Option<String>,
        /// The definition it runs with.
        pub definition_hash: String,
        /// The machine state.
        #[sea_orm(column_type = "Text")]
        pub state_json: String,
        /// Hash of the last audit record: the trail's end cannot be cut off unseen.
        pub trail_head: String,
        /// Next time to look at it.
        pub wake_at: Option<DateTimeUtc>,
        /// The worker running it.
        pub lease_owner: Option<String>,
        /// Until when the worker's claim holds.
        pub lease_until: Option<DateTimeUtc>,
        /// How many times it was claimed: with `lease_owner`, the fence every append
        /// presents, so a worker whose lease was taken over cannot write.
        pub lease_epoch: i64,
        /// Position of the last audit record (the compare-and-set of every append).
        pub trail_seq: i32,
        /// When the scheduler may next pick it up: its wake-up time, when it became
        /// runnable, or while a worker holds it the end of the lease; `None` once nobody
        /// needs to (ended, or held by the brake). The due query scans its index.
        pub due_at: Option<DateTimeUtc>,
        /// Who asked to cancel it while it ran.
        pub cancel_requested_by: Option<String>,
        /// Created.
        pub created_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
        /// When it reached a final state.
        pub finished_at: Option<DateTimeUtc>,
        /// Whether its definition removes or deactivates an account (see
        /// `apps::ends_account`): what the mass-offboarding brake counts and holds.
        pub ends_account: bool,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The audit trail.
pub mod audit {
    use sea_orm::entity::prelude::*;

    /// One record; `hash` chains it to the one before.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_records")]
    pub struct Model {
        /// Row id.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Workflow.
        pub workflow_id: String,
        /// Position in the workflow's trail, from 1.
        pub seq: i32,
        /// When it was written.
        pub at: DateTimeUtc,
        /// Record kind.
        pub kind: String,
        /// Step index, if any.
        pub step: Option<i32>,
        /// The record as JSON.
        #[sea_orm(column_type = "Text")]
        pub body: String,
        /// Hash of the record before (zeros for the first).
        pub prev_hash: String,
        /// SHA-256 over prev_hash, seq, at and body.
        pub hash: String,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Messages that could not become workflows.
pub mod dead_letter {
    use sea_orm::entity::prelude::*;

    /// A rejected message.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "dead_letters")]
    pub struct Model {
        /// Row id.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// When.
        pub received_at: DateTimeUtc,
        /// EVT code.
        pub code: String,
        /// Why.
        #[sea_orm(column_type = "Text")]
        pub message: String,
        /// The event id, when one could be read.
        pub event_id: Option<String>,
        /// Routing key it came with.
        pub routing_key: String,
        /// The first 4 KiB of the body, control characters escaped, for people to read.
        #[sea_orm(column_type = "Text")]
        pub body: String,
        /// The body byte for byte (it may hold what text columns cannot, such as 0x00), up
        /// to its first [`crate::store::DEAD_LETTER_RAW_BYTES`] bytes.
        pub raw: Option<Vec<u8>>,
        /// The whole body's size in bytes (NULL in rows written before it was kept).
        pub body_size: Option<i64>,
        /// The whole body's SHA-256, lowercase hex (NULL in rows written before).
        pub body_sha256: Option<String>,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Events waiting to be published (written in the same transaction as the change).
pub mod outbox {
    use sea_orm::entity::prelude::*;

    /// An event to publish.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        /// Row id.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// AMQP routing key.
        pub routing_key: String,
        /// CloudEvents JSON.
        #[sea_orm(column_type = "Text")]
        pub body: String,
        /// Written.
        pub created_at: DateTimeUtc,
        /// The process that publishes it: the writer at first, a sweeper once the
        /// writer's claim lapsed. Entries are deleted once the broker confirms them.
        pub claimed_by: Option<String>,
        /// Until when that claim holds.
        pub claimed_until: Option<DateTimeUtc>,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
