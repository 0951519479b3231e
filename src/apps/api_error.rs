//! The one error type of the app clients: a call that got no answer, or an answer that
//! says no.
//!
//! Every app's failed call carries the same four things: the HTTP status (none when no
//! answer came), the app's own name for what went wrong — its *kind*: Smartsheet's
//! numeric `errorCode`, Postman's error name, SCIM's `scimType` —, a message, and the
//! wait the server asked for. It is built, retried (see [`crate::apps::retry`]) and
//! described the same way for all three, so that is written once here, over the kind
//! `K`. What really differs between the apps is two judgements, and each app makes them
//! in its kind's [`ErrorKind`]: which answers are worth another try (Smartsheet also
//! retries its errorCodes 4000–4004; for SCIM a 501 is an answer, not an outage), and how
//! a description names the kind (`errorCode 4003`, `forbiddenError`,
//! `scimType "invalidFilter"`) and whether it quotes the message (SCIM's `detail` is).
//! Each client names its instance with a type alias (`smartsheet::client::ApiError` is
//! `ApiError<ErrorCode>`), and adds there what only its app can read in an error
//! (Smartsheet's "user not found", Postman's hints about an expired key or the plan).

use std::fmt::Debug;

use crate::apps::http::CallFailure;
use crate::apps::retry::CallError;

/// An app's own name for what went wrong, and what the app's errors do differently.
pub trait ErrorKind: Clone + Debug + PartialEq {
    /// Whether [`ApiError::describe`] quotes and escapes the message (`{:?}`): for an app
    /// whose messages are a provider's free text on its way to logs and terminals.
    const QUOTES_MESSAGE: bool = false;

    /// The kind as [`ApiError::describe`] puts it between the status and the message,
    /// its separator first: `", errorCode 4003"`, `" forbiddenError"`.
    fn label(&self) -> String;

    /// Whether an answer with `status` and this kind may succeed when asked again. By
    /// default what HTTP alone says ([`transient_status`]).
    fn is_transient(status: Option<u16>, _kind: Option<&Self>) -> bool {
        transient_status(status)
    }
}

/// What HTTP alone says about trying again: it may help when no answer came, on 429
/// (too many requests) and on a 5xx (the server's trouble, not the request's).
pub fn transient_status(status: Option<u16>) -> bool {
    matches!(status, None | Some(429) | Some(500..=599))
}

/// A failed call to an app whose errors are of kind `K`: no response, or an error
/// response.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError<K> {
    /// HTTP status (`None` when no response came).
    pub status: Option<u16>,
    /// The app's own name for the error, when its answer gave one.
    pub kind: Option<K>,
    /// The app's message, or what went wrong on the way.
    pub message: String,
    /// How long the server asked to wait before trying again, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl<K: ErrorKind> ApiError<K> {
    /// An error with no app error body to read: no answer, a redirect, or an answer
    /// that cannot be used.
    pub fn without_body(status: Option<u16>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: None,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// An error about an answer that came with status 200 but cannot be used (the wrong
    /// shape, a list that never ends).
    pub fn unusable(message: impl Into<String>) -> Self {
        ApiError::without_body(Some(200), message)
    }

    /// Whether another attempt may succeed, as the app's kind judges it.
    pub fn is_transient(&self) -> bool {
        K::is_transient(self.status, self.kind.as_ref())
    }

    /// Whether the answer was a redirect, which is never followed (see
    /// [`crate::apps::http`]): the app's `-199-B`, not retried.
    pub fn is_redirect(&self) -> bool {
        matches!(self.status, Some(300..=399))
    }

    /// One line naming the status, the kind and the message (`HTTP 404, errorCode 1020:
    /// Not Found`); the message alone when no answer came.
    pub fn describe(&self) -> String {
        let Some(status) = self.status else {
            return self.message.clone();
        };
        let kind = self.kind.as_ref().map(K::label).unwrap_or_default();
        if K::QUOTES_MESSAGE {
            format!("HTTP {status}{kind}: {:?}", self.message)
        } else {
            format!("HTTP {status}{kind}: {}", self.message)
        }
    }
}

impl<K: ErrorKind> From<CallFailure> for ApiError<K> {
    fn from(failure: CallFailure) -> Self {
        let (status, message) = failure.into_parts();
        ApiError::without_body(status, message)
    }
}

impl<K: ErrorKind> CallError for ApiError<K> {
    fn is_transient(&self) -> bool {
        ApiError::is_transient(self)
    }
    fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind that quotes messages and holds 418 for an outage, to see both hooks used.
    #[derive(Clone, Debug, PartialEq)]
    struct Teapot(&'static str);

    impl ErrorKind for Teapot {
        const QUOTES_MESSAGE: bool = true;
        fn label(&self) -> String {
            format!(" ({})", self.0)
        }
        fn is_transient(status: Option<u16>, _: Option<&Self>) -> bool {
            status == Some(418) || transient_status(status)
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Plain;

    impl ErrorKind for Plain {
        fn label(&self) -> String {
            " plain".into()
        }
    }

    fn answer<K>(status: u16, kind: Option<K>, message: &str) -> ApiError<K> {
        ApiError {
            status: Some(status),
            kind,
            message: message.into(),
            retry_after_ms: Some(1_000),
        }
    }

    #[test]
    fn describe_names_status_kind_and_message_as_the_kind_says() {
        assert_eq!(
            answer(400, Some(Plain), "no").describe(),
            "HTTP 400 plain: no"
        );
        assert_eq!(answer::<Plain>(400, None, "no").describe(), "HTTP 400: no");
        assert_eq!(
            answer(400, Some(Teapot("t")), "a\nb").describe(),
            r#"HTTP 400 (t): "a\nb""#
        );
        let no_answer = ApiError::<Teapot>::without_body(None, "timed out\n");
        assert_eq!(no_answer.describe(), "timed out\n");
    }

    #[test]
    fn transience_is_http_s_unless_the_kind_says_more() {
        assert!(ApiError::<Plain>::without_body(None, "reset").is_transient());
        for status in [429, 500, 503, 599] {
            assert!(answer::<Plain>(status, None, "").is_transient(), "{status}");
        }
        for status in [200, 307, 400, 403, 404, 418] {
            assert!(
                !answer::<Plain>(status, None, "").is_transient(),
                "{status}"
            );
        }
        assert!(answer::<Teapot>(418, None, "").is_transient());
        let redirect = ApiError::<Plain>::from(CallFailure::Redirected {
            status: 307,
            message: "moved".into(),
        });
        assert!(redirect.is_redirect() && !redirect.is_transient());
        assert_eq!(redirect.describe(), "HTTP 307: moved");
        assert_eq!(
            CallError::retry_after_ms(&answer::<Plain>(429, None, "")),
            Some(1_000)
        );
    }
}
