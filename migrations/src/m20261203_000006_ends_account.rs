//! Which workflows the mass-offboarding brake counts: `workflows.ends_account` (issue 19).
//!
//! The brake limits how many accounts offboard removes or deactivates in an hour. That is
//! not the same as counting `offboarding.requested` events: a Postman licence reclaim is a
//! SCIM deactivation too, while a Smartsheet one keeps the account. Each workflow now says
//! whether its definition ends an account (decided once, at accept, from the actions it
//! runs: see `apps::ends_account`), and the brake counts those rows of the last hour
//! through a partial index.
//!
//! Rows written before this migration are filled from what the shipped definitions did:
//! every offboarding, and Postman's licence reclaim.

use sea_orm_migration::prelude::*;

/// Adds `ends_account`, fills it, and indexes the rows it marks by creation time.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000006_ends_account"
    }
}

#[derive(DeriveIden)]
enum Workflows {
    Table,
    EndsAccount,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        m.alter_table(
            Table::alter()
                .table(Workflows::Table)
                .add_column(
                    ColumnDef::new(Workflows::EndsAccount)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        )
        .await?;
        db.execute_unprepared(
            "UPDATE workflows SET ends_account = TRUE \
             WHERE event_type = 'offboarding.requested' \
             OR (event_type = 'license.reclaim.requested' AND app = 'postman')",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX workflows_ends_account ON workflows (created_at) WHERE ends_account",
        )
        .await
        .map(drop)
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared("DROP INDEX workflows_ends_account")
            .await?;
        m.alter_table(
            Table::alter()
                .table(Workflows::Table)
                .drop_column(Workflows::EndsAccount)
                .to_owned(),
        )
        .await
    }
}
