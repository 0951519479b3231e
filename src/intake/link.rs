//! The event consumer's broker connection, as the rest of the process may observe it.
//!
//! Readiness asks "is this process connected to the broker?". Opening a connection to
//! find out would answer a different question (can *a* connection be opened?) and cost a
//! TCP and AMQP handshake per probe; the consumer already holds the connection that
//! matters, so it lends that connection's status here while it holds it.

use std::sync::{Arc, Mutex};

use lapin::ConnectionStatus;

/// A shared view of the consumer's connection: empty until the consumer connects and
/// again whenever it has let its connection go (it is reconnecting, or stopped).
#[derive(Clone, Default)]
pub struct BrokerLink(Arc<Mutex<Option<ConnectionStatus>>>);

impl BrokerLink {
    /// Lends `status` until the returned guard is dropped (when the consumer leaves the
    /// connection, whatever the reason).
    pub fn hold(&self, status: &ConnectionStatus) -> Held<'_> {
        *self.slot() = Some(status.clone());
        Held(self)
    }

    /// Whether the consumer holds a connection the broker still has open.
    pub fn connected(&self) -> bool {
        self.slot()
            .as_ref()
            .is_some_and(ConnectionStatus::connected)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<ConnectionStatus>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The consumer's loan of its connection's status; returned when dropped.
pub struct Held<'a>(&'a BrokerLink);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        *self.0.slot() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_connected_before_a_loan_nor_after_it() {
        let link = BrokerLink::default();
        assert!(!link.connected(), "never connected");
        let status = ConnectionStatus::default();
        {
            let _held = link.hold(&status);
            // A status that never completed a handshake is not connected either.
            assert!(!link.connected());
            assert!(link.slot().is_some(), "lent while held");
        }
        assert!(link.slot().is_none(), "returned when the guard drops");
    }
}
