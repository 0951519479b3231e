//! What the database records of its audit key's use: when the key was first used, and the
//! legacy trails, those that held plain SHA-256 links at that moment (each with the
//! position of its last plain record). Verification accepts plain links only there (see
//! [`chain::PlainLinks`]).
//!
//! The record is made once per database, before the first keyed link is written: every
//! writer takes its key through [`Store::writing_key`], which makes sure of it first. Any
//! number of processes may race to make it: the one whose insert of the one-row table
//! lands lists the legacy trails in the same transaction; the others wait for that insert
//! to commit and then find it there. (A database that held keyed records before this
//! record existed was filled by its migration.)

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{Store, StoreError};
use crate::domain::chain::{self, PlainLinks};

impl Store {
    /// The key to link new records with: `None` without one; with one, returned only once
    /// the database records that its key is in use (made here by this handle's first
    /// call, if no process made it before).
    pub(crate) async fn writing_key(&self) -> Result<Option<&chain::AuditKey>, StoreError> {
        let Some(key) = self.audit_key() else {
            return Ok(None);
        };
        self.key_recorded
            .get_or_try_init(|| self.record_key_use())
            .await?;
        Ok(Some(key))
    }

    /// Records the key's first use now, with the trails that hold plain links, unless the
    /// database has recorded it already.
    async fn record_key_use(&self) -> Result<(), StoreError> {
        let d = self.dialect();
        let txn = self.db.begin().await?;
        let first = txn
            .execute_raw(d.stmt(
                "INSERT INTO audit_key_first_use (id, at) VALUES (1, $1) \
                 ON CONFLICT (id) DO NOTHING",
                vec![chain::stored_time(Utc::now()).into()],
            ))
            .await?
            .rows_affected()
            == 1;
        if first {
            txn.execute_raw(d.stmt(
                "INSERT INTO legacy_trails (workflow_id, plain_through_seq) \
                 SELECT workflow_id, MAX(seq) FROM audit_records \
                 WHERE hash NOT LIKE 'hmac1:%' GROUP BY workflow_id",
                vec![],
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// When this database first used its audit key; `None` if it never has.
    pub async fn key_first_used(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let d = self.dialect();
        let row = self
            .db
            .query_one_raw(d.stmt("SELECT at FROM audit_key_first_use WHERE id = 1", vec![]))
            .await?;
        Ok(row.map(|r| r.try_get("", "at")).transpose()?)
    }

    /// Every legacy trail: workflow id → the position of its last plain record when the
    /// key was first used.
    pub async fn legacy_trails(&self) -> Result<HashMap<String, i32>, StoreError> {
        let d = self.dialect();
        let rows = self
            .db
            .query_all_raw(d.stmt(
                "SELECT workflow_id, plain_through_seq FROM legacy_trails",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "workflow_id")?,
                    r.try_get("", "plain_through_seq")?,
                ))
            })
            .collect()
    }

    /// Where plain links stand in workflow `id`'s trail.
    pub async fn plain_links(&self, id: &str) -> Result<PlainLinks, StoreError> {
        let d = self.dialect();
        let Some(_) = self.key_first_used().await? else {
            return Ok(PlainLinks::Accepted);
        };
        let row = self
            .db
            .query_one_raw(d.stmt(
                "SELECT plain_through_seq FROM legacy_trails WHERE workflow_id = $1",
                vec![id.into()],
            ))
            .await?;
        let legacy = row
            .map(|r| r.try_get("", "plain_through_seq"))
            .transpose()?;
        Ok(PlainLinks::of(true, legacy))
    }
}
