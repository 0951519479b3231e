//! Typed calls to the Postman API endpoints the workflows use, over [`ApiHttp`].
//!
//! Two credentials travel separately, as Postman documents: the Postman API key in
//! `X-Api-Key` for `/me`, `/users`, `/workspaces…`, `/audit/logs` and `/accounts`, and
//! the team's SCIM API key as `Authorization: Bearer …` for `/scim/v2/…`. The SCIM key
//! is read from the environment variable named by `token_env` with `_SCIM` appended
//! (e.g. `POSTMAN_API_KEY_SCIM`); when that is unset the API key is sent there too.
//!
//! Lists are read to the end: `GET /workspaces` with `limit` and `meta.nextCursor`,
//! `GET /scim/v2/Users` with `startIndex` / `count`. Errors keep the HTTP status, the
//! error's name and message from whichever of Postman's three error shapes came back
//! (`{"error": {"name", "message"}}`, problem+json, SCIM), and the wait asked for by
//! `Retry-After`, `RetryAfter`, `X-RateLimit-RetryAfter` or, on a 429, `X-RateLimit-Reset`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::apps::api_error::ErrorKind;
use crate::apps::http::{
    oversized_message, page_loop_message, path_segment, query_value, ApiHttp, CallLog, Reply,
    MAX_PAGES,
};
use crate::apps::ClientError;

/// The error that ends a list still paging after [`MAX_PAGES`] (mapped to `POST-199-B`).
fn page_loop(path: &str) -> ApiError {
    ApiError::unusable(page_loop_message(path))
}
use crate::apps::transport::{Transport, Transported};
use crate::config::{ConnectionConfig, Secret};
use crate::domain::protection::Guard;

/// Page size asked for when listing workspaces (the documented maximum).
const WORKSPACE_PAGE: u32 = 100;
/// Page size asked for when listing SCIM users.
const SCIM_PAGE: u32 = 100;

/// Workspace role id of a Viewer.
pub const ROLE_VIEWER: &str = "1";
/// Workspace role id of an Editor.
pub const ROLE_EDITOR: &str = "2";
/// Workspace role id of an Admin.
pub const ROLE_ADMIN: &str = "3";

/// A workspace role id's display name.
pub fn role_name(id: &str) -> &str {
    match id {
        ROLE_VIEWER => "Viewer",
        ROLE_EDITOR => "Editor",
        ROLE_ADMIN => "Admin",
        other => other,
    }
}

/// The key's own user, from `GET /me`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// User id.
    pub id: i64,
    /// Email.
    #[serde(default)]
    pub email: String,
    /// The team. Postman documents `0` for a user in no team (any more); older answers
    /// left the field out. Read it through [`Me::in_team`].
    #[serde(default)]
    pub team_id: Option<i64>,
    /// The team's name.
    #[serde(default)]
    pub team_name: Option<String>,
    /// Team roles (`admin`, `user`, `billing`…).
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Me {
    /// Whether the key's user belongs to a team: `teamId` present and not `0`.
    pub fn in_team(&self) -> bool {
        self.team_id.is_some_and(|id| id != 0)
    }
}

#[derive(Deserialize)]
struct MeEnvelope {
    user: Me,
}

/// A team member, from `GET /users`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// User id.
    pub id: i64,
    /// Email.
    #[serde(default)]
    pub email: String,
    /// Full name.
    #[serde(default)]
    pub name: Option<String>,
    /// Username.
    #[serde(default)]
    pub username: Option<String>,
    /// Team roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// When they joined the team.
    #[serde(default)]
    pub joined_at: Option<String>,
}

#[derive(Deserialize)]
struct MembersEnvelope {
    #[serde(default)]
    data: Vec<Member>,
}

/// A workspace, from `GET /workspaces`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    /// Workspace id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `personal` or `team`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// `personal`, `team`, `private`, `public` or `partner`.
    #[serde(default)]
    pub visibility: Option<String>,
}

impl Workspace {
    /// Whether roles can be read and changed there (not personal workspaces).
    pub fn has_roles(&self) -> bool {
        self.kind != "personal" && self.visibility.as_deref() != Some("personal")
    }
}

