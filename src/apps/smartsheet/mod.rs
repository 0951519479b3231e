//! Smartsheet (REST API 2.0): typed client, workflow actions, error → code mapping,
//! connection check.

pub mod actions;
pub mod check;
pub mod client;
pub mod dry_run;
pub mod errors;
