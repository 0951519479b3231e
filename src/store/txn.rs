//! Write transactions in as few trips to the database as each back-end allows: on
//! PostgreSQL statement by statement (its protocol carries one statement with values at a
//! time), on SQLite the statements known together sent together (see [`sqlite`]).

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult,
    Statement, TransactionTrait,
};

use super::sql::Dialect;
use super::sqlite;

/// An open write transaction.
pub(crate) enum Txn {
    /// PostgreSQL: one pooled connection inside `BEGIN`.
    Postgres(DatabaseTransaction),
    /// SQLite: the one connection inside `BEGIN IMMEDIATE`.
    Sqlite(sqlite::Open),
}

impl Txn {
    /// Begins a transaction with `first`; returns its rows.
    pub async fn begin(
        db: &DatabaseConnection,
        first: Statement,
    ) -> Result<(Txn, Vec<QueryResult>), DbErr> {
        if db.get_database_backend() == DbBackend::Sqlite {
            let (open, rows) = sqlite::Open::begin(db.get_sqlite_connection_pool(), first).await?;
            return Ok((Txn::Sqlite(open), rows));
        }
        let txn = db.begin().await?;
        let rows = txn.query_all_raw(first).await?;
        Ok((Txn::Postgres(txn), rows))
    }

    /// Runs `stmt` inside the transaction; returns its rows.
    pub async fn query(&mut self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Txn::Postgres(txn) => txn.query_all_raw(stmt).await,
            Txn::Sqlite(open) => open.query(stmt).await,
        }
    }

    /// Runs `last` (on SQLite in the same trip as the commit) and commits.
    pub async fn commit(self, last: Vec<Statement>) -> Result<(), DbErr> {
        match self {
            Txn::Postgres(txn) => {
                for stmt in last {
                    txn.execute_raw(stmt).await?;
                }
                txn.commit().await
            }
            Txn::Sqlite(open) => open.commit(Dialect::join(last)).await.map(drop),
        }
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Txn::Postgres(txn) => txn.rollback().await,
            Txn::Sqlite(open) => open.rollback().await,
        }
    }
}