#[derive(Deserialize)]
struct WorkspacesPage {
    #[serde(default)]
    workspaces: Vec<Workspace>,
    #[serde(default)]
    meta: Option<PageMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageMeta {
    #[serde(default)]
    next_cursor: Option<String>,
}

/// One role of a workspace and the users holding it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRole {
    /// Role id (`1` Viewer, `2` Editor, `3` Admin).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// User ids holding the role (as strings).
    #[serde(default, rename = "user")]
    pub users: Vec<String>,
}

#[derive(Deserialize)]
struct RolesEnvelope {
    #[serde(default)]
    roles: Vec<WorkspaceRole>,
}

/// The roles `user` holds among `roles`.
pub fn roles_of(roles: &[WorkspaceRole], user: i64) -> Vec<String> {
    let id = user.to_string();
    roles
        .iter()
        .filter(|r| r.users.contains(&id))
        .map(|r| r.id.clone())
        .collect()
}

/// Whether `user` (an id as the role list spells it) is the workspace's only Admin.
pub fn sole_admin_of(roles: &[WorkspaceRole], user: &str) -> bool {
    let admins = admins_of(roles);
    !admins.is_empty() && admins.iter().all(|a| a == user)
}

/// The users holding the Admin role among `roles`.
pub fn admins_of(roles: &[WorkspaceRole]) -> Vec<String> {
    roles
        .iter()
        .filter(|r| r.id == ROLE_ADMIN)
        .flat_map(|r| r.users.iter().cloned())
        .collect()
}

/// One change for `PATCH /workspaces/{id}/roles`.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleChange {
    /// `true` adds the role, `false` removes it.
    pub add: bool,
    /// Postman user id.
    pub user: i64,
    /// Role id.
    pub role: String,
}

/// A SCIM user, from `/scim/v2/Users`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimUser {
    /// SCIM id.
    pub id: String,
    /// SCIM user name (the email).
    #[serde(default)]
    pub user_name: String,
    /// Whether the account is active in the team.
    #[serde(default)]
    pub active: bool,
    /// The identity provider's id, when set.
    #[serde(default)]
    pub external_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScimList {
    #[serde(default)]
    total_results: u64,
    #[serde(default, rename = "Resources")]
    resources: Vec<ScimUser>,
}

/// One audit-log event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Event id.
    #[serde(default)]
    pub id: Value,
    /// Action name, e.g. `user.login_google_success`.
    #[serde(default)]
    pub action: String,
    /// When it happened.
    #[serde(default)]
    pub timestamp: String,
    /// Human-readable text.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Deserialize)]
struct AuditPage {
    #[serde(default)]
    trails: Vec<AuditEvent>,
}

/// Seats of the team's billing account, from `GET /accounts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seats {
    /// Paid seats.
    #[serde(default)]
    pub total: i64,
    /// Seats in use.
    #[serde(default)]
    pub consumed: i64,
    /// Seats free.
    #[serde(default)]
    pub available: i64,
}

#[derive(Deserialize)]
struct AccountEnvelope {
    slots: Seats,
}

/// Postman's error name (`AuthenticationError`, `forbiddenError`, the problem type…): the
/// kind of its [`ApiError`]s. Which answers are transient is what HTTP says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorName(pub String);

impl ErrorKind for ErrorName {
    fn label(&self) -> String {
        format!(" {}", self.0)
    }
}

/// A failed Postman call: no response, or an error response with its error name.
pub type ApiError = crate::apps::api_error::ApiError<ErrorName>;

impl ApiError {
    /// Postman's error name, when the answer had one.
    pub fn name(&self) -> Option<&str> {
        self.kind.as_ref().map(|name| name.0.as_str())
    }

    fn text(&self) -> String {
        format!("{} {}", self.name().unwrap_or(""), self.message).to_ascii_lowercase()
    }

    /// Whether a 401 says the key was valid once (expired, revoked, owner deactivated).
    pub fn says_key_expired(&self) -> bool {
        let t = self.text();
        [
            "expired",
            "revoked",
            "deactivated",
            "no longer",
            "inactive",
            "disabled",
        ]
        .iter()
        .any(|w| t.contains(w))
    }

