//! One column says when a workflow is next due: `workflows.due_at` (issue 9).
//!
//! It is the time the scheduler may pick the workflow up: its wake-up time when it waits
//! on a timer, the time it became runnable otherwise, and — while a worker holds it — the
//! end of that worker's lease (when a dead holder's work becomes claimable). It is NULL
//! once nobody needs to look at the workflow (ended, or held by the brake). The due
//! query is then one range scan of a partial index that stops at the first row not due,
//! however many workflows wait on timers or are being driven, where the two indexes it
//! replaces had to pass over every waiting row.

use sea_orm_migration::prelude::*;

/// Adds `due_at`, fills it, and swaps the due indexes.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000003_due_at"
    }
}

#[derive(DeriveIden)]
enum Workflows {
    Table,
    DueAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        m.alter_table(
            Table::alter()
                .table(Workflows::Table)
                .add_column(
                    ColumnDef::new(Workflows::DueAt)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        db.execute_unprepared(
            "UPDATE workflows SET due_at = COALESCE(lease_until, wake_at, updated_at) \
             WHERE state IN ('pending', 'running', 'retrying')",
        )
        .await?;
        db.execute_unprepared("DROP INDEX workflows_due").await?;
        db.execute_unprepared("DROP INDEX workflows_due_wake")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX workflows_due_at ON workflows (due_at) WHERE due_at IS NOT NULL",
        )
        .await
        .map(drop)
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared("DROP INDEX workflows_due_at").await?;
        db.execute_unprepared(
            "CREATE INDEX workflows_due ON workflows (created_at) \
             WHERE state IN ('pending', 'running', 'retrying')",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX workflows_due_wake ON workflows (wake_at) \
             WHERE state IN ('pending', 'running', 'retrying')",
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Workflows::Table)
                .drop_column(Workflows::DueAt)
                .to_owned(),
        )
        .await
    }
}
