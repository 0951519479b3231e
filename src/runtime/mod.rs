//! The runtime: turns accepted events into workflows and drives them.
//!
//! - [`engine`]: what the parts share (store, config, definitions, clients) and intake.
//! - [`scheduler`]: claims due workflows under fenced leases, heartbeats, the serve loop.
//! - [`runner`]: drives one leased workflow: decide, persist, perform, persist.
//! - [`in_flight`]: the drives a process runs, by lease, with their cancel signals.
//! - [`operator`]: an operator's retry or cancel, through the same lease.
//! - [`definitions`]: the workflow definitions in force.
//! - [`dry_run`]: `offboard plan`: a workflow driven in memory with writes turned off.

pub mod definitions;
pub mod dry_run;
pub mod engine;
mod in_flight;
pub mod operator;
mod runner;
pub mod scheduler;
