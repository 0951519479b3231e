//! Postman (Postman API and its SCIM 2.0 endpoints): typed client, workflow actions,
//! error → code mapping, connection check.
//!
//! # What offboarding and licence reclaim do in Postman
//!
//! Postman bills a team by seats, and a seat is held by every active team member.
//! Postman's public API offers no cheaper role to move someone to; the documented way to
//! free a seat through the API is SCIM deactivation (`PATCH /scim/v2/Users/{id}` with
//! `active: false`, Enterprise teams with SCIM turned on), which takes the person out of
//! the team and blocks their sign-in to Postman while keeping the account and its data;
//! `active: true` brings them back. Deleting an account with its data is not offered by
//! the API (Postman support does it on request).
//!
//! - `offboarding.requested` (`workflows/postman-offboard.toml`, outcome `removed`):
//!   for each workspace where the leaver is the only Admin, the recipient (`transfer_to`)
//!   is made Admin; the leaver's roles in every team workspace are taken away (an only
//!   Admin's role is kept when no one took over, so no workspace is left without an
//!   Admin); the account is deactivated through SCIM; then Postman is asked again to
//!   confirm the account is inactive and no longer a team member.
//! - `license.reclaim.requested` (`workflows/postman-license-reclaim.toml`, outcome
//!   `downgraded`): the same without taking workspace roles away: with a recipient, the
//!   workspaces the person alone administers get the recipient as Admin; the account is
//!   deactivated through SCIM and the deactivation confirmed. The seat becomes free for
//!   someone else, the account and its data stay, and a SCIM reactivation restores access.
//!
//! In both, the freed seat is not refunded by itself: Postman keeps the number of paid
//! seats until someone with the Billing role lowers it (unless Auto-Flex added the seat
//! in the current cycle). The seat counts of `GET /accounts` (`slots`) are recorded before
//! and after as evidence when the key's owner may read them.

pub mod actions;
pub mod check;
pub mod client;
pub mod dry_run;
pub mod errors;
