//! The runtime: turns accepted events into workflows and drives them.
//!
//! - [`engine`]: the entry points the rest of the program uses; hands out the parts.
//! - `error`: `EngineError`, the one error type of the runtime's parts.
//! - [`shared`]: what the parts share (store, config, definitions, clients, worker id…).
//! - [`acceptor`]: stores an accepted event's workflows and hands them to the work loop.
//! - [`scheduler`]: claims due workflows under fenced leases, heartbeats, the serve loop.
//! - `drive`: the one drive loop, over how effects happen (a run's or a plan's).
//! - `runner`: drives one leased workflow: decide, persist, perform, persist.
//! - `in_flight`: the drives a process runs, by lease, with their cancel signals.
//! - [`operator`]: an operator's retry or cancel, through the same lease.
//! - [`definitions`]: the workflow definitions in force.
//! - [`dry_run`]: `offboard plan`: a workflow driven in memory with writes turned off.

pub mod acceptor;
pub mod definitions;
mod drive;
pub mod dry_run;
pub mod engine;
mod error;
mod in_flight;
pub mod operator;
mod runner;
pub mod scheduler;
pub mod shared;
