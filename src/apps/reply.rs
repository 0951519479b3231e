//! What an app answered, read in full: the one type both the HTTP client (which reads
//! it off the wire) and the dry run (which answers writes itself) hand the actions, kept
//! apart from both so neither imports the other for it.

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` in milliseconds, when given in seconds.
    pub retry_after_ms: Option<u64>,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty, not JSON, or oversized).
    pub body: Value,
    /// Whether the body ran past the client's limit (`http::MAX_BODY_BYTES`) and was not
    /// read further.
    pub oversized: bool,
}
