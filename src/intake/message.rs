//! What the intake reads, whoever carried it: the body, where it was published and the
//! headers it came with. Both halves of handling a message name it: `receive` (the
//! checks) and `dead_letter` (what a rejection records).

use crate::domain::admission::SignatureHeaders;

/// A message as the intake reads it, whoever carried it: the broker's consumer, or
/// `offboard demo`, which has no broker.
pub struct Message<'a> {
    /// The CloudEvents JSON, as received.
    pub body: &'a [u8],
    /// Where it was published (the event type, by convention); kept with a dead letter.
    pub routing_key: &'a str,
    /// The signature headers it came with.
    pub signature: SignatureHeaders<'a>,
    /// How many times the broker delivered it before (`x-delivery-count`), if it says.
    pub delivery_count: Option<i64>,
}
