//! offboard: an event-driven workflow engine that takes people out of SaaS apps when they
//! leave a company or no longer need a paid seat.
//!
//! # Layout
//! - [`domain`]: the pure core (events, definitions, retry policy, state machine, hash
//!   chain). No I/O.
//! - [`runtime`]: the engine that drives workflows and persists every transition.
//! - [`intake`]: RabbitMQ connection and topology, consumer, dead letters, submit.
//! - [`outbox`]: completion events: built, stored with the step, published with confirms.
//! - [`service`]: what `offboard serve` runs: intake, outbox publisher, work loop.
//! - [`store`]: sea-orm persistence (SQLite or PostgreSQL).
//! - [`apps`]: one module per app (client, actions, error codes, check). The apps'
//!   simulators live in the `offboard-simulators` crate (`simulators/`).
//! - [`codes`]: the error-code catalog.
//! - [`evidence`]: what a trail proves (replay verdict, auditors' rows), for CLI and console.
//! - `console` (feature `console`, on by default): the operators' listener (axum): metrics,
//!   health probes and the web console.
//! - `ingest` (feature `console`): the HR-facing HTTP intake, `POST /events` onto the
//!   exchange.
//! - [`config`], [`telemetry`], [`cli`]: configuration, logging, the command line.

#![warn(missing_docs)]

pub mod apps;
pub mod cli;
pub mod codes;
pub mod config;
#[cfg(feature = "console")]
pub mod console;
pub mod domain;
pub mod evidence;
#[cfg(feature = "console")]
pub mod ingest;
pub mod intake;
pub mod outbox;
pub mod runtime;
pub mod service;
pub mod store;
pub mod telemetry;
