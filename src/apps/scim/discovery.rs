//! What a SCIM service provider says it supports (`GET /ServiceProviderConfig`, RFC 7643
//! §5), read once per connection and kept (see [`super::client::Client::features`]);
//! `offboard check` reads it again. Parsing is pure.
//!
//! A provider that does not serve the document (404) is taken at the RFC's word for the
//! mandatory parts: filtering and PATCH are assumed, ETags are not.

use serde_json::Value;

/// The features the workflows depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `patch.supported`: deactivation and group removal use PATCH; without it, PUT of the
    /// whole resource read just before.
    pub patch: bool,
    /// `filter.supported`: the person is found with a filter; without it offboard cannot
    /// look anyone up safely (`SCIM-103`).
    pub filter: bool,
    /// `etag.supported`: writes carry `If-Match` with the version just read.
    pub etag: bool,
}

impl Default for Features {
    /// The RFC's mandatory features, assumed when the provider serves no configuration.
    fn default() -> Self {
        Features {
            patch: true,
            filter: true,
            etag: false,
        }
    }
}

impl Features {
    /// Reads a `ServiceProviderConfig` body; `None` when it is not one (no object with at
    /// least one of the `patch`, `filter`, `etag` sections).
    pub fn parse(body: &Value) -> Option<Features> {
        let supported = |section: &str| {
            body.get(section)
                .and_then(|s| s.get("supported"))
                .and_then(Value::as_bool)
        };
        let (patch, filter, etag) = (supported("patch"), supported("filter"), supported("etag"));
        if patch.is_none() && filter.is_none() && etag.is_none() {
            return None;
        }
        Some(Features {
            patch: patch.unwrap_or(false),
            filter: filter.unwrap_or(false),
            etag: etag.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_rfc_example_and_partial_documents_parse() {
        // RFC 7643 §8.5, trimmed to the parts read.
        let rfc = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": true, "maxOperations": 1000, "maxPayloadSize": 1048576},
            "filter": {"supported": true, "maxResults": 200},
            "changePassword": {"supported": true},
            "sort": {"supported": true},
            "etag": {"supported": true},
        });
        let all = Features {
            patch: true,
            filter: true,
            etag: true,
        };
        assert_eq!(Features::parse(&rfc), Some(all));
        assert_eq!(
            Features::parse(&json!({"patch": {"supported": false}, "filter": {"supported": true}})),
            Some(Features {
                patch: false,
                filter: true,
                etag: false
            })
        );
        assert_eq!(Features::parse(&json!({"detail": "not found"})), None);
        assert_eq!(Features::parse(&Value::Null), None);
    }
}
