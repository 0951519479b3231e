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

impl Reply {
    /// The body of an answer that succeeded (status below 400), else the app's error:
    /// `cut_off` with the status when the body ran past the limit, `refused` with the
    /// whole answer when the status is 400 or more.
    pub fn into_body<E>(
        self,
        cut_off: impl FnOnce(u16) -> E,
        refused: impl FnOnce(Reply) -> E,
    ) -> Result<Value, E> {
        if self.oversized {
            Err(cut_off(self.status))
        } else if self.status < 400 {
            Ok(self.body)
        } else {
            Err(refused(self))
        }
    }
}
