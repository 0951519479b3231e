//! Who may ask for an offboarding: the event's signature, its `source`, and where a
//! leaver's data may go. Pure: keys, headers, the clock and the configured lists are
//! passed in; intake reads them, `submit` signs with [`sign`].
//!
//! Signatures follow Standard Webhooks (standardwebhooks.com): three headers,
//! `webhook-id` (the CloudEvent `id`), `webhook-timestamp` (unix seconds) and
//! `webhook-signature` (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<exact body>">`, several
//! space-separated ones allowed so that keys can rotate). The timestamp bounds how long a
//! captured message can be replayed; binding the id to the body's `id` keeps a signature
//! from being moved onto another event. The body-only `x-offboard-signature` of earlier
//! releases carries no time, so it is accepted only when configured.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

use crate::codes::Code;
use crate::domain::event::Rejection;

/// The header carrying the signed message's id: the CloudEvent `id`.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the signing time, in unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying one or more `v1,<base64>` signatures, separated by spaces.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// The body-only signature of earlier releases (lowercase hex HMAC-SHA256 of the body).
pub const LEGACY_SIGNATURE: &str = "x-offboard-signature";

/// The prefix of a Standard Webhooks secret whose rest is the key in base64.
const SECRET_PREFIX: &str = "whsec_";
/// The one signature scheme Standard Webhooks defines for symmetric keys.
const VERSION: &str = "v1";

/// A key events are signed with: the bytes HMAC uses, zeroized when dropped and never
/// printed (`Debug` shows `***`).
pub struct SigningKey(SecretSlice<u8>);

/// Why a configured key cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The value, or what its `whsec_` base64 decodes to, is empty.
    #[error("the key is empty")]
    Empty,
    /// The value starts with `whsec_` but the rest is not base64.
    #[error("the key starts with whsec_ but the rest is not base64")]
    NotBase64,
}

impl SigningKey {
    /// Reads a key as Standard Webhooks secrets are read: `whsec_<base64>` is the decoded
    /// bytes (so a sender using a Standard Webhooks library and its secret interoperates);
    /// any other value is its own UTF-8 bytes. An empty key would let anyone sign.
    pub fn decode(value: &str) -> Result<SigningKey, KeyError> {
        let bytes = match value.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => BASE64.decode(encoded).map_err(|_| KeyError::NotBase64)?,
            None => value.as_bytes().to_vec(),
        };
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(SigningKey(bytes.into()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key")
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// The signature headers a message came with (absent ones `None`), whoever carried it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SignatureHeaders<'a> {
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
    /// `x-offboard-signature`.
    pub legacy: Option<&'a str>,
}

/// What intake asks of a message's signature (`[intake]`).
#[derive(Clone, Copy, Debug)]
pub struct SignaturePolicy<'k> {
    /// The keys any of which may have signed; empty: signatures are not checked.
    pub keys: &'k [SigningKey],
    /// How far `webhook-timestamp` may lie from now, either way, in seconds.
    pub tolerance_secs: u64,
    /// Whether `x-offboard-signature` alone is enough.
    pub accept_legacy: bool,
}

/// The three Standard Webhooks header values for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// `webhook-id`: the event's id.
    pub id: String,
    /// `webhook-timestamp`: when it was signed, unix seconds.
    pub timestamp: i64,
    /// `webhook-signature`: `v1,<base64>`.
    pub signature: String,
}

