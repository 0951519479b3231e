//! Typed calls to the Smartsheet API endpoints the workflows use. Lists are read page by
//! page to the end; errors keep the HTTP status, Smartsheet's `errorCode` and `Retry-After`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::protection::Guard;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::apps::api_error::{transient_status, ErrorKind};
use crate::apps::http::{
    oversized_message, page_loop_message, query_value, CallLog, Reply, MAX_PAGES,
};
use crate::apps::transport::{Transport, Transported};
use crate::apps::ClientError;
use crate::config::{ConnectionConfig, Secret};

/// Page size asked for when listing.
const PAGE_SIZE: u32 = 100;

/// A Smartsheet user, with the fields offboarding reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// User id.
    pub id: i64,
    /// Primary email.
    pub email: String,
    /// System admin.
    #[serde(default)]
    pub admin: bool,
    /// Holds a paid licence.
    #[serde(default)]
    pub licensed_sheet_creator: bool,
    /// May own groups.
    #[serde(default)]
    pub group_admin: bool,
    /// May view resource management.
    #[serde(default)]
    pub resource_viewer: bool,
    /// ACTIVE, PENDING, DECLINED or DEACTIVATED.
    #[serde(default)]
    pub status: Option<String>,
    /// Last sign-in, when Smartsheet reports it.
    #[serde(default)]
    pub last_login: Option<String>,
}

/// A Smartsheet group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Group id.
    pub id: i64,
    /// Group name.
    #[serde(default)]
    pub name: String,
    /// The owner's user id.
    #[serde(default)]
    pub owner_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    #[serde(default)]
    total_pages: u32,
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

/// Smartsheet's `errorCode`: the kind of its [`ApiError`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub i64);

impl ErrorKind for ErrorCode {
    fn label(&self) -> String {
        format!(", errorCode {}", self.0)
    }

    /// 429, 5xx and no response, as for any app, and also errorCodes 4000–4004, which
    /// Smartsheet documents as "try again" whatever the status.
    fn is_transient(status: Option<u16>, kind: Option<&Self>) -> bool {
        matches!(kind, Some(ErrorCode(4000..=4004))) || transient_status(status)
    }
}

/// A failed Smartsheet call: no response, or an error response with its errorCode.
pub type ApiError = crate::apps::api_error::ApiError<ErrorCode>;

/// Smartsheet's errorCode for "User not found" (HTTP 404), the only one its error-code
/// table documents for a missing user.
pub const USER_NOT_FOUND: i64 = 1020;
/// Smartsheet's errorCode for "Group not found" (HTTP 404).
pub const GROUP_NOT_FOUND: i64 = 1106;

impl ApiError {
    /// Smartsheet's `errorCode`, when the answer had one.
    pub fn error_code(&self) -> Option<i64> {
        self.kind.map(|code| code.0)
    }

    /// Whether Smartsheet said the user does not exist (404 with errorCode 1020).
    pub fn is_user_not_found(&self) -> bool {
        self.status == Some(404) && self.error_code() == Some(USER_NOT_FOUND)
    }
}

/// Extracts `errorCode` from a Smartsheet error body.
pub fn error_code_of(body: &Value) -> Option<i64> {
    body.get("errorCode").and_then(Value::as_i64)
}

/// How long one read of the group list serves every workflow on the connection: a bulk
/// run of leavers reads it once per window instead of once per leaver. Short, because a
/// change made by another process or by hand shows only when the window ends; this
/// client's own group writes drop it at once.
const GROUP_LIST_FRESH: Duration = Duration::from_secs(2);

/// The group list last read, when its read started, and how many group writes this client
/// had made by then.
type GroupList = (Instant, u64, Arc<Vec<Group>>);

/// A client for one Smartsheet account.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    /// Who this connection never removes or downgrades.
    pub guard: Guard,
    /// The shared group list; its lock also makes workflows that ask at once wait for one
    /// read instead of each making their own.
    groups: tokio::sync::Mutex<Option<GroupList>>,
    /// Group writes (owner changes, removals) this client has finished: a list read
    /// before the last of them is not used.
    group_writes: AtomicU64,
}

impl Client {
    /// A client for a configured connection.
    pub fn new(config: &ConnectionConfig, token: Secret) -> Result<Self, ClientError> {
        Ok(Client {
            transport: Transport::bearer(config, token, None)?,
            guard: config.guard(),
            groups: tokio::sync::Mutex::new(None),
            group_writes: AtomicU64::new(0),
        })
    }

