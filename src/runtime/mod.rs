//! The runtime: turns accepted events into workflows and drives them. The [`engine`]
//! claims due workflows, asks the pure machine what to do, persists every record before
//! and after each action, and sleeps on durable timers.

pub mod definitions;
pub mod engine;
pub mod outbound;