fn signed_content(key: &SigningKey, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = key.mac();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Signs `body` as the message `id` at `timestamp` (unix seconds) under `key`.
pub fn sign(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> Signed {
    let tag = signed_content(key, id, &timestamp.to_string(), body).finalize();
    Signed {
        id: id.to_string(),
        timestamp,
        signature: format!("{VERSION},{}", BASE64.encode(tag.into_bytes())),
    }
}

/// The legacy `x-offboard-signature` of `body` under `key`: lowercase hex HMAC-SHA256.
pub fn sign_legacy(key: &SigningKey, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn refuse(message: impl Into<String>) -> Rejection {
    Rejection {
        code: Code::Evt105,
        message: message.into(),
    }
}

/// Checks a message's signature under `policy` at `now` (unix seconds), in constant time
/// per candidate. A Standard Webhooks signature is checked whenever one is present; the
/// legacy header is looked at only without it.
pub fn check_signature(
    policy: &SignaturePolicy<'_>,
    headers: &SignatureHeaders<'_>,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    if policy.keys.is_empty() {
        return Ok(());
    }
    match (headers.signature, headers.legacy) {
        (Some(signature), _) => check_webhook(policy, headers, signature, body, now),
        (None, Some(legacy)) if policy.accept_legacy => check_legacy(policy.keys, legacy, body),
        (None, Some(_)) => Err(refuse(format!(
            "the message is signed only with {LEGACY_SIGNATURE}, which is accepted only with [intake] accept_legacy_signatures = true; sign it with {WEBHOOK_SIGNATURE}"
        ))),
        (None, None) => Err(refuse(format!(
            "the message has no {WEBHOOK_SIGNATURE} header"
        ))),
    }
}

fn check_webhook(
    policy: &SignaturePolicy<'_>,
    headers: &SignatureHeaders<'_>,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let id = headers
        .id
        .ok_or_else(|| refuse(format!("the message has no {WEBHOOK_ID} header")))?;
    let timestamp = headers
        .timestamp
        .ok_or_else(|| refuse(format!("the message has no {WEBHOOK_TIMESTAMP} header")))?;
    let signed_at: i64 = timestamp
        .parse()
        .map_err(|_| refuse(format!("{WEBHOOK_TIMESTAMP} is not a number of seconds")))?;
    let skew = now.abs_diff(signed_at);
    if skew > policy.tolerance_secs {
        let when = if signed_at < now { "ago" } else { "ahead" };
        return Err(refuse(format!(
            "{WEBHOOK_TIMESTAMP} is {skew} s {when}, outside the {} s of [intake] signature_tolerance_secs",
            policy.tolerance_secs
        )));
    }
    let tags: Vec<Vec<u8>> = signature
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, tag)| BASE64.decode(tag).ok())
        .collect();
    let verified = policy.keys.iter().any(|key| {
        let mac = signed_content(key, id, timestamp, body);
        tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok())
    });
    if !verified {
        return Err(refuse(format!(
            "no {WEBHOOK_SIGNATURE} matches the message under the configured keys"
        )));
    }
    match body_id(body) {
        Some(body_id) if body_id != id => {
            Err(refuse(format!("{WEBHOOK_ID} differs from the event's id")))
        }
        // A body without an id is refused by the parser with its own code.
        _ => Ok(()),
    }
}

fn check_legacy(keys: &[SigningKey], legacy: &str, body: &[u8]) -> Result<(), Rejection> {
    let wrong = || {
        refuse(format!(
            "the {LEGACY_SIGNATURE} header does not match the body"
        ))
    };
    let tag = hex::decode(legacy.trim()).map_err(|_| wrong())?;
    let verified = keys.iter().any(|key| {
        let mut mac = key.mac();
        mac.update(body);
        mac.verify_slice(&tag).is_ok()
    });
    verified.then_some(()).ok_or_else(wrong)
}

/// The CloudEvent `id` of a body, when it is a JSON object with a string `id`.
fn body_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    let IdOnly { id } = serde_json::from_slice(body).ok()?;
    id?.as_str().map(str::to_string)
}

/// Checks an event's `source` against the allowed list (`None`: every source).
pub fn check_source(allowed: Option<&[String]>, source: &str) -> Result<(), Rejection> {
    match allowed {
        Some(list) if !list.iter().any(|s| s == source) => Err(Rejection {
            code: Code::Evt104,
            message: format!("source {source:?} is not in [intake] allowed_sources"),
        }),
        _ => Ok(()),
    }
}

