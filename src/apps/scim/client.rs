//! Typed calls to a SCIM 2.0 service provider (RFC 7644) over the shared
//! [`Transport`]: `application/scim+json` both ways, the bearer token, pacing, per-call
//! retries with `Retry-After`, no redirect followed, dry-run mode. Lists are read with
//! `startIndex`/`count` up to `totalResults`, and stop with an error when the provider
//! pages forever or sends the same page again (a provider ignoring `startIndex`). Errors
//! keep the HTTP status and the SCIM error body's `scimType` and `detail`; a success
//! carrying a SCIM error message stands for the error its `status` names.

use std::collections::HashSet;

use reqwest::header::{HeaderMap, HeaderValue, ETAG, IF_MATCH};
use reqwest::Method;
use serde_json::{json, Value};

use super::discovery::Features;
use super::filter::member_path;
use crate::apps::api_error::{transient_status, ErrorKind};
use crate::apps::http::{oversized_message, page_loop_message, CallLog, MAX_PAGES};
use crate::apps::transport::{Transport, Transported};
use crate::apps::ClientError;
use crate::config::{ConnectionConfig, ScimSettings, Secret};
use crate::domain::protection::Guard;

/// SCIM's JSON media type (RFC 7644 §3.1).
pub const SCIM_JSON: &str = "application/scim+json";

/// The PATCH message schema (RFC 7644 §3.5.2).
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Page size asked for when listing.
const PAGE_SIZE: usize = 100;

/// The SCIM error's `scimType` (`invalidFilter`, `mutability`, `noTarget`…): the kind of
/// its [`ApiError`]s, whose message is the error's `detail`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimType(pub String);

impl ErrorKind for ScimType {
    /// What came from the provider is quoted and escaped, as it ends up in logs and
    /// terminals.
    const QUOTES_MESSAGE: bool = true;

    fn label(&self) -> String {
        format!(", scimType {:?}", self.0)
    }

    /// 429, 5xx but 501 (Not Implemented is an answer), or no response.
    fn is_transient(status: Option<u16>, _kind: Option<&Self>) -> bool {
        status != Some(501) && transient_status(status)
    }
}

/// A failed call to a SCIM provider: no response, or an error response with its
/// `scimType` and `detail`.
pub type ApiError = crate::apps::api_error::ApiError<ScimType>;

impl ApiError {
    /// The SCIM error's `scimType`, when the answer had one.
    pub fn scim_type(&self) -> Option<&str> {
        self.kind.as_ref().map(|kind| kind.0.as_str())
    }
}

/// A resource as read, with its version (`ETag` header, else `meta.version`).
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// The resource's JSON.
    pub body: Value,
    /// Its version, for `If-Match`.
    pub etag: Option<String>,
}

impl Resource {
    /// The resource's `id`.
    pub fn id(&self) -> &str {
        self.body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Whether the user may sign in (see [`is_active`]).
    pub fn active(&self) -> bool {
        is_active(&self.body)
    }
}

/// Whether a user may sign in: its `active`, true when the provider leaves it out.
pub fn is_active(user: &Value) -> bool {
    user.get("active").and_then(Value::as_bool).unwrap_or(true)
}

/// A successful answer: its body and version.
struct Answer {
    body: Value,
    etag: Option<String>,
}

/// One request to the provider, as [`Client::send`] sends and retries it.
struct Call<'a> {
    method: Method,
    /// The path below the SCIM root, query included.
    path: &'a str,
    /// The JSON body of a write.
    body: Option<&'a Value>,
    /// The version a write is conditional on (`If-Match`, RFC 7644 §3.14), when the
    /// provider keeps ETags.
    if_match: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A read of `path`.
    fn get(path: &'a str) -> Self {
        Call::write(Method::GET, path, None, None)
    }

    /// A `method` request to `path` with `body`, conditional on `if_match`.
    fn write(
        method: Method,
        path: &'a str,
        body: Option<&'a Value>,
        if_match: Option<&'a str>,
    ) -> Self {
        Call {
            method,
            path,
            body,
            if_match,
        }
    }
}

