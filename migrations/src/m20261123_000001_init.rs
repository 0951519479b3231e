//! The initial schema: received events, workflow definitions, workflows, their audit
//! trail (hash-chained), dead letters, and the outbox of events to publish.

use sea_orm_migration::prelude::*;

/// Creates the initial schema.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000001_init"
    }
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    EventType,
    Source,
    EventTime,
    Body,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Definitions {
    Table,
    Hash,
    Name,
    Version,
    Source,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Workflows {
    Table,
    Id,
    EventId,
    Connection,
    App,
    EventType,
    PersonEmail,
    TransferTo,
    State,
    Outcome,
    ErrorCode,
    ErrorMessage,
    DefinitionHash,
    StateJson,
    TrailHead,
    WakeAt,
    LeaseOwner,
    LeaseUntil,
    CancelRequestedBy,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum AuditRecords {
    Table,
    Id,
    WorkflowId,
    Seq,
    At,
    Kind,
    Step,
    Body,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    ReceivedAt,
    Code,
    Message,
    EventId,
    RoutingKey,
    Body,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    RoutingKey,
    Body,
    CreatedAt,
    PublishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Events::Table)
                .if_not_exists()
                .col(ColumnDef::new(Events::Id).string().not_null().primary_key())
                .col(ColumnDef::new(Events::EventType).string().not_null())
                .col(ColumnDef::new(Events::Source).string().not_null())
                .col(
                    ColumnDef::new(Events::EventTime)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(ColumnDef::new(Events::Body).text().not_null())
                .col(
                    ColumnDef::new(Events::ReceivedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Definitions::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Definitions::Hash)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Definitions::Name).string().not_null())
                .col(ColumnDef::new(Definitions::Version).integer().not_null())
                .col(ColumnDef::new(Definitions::Source).text().not_null())
                .col(
                    ColumnDef::new(Definitions::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Workflows::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Workflows::Id)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Workflows::EventId).string().not_null())
                .col(ColumnDef::new(Workflows::Connection).string().not_null())
                .col(ColumnDef::new(Workflows::App).string().not_null())
                .col(ColumnDef::new(Workflows::EventType).string().not_null())
                .col(ColumnDef::new(Workflows::PersonEmail).string().not_null())
                .col(ColumnDef::new(Workflows::TransferTo).string().null())
                .col(ColumnDef::new(Workflows::State).string().not_null())
                .col(ColumnDef::new(Workflows::Outcome).string().null())
                .col(ColumnDef::new(Workflows::ErrorCode).string().null())
                .col(ColumnDef::new(Workflows::ErrorMessage).text().null())
                .col(
                    ColumnDef::new(Workflows::DefinitionHash)
                        .string()
                        .not_null(),
                )
                .col(ColumnDef::new(Workflows::StateJson).text().not_null())
                .col(ColumnDef::new(Workflows::TrailHead).string().not_null())
                .col(
                    ColumnDef::new(Workflows::WakeAt)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(ColumnDef::new(Workflows::LeaseOwner).string().null())
                .col(
                    ColumnDef::new(Workflows::LeaseUntil)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(ColumnDef::new(Workflows::CancelRequestedBy).string().null())
                .col(
                    ColumnDef::new(Workflows::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Workflows::UpdatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Workflows::FinishedAt)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(Workflows::Table, Workflows::EventId)
                        .to(Events::Table, Events::Id),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(Workflows::Table, Workflows::DefinitionHash)
                        .to(Definitions::Table, Definitions::Hash),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("workflows_event_connection")
                .table(Workflows::Table)
                .col(Workflows::EventId)
                .col(Workflows::Connection)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("workflows_state_wake")
                .table(Workflows::Table)
                .col(Workflows::State)
                .col(Workflows::WakeAt)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditRecords::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(AuditRecords::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(AuditRecords::WorkflowId).string().not_null())
                .col(ColumnDef::new(AuditRecords::Seq).integer().not_null())
                .col(
                    ColumnDef::new(AuditRecords::At)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new(AuditRecords::Kind).string().not_null())
                .col(ColumnDef::new(AuditRecords::Step).integer().null())
                .col(ColumnDef::new(AuditRecords::Body).text().not_null())
                .col(ColumnDef::new(AuditRecords::PrevHash).string().not_null())
                .col(ColumnDef::new(AuditRecords::Hash).string().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .from(AuditRecords::Table, AuditRecords::WorkflowId)
                        .to(Workflows::Table, Workflows::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("audit_records_workflow_seq")
                .table(AuditRecords::Table)
                .col(AuditRecords::WorkflowId)
                .col(AuditRecords::Seq)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(DeadLetters::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(DeadLetters::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(DeadLetters::ReceivedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new(DeadLetters::Code).string().not_null())
                .col(ColumnDef::new(DeadLetters::Message).text().not_null())
                .col(ColumnDef::new(DeadLetters::EventId).string().null())
                .col(ColumnDef::new(DeadLetters::RoutingKey).string().not_null())
                .col(ColumnDef::new(DeadLetters::Body).text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Outbox::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(Outbox::RoutingKey).string().not_null())
                .col(ColumnDef::new(Outbox::Body).text().not_null())
                .col(
                    ColumnDef::new(Outbox::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Outbox::PublishedAt)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Outbox::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(DeadLetters::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(AuditRecords::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Workflows::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Definitions::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}