    /// Whether a 403 blames the team's plan rather than the key's permissions.
    pub fn says_plan(&self) -> bool {
        let t = self.text();
        let words: Vec<&str> = t
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .collect();
        let word = |w: &str| {
            words
                .iter()
                .any(|x| *x == w || x.strip_suffix("'s") == Some(w))
        };
        word("plan")
            || word("plans")
            || word("enterprise")
            || word("upgrade")
            || t.contains("isn't available")
            || t.contains("not available")
    }

    /// Whether the error says the caller is in no team.
    pub fn says_no_team(&self) -> bool {
        let t = self.text();
        t.contains("part of a team")
            || t.contains("team not found")
            || t.contains("no team")
            || t.contains("team doesn't exist")
            || t.contains("team does not exist")
    }
}

/// The error name and message from any of Postman's error bodies.
pub fn error_parts(body: &Value) -> (Option<String>, Option<String>) {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    // {"error": {"name", "message"}}
    if let Some(e) = body.get("error").filter(|e| e.is_object()) {
        return (s(e.get("name")), s(e.get("message")));
    }
    // SCIM: {"schemas": [...], "scimType"?, "detail", "status"}
    if body.get("schemas").is_some() {
        let name = s(body.get("scimType")).or_else(|| Some("scimError".to_string()));
        return (name, s(body.get("detail")));
    }
    // problem+json: {"type", "title", "detail"} where detail may nest {"error": {...}}
    if body.get("type").is_some() || body.get("title").is_some() || body.get("detail").is_some() {
        let kind = s(body.get("type")).map(|t| t.rsplit('/').next().unwrap_or(&t).to_string());
        let detail = match body.get("detail") {
            Some(Value::String(d)) if !d.is_empty() => Some(d.clone()),
            Some(d @ Value::Object(_)) => {
                let (n, m) = error_parts(d);
                return (n.or(kind), m.or_else(|| s(body.get("title"))));
            }
            _ => None,
        };
        return (kind, detail.or_else(|| s(body.get("title"))));
    }
    // {"name", "message"}
    (s(body.get("name")), s(body.get("message")))
}

/// Postman sends no numeric error codes: the call log keeps none.
pub fn error_code_of(_body: &Value) -> Option<i64> {
    None
}

fn header_secs(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v.ceil() as u64)
}

/// The wait a reply asks for, in milliseconds.
fn retry_after_ms(reply: &Reply) -> Option<u64> {
    if let Some(ms) = reply.retry_after_ms {
        return Some(ms);
    }
    for name in ["retryafter", "x-ratelimit-retryafter"] {
        if let Some(s) = header_secs(&reply.headers, name) {
            return Some(s * 1000);
        }
    }
    if reply.status == 429 {
        // Documented as the reset time in epoch seconds; small values are read as a delay.
        let reset = header_secs(&reply.headers, "x-ratelimit-reset")?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let wait = if reset > 1_000_000_000 {
            reset.saturating_sub(now)
        } else {
            reset
        };
        return Some(wait.max(1) * 1000);
    }
    None
}

/// A client for one Postman team.
#[derive(Debug)]
pub struct Client {
    /// The public API, with the API key in `X-Api-Key`.
    api: Transport,
    /// The SCIM API, with the SCIM key as a bearer token.
    scim: Transport,
    scim_key_source: String,
    /// Who this connection never removes or downgrades.
    pub guard: Guard,
}

impl Client {
    /// A client for a configured connection; the SCIM key comes from `<token_env>_SCIM`
    /// when set, else the API key is used for SCIM too.
    pub fn new(config: &ConnectionConfig, key: Secret) -> Result<Self, ClientError> {
        let scim_env = format!("{}_SCIM", config.token_env);
        let scim_key = std::env::var(&scim_env)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        let source = match &scim_key {
            Some(_) => format!("the SCIM API key in {scim_env}"),
            None => format!("the API key ({scim_env} is not set)"),
        };
        let mut client = Client::with_keys(config, key.clone(), scim_key.unwrap_or(key))?;
        client.scim_key_source = source;
        Ok(client)
    }

