//! Who may see the console. With `[http] viewer_token_env` set, every console page, form
//! and the evidence CSV need one of two credentials:
//!
//! - `Authorization: Bearer <token>` with the viewers' token or the operators' token (the
//!   operators' token grants viewing too), for scripts;
//! - the session cookie [`COOKIE`] that `POST /login` sets once given either token, for
//!   browsers. The cookie holds no token: it is `<expiry>.<tag>`, the tag being
//!   HMAC-SHA256 under the viewers' token of the expiry, so any `serve` process sharing
//!   the token accepts it, nothing that reads the cookie learns the token, and changing
//!   the token ends every session. It is `HttpOnly; SameSite=Strict; Path=/` and lasts
//!   [`SESSION`]; `POST /logout` clears it from the browser.
//!
//! Tokens and tags are compared in constant time. Without a viewers' token the console
//! is open, as before; the health probes, the metrics, the stylesheet and the login page
//! are open either way. This module decides; the routes in `mod.rs` act on the verdict.

use axum::http::{header, HeaderMap};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "offboard_session";

/// How long a session lasts.
pub const SESSION: chrono::Duration = chrono::Duration::hours(12);

/// What the tag of a session cookie authenticates, besides its expiry: keeps the tag from
/// meaning anything else that might ever be keyed with the same token.
const SESSION_CONTEXT: &[u8] = b"offboard console session v1\n";

/// The tokens the console knows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokens<'a> {
    /// Needed to view; `None`: the console is open.
    pub viewer: Option<&'a Secret>,
    /// Needed to retry, cancel or release; also grants viewing.
    pub operator: Option<&'a Secret>,
}

/// What a request may do, as far as viewing goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No viewers' token is configured: anyone may view.
    Open,
    /// A valid bearer token or session cookie came with the request.
    Allowed,
    /// A bearer token came, and it is neither token: refused, whatever else came.
    WrongBearer,
    /// Nothing valid came (no credential, or an expired or forged cookie).
    Missing,
}

impl Tokens<'_> {
    /// Whether `given` is the viewers' or the operators' token.
    pub fn grants_viewing(&self, given: &str) -> bool {
        [self.viewer, self.operator]
            .into_iter()
            .flatten()
            .any(|t| token_matches(t, given))
    }

    /// The verdict on a request with `headers` at `now` (unix seconds).
    pub fn judge(&self, headers: &HeaderMap, now: i64) -> Verdict {
        let Some(viewer) = self.viewer else {
            return Verdict::Open;
        };
        if let Some(given) = bearer(headers) {
            return if self.grants_viewing(given) {
                Verdict::Allowed
            } else {
                Verdict::WrongBearer
            };
        }
        match cookie(headers, COOKIE) {
            Some(value) if session_valid(viewer, value, now) => Verdict::Allowed,
            _ => Verdict::Missing,
        }
    }
}

