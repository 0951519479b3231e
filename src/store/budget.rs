//! Request budgets shared by every process on one connection: each connection has one row
//! holding the time of its next free request slot. Taking slots is a single upsert on the
//! database's clock that moves the next free slot on by the span taken, so N processes
//! together send no more than `requests_per_minute`.

use std::time::Duration;

use super::{Store, StoreError};

impl Store {
    /// Reserves the next `span` of `connection`'s request time (a run of slots, end to
    /// end, as the caller's pacer counts them); returns how long to wait for its start.
    pub async fn take_request_span(
        &self,
        connection: &str,
        span: Duration,
    ) -> Result<Duration, StoreError> {
        use sea_orm::ConnectionTrait;
        let d = self.dialect();
        let now = d.now_micros();
        let span = i64::try_from(span.as_micros().max(1)).unwrap_or(i64::MAX);
        let sql = format!(
            "INSERT INTO request_budgets AS b (connection, next_slot_us) VALUES ($1, {now} + $2) \
             ON CONFLICT (connection) DO UPDATE \
             SET next_slot_us = {greatest}(b.next_slot_us, {now}) + $2 \
             RETURNING next_slot_us - $2 - {now} AS wait_us",
            greatest = d.greatest(),
        );
        let row = self
            .db
            .query_one_raw(d.stmt(&sql, vec![connection.into(), span.into()]))
            .await?
            .ok_or_else(|| StoreError::Corrupt("the budget upsert returned no row".into()))?;
        let wait: i64 = row.try_get("", "wait_us")?;
        Ok(Duration::from_micros(wait.max(0) as u64))
    }
}
