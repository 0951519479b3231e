//! What the database records of its audit key's use (issue 19): when the key was first
//! used, and the legacy trails — those holding plain SHA-256 links at that moment, each
//! with the position of its last plain record.
//!
//! Once the key is in use, a plain link verifies only within a legacy trail's listed part;
//! a record's date cannot decide it, since whoever rewrites a trail chooses its dates.
//! The engine fills both tables before its first keyed write (`Store::writing_key`). A
//! database that already holds keyed records is filled here, once, from what it holds:
//! the key's first use is its earliest keyed record, and the legacy trails are those with
//! plain records dated before it (what verification accepted until now).

use sea_orm_migration::prelude::*;

/// Creates the two tables and records a key already in use.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000008_legacy_trails"
    }
}

#[derive(DeriveIden)]
enum AuditKeyFirstUse {
    Table,
    Id,
    At,
}

#[derive(DeriveIden)]
enum LegacyTrails {
    Table,
    WorkflowId,
    PlainThroughSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One row at most (id 1): inserting it is how one process, and only one, claims
        // the listing of the legacy trails.
        m.create_table(
            Table::create()
                .table(AuditKeyFirstUse::Table)
                .col(
                    ColumnDef::new(AuditKeyFirstUse::Id)
                        .integer()
                        .not_null()
                        .primary_key()
                        .check(Expr::col(AuditKeyFirstUse::Id).eq(1)),
                )
                .col(
                    ColumnDef::new(AuditKeyFirstUse::At)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(LegacyTrails::Table)
                .col(
                    ColumnDef::new(LegacyTrails::WorkflowId)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(LegacyTrails::PlainThroughSeq)
                        .integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        db.execute_unprepared(
            "INSERT INTO audit_key_first_use (id, at) \
             SELECT 1, first FROM (SELECT MIN(at) AS first FROM audit_records \
                                   WHERE hash LIKE 'hmac1:%') AS keyed \
             WHERE first IS NOT NULL",
        )
        .await?;
        db.execute_unprepared(
            "INSERT INTO legacy_trails (workflow_id, plain_through_seq) \
             SELECT a.workflow_id, MAX(a.seq) FROM audit_records a, audit_key_first_use k \
             WHERE a.hash NOT LIKE 'hmac1:%' AND a.at < k.at GROUP BY a.workflow_id",
        )
        .await
        .map(drop)
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(LegacyTrails::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(AuditKeyFirstUse::Table).to_owned())
            .await
    }
}