/// Whether `given` is `expected`, compared in constant time over digests, so neither the
/// length nor a matching prefix shows in the timing.
pub fn token_matches(expected: &Secret, given: &str) -> bool {
    let a = Sha256::digest(expected.expose().as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// The token of an `Authorization: Bearer …` header, if the request has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn mac(viewer: &Secret, expires: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(viewer.expose().as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(SESSION_CONTEXT);
    mac.update(expires.to_string().as_bytes());
    mac
}

/// A session cookie's value for a session opened at `now` (unix seconds).
pub fn session_value(viewer: &Secret, now: i64) -> String {
    let expires = now + SESSION.num_seconds();
    let tag = mac(viewer, expires).finalize().into_bytes();
    format!("{expires}.{}", hex::encode(tag))
}

/// Whether `value` is a session cookie made with `viewer` that has not expired at `now`.
fn session_valid(viewer: &Secret, value: &str, now: i64) -> bool {
    let Some((expires, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(tag)) = (expires.parse::<i64>(), hex::decode(tag)) else {
        return false;
    };
    // A cookie made for longer than a session was not made by this code.
    let fresh = now < expires && expires <= now + SESSION.num_seconds();
    fresh && mac(viewer, expires).verify_slice(&tag).is_ok()
}

/// The `Set-Cookie` header that opens a session.
pub fn set_session(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict",
        SESSION.num_seconds()
    )
}

/// The `Set-Cookie` header that ends one.
pub fn clear_session() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// Whether the client asked for JSON (a script, which wants a 401, not a login page).
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

/// Where to send a browser after it signs in: `next` when it is a path on this console
/// (not another site's `//host/…`, not the login page itself), else the workflow list.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/login")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/workflows",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const NOW: i64 = 1_800_000_000;

    fn headers(pairs: &[(header::HeaderName, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn secrets() -> (Secret, Secret) {
        (Secret::new("view-3c9e"), Secret::new("op-7f3a"))
    }

    #[test]
    fn only_the_exact_token_matches() {
        let t = Secret::new("op-7f3a");
        assert!(token_matches(&t, "op-7f3a"));
        for wrong in ["", "op-7f3", "op-7f3a ", "OP-7F3A"] {
            assert!(!token_matches(&t, wrong), "{wrong:?}");
        }
    }

    #[test]
    fn each_credential_gets_its_verdict() {
        let (viewer, operator) = secrets();
        let t = Tokens {
            viewer: Some(&viewer),
            operator: Some(&operator),
        };
        let good = session_value(&viewer, NOW);
        let other_key = session_value(&Secret::new("another-token"), NOW);
        let (expires, tag) = good.split_once('.').unwrap();
        let later = format!("{}.{tag}", expires.parse::<i64>().unwrap() + 3600);
        let bearer = |v: &str| (header::AUTHORIZATION, format!("Bearer {v}"));
        let cookie = |v: &str| (header::COOKIE, format!("theme=dark; {COOKIE}={v}"));
        let cases: Vec<(HeaderMap, i64, Verdict)> = vec![
            (headers(&[]), NOW, Verdict::Missing),
            (headers(&[bearer("view-3c9e")]), NOW, Verdict::Allowed),
            (headers(&[bearer("op-7f3a")]), NOW, Verdict::Allowed),
            (headers(&[bearer("guess")]), NOW, Verdict::WrongBearer),
            // A wrong bearer is refused even beside a good cookie.
            (
                headers(&[bearer("guess"), cookie(&good)]),
                NOW,
                Verdict::WrongBearer,
            ),
            (headers(&[cookie(&good)]), NOW + 60, Verdict::Allowed),
            (
                headers(&[cookie(&good)]),
                NOW + SESSION.num_seconds(),
                Verdict::Missing,
            ),
            (headers(&[cookie(&other_key)]), NOW, Verdict::Missing),
            (headers(&[cookie(&later)]), NOW, Verdict::Missing),
            (headers(&[cookie("view-3c9e")]), NOW, Verdict::Missing),
            (headers(&[cookie("1.zz")]), NOW, Verdict::Missing),
            (
                headers(&[(header::AUTHORIZATION, "Basic dmlldw==".into())]),
                NOW,
                Verdict::Missing,
            ),
        ];
        for (h, now, expected) in cases {
            assert_eq!(t.judge(&h, now), expected, "{h:?} at {now}");
        }
        let open = Tokens {
            viewer: None,
            operator: Some(&operator),
        };
        assert_eq!(open.judge(&HeaderMap::new(), NOW), Verdict::Open);
    }

    #[test]
    fn the_cookie_holds_no_token_and_is_strict() {
        let value = session_value(&Secret::new("view-3c9e"), NOW);
        assert!(!value.contains("view-3c9e"));
        let set = set_session(&value);
        for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(clear_session().contains("Max-Age=0"));
    }

    #[test]
    fn only_local_paths_are_followed_after_signing_in() {
        for (next, to) in [
            (Some("/workflows/wf-1?x=1"), "/workflows/wf-1?x=1"),
            (Some("/dead-letters"), "/dead-letters"),
            (Some("//evil.example/x"), "/workflows"),
            (Some("/\\evil.example"), "/workflows"),
            (Some("https://evil.example/"), "/workflows"),
            (Some("/login?next=/x"), "/workflows"),
            (Some("/a\nb"), "/workflows"),
            (None, "/workflows"),
        ] {
            assert_eq!(safe_next(next), to, "{next:?}");
        }
    }

    #[test]
    fn json_clients_are_told_apart() {
        let accept = |v: &str| headers(&[(header::ACCEPT, v.to_string())]);
        assert!(wants_json(&accept("application/json")));
        assert!(!wants_json(&accept("text/html,*/*")));
    }
}
