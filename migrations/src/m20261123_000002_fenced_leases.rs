//! Fenced leases, a once-only outbox and a shared request budget (issue 8).
//!
//! - `workflows.lease_epoch` counts claims: a claim hands out (owner, epoch) and every
//!   append presents it, so a holder that lost its lease cannot write.
//! - `workflows.trail_seq` is the position of the last audit record: an append is a
//!   compare-and-set on it instead of a read of the trail.
//! - `workflows_due` and `workflows_due_wake` index only unfinished workflows (by age and
//!   by wake-up time), so finding due work does not grow with history or with the number
//!   of workflows waiting on timers.
//! - `dead_letters.raw` keeps a rejected body byte for byte (PostgreSQL text cannot hold a
//!   0x00 byte; the `body` column keeps an escaped excerpt for people).
//! - `outbox.claimed_by` / `claimed_until`: an entry belongs to the process that wrote it
//!   until its claim lapses; published entries are deleted, so `published_at` goes.
//! - `request_budgets` holds each connection's next free request slot, shared by every
//!   process using it.

use sea_orm_migration::prelude::*;

/// Adds the columns, indexes and table above.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000002_fenced_leases"
    }
}

#[derive(DeriveIden)]
enum Workflows {
    Table,
    LeaseEpoch,
    TrailSeq,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Raw,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    ClaimedBy,
    ClaimedUntil,
    PublishedAt,
}

#[derive(DeriveIden)]
enum RequestBudgets {
    Table,
    Connection,
    NextSlotUs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let add =
            |table: DynIden, col: ColumnDef| Table::alter().table(table).add_column(col).to_owned();
        m.alter_table(add(
            Workflows::Table.into_iden(),
            ColumnDef::new(Workflows::LeaseEpoch)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
        ))
        .await?;
        m.alter_table(add(
            Workflows::Table.into_iden(),
            ColumnDef::new(Workflows::TrailSeq)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
        ))
        .await?;
        m.alter_table(add(
            DeadLetters::Table.into_iden(),
            ColumnDef::new(DeadLetters::Raw).binary().null().to_owned(),
        ))
        .await?;
        m.alter_table(add(
            Outbox::Table.into_iden(),
            ColumnDef::new(Outbox::ClaimedBy).string().null().to_owned(),
        ))
        .await?;
        m.alter_table(add(
            Outbox::Table.into_iden(),
            ColumnDef::new(Outbox::ClaimedUntil)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ))
        .await?;
        let db = m.get_connection();
        // Existing trails: their last position; published entries are done with; unpublished
        // ones are free for any sweeper.
        db.execute_unprepared(
            "UPDATE workflows SET trail_seq = \
             (SELECT COALESCE(MAX(seq), 0) FROM audit_records WHERE workflow_id = workflows.id)",
        )
        .await?;
        db.execute_unprepared("DELETE FROM outbox WHERE published_at IS NOT NULL")
            .await?;
        m.alter_table(
            Table::alter()
                .table(Outbox::Table)
                .drop_column(Outbox::PublishedAt)
                .to_owned(),
        )
        .await?;
        // Partial indexes (same syntax on both back-ends): only unfinished workflows and
        // pending outbox entries are ever searched for.
        db.execute_unprepared(
            "CREATE INDEX workflows_due ON workflows (created_at) \
             WHERE state IN ('pending', 'running', 'retrying')",
        )
        .await?;
        // Workflows waiting on a timer are found (or passed over) by their wake-up time.
        db.execute_unprepared(
            "CREATE INDEX workflows_due_wake ON workflows (wake_at) \
             WHERE state IN ('pending', 'running', 'retrying')",
        )
        .await?;
        db.execute_unprepared("CREATE INDEX outbox_claimed_until ON outbox (claimed_until)")
            .await?;
        if m.get_database_backend() == sea_orm_migration::sea_orm::DatabaseBackend::Postgres {
            // Room in each page for the new version of a row, so the per-step update of a
            // workflow stays on its page (a HOT update: no index entry, no bloat).
            db.execute_unprepared("ALTER TABLE workflows SET (fillfactor = 50)")
                .await?;
        }
        m.create_table(
            Table::create()
                .table(RequestBudgets::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(RequestBudgets::Connection)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(RequestBudgets::NextSlotUs)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        m.drop_table(Table::drop().table(RequestBudgets::Table).to_owned())
            .await?;
        db.execute_unprepared("DROP INDEX outbox_claimed_until")
            .await?;
        db.execute_unprepared("DROP INDEX workflows_due").await?;
        db.execute_unprepared("DROP INDEX workflows_due_wake")
            .await?;
        m.alter_table(
            Table::alter()
                .table(Outbox::Table)
                .add_column(
                    ColumnDef::new(Outbox::PublishedAt)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        for (table, col) in [
            (Outbox::Table.into_iden(), Outbox::ClaimedUntil.into_iden()),
            (Outbox::Table.into_iden(), Outbox::ClaimedBy.into_iden()),
            (DeadLetters::Table.into_iden(), DeadLetters::Raw.into_iden()),
            (
                Workflows::Table.into_iden(),
                Workflows::TrailSeq.into_iden(),
            ),
            (
                Workflows::Table.into_iden(),
                Workflows::LeaseEpoch.into_iden(),
            ),
        ] {
            m.alter_table(Table::alter().table(table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