    /// Sends one request, retrying it while it fails transiently (see [`CallRetry`]).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        log: &CallLog,
    ) -> Result<Value, ApiError> {
        self.transport
            .send(log, || self.send_once(method.clone(), path, body, log))
            .await
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        log: &CallLog,
    ) -> Result<Value, ApiError> {
        let reply: Reply = self
            .transport
            .http()
            .call(method, path, body, log, error_code_of)
            .await
            .map_err(ApiError::from)?;
        reply.into_body(
            |status| ApiError::without_body(Some(status), oversized_message(path)),
            |reply| ApiError {
                status: Some(reply.status),
                kind: error_code_of(&reply.body).map(ErrorCode),
                message: reply
                    .body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_string(),
                retry_after_ms: reply.retry_after_ms,
            },
        )
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, log: &CallLog) -> Result<T, ApiError> {
        let body = self.send(Method::GET, path, None, log).await?;
        decode(body)
    }

    async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        log: &CallLog,
    ) -> Result<Vec<T>, ApiError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES as u32 {
            let p: Page<T> = self
                .get(&format!("{path}{sep}page={page}&pageSize={PAGE_SIZE}"), log)
                .await?;
            all.extend(p.data);
            if page >= p.total_pages {
                return Ok(all);
            }
        }
        Err(ApiError::unusable(page_loop_message(path)))
    }

    /// `GET /users/me`: the token's own user.
    pub async fn me(&self, log: &CallLog) -> Result<User, ApiError> {
        self.get("/users/me", log).await
    }

    /// `GET /users?email=`: the user with this email, compared without case, if any.
    ///
    /// Smartsheet does not document whether its `email` filter ignores case, and HR
    /// systems send mixed-case addresses; so the filter is asked with the spelling given
    /// and, when that finds no one, once more in lower case (the spelling most accounts
    /// store).
    pub async fn find_user(&self, email: &str, log: &CallLog) -> Result<Option<User>, ApiError> {
        let lower = email.to_lowercase();
        let mut spellings = vec![email];
        if lower != email {
            spellings.push(&lower);
        }
        for spelling in spellings {
            let path = format!("/users?email={}", query_value(spelling));
            let users: Vec<User> = self.list_all(&path, log).await?;
            if let Some(user) = users
                .into_iter()
                .find(|u| u.email.eq_ignore_ascii_case(email))
            {
                return Ok(Some(user));
            }
        }
        Ok(None)
    }

    /// `GET /users/{id}`; `None` when Smartsheet says the user does not exist (404 with
    /// errorCode 1020). Any other 404 (a wrong base URL, a proxy's page) is an error.
    pub async fn get_user(&self, id: i64, log: &CallLog) -> Result<Option<User>, ApiError> {
        match self.get(&format!("/users/{id}"), log).await {
            Ok(u) => Ok(Some(u)),
            Err(e) if e.is_user_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The first page of users (a permission probe for checks).
    pub async fn probe_users(&self, log: &CallLog) -> Result<(), ApiError> {
        self.send(Method::GET, "/users?pageSize=1", None, log)
            .await
            .map(drop)
    }

    /// The first page of groups (a permission probe for checks).
    pub async fn probe_groups(&self, log: &CallLog) -> Result<(), ApiError> {
        self.send(Method::GET, "/groups?pageSize=1", None, log)
            .await
            .map(drop)
    }

    /// `GET /groups`, every page — or the list another workflow on this connection read
    /// less than `GROUP_LIST_FRESH` ago, if this client has changed no group since.
    pub async fn list_groups(&self, log: &CallLog) -> Result<Arc<Vec<Group>>, ApiError> {
        let mut shared = self.groups.lock().await;
        let writes = self.group_writes.load(Ordering::SeqCst);
        if let Some((read_at, seen, list)) = shared.as_ref() {
            if *seen == writes && read_at.elapsed() < GROUP_LIST_FRESH {
                return Ok(list.clone());
            }
        }
        let read_at = Instant::now();
        let list = Arc::new(self.list_all("/groups", log).await?);
        *shared = Some((read_at, writes, list.clone()));
        Ok(list)
    }

    /// Notes that a group write has finished, whatever its outcome: lists read before it
    /// are not shared any more.
    fn groups_changed(&self) {
        self.group_writes.fetch_add(1, Ordering::SeqCst);
    }

    /// `GET /groups/{id}`; `None` when Smartsheet says the group is gone (404 with
    /// errorCode 1106, "Group not found"); any other 404 is an error.
    pub async fn get_group(&self, id: i64, log: &CallLog) -> Result<Option<Group>, ApiError> {
        match self.get(&format!("/groups/{id}"), log).await {
            Ok(g) => Ok(Some(g)),
            Err(e) if e.status == Some(404) && e.error_code() == Some(GROUP_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /groups/{id}` with a new `ownerId`.
    pub async fn set_group_owner(
        &self,
        id: i64,
        owner_id: i64,
        log: &CallLog,
    ) -> Result<(), ApiError> {
        let body = json!({ "ownerId": owner_id });
        let sent = self
            .send(Method::PUT, &format!("/groups/{id}"), Some(&body), log)
            .await;
        self.groups_changed();
        sent.map(drop)
    }

    /// `PUT /users/{id}` with the given role flags.
    pub async fn set_user_roles(
        &self,
        id: i64,
        roles: &Value,
        log: &CallLog,
    ) -> Result<(), ApiError> {
        self.send(Method::PUT, &format!("/users/{id}"), Some(roles), log)
            .await
            .map(drop)
    }

    /// `DELETE /users/{id}?removeFromSharing=true[&transferTo=…&transferSheets=true]`.
    pub async fn remove_user(
        &self,
        id: i64,
        transfer_to: Option<i64>,
        log: &CallLog,
    ) -> Result<(), ApiError> {
        let mut path = format!("/users/{id}?removeFromSharing=true");
        if let Some(to) = transfer_to {
            path.push_str(&format!("&transferTo={to}&transferSheets=true"));
        }
        // Removing a user hands the groups it owned to `transferTo`.
        let sent = self.send(Method::DELETE, &path, None, log).await;
        self.groups_changed();
        sent.map(drop)
    }
}

fn decode<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body)
        .map_err(|e| ApiError::unusable(format!("unexpected response shape: {e}")))
}

impl Transported for Client {
    fn transports(&self) -> Vec<&Transport> {
        vec![&self.transport]
    }

    fn transports_mut(&mut self) -> Vec<&mut Transport> {
        vec![&mut self.transport]
    }
}