    /// Which key SCIM calls send, for messages (never the key itself).
    pub fn scim_key_source(&self) -> &str {
        &self.scim_key_source
    }

    /// A client with an explicit SCIM API key.
    pub fn with_keys(
        config: &ConnectionConfig,
        key: Secret,
        scim_key: Secret,
    ) -> Result<Self, ClientError> {
        let timeout = Duration::from_secs(config.timeout_secs);
        let api = ApiHttp::new(
            &config.base_url,
            HeaderName::from_static("x-api-key"),
            None,
            key,
            config.requests_per_minute,
            timeout,
        )?;
        Ok(Client {
            api: Transport::new(api),
            scim: Transport::bearer(config, scim_key, None)?,
            scim_key_source: "the SCIM API key given".to_string(),
            guard: config.guard(),
        })
    }

    /// Sends one request, retrying it while it fails transiently (see [`CallRetry`]).
    async fn send_via(
        &self,
        transport: &Transport,
        method: Method,
        path: &str,
        body: Option<&Value>,
        log: &CallLog,
    ) -> Result<Value, ApiError> {
        transport
            .send(log, || {
                Client::send_once(transport.http(), method.clone(), path, body, log)
            })
            .await
    }

    async fn send_once(
        http: &ApiHttp,
        method: Method,
        path: &str,
        body: Option<&Value>,
        log: &CallLog,
    ) -> Result<Value, ApiError> {
        let reply = http
            .call(method, path, body, log, error_code_of)
            .await
            .map_err(ApiError::from)?;
        reply.into_body(
            |status| ApiError::without_body(Some(status), oversized_message(path)),
            |reply| {
                let (name, message) = error_parts(&reply.body);
                ApiError {
                    status: Some(reply.status),
                    kind: name.map(ErrorName),
                    message: message.unwrap_or_else(|| "no message".to_string()),
                    retry_after_ms: retry_after_ms(&reply),
                }
            },
        )
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        log: &CallLog,
    ) -> Result<Value, ApiError> {
        self.send_via(&self.api, method, path, body, log).await
    }

    async fn send_scim(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        log: &CallLog,
    ) -> Result<Value, ApiError> {
        self.send_via(&self.scim, method, path, body, log).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, log: &CallLog) -> Result<T, ApiError> {
        decode(self.send(Method::GET, path, None, log).await?)
    }

    /// `GET /me`: the key's own user and team.
    pub async fn me(&self, log: &CallLog) -> Result<Me, ApiError> {
        let env: MeEnvelope = self.get("/me", log).await?;
        Ok(env.user)
    }

    /// `GET /users`: every team member.
    pub async fn list_members(&self, log: &CallLog) -> Result<Vec<Member>, ApiError> {
        let env: MembersEnvelope = self.get("/users", log).await?;
        Ok(env.data)
    }

    /// The team member with this email (compared without case), if any.
    pub async fn find_member(
        &self,
        email: &str,
        log: &CallLog,
    ) -> Result<Option<Member>, ApiError> {
        let members = self.list_members(log).await?;
        Ok(members
            .into_iter()
            .find(|m| m.email.eq_ignore_ascii_case(email)))
    }

