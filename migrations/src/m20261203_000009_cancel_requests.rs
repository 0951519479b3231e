//! A partial index over the workflows with a cancel request waiting (issue 19).
//!
//! While drives are in flight, each `serve` process looks every second for cancel
//! requests on the leases it holds, so that a cancel asked from another process (the CLI,
//! another console) reaches a running step between its per-call retries. Requests are
//! rare and short-lived, so the index holds a handful of rows at most and the look costs
//! next to nothing however many workflows the table keeps.

use sea_orm_migration::prelude::*;

/// Creates `workflows_cancel_requested`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000009_cancel_requests"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX workflows_cancel_requested ON workflows (lease_owner) \
                 WHERE cancel_requested_by IS NOT NULL",
            )
            .await
            .map(drop)
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP INDEX workflows_cancel_requested")
            .await
            .map(drop)
    }
}
