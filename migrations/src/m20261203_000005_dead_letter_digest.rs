//! Dead letters keep a bounded part of the body (issue 19): `raw` holds at most the first
//! 64 KiB from now on, and two new columns say what the whole body was, its size in bytes
//! and its SHA-256 (hex), so a record can still be matched with the message in the
//! dead-letter queue or the publisher's log. Rows written before have both NULL (their
//! `raw` holds the whole body).

use sea_orm_migration::prelude::*;

/// Adds `body_size` and `body_sha256` to `dead_letters`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000005_dead_letter_digest"
    }
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    BodySize,
    BodySha256,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        m.alter_table(
            Table::alter()
                .table(DeadLetters::Table)
                .add_column(ColumnDef::new(DeadLetters::BodySize).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(DeadLetters::Table)
                .add_column(ColumnDef::new(DeadLetters::BodySha256).string().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(DeadLetters::Table)
                .drop_column(DeadLetters::BodySha256)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(DeadLetters::Table)
                .drop_column(DeadLetters::BodySize)
                .to_owned(),
        )
        .await
    }
}
