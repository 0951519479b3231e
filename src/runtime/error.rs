//! The runtime's one error type: what its parts return when the store refuses or stored
//! data does not add up. It lives apart from [`super::engine`] so the parts can name it
//! without importing the entry points that hold them.

use crate::store::StoreError;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store refused (database trouble, or the lease was lost).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored data is inconsistent.
    #[error("{0}")]
    Corrupt(String),
}

impl EngineError {
    /// Whether the error is a lost lease: the holder stops without writing.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, EngineError::Store(StoreError::LeaseLost))
    }
}