    /// `GET /users/{id}`; `None` when the user is not (any more) a team member.
    pub async fn get_member(&self, id: i64, log: &CallLog) -> Result<Option<Member>, ApiError> {
        match self.get(&format!("/users/{id}"), log).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /workspaces?limit=100`, following `meta.nextCursor` to the end.
    pub async fn list_workspaces(&self, log: &CallLog) -> Result<Vec<Workspace>, ApiError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut path = format!("/workspaces?limit={WORKSPACE_PAGE}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", query_value(c)));
            }
            let page: WorkspacesPage = self.get(&path, log).await?;
            all.extend(page.workspaces);
            match page
                .meta
                .and_then(|m| m.next_cursor)
                .filter(|c| !c.is_empty())
            {
                Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
                _ => return Ok(all),
            }
        }
        Err(page_loop("/workspaces"))
    }

    /// The first page of workspaces (a permission probe for checks).
    pub async fn probe_workspaces(&self, log: &CallLog) -> Result<Vec<Workspace>, ApiError> {
        let page: WorkspacesPage = self.get("/workspaces?limit=10", log).await?;
        Ok(page.workspaces)
    }

    /// `GET /workspaces-roles` (a permission probe for checks).
    pub async fn probe_role_kinds(&self, log: &CallLog) -> Result<(), ApiError> {
        self.send(Method::GET, "/workspaces-roles", None, log)
            .await
            .map(drop)
    }

    /// `GET /workspaces/{id}/roles`; `None` when the workspace is gone.
    pub async fn workspace_roles(
        &self,
        id: &str,
        log: &CallLog,
    ) -> Result<Option<Vec<WorkspaceRole>>, ApiError> {
        self.read_workspace_roles(&format!("/workspaces/{}/roles", path_segment(id)), log)
            .await
    }

    /// `GET /workspaces/{id}/roles?include=scim`: the same, naming users by SCIM id. This
    /// is how a deactivated member, whom `GET /users` no longer lists, is recognised.
    pub async fn workspace_roles_scim(
        &self,
        id: &str,
        log: &CallLog,
    ) -> Result<Option<Vec<WorkspaceRole>>, ApiError> {
        let path = format!("/workspaces/{}/roles?include=scim", path_segment(id));
        self.read_workspace_roles(&path, log).await
    }

    async fn read_workspace_roles(
        &self,
        path: &str,
        log: &CallLog,
    ) -> Result<Option<Vec<WorkspaceRole>>, ApiError> {
        match self.get::<RolesEnvelope>(path, log).await {
            Ok(env) => Ok(Some(env.roles)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PATCH /workspaces/{id}/roles` with one operation per change.
    pub async fn update_workspace_roles(
        &self,
        id: &str,
        changes: &[RoleChange],
        log: &CallLog,
    ) -> Result<(), ApiError> {
        let ops: Vec<Value> = changes
            .iter()
            .map(|c| {
                json!({
                    "op": if c.add { "add" } else { "remove" },
                    "path": "/user",
                    "value": [{"id": c.user.to_string(), "role": c.role}],
                })
            })
            .collect();
        let body = json!({ "roles": ops });
        self.send(
            Method::PATCH,
            &format!("/workspaces/{}/roles", path_segment(id)),
            Some(&body),
            log,
        )
        .await
        .map(drop)
    }

    /// The newest audit event about `user_id` (`GET /audit/logs?userId=…&limit=1`).
    pub async fn last_activity(
        &self,
        user_id: i64,
        log: &CallLog,
    ) -> Result<Option<AuditEvent>, ApiError> {
        let page: AuditPage = self
            .get(
                &format!("/audit/logs?userId={user_id}&limit=1&orderBy=desc"),
                log,
            )
            .await?;
        Ok(page.trails.into_iter().next())
    }

    /// One audit event of the team (a permission and plan probe for checks).
    pub async fn probe_audit_logs(&self, log: &CallLog) -> Result<(), ApiError> {
        self.send(Method::GET, "/audit/logs?limit=1", None, log)
            .await
            .map(drop)
    }

    /// `GET /accounts`: the billing account's seats (needs the Billing or Admin role).
    pub async fn seats(&self, log: &CallLog) -> Result<Seats, ApiError> {
        let env: AccountEnvelope = self.get("/accounts", log).await?;
        Ok(env.slots)
    }

    /// The first SCIM user (a probe of the SCIM key for checks).
    pub async fn probe_scim(&self, log: &CallLog) -> Result<(), ApiError> {
        self.send_scim(
            Method::GET,
            "/scim/v2/Users?startIndex=1&count=1",
            None,
            log,
        )
        .await
        .map(drop)
    }

    /// `GET /scim/v2/Users?filter=userName eq "…"`, every page; the match on the email
    /// ignores case (Postman's filter itself is case-sensitive).
    pub async fn scim_find_user(
        &self,
        email: &str,
        log: &CallLog,
    ) -> Result<Option<ScimUser>, ApiError> {
        let quoted = email.replace('\\', "\\\\").replace('"', "\\\"");
        let filter = query_value(&format!("userName eq \"{quoted}\""));
        let mut start = 1u64;
        for _ in 0..MAX_PAGES {
            let path =
                format!("/scim/v2/Users?filter={filter}&startIndex={start}&count={SCIM_PAGE}");
            let page: ScimList = decode(self.send_scim(Method::GET, &path, None, log).await?)?;
            let got = page.resources.len() as u64;
            if let Some(u) = page
                .resources
                .into_iter()
                .find(|u| u.user_name.eq_ignore_ascii_case(email))
            {
                return Ok(Some(u));
            }
            if got == 0 || start - 1 + got >= page.total_results {
                return Ok(None);
            }
            start += got;
        }
        Err(page_loop("/scim/v2/Users"))
    }

    /// `GET /scim/v2/Users/{id}`; `None` when there is no such SCIM user.
    pub async fn scim_get_user(
        &self,
        id: &str,
        log: &CallLog,
    ) -> Result<Option<ScimUser>, ApiError> {
        match self
            .send_scim(
                Method::GET,
                &format!("/scim/v2/Users/{}", path_segment(id)),
                None,
                log,
            )
            .await
        {
            Ok(body) => decode(body).map(Some),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PATCH /scim/v2/Users/{id}` replacing `active`: `false` deactivates the account
    /// and takes it out of the team, `true` brings it back.
    pub async fn scim_set_active(
        &self,
        id: &str,
        active: bool,
        log: &CallLog,
    ) -> Result<ScimUser, ApiError> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": active}}],
        });
        let reply = self
            .send_scim(
                Method::PATCH,
                &format!("/scim/v2/Users/{}", path_segment(id)),
                Some(&body),
                log,
            )
            .await?;
        decode(reply)
    }
}

fn decode<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body)
        .map_err(|e| ApiError::unusable(format!("unexpected response shape: {e}")))
}

impl Transported for Client {
    fn transports(&self) -> Vec<&Transport> {
        vec![&self.api, &self.scim]
    }

    fn transports_mut(&mut self) -> Vec<&mut Transport> {
        vec![&mut self.api, &mut self.scim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_words_about_the_plan_blame_the_plan() {
        let err = |message: &str| ApiError {
            status: Some(403),
            kind: Some(ErrorName("forbiddenError".into())),
            message: message.into(),
            retry_after_ms: None,
        };
        assert!(err("Audit logs are available on the Enterprise plan.").says_plan());
        assert!(err("Your team's plan doesn't include this.").says_plan());
        assert!(err("This feature isn't available for your team.").says_plan());
        assert!(!err("No explanation: you lack the permission to read audit logs.").says_plan());
        assert!(!err("You are not permitted to view planned changes.").says_plan());
    }

    #[test]
    fn every_error_shape_gives_name_and_message() {
        let cases = [
            (
                json!({"error": {"name": "AuthenticationError", "message": "Invalid API Key."}}),
                (Some("AuthenticationError"), Some("Invalid API Key.")),
            ),
            (
                json!({"type": "https://api.postman.com/problems/forbidden", "title": "Forbidden", "detail": "You do not have access to this workspace.", "status": 403}),
                (
                    Some("forbidden"),
                    Some("You do not have access to this workspace."),
                ),
            ),
            (
                json!({"type": "https://api.postman.com/problems/not-found", "status": 404, "title": "Not Found", "detail": {"error": {"name": "EntityNotFound", "message": "No team found with the id provided"}}}),
                (
                    Some("EntityNotFound"),
                    Some("No team found with the id provided"),
                ),
            ),
            (
                json!({"type": "invalidParamError", "title": "body.roles[0] should have required property 'op'", "detail": "", "status": 400}),
                (
                    Some("invalidParamError"),
                    Some("body.roles[0] should have required property 'op'"),
                ),
            ),
            (
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "detail": "User not found", "status": "404"}),
                (Some("scimError"), Some("User not found")),
            ),
            (
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "scimType": "invalidFilter", "detail": "bad", "status": "400"}),
                (Some("invalidFilter"), Some("bad")),
            ),
            (
                json!({"detail": "Roles are not supported for personal workspaces.", "link": "https://api.postman.com/problems/unprocessable-entity", "status": 422, "title": "Cannot process the request."}),
                (
                    None,
                    Some("Roles are not supported for personal workspaces."),
                ),
            ),
            (
                json!({"name": "badRequest", "message": "Invalid request"}),
                (Some("badRequest"), Some("Invalid request")),
            ),
            (Value::Null, (None, None)),
        ];
        for (body, (name, message)) in cases {
            let (n, m) = error_parts(&body);
            assert_eq!((n.as_deref(), m.as_deref()), (name, message), "{body}");
        }
    }

    fn err(status: u16, name: &str, message: &str) -> ApiError {
        ApiError {
            status: Some(status),
            kind: Some(ErrorName(name.into())),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    #[test]
    fn messages_are_read_for_key_plan_and_team_hints() {
        assert!(err(401, "AuthenticationError", "The API Key has expired.").says_key_expired());
        assert!(
            err(401, "AuthenticationError", "The API Key has been revoked.").says_key_expired()
        );
        assert!(!err(
            401,
            "AuthenticationError",
            "Invalid API Key. Every request requires a valid API Key to be sent."
        )
        .says_key_expired());
        assert!(err(
            403,
            "forbidden",
            "This feature isn't available on your team's plan."
        )
        .says_plan());
        assert!(!err(
            403,
            "ForbiddenRequest",
            "You do not have permissions to view audit logs"
        )
        .says_plan());
        assert!(err(400, "bad-request", "You must be part of a team").says_no_team());
        assert!(ApiError::without_body(None, "timed out").is_transient());
        assert!(err(429, "rateLimited", "slow down").is_transient());
        assert!(err(503, "x", "y").is_transient());
        assert!(!err(403, "x", "y").is_transient());
        assert_eq!(
            err(403, "forbiddenError", "no").describe(),
            "HTTP 403 forbiddenError: no"
        );
    }

    #[test]
    fn retry_waits_come_from_any_documented_header() {
        let reply = |status: u16, headers: &[(&'static str, &str)], retry_after_ms: Option<u64>| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(HeaderName::from_static(k), v.parse().unwrap());
            }
            Reply {
                status,
                retry_after_ms,
                headers: map,
                body: Value::Null,
                oversized: false,
            }
        };
        assert_eq!(retry_after_ms(&reply(429, &[], Some(3000))), Some(3000));
        assert_eq!(
            retry_after_ms(&reply(429, &[("retryafter", "4")], None)),
            Some(4000)
        );
        assert_eq!(
            retry_after_ms(&reply(429, &[("x-ratelimit-retryafter", "2")], None)),
            Some(2000)
        );
        assert_eq!(
            retry_after_ms(&reply(429, &[("x-ratelimit-reset", "5")], None)),
            Some(5000)
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let soon = (now + 30).to_string();
        let wait = retry_after_ms(&reply(429, &[("x-ratelimit-reset", &soon)], None)).unwrap();
        assert!((28_000..=30_000).contains(&wait), "{wait}");
        assert_eq!(
            retry_after_ms(&reply(503, &[("x-ratelimit-reset", "5")], None)),
            None
        );
    }

    #[test]
    fn role_helpers_find_users_and_admins() {
        let roles = vec![
            WorkspaceRole {
                id: "1".into(),
                display_name: "Viewer".into(),
                users: vec!["7".into()],
            },
            WorkspaceRole {
                id: "3".into(),
                display_name: "Admin".into(),
                users: vec!["5".into(), "9".into()],
            },
        ];
        assert_eq!(roles_of(&roles, 5), vec!["3".to_string()]);
        assert!(roles_of(&roles, 8).is_empty());
        assert_eq!(admins_of(&roles), vec!["5".to_string(), "9".to_string()]);
        assert_eq!(role_name("3"), "Admin");
    }
}
