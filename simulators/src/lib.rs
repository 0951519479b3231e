//! In-process simulators of the APIs offboard drives: Smartsheet REST API 2.0, the
//! Postman API with its SCIM 2.0 endpoints, and a standard SCIM 2.0 provider (RFC 7643,
//! RFC 7644) for any app that provisions by SCIM. Each binds an axum server to a free loopback
//! port, keeps an in-memory organisation, and lets a test bend reality on purpose (bad
//! credentials, rate limits, injected faults, random transient trouble).
//!
//! They are not part of the product: offboard's tests and bench use them as a
//! dev-dependency, and `offboard demo` (the default `demo` feature) runs against them.
//! The crate depends on nothing of offboard's — the clients and the simulators meet only
//! over HTTP, which is what keeps the simulators honest (`tests/connector_contract.rs`
//! checks the first two against the apps' OpenAPI documents, `tests/scim_simulator.rs`
//! the SCIM provider against the RFCs' examples).
//!
//! # Layout
//! - [`kit`], what the simulators share: the server's lifecycle, injected faults,
//!   [`kit::Chaos`], killable connections.
//! - [`smartsheet`], the Smartsheet simulator, [`smartsheet::SmartsheetSim`].
//! - [`postman`], the Postman simulator, [`postman::PostmanSim`].
//! - [`scim`], a SCIM 2.0 provider written from RFC 7643/7644, [`scim::ScimSim`].
//! - [`standalone`], either simulator in a process of its own (the `simulate` binary and
//!   the bench's separate-process mode).

#![warn(missing_docs)]

pub mod kit;
pub mod postman;
pub mod scim;
pub mod smartsheet;
pub mod standalone;
