//! The schema's version and who writes to it (issue 23, README "Upgrading").
//!
//! The version of a schema is the name of the newest migration applied to it; a release's
//! version is the newest migration it ships. Migration names begin with their date, so
//! text order is release order. A release refuses a database that holds a migration it
//! does not know (a newer release migrated it), and `serve` refuses to run beside live
//! leases of a worker recorded with an older version, or not recorded at all (a release
//! from before the `workers` table).

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Value};

use super::{Store, StoreError};

/// The newest migration this release knows: its schema version.
pub fn release_version() -> String {
    Migrator::migrations()
        .last()
        .map(|m| m.name().to_string())
        .unwrap_or_default()
}

/// What a release must not run against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaRefusal {
    /// The database holds migrations this release does not know.
    #[error("the database schema is version {applied}, newer than this release's {known}: run the newer release (or roll the database back with it, see README \"Upgrading\")")]
    Newer {
        /// The newest migration applied to the database.
        applied: String,
        /// The newest migration this release knows.
        known: String,
    },
    /// A worker of an older schema version still holds live leases.
    #[error("worker {worker} of schema version {version} still holds {leases} live lease(s), this release's schema is {known}: stop or upgrade that worker first (its leases lapse at the latest {until})")]
    OlderWorker {
        /// The lease owner, escaped.
        worker: String,
        /// Its recorded schema version, or a phrase saying none was recorded.
        version: String,
        /// How many live leases it holds.
        leases: i64,
        /// When the last of them lapses.
        until: String,
        /// This release's schema version.
        known: String,
    },
}

/// The applied migrations this release does not know, judged: `Ok` when there are none.
pub fn judge_applied(known: &[String], applied: &[String]) -> Result<(), SchemaRefusal> {
    let unknown = applied.iter().filter(|a| !known.contains(a)).max();
    match unknown {
        None => Ok(()),
        Some(newest) => Err(SchemaRefusal::Newer {
            applied: newest.escape_debug().to_string(),
            known: known.iter().max().cloned().unwrap_or_default(),
        }),
    }
}

/// Refuses a database migrated by a newer release; run before migrating, on the
/// connection that migrates.
pub(super) async fn refuse_newer<C: ConnectionTrait>(db: &C) -> Result<(), StoreError> {
    let applied: Vec<String> = Migrator::get_migration_models(db)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    judge_applied(&known, &applied).map_err(StoreError::Schema)
}

impl Store {
    /// Records `worker` (the lease owner a `serve` process writes) with this release's
    /// schema version: once, when it starts serving.
    pub async fn register_worker(&self, worker: &str) -> Result<(), StoreError> {
        let d = self.dialect();
        self.db
            .execute_raw(d.stmt(
                "INSERT INTO workers (worker_id, schema_version) VALUES ($1, $2)",
                vec![worker.into(), release_version().into()],
            ))
            .await?;
        Ok(())
    }

    /// Refuses to serve while a worker of an older schema version (or of a release that
    /// recorded none) holds a live lease; one statement, at start.
    pub async fn refuse_older_workers(&self) -> Result<(), StoreError> {
        let d = self.dialect();
        let known = release_version();
        let sql = format!(
            "SELECT w.lease_owner, k.schema_version, COUNT(*) AS leases, \
             CAST(MAX(w.lease_until) AS TEXT) AS until \
             FROM workflows w LEFT JOIN workers k ON k.worker_id = w.lease_owner \
             WHERE w.lease_owner IS NOT NULL AND w.lease_until > {now} \
             AND (k.schema_version IS NULL OR k.schema_version < $1) \
             GROUP BY w.lease_owner, k.schema_version ORDER BY w.lease_owner LIMIT 1",
            now = d.now()
        );
        let Some(row) = self
            .db
            .query_one_raw(d.stmt(&sql, vec![Value::from(known.clone())]))
            .await?
        else {
            return Ok(());
        };
        let worker: String = row.try_get("", "lease_owner")?;
        let version: Option<String> = row.try_get("", "schema_version")?;
        Err(StoreError::Schema(SchemaRefusal::OlderWorker {
            worker: worker.escape_debug().to_string(),
            version: version
                .map(|v| v.escape_debug().to_string())
                .unwrap_or_else(|| "unrecorded (a release before m20261203_000010_workers)".into()),
            leases: row.try_get("", "leases")?,
            until: row.try_get("", "until")?,
            known,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_database_at_or_behind_this_release_is_accepted() {
        let known = names(&["m1_a", "m2_b", "m3_c"]);
        assert_eq!(judge_applied(&known, &names(&[])), Ok(()));
        assert_eq!(judge_applied(&known, &names(&["m1_a", "m2_b"])), Ok(()));
        assert_eq!(judge_applied(&known, &known), Ok(()));
    }

    #[test]
    fn a_migration_this_release_does_not_know_names_both_versions() {
        let known = names(&["m1_a", "m2_b"]);
        let refusal = judge_applied(&known, &names(&["m1_a", "m2_b", "m4_d", "m3_c"]));
        assert_eq!(
            refusal,
            Err(SchemaRefusal::Newer {
                applied: "m4_d".into(),
                known: "m2_b".into()
            })
        );
        let line = refusal.unwrap_err().to_string();
        assert!(line.contains("m4_d") && line.contains("m2_b") && !line.contains('\n'));
    }

    #[test]
    fn the_release_version_is_the_newest_migration() {
        assert_eq!(release_version(), "m20261203_000010_workers");
    }
}
