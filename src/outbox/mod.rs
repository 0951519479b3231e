//! Completion events (CONTRACT §2): [`events`] builds them when a workflow ends (or a
//! recheck finds access back), the runner writes them to the outbox in the transaction
//! of the record that says so (the queries are in `store/outbox.rs`), and `publisher.rs`
//! publishes them with confirms, sweeping up what a writer could not publish.

pub mod events;
mod publisher;

pub use publisher::{publish_outbox, Outbox};