/// Checks that a `transfer_to` address (already lower-cased by the parser) is at one of
/// the allowed domains, compared ignoring case and exactly (a subdomain is another
/// domain). `None`: any recipient.
pub fn check_recipient(
    domains: Option<&[String]>,
    transfer_to: Option<&str>,
) -> Result<(), Rejection> {
    let (Some(domains), Some(address)) = (domains, transfer_to) else {
        return Ok(());
    };
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    if domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Ok(());
    }
    Err(Rejection {
        code: Code::Evt102,
        message: format!(
            "data.transfer_to.email is at {domain:?}, which is not in [intake] recipient_domains"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;
    const BODY: &[u8] = br#"{"specversion":"1.0","id":"e1","source":"s"}"#;

    fn key(value: &str) -> SigningKey {
        SigningKey::decode(value).unwrap()
    }

    fn policy(keys: &[SigningKey]) -> SignaturePolicy<'_> {
        SignaturePolicy {
            keys,
            tolerance_secs: 300,
            accept_legacy: false,
        }
    }

    fn headers(signed: &Signed) -> (String, String) {
        (signed.timestamp.to_string(), signed.signature.clone())
    }

    fn check(
        policy: &SignaturePolicy<'_>,
        id: &str,
        ts: &str,
        sig: &str,
        body: &[u8],
    ) -> Result<(), Rejection> {
        let h = SignatureHeaders {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
            legacy: None,
        };
        check_signature(policy, &h, body, NOW)
    }

    /// The test vector of the Standard Webhooks reference libraries: a `whsec_` secret
    /// decoded from base64 gives byte for byte the signature they give.
    #[test]
    fn the_standard_webhooks_test_vector_is_reproduced() {
        let k = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let signed = sign(
            &k,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(
            signed.signature,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn keys_are_read_as_standard_webhooks_secrets() {
        assert_eq!(SigningKey::decode("").unwrap_err(), KeyError::Empty);
        assert_eq!(SigningKey::decode("whsec_").unwrap_err(), KeyError::Empty);
        assert_eq!(
            SigningKey::decode("whsec_***").unwrap_err(),
            KeyError::NotBase64
        );
        // A plain value is its UTF-8 bytes: the same as the whsec_ form of those bytes.
        let plain = key("plain key");
        let wrapped = key(&format!("whsec_{}", BASE64.encode("plain key")));
        assert_eq!(
            sign(&plain, "e1", NOW, BODY),
            sign(&wrapped, "e1", NOW, BODY)
        );
        assert_eq!(format!("{plain:?}"), "SigningKey(***)");
    }

    #[test]
    fn a_good_signature_passes_and_every_bad_one_is_evt_105() {
        let keys = [key("signing key")];
        let p = policy(&keys);
        let good = sign(&keys[0], "e1", NOW, BODY);
        let (ts, sig) = headers(&good);
        assert!(check(&p, "e1", &ts, &sig, BODY).is_ok());
        let other = sign(&key("another key"), "e1", NOW, BODY).signature;
        let old = (NOW - 301).to_string();
        let ahead = (NOW + 301).to_string();
        let moved = sign(&keys[0], "e2", NOW, BODY);
        let cases: &[(&str, &str, &str, &[u8], &str)] = &[
            ("e1", &ts, &other, BODY, "another key"),
            ("e1", &ts, "v1,", BODY, "an empty v1 signature"),
            ("e1", &ts, "", BODY, "an empty header"),
            (
                "e1",
                &ts,
                &sig.replacen("v1", "v2", 1),
                BODY,
                "another version",
            ),
            ("e1", &ts, &sig[..20], BODY, "a truncated signature"),
            ("e1", &ts, &sig, br#"{"id":"e1","x":1}"#, "another body"),
            (
                "e1",
                &old,
                &sig,
                BODY,
                "a timestamp moved back after signing",
            ),
            (
                "e1",
                &ahead,
                &sig,
                BODY,
                "a timestamp moved ahead after signing",
            ),
            (
                "e2",
                &ts,
                &moved.signature,
                BODY,
                "webhook-id not the body's id",
            ),
            ("e1", "soon", &sig, BODY, "a timestamp that is not a number"),
        ];
        for (id, ts, sig, body, what) in cases {
            let r = check(&p, id, ts, sig, body).unwrap_err();
            assert_eq!(r.code, Code::Evt105, "{what}");
        }
        // Signed correctly, but too long ago or too far ahead.
        for at in [NOW - 301, NOW + 301] {
            let s = sign(&keys[0], "e1", at, BODY);
            let (ts, sig) = headers(&s);
            let r = check(&p, "e1", &ts, &sig, BODY).unwrap_err();
            assert!(
                r.message.contains("signature_tolerance_secs"),
                "{}",
                r.message
            );
        }
        for at in [NOW - 300, NOW + 300] {
            let (ts, sig) = headers(&sign(&keys[0], "e1", at, BODY));
            assert!(check(&p, "e1", &ts, &sig, BODY).is_ok(), "{at} is within");
        }
    }

    #[test]
    fn keys_rotate_through_several_signatures_and_several_keys() {
        let (old, new) = (key("old key"), key("new key"));
        let by_old = sign(&old, "e1", NOW, BODY).signature;
        let by_new = sign(&new, "e1", NOW, BODY).signature;
        let ts = NOW.to_string();
        // The sender signs with both keys while the receiver holds only the new one.
        let only_new = [key("new key")];
        let both = format!("{by_old} {by_new}");
        assert!(check(&policy(&only_new), "e1", &ts, &both, BODY).is_ok());
        // The receiver holds both keys while the sender still signs with the old one.
        let keys = [key("new key"), key("old key")];
        assert!(check(&policy(&keys), "e1", &ts, &by_old, BODY).is_ok());
        assert!(check(&policy(&only_new), "e1", &ts, &by_old, BODY).is_err());
    }

    #[test]
    fn missing_headers_and_the_legacy_signature() {
        let keys = [key("signing key")];
        let legacy = sign_legacy(&keys[0], BODY);
        let only_legacy = SignatureHeaders {
            legacy: Some(&legacy),
            ..Default::default()
        };
        let strict = policy(&keys);
        let r = check_signature(&strict, &only_legacy, BODY, NOW).unwrap_err();
        assert!(
            r.message.contains("accept_legacy_signatures"),
            "{}",
            r.message
        );
        let lenient = SignaturePolicy {
            accept_legacy: true,
            ..strict
        };
        assert!(check_signature(&lenient, &only_legacy, BODY, NOW).is_ok());
        let forged = sign_legacy(&key("guess"), BODY);
        let forged = SignatureHeaders {
            legacy: Some(&forged),
            ..Default::default()
        };
        assert_eq!(
            check_signature(&lenient, &forged, BODY, NOW)
                .unwrap_err()
                .code,
            Code::Evt105
        );
        let none = SignatureHeaders::default();
        assert_eq!(
            check_signature(&strict, &none, BODY, NOW).unwrap_err().code,
            Code::Evt105
        );
        let sig = sign(&keys[0], "e1", NOW, BODY).signature;
        for (id, ts) in [(None, Some("1")), (Some("e1"), None)] {
            let h = SignatureHeaders {
                id,
                timestamp: ts,
                signature: Some(&sig),
                legacy: None,
            };
            assert_eq!(
                check_signature(&strict, &h, BODY, NOW).unwrap_err().code,
                Code::Evt105
            );
        }
        // Without keys nothing is checked.
        assert!(check_signature(&policy(&[]), &none, BODY, NOW).is_ok());
    }

    #[test]
    fn sources_are_checked_only_when_listed() {
        let allowed = ["workday".to_string(), "bamboohr".to_string()];
        assert!(check_source(Some(&allowed), "workday").is_ok());
        assert_eq!(
            check_source(Some(&allowed), "intern-laptop")
                .unwrap_err()
                .code,
            Code::Evt104
        );
        assert_eq!(
            check_source(Some(&allowed), "Workday").unwrap_err().code,
            Code::Evt104
        );
        assert!(check_source(None, "anything").is_ok());
    }

    #[test]
    fn recipients_are_checked_only_when_domains_are_listed() {
        let domains = ["Example.com".to_string()];
        let d = Some(&domains[..]);
        assert!(check_recipient(d, Some("grace@example.com")).is_ok());
        assert!(check_recipient(d, None).is_ok());
        for outside in [
            "mallory@evil.test",
            "grace@sub.example.com",
            "grace@example.com.evil.test",
        ] {
            assert_eq!(
                check_recipient(d, Some(outside)).unwrap_err().code,
                Code::Evt102,
                "{outside}"
            );
        }
        assert!(check_recipient(None, Some("mallory@evil.test")).is_ok());
    }
}
