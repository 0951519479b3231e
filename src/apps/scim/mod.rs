//! Any SCIM 2.0 service provider (RFC 7643 schema, RFC 7644 protocol): Slack, GitHub
//! Enterprise Managed Users, Okta-style directories and every app that provisions by SCIM.
//! One connection per provider (`app = "scim"`), each with its own budget, protection
//! list and settings (`match`, `offboard`, `remove_from_groups`).
//!
//! - `filter` (pure): the escaped filter that finds the person, and the exact match every
//!   returned resource must pass.
//! - `discovery` (pure): what `/ServiceProviderConfig` says (PATCH, filtering, ETags).
//! - `client`: typed calls over the shared HTTP client; bounded paging.
//! - `actions`: the workflow steps (`workflows/scim-*.toml`).
//! - `errors`: HTTP status and SCIM error body → `SCIM-…` codes.
//! - `check`: `offboard check`.
//! - `dry_run`: what the writes change, for `offboard plan`.
//!
//! Offboarding (`scim-offboard`) finds the user, takes it out of each of its groups,
//! deactivates (`active` false: sign-in blocked, the account and its data kept) or deletes
//! it, and reads it back; outcome `deactivated` or `removed`. Licence reclaim
//! (`scim-license-reclaim`) finds, deactivates and confirms, leaving the groups as they
//! are (a re-activation restores the access); outcome `downgraded`. SCIM has no hand-over
//! of data: a `transfer_to` is noted as not applicable.

pub mod actions;
pub mod check;
pub mod client;
pub mod discovery;
pub mod dry_run;
pub mod errors;
pub mod filter;
