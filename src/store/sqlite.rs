//! SQLite transactions in one trip to the connection's thread.
//!
//! The SQLite driver runs each connection on a thread of its own: every statement, and
//! every `BEGIN` and `COMMIT`, is a message to that thread and an answer back, and with one
//! connection shared by every task of the process those hand-offs, not the database, set
//! the pace. So a transaction whose statements are known up front is sent as one text,
//! `BEGIN IMMEDIATE; …; COMMIT`, and one whose second half depends on the first (an accept
//! that must not create anything for a duplicate event) as two.
//!
//! A connection is never given back to the pool inside a transaction: when a statement
//! fails the transaction is rolled back first, and when the caller goes away mid-way (its
//! future dropped) the connection is closed, which rolls back whatever it had begun.

use std::sync::Arc;

use sea_orm::sea_query::Values;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, AssertSqlSafe, Sqlite, SqlitePool};
use sea_orm::{DbErr, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;

/// A pooled connection inside a transaction this module began.
pub(crate) struct Open {
    /// Taken out when the transaction ends; still here on drop means the caller went away
    /// mid-transaction, and the connection is closed rather than pooled.
    conn: Option<PoolConnection<Sqlite>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

/// Runs `stmt` (statements separated by `;`, placeholders `?` in the order of its values)
/// on `conn` after `before` and before `after`, in one trip; returns every row the
/// statements returned.
async fn send(
    conn: &mut PoolConnection<Sqlite>,
    before: &str,
    stmt: Statement,
    after: &str,
) -> Result<Vec<QueryResult>, DbErr> {
    let sql = format!("{before}{}{after}", stmt.sql);
    let values = stmt.values.unwrap_or(Values(Vec::new()));
    let rows = sqlx::query_with(AssertSqlSafe(sql), SqlxValues(values))
        .fetch_all(&mut **conn)
        .await
        .map_err(query_err)?;
    Ok(rows.into_iter().map(QueryResult::from).collect())
}

/// Rolls back the transaction open on `conn`.
async fn roll_back(conn: &mut PoolConnection<Sqlite>) -> Result<(), DbErr> {
    sqlx::raw_sql(AssertSqlSafe("ROLLBACK"))
        .execute(&mut **conn)
        .await
        .map(drop)
        .map_err(query_err)
}

impl Open {
    /// Begins a transaction (`IMMEDIATE`: it takes the write lock at once, so another
    /// process writing the same file makes it wait rather than fail half-way) and runs the
    /// first statements in the same trip.
    pub async fn begin(
        pool: &SqlitePool,
        stmt: Statement,
    ) -> Result<(Open, Vec<QueryResult>), DbErr> {
        let mut open = Open::acquire(pool).await?;
        let rows = open.run("BEGIN IMMEDIATE; ", stmt, "").await?;
        Ok((open, rows))
    }

    async fn acquire(pool: &SqlitePool) -> Result<Open, DbErr> {
        let conn = pool
            .acquire()
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?;
        Ok(Open { conn: Some(conn) })
    }

    /// Runs the last statements and commits, in one trip.
    pub async fn commit(mut self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let rows = self.run("", stmt, "; COMMIT").await?;
        self.conn = None;
        Ok(rows)
    }

    /// Rolls the transaction back and gives the connection back to the pool.
    pub async fn rollback(mut self) -> Result<(), DbErr> {
        if let Some(conn) = self.conn.as_mut() {
            roll_back(conn).await?;
        }
        self.conn = None;
        Ok(())
    }

    /// Runs `stmt` inside the transaction, in one trip.
    pub async fn query(&mut self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.run("", stmt, "").await
    }

    /// Runs statements inside the transaction; on failure rolls back before answering.
    async fn run(
        &mut self,
        before: &str,
        stmt: Statement,
        after: &str,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let conn = self
            .conn
            .as_mut()
            .expect("an open transaction has its connection");
        match send(conn, before, stmt, after).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // The statements before the failing one may have run: undo them. When
                // even that fails (or `BEGIN` itself did not run), the connection is
                // closed on drop, which leaves no transaction behind either way.
                if roll_back(conn).await.is_ok() {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }
}

/// Runs `stmt` as one transaction in one trip: `BEGIN IMMEDIATE; stmt; COMMIT`.
pub(crate) async fn transaction(
    pool: &SqlitePool,
    stmt: Statement,
) -> Result<Vec<QueryResult>, DbErr> {
    let mut open = Open::acquire(pool).await?;
    let rows = open.run("BEGIN IMMEDIATE; ", stmt, "; COMMIT").await?;
    open.conn = None;
    Ok(rows)
}
