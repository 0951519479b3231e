//! Postman API client (being written).

use crate::config::{ConnectionConfig, Secret};

/// A client for one Postman team.
#[derive(Debug)]
pub struct Client {}

impl Client {
    /// A client for a configured connection.
    pub fn new(_config: &ConnectionConfig, _token: Secret) -> Result<Self, String> {
        Ok(Client {})
    }
}
