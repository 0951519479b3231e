//! The schema version each `serve` process runs (issue 23).
//!
//! A process records its worker id (the `lease_owner` it writes) with the newest
//! migration its release knows, once, when it starts serving. A newer release starting
//! beside live leases of an owner that is not recorded here, or recorded with an older
//! version, knows a worker of an older release is still writing, and refuses to run.

use sea_orm_migration::prelude::*;

/// Creates `workers`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000010_workers"
    }
}

#[derive(DeriveIden)]
enum Workers {
    Table,
    WorkerId,
    SchemaVersion,
    StartedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Workers::Table)
                .col(
                    ColumnDef::new(Workers::WorkerId)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Workers::SchemaVersion).string().not_null())
                .col(
                    ColumnDef::new(Workers::StartedAt)
                        .timestamp_with_time_zone()
                        .not_null()
                        .default(Expr::current_timestamp()),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Workers::Table).to_owned())
            .await
    }
}
