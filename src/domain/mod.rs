//! The pure core: everything here is data and functions over data. No tokio, lapin,
//! sea-orm or reqwest: the same code runs a workflow live and replays it from its trail.
//!
//! - [`acceptance`]: what an accepted event's workflows open with; the brake's `held`.
//! - [`event`]: turn an incoming CloudEvent into a [`event::Request`] or a coded rejection.
//! - [`admission`]: who may ask: allowed sources and event signatures.
//! - [`chain`]: the audit trail's hash chain, keyed (HMAC-SHA256) or plain SHA-256.
//! - [`definition`]: parse and validate the declarative workflow files in `workflows/`.
//! - [`retry`]: a step's retry policy and the delays it yields.
//! - [`step`]: what an action returns: [`step::StepOutput`] or [`step::StepError`].
//! - [`machine`]: the workflow state machine: trail records, `apply`, `next`.
//! - [`protection`]: who may never be removed (token owner, admins, `protected`).
//! - [`plan`]: the workflows an accepted event asks for, one per connection.
//! - [`recheck`]: rechecks after the end: offsets, and what a lookup found.
//! - [`describe`]: each trail record in words, the one description the terminal and the
//!   console render.

pub mod acceptance;
pub mod admission;
pub mod chain;
pub mod definition;
pub mod describe;
pub mod event;
pub mod machine;
pub mod plan;
pub mod protection;
pub mod recheck;
pub mod retry;
pub mod step;
