//! The reads behind the operators' listener: a filtered, paged list of workflows, counts
//! per state, dead letters as the console lists them, the figures the metrics gauges
//! show, and the readiness probe. Read-only.

use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::entities::{dead_letter, outbox, workflow};
use super::{Store, StoreError};

/// Which workflows a console list shows; `None` fields do not filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkflowFilter {
    /// Exact state (`completed`, `failed`…).
    pub state: Option<String>,
    /// Exact app.
    pub app: Option<String>,
    /// Exact connection.
    pub connection: Option<String>,
    /// Part of the person's email.
    pub person: Option<String>,
    /// Exact error code.
    pub error_code: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// A dead letter as the console lists it: everything but the raw body, whose size alone
/// is read (a body can be large, and the list shows hundreds).
#[derive(Clone, Debug, PartialEq, FromQueryResult)]
pub struct DeadLetterRow {
    /// When.
    pub received_at: DateTime<Utc>,
    /// EVT code.
    pub code: String,
    /// Why.
    pub message: String,
    /// The event id, when one could be read.
    pub event_id: Option<String>,
    /// Routing key it came with.
    pub routing_key: String,
    /// The stored excerpt of the body, control characters escaped.
    pub body: String,
    /// The body's size in bytes, when the raw body was kept.
    pub size: Option<i64>,
}

/// The figures the metrics gauges show, read in one go at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    /// (state, app, count) for every pair that has workflows.
    pub workflows: Vec<(String, String, i64)>,
    /// Leases held now (unexpired), by worker.
    pub leases: Vec<(String, i64)>,
    /// Age in seconds of the oldest unpublished outbox entry (0 when empty).
    pub outbox_lag_secs: f64,
    /// Outbox entries waiting.
    pub outbox_len: u64,
}

impl Store {
    /// One page of workflows matching `filter`, newest first, and how many match in all.
    pub async fn workflow_page(
        &self,
        filter: &WorkflowFilter,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<workflow::Model>, u64), StoreError> {
        use workflow::Column as C;
        let mut q = workflow::Entity::find();
        let exact = [
            (C::State, &filter.state),
            (C::App, &filter.app),
            (C::Connection, &filter.connection),
            (C::ErrorCode, &filter.error_code),
        ];
        for (column, value) in exact {
            if let Some(v) = value {
                q = q.filter(column.eq(v.as_str()));
            }
        }
        if let Some(p) = &filter.person {
            q = q.filter(C::PersonEmail.contains(p.as_str()));
        }
        if let Some(t) = filter.since {
            q = q.filter(C::CreatedAt.gte(t));
        }
        if let Some(t) = filter.until {
            q = q.filter(C::CreatedAt.lt(t));
        }
        let total = q.clone().count(&self.db).await?;
        let rows = q
            .order_by_desc(C::CreatedAt)
            .order_by_desc(C::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok((rows, total))
    }

    /// How many workflows are in each state.
    pub async fn counts_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        use workflow::Column as C;
        Ok(workflow::Entity::find()
            .select_only()
            .column(C::State)
            .column_as(C::Id.count(), "n")
            .group_by(C::State)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Dead letters, newest first, at most `limit`, without their raw bodies.
    pub async fn recent_dead_letters(&self, limit: u64) -> Result<Vec<DeadLetterRow>, StoreError> {
        use dead_letter::Column as C;
        Ok(dead_letter::Entity::find()
            .select_only()
            .columns([
                C::ReceivedAt,
                C::Code,
                C::Message,
                C::EventId,
                C::RoutingKey,
                C::Body,
            ])
            // The whole body's size (`raw` keeps at most 64 KiB of it); rows written
            // before that column existed hold their whole body, so its length is the
            // size. LENGTH counts bytes of a blob on SQLite and of a bytea on
            // PostgreSQL; the cast makes it the same integer type on both.
            .column_as(
                Expr::cust("CAST(COALESCE(body_size, LENGTH(raw)) AS BIGINT)"),
                "size",
            )
            .order_by_desc(C::Id)
            .limit(limit)
            .into_model::<DeadLetterRow>()
            .all(&self.db)
            .await?)
    }

    /// The figures behind the metrics gauges.
    pub async fn gauges(&self) -> Result<Gauges, StoreError> {
        use workflow::Column as C;
        let now = Utc::now();
        let workflows = workflow::Entity::find()
            .select_only()
            .column(C::State)
            .column(C::App)
            .column_as(C::Id.count(), "n")
            .group_by(C::State)
            .group_by(C::App)
            .into_tuple()
            .all(&self.db)
            .await?;
        let leases = workflow::Entity::find()
            .select_only()
            .column(C::LeaseOwner)
            .column_as(C::Id.count(), "n")
            .filter(C::LeaseOwner.is_not_null())
            .filter(C::LeaseUntil.gt(now))
            .group_by(C::LeaseOwner)
            .into_tuple::<(Option<String>, i64)>()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|(owner, n)| (owner.unwrap_or_default(), n))
            .collect();
        let oldest: Option<DateTime<Utc>> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::CreatedAt)
            .order_by_asc(outbox::Column::CreatedAt)
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(Gauges {
            workflows,
            leases,
            outbox_lag_secs: oldest.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0)),
            outbox_len: outbox::Entity::find().count(&self.db).await?,
        })
    }

    /// `None` when the database answers and every migration is applied; otherwise why not.
    pub async fn unready(&self) -> Option<String> {
        if let Err(e) = self.db.execute_unprepared("SELECT 1").await {
            return Some(format!("database unreachable: {e}"));
        }
        match Migrator::get_pending_migrations(&self.db).await {
            Ok(pending) if pending.is_empty() => None,
            Ok(pending) => Some(format!("{} migrations not applied", pending.len())),
            Err(e) => Some(format!("cannot read the migrations: {e}")),
        }
    }
}
