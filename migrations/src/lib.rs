//! Database migrations for offboard (SQLite and PostgreSQL). The engine runs them at start;
//! `cargo run -p migration -- up|down|status` runs them by hand.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_init;
mod m20261123_000002_fenced_leases;
mod m20261124_000003_due_at;
mod m20261203_000005_dead_letter_digest;
mod m20261203_000006_ends_account;
mod m20261203_000008_legacy_trails;
mod m20261203_000009_cancel_requests;
mod m20261203_000010_workers;

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_init::Migration),
            Box::new(m20261123_000002_fenced_leases::Migration),
            Box::new(m20261124_000003_due_at::Migration),
            Box::new(m20261203_000005_dead_letter_digest::Migration),
            Box::new(m20261203_000006_ends_account::Migration),
            Box::new(m20261203_000008_legacy_trails::Migration),
            Box::new(m20261203_000009_cancel_requests::Migration),
            Box::new(m20261203_000010_workers::Migration),
        ]
    }
}
