//! Postman: client, actions, error mapping, check and simulator.

pub mod actions;
pub mod check;
pub mod client;
