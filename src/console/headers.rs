//! The headers every answer of the listener carries — pages, the CSV, probes, metrics,
//! redirects, 401s and errors alike — set by one layer over the whole router, so that no
//! route can forget them:
//!
//! - `Content-Security-Policy`: [`CSP`]. Nothing is allowed unless named: styles and
//!   images from this origin only (the pages' one stylesheet is `/console.css`; no inline
//!   style), no script at all, forms that post back here only, no framing, no `<base>`.
//! - `X-Frame-Options: DENY` (framing, for browsers older than `frame-ancestors`),
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` (a workflow's URL
//!   names nobody, but filters in a list's URL may hold an email).
//! - `Cache-Control: no-store`, unless the route set its own: pages with emails must not
//!   linger in shared or browser caches.

use axum::http::{header, HeaderValue};
use axum::response::Response;

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to `response` (a `map_response` layer).
pub async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