/// A client for one SCIM service provider.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    /// Who this connection never deactivates or removes.
    pub guard: Guard,
    /// The connection's `match`, `offboard` and `remove_from_groups`.
    pub settings: ScimSettings,
    /// The provider's features, read once (see [`Client::features`]).
    features: tokio::sync::Mutex<Option<Features>>,
    /// The token's own user id from `/Me`: outer `None` not asked yet, inner `None` the
    /// provider does not say.
    me: tokio::sync::Mutex<Option<Option<String>>>,
}

impl Client {
    /// A client for a configured connection.
    pub fn new(config: &ConnectionConfig, token: Secret) -> Result<Self, ClientError> {
        Ok(Client {
            transport: Transport::bearer(config, token, Some(SCIM_JSON))?,
            guard: config.guard(),
            settings: config.scim(),
            features: tokio::sync::Mutex::new(None),
            me: tokio::sync::Mutex::new(None),
        })
    }

    /// Sends one request, retrying it while it fails transiently.
    async fn send(&self, call: Call<'_>, log: &CallLog) -> Result<Answer, ApiError> {
        self.transport
            .send(log, || self.send_once(&call, log))
            .await
    }

    async fn send_once(&self, call: &Call<'_>, log: &CallLog) -> Result<Answer, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(value) = call.if_match.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(IF_MATCH, value);
        }
        let (method, path) = (call.method.clone(), call.path);
        let reply = self
            .transport
            .http()
            .call_with(method, path, call.body, headers, log, |_| None)
            .await
            .map_err(ApiError::from)?;
        if reply.oversized {
            return Err(ApiError::unusable(oversized_message(path)));
        }
        let Some(status) = answered_status(reply.status, &reply.body) else {
            return Err(ApiError::unusable(format!(
                "{path}: a SCIM error message without an HTTP error status"
            )));
        };
        if status >= 400 {
            let text = |key: &str| {
                reply
                    .body
                    .get(key)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            return Err(ApiError {
                status: Some(status),
                kind: text("scimType").map(ScimType),
                message: text("detail").unwrap_or_else(|| "no detail".into()),
                retry_after_ms: reply.retry_after_ms,
            });
        }
        let etag = reply
            .headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                let version = reply.body.get("meta")?.get("version")?.as_str()?;
                Some(version.to_string())
            });
        Ok(Answer {
            body: reply.body,
            etag,
        })
    }

    /// The provider's features: `/ServiceProviderConfig`, read on first use and kept for
    /// the life of the client (a 404 means the RFC's defaults, see [`Features`]).
    pub async fn features(&self, log: &CallLog) -> Result<Features, ApiError> {
        let mut known = self.features.lock().await;
        if let Some(features) = *known {
            return Ok(features);
        }
        let features = self.read_features(log).await?;
        *known = Some(features);
        Ok(features)
    }

    /// Reads `/ServiceProviderConfig` again (connection checks), keeping what it says.
    pub async fn refresh_features(&self, log: &CallLog) -> Result<Features, ApiError> {
        let features = self.read_features(log).await?;
        *self.features.lock().await = Some(features);
        Ok(features)
    }

    async fn read_features(&self, log: &CallLog) -> Result<Features, ApiError> {
        match self.send(Call::get("/ServiceProviderConfig"), log).await {
            Ok(answer) => Features::parse(&answer.body).ok_or_else(|| {
                ApiError::unusable("/ServiceProviderConfig: not a SCIM ServiceProviderConfig")
            }),
            Err(e) if e.status == Some(404) => Ok(Features::default()),
            Err(e) => Err(e),
        }
    }

    /// The token's own SCIM user id (`GET /Me`, RFC 7644 §3.11), asked once (again after
    /// a transient failure); `None` when the provider does not offer `/Me` or answers
    /// anything but a user.
    pub async fn me(&self, log: &CallLog) -> Option<String> {
        let mut known = self.me.lock().await;
        if let Some(me) = known.as_ref() {
            return me.clone();
        }
        let me = match self.send(Call::get("/Me"), log).await {
            Ok(answer) => answer
                .body
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string),
            // Asked again next time: an outage says nothing about whether `/Me` exists.
            Err(e) if e.is_transient() => return None,
            Err(_) => None,
        };
        *known = Some(me.clone());
        me
    }

    /// Every resource of `/{resource}` the `filter` selects (see [`Client::list_all`]).
    pub async fn list(
        &self,
        resource: &str,
        filter: &str,
        log: &CallLog,
    ) -> Result<Vec<Value>, ApiError> {
        self.read_list(
            resource,
            &format!("/{resource}?filter={}&", urlencode(filter)),
            log,
        )
        .await
    }

    /// Every resource of `/{resource}`, page by page up to `totalResults`. A page
    /// repeating only ids already seen, or more than [`MAX_PAGES`] pages, ends in an
    /// error rather than an endless loop.
    pub async fn list_all(&self, resource: &str, log: &CallLog) -> Result<Vec<Value>, ApiError> {
        self.read_list(resource, &format!("/{resource}?"), log)
            .await
    }

    async fn read_list(
        &self,
        resource: &str,
        base: &str,
        log: &CallLog,
    ) -> Result<Vec<Value>, ApiError> {
        let mut all: Vec<Value> = Vec::new();
        let mut seen = HashSet::new();
        let mut start = 1;
        for _ in 0..MAX_PAGES {
            let path = format!("{base}startIndex={start}&count={PAGE_SIZE}");
            let page = self.send(Call::get(&path), log).await?.body;
            let (total, resources) = list_page(&page).ok_or_else(|| {
                ApiError::unusable(format!("/{resource}: not a SCIM ListResponse"))
            })?;
            let fresh: Vec<Value> = resources
                .into_iter()
                .filter(|r| seen.insert(r.get("id").map(Value::to_string).unwrap_or_default()))
                .collect();
            if fresh.is_empty() && start > 1 && all.len() < total {
                return Err(ApiError::unusable(format!(
                    "/{resource}: the page at startIndex {start} holds no resource not seen before; stopped reading (the provider ignores startIndex)"
                )));
            }
            if fresh.is_empty() {
                return Ok(all);
            }
            start += fresh.len();
            all.extend(fresh);
            if all.len() >= total {
                return Ok(all);
            }
        }
        Err(ApiError::unusable(page_loop_message(&format!(
            "/{resource}"
        ))))
    }

    /// `GET /Users/{id}`; `None` on 404.
    pub async fn get_user(&self, id: &str, log: &CallLog) -> Result<Option<Resource>, ApiError> {
        self.get_resource("Users", id, log).await
    }

    /// `GET /Groups/{id}`; `None` on 404.
    pub async fn get_group(&self, id: &str, log: &CallLog) -> Result<Option<Resource>, ApiError> {
        self.get_resource("Groups", id, log).await
    }

    async fn get_resource(
        &self,
        kind: &str,
        id: &str,
        log: &CallLog,
    ) -> Result<Option<Resource>, ApiError> {
        let path = format!("/{kind}/{}", urlencode_segment(id));
        match self.send(Call::get(&path), log).await {
            Ok(answer) => Ok(Some(Resource {
                body: answer.body,
                etag: answer.etag,
            })),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of `/{resource}` (a permission probe for checks).
    pub async fn probe(&self, resource: &str, log: &CallLog) -> Result<(), ApiError> {
        let page = self
            .send(Call::get(&format!("/{resource}?startIndex=1&count=1")), log)
            .await?;
        list_page(&page.body)
            .map(drop)
            .ok_or_else(|| ApiError::unusable(format!("/{resource}: not a SCIM ListResponse")))
    }

    /// `PATCH /{kind}/{id}` with `operations`, `If-Match` when a version is given.
    pub async fn patch(
        &self,
        kind: &str,
        id: &str,
        operations: Value,
        if_match: Option<&str>,
        log: &CallLog,
    ) -> Result<(), ApiError> {
        let body = json!({ "schemas": [PATCH_OP], "Operations": operations });
        let path = format!("/{kind}/{}", urlencode_segment(id));
        self.send(
            Call::write(Method::PATCH, &path, Some(&body), if_match),
            log,
        )
        .await
        .map(drop)
    }

    /// `PUT /{kind}/{id}` with the whole resource, `If-Match` when a version is given.
    pub async fn put(
        &self,
        kind: &str,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
        log: &CallLog,
    ) -> Result<(), ApiError> {
        let path = format!("/{kind}/{}", urlencode_segment(id));
        self.send(Call::write(Method::PUT, &path, Some(body), if_match), log)
            .await
            .map(drop)
    }

    /// `PATCH /Groups/{group}` removing the member `user` (RFC 7644 §3.5.2.2).
    pub async fn remove_member(
        &self,
        group: &str,
        user: &str,
        if_match: Option<&str>,
        log: &CallLog,
    ) -> Result<(), ApiError> {
        let op = json!([{ "op": "remove", "path": member_path(user) }]);
        self.patch("Groups", group, op, if_match, log).await
    }

    /// `DELETE /Users/{id}`, `If-Match` when a version is given; `false` when it was
    /// already gone (404).
    pub async fn delete_user(
        &self,
        id: &str,
        if_match: Option<&str>,
        log: &CallLog,
    ) -> Result<bool, ApiError> {
        let path = format!("/Users/{}", urlencode_segment(id));
        match self
            .send(Call::write(Method::DELETE, &path, None, if_match), log)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The SCIM error message's schema (RFC 7644 §3.12).
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The status an answer stands for: its HTTP status, unless a success carries a SCIM
/// error message (RFC 7644 §3.12: `schemas` holding the Error URN, `status` the HTTP
/// status as a string) — a provider that wraps a refusal in a 200 has still refused, so
/// the message's own status counts. `None`: such a message whose `status` is no HTTP
/// error status, an answer that says neither.
fn answered_status(http_status: u16, body: &Value) -> Option<u16> {
    let is_error_message = body
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|schemas| schemas.iter().any(|s| s.as_str() == Some(ERROR_SCHEMA)));
    if http_status >= 400 || !is_error_message {
        return Some(http_status);
    }
    let status = match body.get("status")? {
        Value::String(text) => text.trim().parse().ok()?,
        Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
        _ => return None,
    };
    (400..=599).contains(&status).then_some(status)
}

/// A ListResponse's `totalResults` and `Resources` (RFC 7644 §3.4.2); `None` when the
/// body is not one. `Resources` may be left out when there are none.
pub fn list_page(body: &Value) -> Option<(usize, Vec<Value>)> {
    let total = body.get("totalResults")?.as_u64()? as usize;
    let resources = match body.get("Resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(all)) => all.clone(),
        Some(_) => return None,
    };
    Some((total, resources))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An id as one path segment (an id holding `/` or `?` cannot reach another path).
pub(super) fn urlencode_segment(s: &str) -> String {
    urlencode(s).replace('+', "%20")
}

impl Transported for Client {
    fn transports(&self) -> Vec<&Transport> {
        vec![&self.transport]
    }

    fn transports_mut(&mut self) -> Vec<&mut Transport> {
        vec![&mut self.transport]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7644 §3.12's own example of an error message.
    fn not_found() -> Value {
        json!({
            "schemas": [ERROR_SCHEMA],
            "detail": "Resource 2819c223-7f76-453a-919d-413861904646 not found",
            "status": "404"
        })
    }

    #[test]
    fn an_error_status_or_a_plain_success_stands_as_sent() {
        assert_eq!(answered_status(404, &not_found()), Some(404));
        assert_eq!(answered_status(409, &json!({})), Some(409));
        let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "1"});
        assert_eq!(answered_status(200, &user), Some(200));
        assert_eq!(answered_status(204, &Value::Null), Some(204));
    }

    #[test]
    fn a_success_carrying_an_error_message_is_the_message_s_status() {
        assert_eq!(answered_status(200, &not_found()), Some(404));
        let refused = json!({"schemas": [ERROR_SCHEMA], "scimType": "mutability", "status": 400});
        assert_eq!(answered_status(200, &refused), Some(400));
    }

    #[test]
    fn an_error_message_without_an_error_status_cannot_be_read() {
        for status in [json!("200"), json!("soon"), json!(null), json!(70000)] {
            let body = json!({"schemas": [ERROR_SCHEMA], "status": status});
            assert_eq!(answered_status(200, &body), None, "{body}");
        }
        assert_eq!(
            answered_status(200, &json!({"schemas": [ERROR_SCHEMA]})),
            None
        );
    }
}
