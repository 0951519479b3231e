//! Who may ask for an offboarding: the allowed `source` values and the event signature
//! (HMAC-SHA256 of the message body, hex, in the `x-offboard-signature` header). Pure: the
//! key and the header are passed in; intake reads them, `submit` signs with [`sign`].

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::codes::Code;
use crate::domain::event::Rejection;

/// The AMQP header carrying an event's signature.
pub const SIGNATURE_HEADER: &str = "x-offboard-signature";

fn mac(key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(body);
    m
}

/// The signature of `body` under `key`: lowercase hex HMAC-SHA256.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    hex::encode(mac(key, body).finalize().into_bytes())
}

/// Checks `signature` (the header's value, if any) against `body`, in constant time.
pub fn check_signature(key: &[u8], body: &[u8], signature: Option<&str>) -> Result<(), Rejection> {
    let Some(signature) = signature else {
        return Err(Rejection {
            code: Code::Evt105,
            message: format!("the message has no {SIGNATURE_HEADER} header"),
        });
    };
    let wrong = || Rejection {
        code: Code::Evt105,
        message: format!("the {SIGNATURE_HEADER} header does not match the body"),
    };
    let bytes = hex::decode(signature.trim()).map_err(|_| wrong())?;
    mac(key, body).verify_slice(&bytes).map_err(|_| wrong())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        let (key, body) = (b"signing key".as_slice(), br#"{"id":"e1"}"#.as_slice());
        let good = sign(key, body);
        assert_eq!(good.len(), 64);
        assert!(check_signature(key, body, Some(&good)).is_ok());
        for bad in [
            None,
            Some(""),
            Some("not hex"),
            Some(sign(b"another key", body).as_str()),
            Some(sign(key, br#"{"id":"e2"}"#).as_str()),
            Some(&good[..62]),
        ] {
            let r = check_signature(key, body, bad).unwrap_err();
            assert_eq!(r.code, Code::Evt105, "{bad:?}");
        }
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
}
