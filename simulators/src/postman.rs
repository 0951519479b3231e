//! A fake Postman API (with its SCIM 2.0 endpoints) that runs inside the test process.
//!
//! [`PostmanSim`] binds an axum server to a random local port and answers the endpoints
//! the Postman connector uses, from an in-memory team:
//!
//! | endpoint | what the simulator does |
//! |---|---|
//! | `GET /me` | the key's user, its team (`teamId`, `teamName`, `teamDomain`) and team roles |
//! | `GET /users`, `GET /users/{id}` | active team members (`{"data": [...]}`) |
//! | `GET /workspaces` | workspaces the caller can see; `limit` (≤ 100) + `cursor` / `meta.nextCursor` paging |
//! | `GET /workspaces-roles` | the roles a workspace can grant (`user`, `usergroup`, `partner`) |
//! | `GET /workspaces/{id}/roles` | `{"roles": [{"id", "displayName", "user": [...]}]}`; `include=scim` gives SCIM ids |
//! | `PATCH /workspaces/{id}/roles` | `add` / `remove` operations on `/user` (role `1` Viewer, `2` Editor, `3` Admin); `identifierType: scim` header |
//! | `GET /audit/logs` | `{"trails": [...]}` filtered by `userId`, `action`, `since`, `until`; `limit` ≤ 300, `cursor`, `orderBy` |
//! | `GET /accounts` | billing account with `slots` (seats `total`, `consumed`, `available`) |
//! | `GET /scim/v2/Users` | `ListResponse` with `startIndex` / `count` paging and `userName eq "…"` / `active eq …` filters |
//! | `GET`, `PATCH /scim/v2/Users/{id}` | one SCIM user; `replace` of `active` deactivates or reactivates |
//!
//! Every endpoint except SCIM takes the API key in `X-Api-Key`; SCIM takes a SCIM API
//! key as `Authorization: Bearer …`, as Postman documents. Errors come in the shapes the
//! real API uses: `{"error": {"name", "message"}}`, problem+json
//! (`{"type", "title", "detail", "status"}`) and SCIM's `{"schemas", "detail", "status"}`.
//! Responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`;
//! a 429 adds `Retry-After`, `RetryAfter` and `X-RateLimit-RetryAfter`.
//!
//! Tests bend reality on purpose with switches (wrong, expired or revoked keys, no access
//! to users, workspaces, roles or audit logs, a team without the Enterprise plan, SCIM
//! turned off, a deleted team, a rate limit, small pages), with injected [`Fault`]s
//! (error replies, slow replies, connections closed without a reply, the team deleted
//! as a request arrives) for the next N matching calls, and with random transient
//! trouble ([`PostmanSim::set_chaos`]). Every request lands in a call log
//! ([`PostmanSim::calls`]); `tests/connector_contract.rs` checks the answers against
//! Postman's OpenAPI document.
//!
//! Modelling choices where Postman documents nothing: a SCIM-deactivated member leaves
//! `GET /users` but keeps their workspace roles, and the role lists still name them (so a
//! workspace can be left with a deactivated only Admin; a reactivation restores access);
//! an API key whose owner is deactivated stops working.
//! `offboard demo` fills the team with [`PostmanSim::seed_demo`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use crate::kit::{self, ConnHandle, CredentialStatus, Credentials, SimServer, Trouble};

// ---------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------

/// Workspace role id of a Viewer.
pub const ROLE_VIEWER: &str = "1";
/// Workspace role id of an Editor.
pub const ROLE_EDITOR: &str = "2";
/// Workspace role id of an Admin.
pub const ROLE_ADMIN: &str = "3";

/// A member of the simulated team, with the SCIM identity that goes with it.
#[derive(Clone, Debug, PartialEq)]
pub struct SimMember {
    /// Postman user id (assigned by [`PostmanSim::add_member`] when 0).
    pub id: i64,
    /// Email; also the SCIM `userName`.
    pub email: String,
    /// Full name.
    pub name: String,
    /// Postman username.
    pub username: String,
    /// Team roles as `GET /users` reports them (`admin`, `user`, `billing`, …).
    pub roles: Vec<String>,
    /// When the member joined (ISO 8601).
    pub joined_at: String,
    /// SCIM `active`: an inactive member is deactivated and no longer in the team.
    pub active: bool,
    /// SCIM id (assigned by [`PostmanSim::add_member`] when empty).
    pub scim_id: String,
    /// SCIM `externalId`, when the identity provider set one.
    pub external_id: Option<String>,
}

impl SimMember {
    /// An active member with the `user` role; id and SCIM id are assigned when added.
    pub fn new(email: &str) -> Self {
        let local = email.split('@').next().unwrap_or(email);
        let name = local
            .split(['.', '_', '-'])
            .filter(|s| !s.is_empty())
            .map(capitalize)
            .collect::<Vec<_>>()
            .join(" ");
        SimMember {
            id: 0,
            email: email.to_string(),
            name,
            username: local.replace(['.', '_'], "-").to_ascii_lowercase(),
            roles: vec!["user".to_string()],
            joined_at: "2023-03-01T09:00:00.000Z".to_string(),
            active: true,
            scim_id: String::new(),
            external_id: None,
        }
    }

    /// The same member with these team roles.
    pub fn with_roles(mut self, roles: &[&str]) -> Self {
        self.roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }
}

/// A workspace of the simulated team.
#[derive(Clone, Debug, PartialEq)]
pub struct SimWorkspace {
    /// Workspace id (assigned by [`PostmanSim::add_workspace`] when empty).
    pub id: String,
    /// Name.
    pub name: String,
    /// `team` or `personal`.
    pub kind: String,
    /// `team`, `private`, `public`, `partner` or `personal`.
    pub visibility: String,
    /// User id of the creator.
    pub created_by: i64,
    /// Each user's workspace role id (`1` Viewer, `2` Editor, `3` Admin).
    pub user_roles: BTreeMap<i64, String>,
}

impl SimWorkspace {
    /// A team workspace visible to the whole team, created by `created_by`, who is its Admin.
    pub fn team(name: &str, created_by: i64) -> Self {
        SimWorkspace {
            id: String::new(),
            name: name.to_string(),
            kind: "team".to_string(),
            visibility: "team".to_string(),
            created_by,
            user_roles: BTreeMap::from([(created_by, ROLE_ADMIN.to_string())]),
        }
    }

    /// A personal workspace of `owner` (roles cannot be changed there).
    pub fn personal(name: &str, owner: i64) -> Self {
        SimWorkspace {
            id: String::new(),
            name: name.to_string(),
            kind: "personal".to_string(),
            visibility: "personal".to_string(),
            created_by: owner,
            user_roles: BTreeMap::from([(owner, ROLE_ADMIN.to_string())]),
        }
    }

    /// The same workspace with another visibility (`private`, `public`, `partner`…).
    pub fn visibility(mut self, visibility: &str) -> Self {
        self.visibility = visibility.to_string();
        self
    }

    /// The same workspace with `user` holding `role`.
    pub fn role(mut self, user: i64, role: &str) -> Self {
        self.user_roles.insert(user, role.to_string());
        self
    }
}

/// One audit-log event.
#[derive(Clone, Debug, PartialEq)]
pub struct SimAuditEvent {
    /// Event id.
    pub id: i64,
    /// Action, e.g. `user.login_password_success`.
    pub action: String,
    /// When (ISO 8601, UTC).
    pub timestamp: String,
    /// The user the event is about (also its actor).
    pub user_id: i64,
    /// Human-readable text.
    pub message: String,
}

/// One request as the simulator saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct SimCall {
    /// HTTP method, upper case.
    pub method: String,
    /// Path, e.g. `/workspaces/ab12/roles`.
    pub path: String,
    /// Raw query string without `?` (empty when none).
    pub query: String,
    /// Request body: parsed JSON, or a JSON string holding non-JSON text; `None` if empty.
    pub body: Option<Value>,
    /// Status sent back; `0` when no response was sent (dropped connection).
    pub status: u16,
    /// Whether the request carried an `X-Api-Key` header.
    pub api_key_present: bool,
    /// Whether the request carried an `Authorization` header.
    pub authorization_present: bool,
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this status and the body Postman uses for it (`Retry-After` optional).
    Error {
        /// HTTP status to send.
        status: u16,
        /// `Retry-After` (and `RetryAfter`) in seconds.
        retry_after_secs: Option<u64>,
    },
    /// Answer with this status and exactly this JSON body.
    Reply {
        /// HTTP status to send.
        status: u16,
        /// The body.
        body: Value,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the TCP connection without sending any response.
    DropConnection,
    /// The team is deleted as this request arrives; the request (and every later one) is
    /// then answered as a deleted team's would be.
    DeleteTeam,
}

/// A fault for this simulator: which requests it hits and what it does to them.
pub type Fault = kit::Fault<FaultKind>;

/// Who is who in the team created by [`PostmanSim::seed_demo`].
#[derive(Clone, Debug)]
pub struct DemoSeed {
    /// The admin's API key (`demo-key`), for `X-Api-Key`.
    pub api_key: String,
    /// The SCIM API key; the demo team accepts the same value as its API key.
    pub scim_key: String,
    /// The team id.
    pub team_id: i64,
    /// Email of the Team Admin owning the key.
    pub admin_email: String,
    /// Email of the person leaving (sole Admin of two workspaces, Editor of another).
    pub leaver_email: String,
    /// Email of the member who should take over the leaver's workspaces.
    pub recipient_email: String,
    /// Email of a member who has not used Postman for over a year (seat to reclaim).
    pub reclaim_email: String,
    /// Id of the admin.
    pub admin_id: i64,
    /// Id of the leaver.
    pub leaver_id: i64,
    /// Id of the recipient.
    pub recipient_id: i64,
    /// Id of the seat-reclaim member.
    pub reclaim_id: i64,
    /// Workspaces where the leaver is the only Admin.
    pub leaver_sole_admin_workspaces: Vec<String>,
    /// Every workspace where the leaver holds a role (personal ones excluded).
    pub leaver_workspaces: Vec<String>,
}

// ---------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------

struct SimState {
    team_id: i64,
    team_name: String,
    team_domain: String,
    team_deleted: bool,
    members: Vec<SimMember>,
    workspaces: Vec<SimWorkspace>,
    audit: Vec<SimAuditEvent>,
    api_keys: Credentials,
    scim_keys: HashMap<String, CredentialStatus>,
    calls: Vec<(u64, SimCall)>,
    next_seq: u64,
    faults: Vec<Fault>,
    chaos: Option<kit::Chaos>,
    users_access: bool,
    workspaces_access: bool,
    roles_access: bool,
    audit_logs_access: bool,
    scim_enabled: bool,
    enterprise: bool,
    seats_total: u32,
    rate_limit: Option<u32>,
    rate_windows: HashMap<String, VecDeque<Instant>>,
    page_size_cap: Option<u32>,
    next_member_id: i64,
    next_workspace_seq: u64,
    next_audit_id: i64,
}

impl SimState {
    fn new() -> Self {
        SimState {
            team_id: 4242,
            team_name: "Simulated Team".to_string(),
            team_domain: "simulated-team".to_string(),
            team_deleted: false,
            members: Vec::new(),
            workspaces: Vec::new(),
            audit: Vec::new(),
            api_keys: Credentials::default(),
            scim_keys: HashMap::new(),
            calls: Vec::new(),
            next_seq: 0,
            faults: Vec::new(),
            chaos: None,
            users_access: true,
            workspaces_access: true,
            roles_access: true,
            audit_logs_access: true,
            scim_enabled: true,
            enterprise: true,
            seats_total: 50,
            rate_limit: None,
            rate_windows: HashMap::new(),
            page_size_cap: None,
            next_member_id: 12_345_001,
            next_workspace_seq: 1,
            next_audit_id: 90_000_001,
        }
    }

    fn add_member(&mut self, mut m: SimMember) -> i64 {
        if m.id == 0 {
            m.id = self.next_member_id;
        }
        self.next_member_id = self.next_member_id.max(m.id + 1);
        if m.scim_id.is_empty() {
            m.scim_id = scim_id_for(m.id);
        }
        let id = m.id;
        match self.members.iter_mut().find(|x| x.id == id) {
            Some(slot) => *slot = m,
            None => self.members.push(m),
        }
        id
    }

    fn add_workspace(&mut self, mut w: SimWorkspace) -> String {
        if w.id.is_empty() {
            w.id = uuid_like(self.next_workspace_seq);
            self.next_workspace_seq += 1;
        }
        let id = w.id.clone();
        match self.workspaces.iter_mut().find(|x| x.id == id) {
            Some(slot) => *slot = w,
            None => self.workspaces.push(w),
        }
        id
    }

    fn member(&self, id: i64) -> Option<&SimMember> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: i64) -> Option<&mut SimMember> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn active_member(&self, id: i64) -> Option<&SimMember> {
        self.member(id).filter(|m| m.active)
    }

    fn workspace_mut(&mut self, id: &str) -> Option<&mut SimWorkspace> {
        self.workspaces.iter_mut().find(|w| w.id == id)
    }

    fn set_call_status(&mut self, seq: u64, status: u16) {
        if let Some((_, call)) = self.calls.iter_mut().rev().find(|(s, _)| *s == seq) {
            call.status = status;
        }
    }

    fn page_cap(&self, asked: usize) -> usize {
        match self.page_size_cap {
            Some(cap) => asked.min(cap as usize).max(1),
            None => asked.max(1),
        }
    }
}

type Shared = Arc<Mutex<SimState>>;

fn lock(shared: &Shared) -> MutexGuard<'_, SimState> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// The simulator handle
// ---------------------------------------------------------------------------

/// A running fake Postman API; the server stops when this value is dropped.
pub struct PostmanSim {
    shared: Shared,
    server: SimServer,
}

impl PostmanSim {
    /// Binds `127.0.0.1:0` and serves the API from a spawned tokio task.
    pub async fn start() -> io::Result<Self> {
        Self::start_on(0).await
    }

    /// As [`PostmanSim::start`], on a given port of `127.0.0.1` (`0`: any free one).
    pub async fn start_on(port: u16) -> io::Result<Self> {
        let shared: Shared = Arc::new(Mutex::new(SimState::new()));
        let server = SimServer::start_on(port, router(shared.clone())).await?;
        Ok(PostmanSim { shared, server })
    }

    /// API root, e.g. `http://127.0.0.1:41234` (Postman paths have no version prefix).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The team's id.
    pub fn team_id(&self) -> i64 {
        lock(&self.shared).team_id
    }

    /// Adds (or replaces, when the id is taken) a member; returns its id.
    pub fn add_member(&self, member: SimMember) -> i64 {
        lock(&self.shared).add_member(member)
    }

    /// Edits a member in place; does nothing if the id is unknown.
    pub fn update_member(&self, id: i64, f: impl FnOnce(&mut SimMember)) {
        if let Some(m) = lock(&self.shared).member_mut(id) {
            f(m);
        }
    }

    /// A copy of the member with this id.
    pub fn member(&self, id: i64) -> Option<SimMember> {
        lock(&self.shared).member(id).cloned()
    }

    /// A copy of the member with this email (case-insensitive).
    pub fn member_by_email(&self, email: &str) -> Option<SimMember> {
        lock(&self.shared)
            .members
            .iter()
            .find(|m| m.email.eq_ignore_ascii_case(email))
            .cloned()
    }

    /// Adds (or replaces) a workspace; returns its id.
    pub fn add_workspace(&self, workspace: SimWorkspace) -> String {
        lock(&self.shared).add_workspace(workspace)
    }

    /// A copy of the workspace with this id.
    pub fn workspace(&self, id: &str) -> Option<SimWorkspace> {
        lock(&self.shared)
            .workspaces
            .iter()
            .find(|w| w.id == id)
            .cloned()
    }

    /// Removes a workspace (it then answers 404).
    pub fn delete_workspace(&self, id: &str) {
        lock(&self.shared).workspaces.retain(|w| w.id != id);
    }

    /// Gives `user` the role `role` in a workspace, or takes their role away (`None`).
    pub fn set_workspace_role(&self, workspace: &str, user: i64, role: Option<&str>) {
        if let Some(w) = lock(&self.shared).workspace_mut(workspace) {
            match role {
                Some(r) => {
                    w.user_roles.insert(user, r.to_string());
                }
                None => {
                    w.user_roles.remove(&user);
                }
            }
        }
    }

    /// The role id `user` holds in a workspace.
    pub fn workspace_role(&self, workspace: &str, user: i64) -> Option<String> {
        lock(&self.shared)
            .workspaces
            .iter()
            .find(|w| w.id == workspace)
            .and_then(|w| w.user_roles.get(&user).cloned())
    }

    /// Records an audit event about `user_id`; returns its id.
    pub fn add_audit_event(&self, user_id: i64, action: &str, timestamp: &str) -> i64 {
        let mut st = lock(&self.shared);
        add_audit(&mut st, user_id, action, timestamp)
    }

    /// Registers a valid API key acting as member `user_id`.
    pub fn add_api_key(&self, key: &str, user_id: i64) {
        lock(&self.shared).api_keys.add(key, user_id);
    }

    /// Marks an API key as expired (401 saying so).
    pub fn expire_api_key(&self, key: &str) {
        lock(&self.shared)
            .api_keys
            .set_status(key, CredentialStatus::Expired);
    }

    /// Marks an API key as revoked (401 saying so).
    pub fn revoke_api_key(&self, key: &str) {
        lock(&self.shared)
            .api_keys
            .set_status(key, CredentialStatus::Revoked);
    }

    /// Registers a valid SCIM API key for the team.
    pub fn add_scim_key(&self, key: &str) {
        lock(&self.shared)
            .scim_keys
            .insert(key.to_string(), CredentialStatus::Active);
    }

    /// Marks a SCIM API key as revoked (SCIM calls answer 401).
    pub fn revoke_scim_key(&self, key: &str) {
        if let Some(k) = lock(&self.shared).scim_keys.get_mut(key) {
            *k = CredentialStatus::Revoked;
        }
    }

    /// When `false`, `GET /users…` answers 403 (the key's user may not read members).
    pub fn set_users_access(&self, allowed: bool) {
        lock(&self.shared).users_access = allowed;
    }

    /// When `false`, `GET /workspaces` answers 403.
    pub fn set_workspaces_access(&self, allowed: bool) {
        lock(&self.shared).workspaces_access = allowed;
    }

    /// When `false`, `GET`/`PATCH /workspaces/{id}/roles` answer 403.
    pub fn set_roles_access(&self, allowed: bool) {
        lock(&self.shared).roles_access = allowed;
    }

    /// When `false`, `GET /audit/logs` answers 403 (missing permission).
    pub fn set_audit_logs_access(&self, allowed: bool) {
        lock(&self.shared).audit_logs_access = allowed;
    }

    /// When `false`, the team is not on Enterprise: `GET /audit/logs` answers 403 saying
    /// the feature is not on the plan. (SCIM is switched separately: [`Self::set_scim_enabled`].)
    pub fn set_enterprise(&self, enterprise: bool) {
        lock(&self.shared).enterprise = enterprise;
    }

    /// When `false`, SCIM provisioning is off: every SCIM call answers 403.
    pub fn set_scim_enabled(&self, enabled: bool) {
        lock(&self.shared).scim_enabled = enabled;
    }

    /// When `true`, the team no longer exists: `GET /me` answers `teamId: 0`, team
    /// endpoints answer 400 "You must be part of a team", SCIM answers Postman's
    /// documented 400 "This Postman team doesn't exist anymore.".
    pub fn set_team_deleted(&self, deleted: bool) {
        lock(&self.shared).team_deleted = deleted;
    }

    /// Paid seats on the billing account (`slots.total`).
    pub fn set_seats(&self, total: u32) {
        lock(&self.shared).seats_total = total;
    }

    /// Seats in use: active members (what `GET /accounts` reports as `slots.consumed`).
    pub fn seats_consumed(&self) -> u32 {
        lock(&self.shared)
            .members
            .iter()
            .filter(|m| m.active)
            .count() as u32
    }

    /// Limits each key to this many requests per sliding minute (429 beyond it).
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        let mut st = lock(&self.shared);
        st.rate_limit = per_minute;
        st.rate_windows.clear();
    }

    /// Caps every page (workspaces, audit logs, SCIM users) at this many items.
    pub fn set_page_size_cap(&self, cap: Option<u32>) {
        lock(&self.shared).page_size_cap = cap.map(|c| c.max(1));
    }

    /// Every request received so far, oldest first.
    pub fn calls(&self) -> Vec<SimCall> {
        lock(&self.shared)
            .calls
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Empties the call log.
    pub fn clear_calls(&self) {
        lock(&self.shared).calls.clear();
    }

    /// Makes a share of the requests not hit by an injected fault fail transiently at
    /// random (503, 429 with `Retry-After: 1`, dropped connections); `None` stops it.
    pub fn set_chaos(&self, chaos: Option<kit::Chaos>) {
        lock(&self.shared).chaos = chaos;
    }

    /// Queues a fault; faults are tried in the order they were injected.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            lock(&self.shared).faults.push(fault);
        }
    }

    /// Fills the team with a small, realistic set of members, workspaces and audit events,
    /// and the admin key `demo-key` (accepted as API key and as SCIM key).
    pub fn seed_demo(&self) -> DemoSeed {
        let mut st = lock(&self.shared);
        seed_demo_team(&mut st)
    }
}

fn add_audit(st: &mut SimState, user_id: i64, action: &str, timestamp: &str) -> i64 {
    let id = st.next_audit_id;
    st.next_audit_id += 1;
    let name = st
        .member(user_id)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| format!("user {user_id}"));
    st.audit.push(SimAuditEvent {
        id,
        action: action.to_string(),
        timestamp: timestamp.to_string(),
        user_id,
        message: format!("{name}: {}", action.replace(['.', '_'], " ")),
    });
    id
}

fn seed_demo_team(st: &mut SimState) -> DemoSeed {
    const DOMAIN: &str = "northwind.example";
    let now = unix_now();
    let days_ago =
        |d: u64, hour: u64| iso_from_unix(now - now % 86_400 - d * 86_400 + hour * 3_600);
    let person = |first: &str, last: &str| {
        let email = format!(
            "{}.{}@{DOMAIN}",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase()
        );
        let mut m = SimMember::new(&email);
        m.name = format!("{first} {last}");
        m
    };
    st.team_name = "Northwind".to_string();
    st.team_domain = "northwind".to_string();

    let admin = person("Dana", "Whitfield").with_roles(&["admin", "billing", "user"]);
    let admin_email = admin.email.clone();
    let admin_id = st.add_member(admin);
    let leaver = person("Marcus", "Lee");
    let leaver_email = leaver.email.clone();
    let leaver_id = st.add_member(leaver);
    let recipient = person("Priya", "Raman");
    let recipient_email = recipient.email.clone();
    let recipient_id = st.add_member(recipient);
    let reclaim = person("Gordon", "Pike");
    let reclaim_email = reclaim.email.clone();
    let reclaim_id = st.add_member(reclaim);

    let others = [
        ("Aisha", "Khan"),
        ("Ben", "Carter"),
        ("Chloe", "Martin"),
        ("Diego", "Alvarez"),
        ("Elena", "Petrova"),
        ("Felix", "Wagner"),
        ("Grace", "Okafor"),
        ("Hiro", "Tanaka"),
    ];
    let mut other_ids = Vec::new();
    for (i, (first, last)) in others.iter().enumerate() {
        let mut m = person(first, last);
        if i == 5 {
            // A member who was deprovisioned long ago: still a SCIM user, not in the team.
            m.active = false;
        }
        other_ids.push(st.add_member(m));
    }

    let payments = st.add_workspace(
        SimWorkspace::team("Payments API", leaver_id)
            .role(other_ids[0], ROLE_EDITOR)
            .role(other_ids[1], ROLE_VIEWER),
    );
    let sandbox = st.add_workspace(
        SimWorkspace::team("Partner Sandbox", leaver_id)
            .visibility("private")
            .role(other_ids[2], ROLE_EDITOR),
    );
    let platform = st.add_workspace(
        SimWorkspace::team("Platform", admin_id)
            .role(leaver_id, ROLE_EDITOR)
            .role(recipient_id, ROLE_ADMIN)
            .role(other_ids[3], ROLE_VIEWER),
    );
    let shared_docs = st.add_workspace(
        SimWorkspace::team("Shared Docs", admin_id)
            .visibility("public")
            .role(leaver_id, ROLE_ADMIN)
            .role(reclaim_id, ROLE_VIEWER),
    );
    st.add_workspace(
        SimWorkspace::team("Onboarding", recipient_id).role(other_ids[4], ROLE_EDITOR),
    );
    st.add_workspace(SimWorkspace::team("Legacy Mocks", reclaim_id).role(admin_id, ROLE_EDITOR));
    st.add_workspace(SimWorkspace::personal("My Workspace", leaver_id));
    st.add_workspace(SimWorkspace::personal("My Workspace", admin_id));

    for (user, days, hour, action) in [
        (admin_id, 0, 8, "user.login_password_success"),
        (leaver_id, 2, 16, "user.login_google_success"),
        (leaver_id, 3, 10, "workspace.updated"),
        (recipient_id, 1, 9, "user.login_password_success"),
        (reclaim_id, 412, 11, "user.login_password_success"),
        (other_ids[0], 5, 14, "user.login_sso_success"),
    ] {
        let ts = days_ago(days, hour);
        add_audit(st, user, action, &ts);
    }

    let key = "demo-key".to_string();
    st.api_keys.add(&key, admin_id);
    st.scim_keys.insert(key.clone(), CredentialStatus::Active);

    DemoSeed {
        api_key: key.clone(),
        scim_key: key,
        team_id: st.team_id,
        admin_email,
        leaver_email,
        recipient_email,
        reclaim_email,
        admin_id,
        leaver_id,
        recipient_id,
        reclaim_id,
        leaver_sole_admin_workspaces: vec![payments.clone(), sandbox.clone()],
        leaver_workspaces: vec![payments, sandbox, platform, shared_docs],
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error reply in one of Postman's three error shapes, always as `application/json`:
/// the only content type Postman's OpenAPI document declares, SCIM answers included.
#[derive(Debug)]
struct ApiError {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

const SCIM_ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

impl ApiError {
    /// `{"error": {"name", "message"}}`.
    fn named(status: u16, name: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({"error": {"name": name, "message": message.into()}}),
            retry_after: None,
        }
    }

    /// problem+json: `{"type", "title", "detail", "status"}`.
    fn problem(status: u16, detail: impl Into<String>) -> Self {
        let (slug, title) = problem_kind(status);
        ApiError {
            status,
            body: json!({
                "type": format!("https://api.postman.com/problems/{slug}"),
                "title": title,
                "detail": detail.into(),
                "status": status,
            }),
            retry_after: None,
        }
    }

    /// SCIM: `{"schemas", "detail", "status"}` (status as a string).
    fn scim(status: u16, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({
                "schemas": [SCIM_ERROR_SCHEMA],
                "detail": detail.into(),
                "status": status.to_string(),
            }),
            retry_after: None,
        }
    }

    /// SCIM with a `scimType`.
    fn scim_typed(status: u16, scim_type: &str, detail: impl Into<String>) -> Self {
        let mut e = ApiError::scim(status, detail);
        e.body["scimType"] = json!(scim_type);
        e
    }

    /// The reply an injected `FaultKind::Error` gives.
    fn for_fault(status: u16, scim: bool) -> Self {
        if scim {
            return ApiError::scim(status, problem_kind(status).1);
        }
        match status {
            429 => ApiError::named(
                429,
                "rateLimited",
                "Rate limit exceeded. Please retry later.",
            ),
            500..=599 => ApiError::problem(status, problem_kind(status).1),
            _ => ApiError::problem(status, problem_kind(status).1),
        }
    }
}

fn problem_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("bad-request", "Bad Request"),
        401 => ("unauthorized", "Unauthorized"),
        403 => ("forbidden", "Forbidden"),
        404 => ("not-found", "Not Found"),
        405 => ("method-not-allowed", "Method Not Allowed"),
        409 => ("conflict", "Conflict"),
        422 => ("unprocessable-entity", "Cannot process the request."),
        429 => ("too-many-requests", "Too Many Requests"),
        502 => ("bad-gateway", "Bad Gateway"),
        503 => ("service-unavailable", "Service Unavailable"),
        504 => ("gateway-timeout", "Gateway Timeout"),
        500..=599 => ("internal-server-error", "Internal Server Error"),
        _ => ("error", "Error"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            let v = HeaderValue::from(secs);
            headers.insert(header::RETRY_AFTER, v.clone());
            headers.insert(HeaderName::from_static("retryafter"), v.clone());
            headers.insert(HeaderName::from_static("x-ratelimit-retryafter"), v);
        }
        response
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch as `YYYY-MM-DDThh:mm:ss.000Z` (Postman writes milliseconds).
fn iso_from_unix(secs: u64) -> String {
    let whole = kit::iso_from_unix(secs);
    format!("{}.000Z", whole.trim_end_matches('Z'))
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A 48-hex-digit SCIM id derived from the user id.
fn scim_id_for(id: i64) -> String {
    let a = mix(id as u64);
    let b = mix(a);
    let c = mix(b);
    format!("{a:016x}{b:016x}{c:016x}")
}

fn uuid_like(seq: u64) -> String {
    let a = mix(seq ^ 0x5eed);
    let b = mix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)? as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// Postman-style opaque cursor for an offset.
fn cursor_for(offset: usize) -> String {
    b64_encode(offset.to_string().as_bytes())
}

fn offset_from_cursor(cursor: &str) -> Option<usize> {
    String::from_utf8(b64_decode(cursor)?).ok()?.parse().ok()
}

fn parse_body(bytes: &Bytes) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

fn member_json(m: &SimMember) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "username": m.username,
        "email": m.email,
        "roles": m.roles,
        "joinedAt": m.joined_at,
    })
}

fn scim_user_json(m: &SimMember) -> Value {
    let mut parts = m.name.splitn(2, ' ');
    let given = parts.next().unwrap_or("");
    let family = parts.next().unwrap_or("");
    let mut v = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": m.scim_id,
        "userName": m.email,
        "name": {"givenName": given, "familyName": family},
        "active": m.active,
        "meta": {
            "resourceType": "User",
            "created": m.joined_at,
            "lastModified": m.joined_at,
        },
    });
    if let Some(ext) = &m.external_id {
        v["externalId"] = json!(ext);
    }
    v
}

fn workspace_json(w: &SimWorkspace) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "type": w.kind,
        "visibility": w.visibility,
        "createdBy": w.created_by.to_string(),
        "about": format!("The {} workspace.", w.name),
        "createdAt": "2023-05-02T10:00:00.000Z",
        "updatedAt": "2025-01-15T12:30:00.000Z",
    })
}

fn role_name(role: &str) -> &'static str {
    match role {
        ROLE_VIEWER => "Viewer",
        ROLE_EDITOR => "Editor",
        ROLE_ADMIN => "Admin",
        _ => "Unknown",
    }
}

/// `{"roles": [...]}` for a workspace, one entry per role in use. Deactivated members
/// keep their roles and are listed: deactivation takes nobody out of a workspace.
fn roles_json(st: &SimState, w: &SimWorkspace, scim_ids: bool) -> Value {
    let mut roles = Vec::new();
    for role in [ROLE_VIEWER, ROLE_EDITOR, ROLE_ADMIN] {
        let users: Vec<String> = w
            .user_roles
            .iter()
            .filter(|(_, r)| r.as_str() == role)
            .filter_map(|(u, _)| st.member(*u))
            .map(|m| {
                if scim_ids {
                    m.scim_id.clone()
                } else {
                    m.id.to_string()
                }
            })
            .collect();
        if !users.is_empty() {
            roles.push(json!({"id": role, "displayName": role_name(role), "user": users}));
        }
    }
    json!({ "roles": roles })
}

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Router and gatekeeping middleware
// ---------------------------------------------------------------------------

/// Who is calling, put in request extensions by the gate.
#[derive(Clone, Copy, Debug)]
enum Caller {
    /// An API key acting as this member.
    Member(i64),
    /// A SCIM key (acts for the team).
    Scim,
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/me", get(get_me))
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user))
        .route("/workspaces", get(list_workspaces))
        .route("/workspaces-roles", get(list_role_kinds))
        .route(
            "/workspaces/{id}/roles",
            get(get_workspace_roles).patch(patch_workspace_roles),
        )
        .route("/audit/logs", get(list_audit_logs))
        .route("/accounts", get(get_accounts))
        .route("/scim/v2/Users", get(scim_list_users))
        .route(
            "/scim/v2/Users/{id}",
            get(scim_get_user).patch(scim_patch_user),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::problem(404, "The requested resource was not found.")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::problem(405, format!("{method} is not supported on this resource."))
}

/// Headers describing the caller's rate-limit window.
#[derive(Clone, Copy, Debug)]
struct RateInfo {
    limit: u32,
    remaining: u32,
    reset: u64,
}

/// Counts the call against the key's sliding minute; `Err` with the 429 when over a set limit.
fn rate_check(st: &mut SimState, key: &str, scim: bool) -> Result<RateInfo, (ApiError, RateInfo)> {
    let limit = st.rate_limit.unwrap_or(300);
    let enforce = st.rate_limit.is_some();
    let now = Instant::now();
    let hits = st.rate_windows.entry(key.to_string()).or_default();
    let wait_secs = kit::slide_minute(hits, now);
    let reset = unix_now() + wait_secs;
    if enforce && hits.len() >= limit as usize {
        let info = RateInfo {
            limit,
            remaining: 0,
            reset,
        };
        let mut e = if scim {
            ApiError::scim(429, "Too many requests. Please retry later.")
        } else {
            ApiError::named(
                429,
                "rateLimited",
                format!("Rate limit exceeded. Please retry after {reset}."),
            )
        };
        e.retry_after = Some(wait_secs);
        return Err((e, info));
    }
    hits.push_back(now);
    Ok(RateInfo {
        limit,
        remaining: limit.saturating_sub(hits.len() as u32),
        reset,
    })
}

/// The gate's verdict: who calls, the fault to apply and the rate window; or the refusal.
type Admission = Result<(Caller, Option<FaultKind>, RateInfo), (ApiError, Option<RateInfo>)>;

/// Authentication, team-wide switches, rate limiting and fault selection.
fn admit(st: &mut SimState, headers: &HeaderMap, method: &str, path: &str) -> Admission {
    let scim = path.starts_with("/scim/");
    let (caller, key) = if scim {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        let key = match auth.split_once(' ') {
            Some((scheme, k)) if scheme.eq_ignore_ascii_case("bearer") => k.trim(),
            _ => "",
        };
        match st.scim_keys.get(key) {
            Some(CredentialStatus::Active) if !key.is_empty() => {}
            Some(_) => {
                return Err((
                    ApiError::scim(401, "The SCIM API key has been revoked."),
                    None,
                ))
            }
            None => {
                return Err((
                    ApiError::scim(401, "A valid SCIM API key must be provided."),
                    None,
                ))
            }
        }
        (Caller::Scim, key.to_string())
    } else {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        if key.is_empty() {
            return Err((
                ApiError::problem(401, "An API key must be provided in the request header."),
                None,
            ));
        }
        let record = st.api_keys.get(key).ok_or_else(|| {
            (
                ApiError::named(
                    401,
                    "AuthenticationError",
                    "Invalid API Key. Every request requires a valid API Key to be sent.",
                ),
                None,
            )
        })?;
        match record.status {
            CredentialStatus::Active => {}
            CredentialStatus::Expired => {
                return Err((
                    ApiError::named(401, "AuthenticationError", "The API Key has expired."),
                    None,
                ))
            }
            CredentialStatus::Revoked => {
                return Err((
                    ApiError::named(401, "AuthenticationError", "The API Key has been revoked."),
                    None,
                ))
            }
        }
        match st.member(record.user_id) {
            Some(m) if m.active => {}
            Some(_) => {
                return Err((
                    ApiError::named(
                        401,
                        "AuthenticationError",
                        "The API Key is no longer valid: its owner has been deactivated.",
                    ),
                    None,
                ))
            }
            None => {
                return Err((
                    ApiError::named(
                        401,
                        "AuthenticationError",
                        "Invalid API Key. Every request requires a valid API Key to be sent.",
                    ),
                    None,
                ))
            }
        }
        (Caller::Member(record.user_id), key.to_string())
    };
    let rate = rate_check(st, &key, scim).map_err(|(e, info)| (e, Some(info)))?;
    let fault = match kit::take_fault(&mut st.faults, method, &[path]) {
        Some(FaultKind::DeleteTeam) => {
            st.team_deleted = true;
            None
        }
        Some(other) => Some(other),
        None => st
            .chaos
            .and_then(|c| c.draw())
            .map(|trouble| match trouble {
                Trouble::ServerError => FaultKind::Error {
                    status: 503,
                    retry_after_secs: None,
                },
                Trouble::RateLimited => FaultKind::Error {
                    status: 429,
                    retry_after_secs: Some(1),
                },
                Trouble::Dropped => FaultKind::DropConnection,
            }),
    };
    if fault.is_some() {
        // An injected reply stands for whatever Postman answered, whatever the switches say.
        return Ok((caller, fault, rate));
    }
    if st.team_deleted && path != "/me" {
        let e = if scim {
            // Postman's documented SCIM 400 example.
            ApiError::scim(400, "This Postman team doesn't exist anymore.")
        } else {
            ApiError::problem(400, "You must be part of a team")
        };
        return Err((e, Some(rate)));
    }
    if scim && !st.scim_enabled {
        return Err((
            ApiError::scim(403, "SCIM provisioning is not enabled for this team."),
            Some(rate),
        ));
    }
    Ok((caller, None, rate))
}

fn add_rate_headers(response: &mut Response, rate: RateInfo) {
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(rate.limit),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(rate.remaining),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-reset"),
        HeaderValue::from(rate.reset),
    );
}

async fn gate(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let body_json = if bytes.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        )
    };

    let (seq, admission) = {
        let mut st = lock(&shared);
        let seq = st.next_seq;
        st.next_seq += 1;
        st.calls.push((
            seq,
            SimCall {
                method: method.clone(),
                path: path.clone(),
                query,
                body: body_json,
                status: 0,
                api_key_present: parts.headers.contains_key("x-api-key"),
                authorization_present: parts.headers.contains_key(header::AUTHORIZATION),
            },
        ));
        let admission = admit(&mut st, &parts.headers, &method, &path);
        (seq, admission)
    };

    let scim = path.starts_with("/scim/");
    let response = match admission {
        Err((e, rate)) => {
            let mut r = e.into_response();
            if let Some(rate) = rate {
                add_rate_headers(&mut r, rate);
            }
            r
        }
        Ok((caller, fault, rate)) => {
            let mut r = match fault {
                Some(FaultKind::Error {
                    status,
                    retry_after_secs,
                }) => {
                    let mut e = ApiError::for_fault(status, scim);
                    e.retry_after = retry_after_secs;
                    e.into_response()
                }
                Some(FaultKind::Reply { status, body }) => ApiError {
                    status,
                    body,
                    retry_after: None,
                }
                .into_response(),
                Some(FaultKind::DropConnection) => {
                    conn.kill();
                    // Never reaches the client: the killed stream refuses the write.
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                Some(FaultKind::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    forward(parts, bytes, caller, next).await
                }
                // Taken in `admit`, which deleted the team and answered for it.
                Some(FaultKind::DeleteTeam) | None => forward(parts, bytes, caller, next).await,
            };
            add_rate_headers(&mut r, rate);
            r
        }
    };
    lock(&shared).set_call_status(seq, response.status().as_u16());
    response
}

async fn forward(
    parts: axum::http::request::Parts,
    bytes: Bytes,
    caller: Caller,
    next: Next,
) -> Response {
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(caller);
    next.run(req).await
}

// ---------------------------------------------------------------------------
// Permission checks
// ---------------------------------------------------------------------------

fn is_team_admin(m: &SimMember) -> bool {
    m.roles.iter().any(|r| r == "admin" || r == "super-admin")
}

fn member_caller(st: &SimState, caller: Caller) -> Result<SimMember, ApiError> {
    match caller {
        Caller::Member(id) => st
            .active_member(id)
            .cloned()
            .ok_or_else(|| ApiError::named(401, "AuthenticationError", "Invalid API Key.")),
        Caller::Scim => Err(ApiError::problem(
            401,
            "An API key must be provided in the request header.",
        )),
    }
}

fn forbidden() -> ApiError {
    ApiError::named(
        403,
        "forbiddenError",
        "You do not have enough permissions to perform this action.",
    )
}

fn require_users(st: &SimState, caller: Caller) -> Result<SimMember, ApiError> {
    let me = member_caller(st, caller)?;
    let allowed = me
        .roles
        .iter()
        .any(|r| matches!(r.as_str(), "admin" | "super-admin" | "billing"));
    if !st.users_access || !allowed {
        return Err(forbidden());
    }
    Ok(me)
}

fn scim_caller(caller: Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Scim => Ok(()),
        Caller::Member(_) => Err(ApiError::scim(
            401,
            "A valid SCIM API key must be provided.",
        )),
    }
}

/// Whether `me` may see workspace `w`.
fn can_see(me: &SimMember, w: &SimWorkspace) -> bool {
    if w.kind == "personal" {
        return w.created_by == me.id;
    }
    is_team_admin(me)
        || matches!(w.visibility.as_str(), "team" | "public")
        || w.user_roles.contains_key(&me.id)
}

// ---------------------------------------------------------------------------
// Handlers: /me, /users, /accounts
// ---------------------------------------------------------------------------

type Q = Query<HashMap<String, String>>;

async fn get_me(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    let me = member_caller(&st, caller)?;
    let mut user = json!({
        "id": me.id,
        "username": me.username,
        "email": me.email,
        "fullName": me.name,
        "avatar": Value::Null,
        "isPublic": false,
        "emailVerified": true,
        "roles": me.roles,
    });
    if st.team_deleted {
        // Documented: `teamId` is 0 when the user is not assigned to a team.
        user["roles"] = json!([]);
        user["teamId"] = json!(0);
    } else {
        user["teamId"] = json!(st.team_id);
        user["teamName"] = json!(st.team_name);
        user["teamDomain"] = json!(st.team_domain);
    }
    Ok(Json(json!({
        "user": user,
        "operations": [
            {"name": "api_usage", "limit": 1_000_000, "usage": st.calls.len(), "overage": 0},
        ],
    })))
}

async fn list_users(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    require_users(&st, caller)?;
    let data: Vec<Value> = st
        .members
        .iter()
        .filter(|m| m.active)
        .map(member_json)
        .collect();
    Ok(Json(json!({ "data": data })))
}

async fn get_user(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    require_users(&st, caller)?;
    let id: i64 = raw
        .parse()
        .map_err(|_| ApiError::problem(400, "The userId must be a number."))?;
    st.active_member(id)
        .map(|m| Json(member_json(m)))
        .ok_or_else(|| ApiError::problem(404, "The requested resource was not found."))
}

async fn get_accounts(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    let me = member_caller(&st, caller)?;
    if !me
        .roles
        .iter()
        .any(|r| matches!(r.as_str(), "billing" | "admin" | "super-admin"))
    {
        return Err(forbidden());
    }
    let consumed = st.members.iter().filter(|m| m.active).count() as u32;
    Ok(Json(json!({
        "billingEmail": me.email,
        "id": 372_691,
        "salesChannel": "SALES_SERVE",
        "slots": {
            "available": st.seats_total.saturating_sub(consumed),
            "consumed": consumed,
            "total": st.seats_total,
            "unbilled": consumed.saturating_sub(st.seats_total),
        },
        "state": "PAID",
        "teamId": st.team_id,
    })))
}

// ---------------------------------------------------------------------------
// Handlers: workspaces and roles
// ---------------------------------------------------------------------------

async fn list_workspaces(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    let me = member_caller(&st, caller)?;
    if !st.workspaces_access {
        return Err(forbidden());
    }
    if let Some(t) = q.get("type") {
        if !matches!(
            t.as_str(),
            "personal" | "team" | "private" | "public" | "partner"
        ) {
            return Err(ApiError::named(
                400,
                "invalidParamError",
                "type must be one of personal/team/private/public/partner",
            ));
        }
    }
    let visible: Vec<&SimWorkspace> = st
        .workspaces
        .iter()
        .filter(|w| can_see(&me, w))
        .filter(|w| {
            q.get("type")
                .is_none_or(|t| &w.kind == t || &w.visibility == t)
        })
        .collect();
    let limit = match q.get("limit") {
        None => None,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Some(st.page_cap(n)),
            _ => {
                return Err(ApiError::named(
                    400,
                    "invalidParamError",
                    "limit must be a number between 1 and 100",
                ))
            }
        },
    };
    let start = match q.get("cursor") {
        None => 0,
        Some(c) => offset_from_cursor(c).ok_or_else(|| {
            ApiError::named(400, "invalidParamError", "cursor is malformed or expired")
        })?,
    };
    let Some(limit) = limit else {
        let all: Vec<Value> = visible.iter().map(|w| workspace_json(w)).collect();
        return Ok(Json(json!({ "workspaces": all })));
    };
    let start = start.min(visible.len());
    let end = (start + limit).min(visible.len());
    let page: Vec<Value> = visible[start..end]
        .iter()
        .map(|w| workspace_json(w))
        .collect();
    // Documented as a string; on the last page the simulator leaves it out.
    let meta = if end < visible.len() {
        json!({"nextCursor": cursor_for(end)})
    } else {
        json!({})
    };
    Ok(Json(json!({ "workspaces": page, "meta": meta })))
}

async fn get_workspace_roles(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    let me = member_caller(&st, caller)?;
    if !st.roles_access {
        return Err(forbidden());
    }
    let w = st
        .workspaces
        .iter()
        .find(|w| w.id == id)
        .ok_or_else(|| ApiError::problem(404, "The requested resource was not found."))?;
    if !can_see(&me, w) {
        return Err(ApiError::problem(
            403,
            "You do not have access to this workspace.",
        ));
    }
    let scim_ids = q
        .get("include")
        .is_some_and(|v| v.split(',').any(|s| s.trim() == "scim"));
    Ok(Json(roles_json(&st, w, scim_ids)))
}

async fn list_role_kinds(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    member_caller(&st, caller)?;
    if !st.roles_access {
        return Err(forbidden());
    }
    let user_roles: Vec<Value> = [ROLE_ADMIN, ROLE_EDITOR, ROLE_VIEWER]
        .iter()
        .map(|r| json!({"id": r, "displayName": role_name(r)}))
        .collect();
    Ok(Json(json!({
        "roles": {
            "user": user_roles.clone(),
            "usergroup": user_roles,
            "partner": [{"id": "4", "displayName": "Viewer"}, {"id": "5", "displayName": "Editor"}],
        }
    })))
}

fn invalid_param(title: impl Into<String>) -> ApiError {
    ApiError {
        status: 400,
        body: json!({"type": "invalidParamError", "title": title.into(), "detail": "", "status": 400}),
        retry_after: None,
    }
}

async fn patch_workspace_roles(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut st = lock(&shared);
    let me = member_caller(&st, caller)?;
    if !st.roles_access {
        return Err(forbidden());
    }
    let w = st
        .workspaces
        .iter()
        .find(|w| w.id == id)
        .cloned()
        .ok_or_else(|| ApiError::problem(404, "The requested resource was not found."))?;
    if !can_see(&me, &w) {
        return Err(ApiError::problem(
            403,
            "You do not have access to this workspace.",
        ));
    }
    if !(is_team_admin(&me) || w.user_roles.get(&me.id).map(String::as_str) == Some(ROLE_ADMIN)) {
        return Err(forbidden());
    }
    if w.kind == "personal" || w.visibility == "partner" {
        return Err(ApiError {
            status: 422,
            body: json!({
                "detail": "Roles are not supported for personal and partner workspaces.",
                "link": "https://api.postman.com/problems/unprocessable-entity",
                "status": 422,
                "title": "Cannot process the request.",
            }),
            retry_after: None,
        });
    }
    let scim_ids = headers
        .get("identifiertype")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("scim"));
    let body = parse_body(&body).ok_or_else(|| invalid_param("body should be a JSON object"))?;
    let ops = body
        .get("roles")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid_param("body should have required property 'roles'"))?;
    if ops.len() > 50 {
        return Err(invalid_param(
            "body.roles should not have more than 50 items",
        ));
    }
    // Validate everything before changing anything.
    let mut changes: Vec<(bool, i64, String)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let kind = op.get("op").and_then(Value::as_str).ok_or_else(|| {
            invalid_param(format!(
                "body.roles[{i}] should have required property 'op'"
            ))
        })?;
        let add = match kind {
            "add" => true,
            "remove" => false,
            _ => {
                return Err(invalid_param(format!(
                    "body.roles[{i}].op should be add or remove"
                )))
            }
        };
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        if path != "/user" {
            return Err(invalid_param(format!(
                "body.roles[{i}].path {path:?} is not supported by the simulator (only /user)"
            )));
        }
        let values = op
            .get("value")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                invalid_param(format!(
                    "body.roles[{i}] should have required property 'value'"
                ))
            })?;
        for v in values {
            let raw_id = match v.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(invalid_param(format!(
                        "body.roles[{i}].value[].id is required"
                    )))
                }
            };
            let role = v
                .get("role")
                .and_then(|r| match r {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .filter(|r| matches!(r.as_str(), ROLE_VIEWER | ROLE_EDITOR | ROLE_ADMIN))
                .ok_or_else(|| {
                    invalid_param(format!("body.roles[{i}].value[].role must be 1, 2 or 3"))
                })?;
            let member = if scim_ids {
                st.members.iter().find(|m| m.scim_id == raw_id)
            } else {
                raw_id.parse::<i64>().ok().and_then(|n| st.member(n))
            };
            let member = member.filter(|m| m.active).ok_or_else(|| {
                invalid_param(format!("user {raw_id} is not a member of this team"))
            })?;
            if changes.iter().any(|(_, u, _)| *u == member.id) {
                return Err(invalid_param(format!(
                    "body.roles contains more than one action for user {raw_id}"
                )));
            }
            changes.push((add, member.id, role));
        }
    }
    let Some(ws) = st.workspace_mut(&id) else {
        return Err(ApiError::problem(
            404,
            "The requested resource was not found.",
        ));
    };
    for (add, user, role) in changes {
        if add {
            ws.user_roles.insert(user, role);
        } else if ws.user_roles.get(&user) == Some(&role) {
            ws.user_roles.remove(&user);
        }
    }
    let w = st.workspaces.iter().find(|w| w.id == id).cloned();
    Ok(Json(
        w.map(|w| roles_json(&st, &w, scim_ids))
            .unwrap_or(Value::Null),
    ))
}

// ---------------------------------------------------------------------------
// Handlers: audit logs
// ---------------------------------------------------------------------------

fn audit_json(st: &SimState, e: &SimAuditEvent) -> Value {
    let who = st.member(e.user_id).map(|m| {
        json!({"name": m.name, "username": m.username, "email": m.email, "id": m.id, "active": m.active})
    });
    json!({
        "id": e.id,
        "ip": "192.0.2.10",
        "userAgent": "PostmanRuntime/7.39.0",
        "action": e.action,
        "timestamp": e.timestamp,
        "message": e.message,
        "data": {
            "actor": who.clone().unwrap_or(Value::Null),
            "user": who.unwrap_or(Value::Null),
            "team": {"name": st.team_name, "id": st.team_id},
        },
    })
}

async fn list_audit_logs(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    let me = member_caller(&st, caller)?;
    if !st.enterprise {
        return Err(ApiError::problem(
            403,
            "This feature isn't available on your team's plan. Audit logs need the Enterprise plan.",
        ));
    }
    if !st.audit_logs_access || !is_team_admin(&me) {
        return Err(ApiError::named(
            403,
            "ForbiddenRequest",
            "You do not have permissions to view audit logs",
        ));
    }
    let user_id =
        match q.get("userId") {
            None => None,
            Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
                ApiError::named(400, "invalidParamError", "userId must be a number")
            })?),
        };
    if let Some(action) = q.get("action") {
        if !action.contains('.') {
            return Err(ApiError::named(
                400,
                "InvalidAuditAction",
                "Invalid audit action format. Expected prefix.action_name.",
            ));
        }
    }
    let limit = match q.get("limit") {
        None => 300,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=300).contains(&n) => n,
            _ => {
                return Err(ApiError::named(
                    400,
                    "invalidParamError",
                    "limit must be a number between 1 and 300",
                ))
            }
        },
    };
    let limit = st.page_cap(limit);
    let desc = q
        .get("orderBy")
        .or_else(|| q.get("order_by"))
        .is_none_or(|o| o != "asc");
    let since = q.get("since").cloned();
    let until = q.get("until").cloned();
    let mut events: Vec<&SimAuditEvent> = st
        .audit
        .iter()
        .filter(|e| user_id.is_none_or(|u| e.user_id == u))
        .filter(|e| q.get("action").is_none_or(|a| &e.action == a))
        .filter(|e| since.as_deref().is_none_or(|s| e.timestamp.as_str() >= s))
        .filter(|e| until.as_deref().is_none_or(|u| e.timestamp.as_str() < u))
        .collect();
    events.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.id.cmp(&b.id)));
    if desc {
        events.reverse();
    }
    let start = match q.get("cursor") {
        None => 0,
        Some(c) => offset_from_cursor(c).ok_or_else(|| {
            ApiError::named(400, "invalidParamError", "cursor is malformed or expired")
        })?,
    }
    .min(events.len());
    let end = (start + limit).min(events.len());
    let trails: Vec<Value> = events[start..end]
        .iter()
        .map(|e| audit_json(&st, e))
        .collect();
    let mut body = json!({ "trails": trails });
    if end < events.len() {
        body["meta"] = json!({"nextCursor": cursor_for(end)});
    }
    Ok(Json(body))
}

// ---------------------------------------------------------------------------
// Handlers: SCIM
// ---------------------------------------------------------------------------

enum ScimFilter {
    UserName(String),
    Active(bool),
}

fn parse_scim_filter(raw: &str) -> Result<ScimFilter, ApiError> {
    let bad = || ApiError::scim_typed(400, "invalidFilter", format!("Unsupported filter: {raw}"));
    let mut parts = raw.trim().splitn(3, ' ');
    let attr = parts.next().ok_or_else(bad)?;
    let op = parts.next().ok_or_else(bad)?;
    let value = parts.next().ok_or_else(bad)?.trim();
    if !op.eq_ignore_ascii_case("eq") {
        return Err(bad());
    }
    if attr.eq_ignore_ascii_case("userName") {
        let v = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(bad)?;
        return Ok(ScimFilter::UserName(v.to_string()));
    }
    if attr.eq_ignore_ascii_case("active") {
        return match value {
            "true" => Ok(ScimFilter::Active(true)),
            "false" => Ok(ScimFilter::Active(false)),
            _ => Err(bad()),
        };
    }
    Err(bad())
}

async fn scim_list_users(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    scim_caller(caller)?;
    let st = lock(&shared);
    let filter = q.get("filter").map(|f| parse_scim_filter(f)).transpose()?;
    let start_index = match q.get("startIndex") {
        None => 1,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ApiError::scim_typed(400, "invalidValue", "startIndex must be 1 or greater")
            })?,
    };
    let count = match q.get("count") {
        None => 100,
        Some(raw) => raw
            .parse::<usize>()
            .map_err(|_| ApiError::scim_typed(400, "invalidValue", "count must be a number"))?,
    };
    let count = st.page_cap(count.min(100));
    let matching: Vec<&SimMember> = st
        .members
        .iter()
        .filter(|m| match &filter {
            None => true,
            // Postman documents userName filter values as case-sensitive.
            Some(ScimFilter::UserName(u)) => &m.email == u,
            Some(ScimFilter::Active(a)) => m.active == *a,
        })
        .collect();
    let start = (start_index - 1).min(matching.len());
    let end = (start + count).min(matching.len());
    let resources: Vec<Value> = matching[start..end]
        .iter()
        .map(|m| scim_user_json(m))
        .collect();
    Ok(Json(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": matching.len(),
        "Resources": resources,
        "startIndex": start_index,
        "itemsPerPage": end - start,
    })))
}

async fn scim_get_user(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    scim_caller(caller)?;
    let st = lock(&shared);
    st.members
        .iter()
        .find(|m| m.scim_id == id)
        .map(|m| Json(scim_user_json(m)))
        .ok_or_else(|| ApiError::scim(404, "User not found"))
}

async fn scim_patch_user(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    scim_caller(caller)?;
    let mut st = lock(&shared);
    let body = parse_body(&body).ok_or_else(|| {
        ApiError::scim_typed(400, "invalidSyntax", "The request body is not valid JSON.")
    })?;
    let ops = body
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::scim_typed(400, "invalidSyntax", "Operations is required."))?;
    let mut active: Option<bool> = None;
    let mut user_name: Option<String> = None;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        if !kind.eq_ignore_ascii_case("replace") {
            return Err(ApiError::scim_typed(
                400,
                "invalidValue",
                format!("Unsupported op: {kind}"),
            ));
        }
        let path = op.get("path").and_then(Value::as_str);
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match (path, &value) {
            (None, Value::Object(map)) => {
                if let Some(a) = map.get("active") {
                    active = Some(a.as_bool().ok_or_else(|| {
                        ApiError::scim_typed(400, "invalidValue", "active must be a boolean")
                    })?);
                }
                if let Some(u) = map.get("userName").and_then(Value::as_str) {
                    user_name = Some(u.to_string());
                }
            }
            (Some(p), Value::Bool(b)) if p.eq_ignore_ascii_case("active") => active = Some(*b),
            (Some(p), Value::String(s)) if p.eq_ignore_ascii_case("userName") => {
                user_name = Some(s.clone())
            }
            _ => {
                return Err(ApiError::scim_typed(
                    400,
                    "invalidPath",
                    "Only active and userName can be replaced.",
                ))
            }
        }
    }
    let member = st
        .members
        .iter_mut()
        .find(|m| m.scim_id == id)
        .ok_or_else(|| ApiError::scim(404, "User not found"))?;
    if let Some(a) = active {
        member.active = a;
    }
    if let Some(u) = user_name {
        member.email = u;
    }
    let out = scim_user_json(member);
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Api {
        sim: PostmanSim,
        seed: DemoSeed,
        http: reqwest::Client,
    }

    impl Api {
        async fn new() -> Api {
            let sim = PostmanSim::start().await.unwrap();
            let seed = sim.seed_demo();
            Api {
                sim,
                seed,
                http: reqwest::Client::new(),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.sim.base_url())
        }

        async fn send(
            &self,
            method: reqwest::Method,
            path: &str,
            key: Option<&str>,
            body: Option<Value>,
        ) -> (u16, HeaderMap, Value) {
            let mut req = self.http.request(method, self.url(path));
            if let Some(k) = key {
                req = if path.starts_with("/scim/") {
                    req.header("Authorization", format!("Bearer {k}"))
                } else {
                    req.header("X-Api-Key", k)
                };
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap();
            (
                status,
                headers,
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )
        }

        async fn get(&self, path: &str) -> (u16, Value) {
            let (s, _, b) = self
                .send(reqwest::Method::GET, path, Some(&self.seed.api_key), None)
                .await;
            (s, b)
        }

        async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
            let (s, _, b) = self
                .send(
                    reqwest::Method::PATCH,
                    path,
                    Some(&self.seed.api_key),
                    Some(body),
                )
                .await;
            (s, b)
        }
    }

    fn deactivate() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": false}}],
        })
    }

    #[tokio::test]
    async fn me_and_team_members_follow_the_documented_shapes() {
        let api = Api::new().await;
        let (status, headers, me) = api
            .send(reqwest::Method::GET, "/me", Some("demo-key"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(me["user"]["email"], api.seed.admin_email);
        assert_eq!(me["user"]["teamId"], api.seed.team_id);
        assert!(me["user"]["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("admin")));
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(headers.contains_key(h), "missing {h}");
        }
        let (status, users) = api.get("/users").await;
        assert_eq!(status, 200);
        let data = users["data"].as_array().unwrap();
        // One of the eight extra members is deactivated and so not in the team.
        assert_eq!(data.len(), 11);
        let leaver = data
            .iter()
            .find(|u| u["email"] == api.seed.leaver_email)
            .unwrap();
        assert_eq!(leaver["id"], api.seed.leaver_id);
        assert_eq!(leaver["roles"], json!(["user"]));
        let (status, one) = api.get(&format!("/users/{}", api.seed.recipient_id)).await;
        assert_eq!(
            (status, one["email"].clone()),
            (200, json!(api.seed.recipient_email))
        );
        assert_eq!(api.get("/users/1").await.0, 404);
    }

    #[tokio::test]
    async fn keys_are_checked_and_failures_say_why() {
        let api = Api::new().await;
        let (s, _, b) = api.send(reqwest::Method::GET, "/me", None, None).await;
        assert_eq!(
            (s, b["type"].clone()),
            (401, json!("https://api.postman.com/problems/unauthorized"))
        );
        let (s, _, b) = api
            .send(reqwest::Method::GET, "/me", Some("nope"), None)
            .await;
        assert_eq!(
            (s, b["error"]["name"].clone()),
            (401, json!("AuthenticationError"))
        );
        api.sim.add_api_key("k2", api.seed.recipient_id);
        api.sim.expire_api_key("k2");
        let (s, _, b) = api
            .send(reqwest::Method::GET, "/me", Some("k2"), None)
            .await;
        assert_eq!(s, 401);
        assert!(b["error"]["message"].as_str().unwrap().contains("expired"));
        api.sim.add_api_key("k3", api.seed.recipient_id);
        api.sim.revoke_api_key("k3");
        let (_, _, b) = api
            .send(reqwest::Method::GET, "/me", Some("k3"), None)
            .await;
        assert!(b["error"]["message"].as_str().unwrap().contains("revoked"));
        // SCIM wants the SCIM key as a bearer token, not X-Api-Key.
        let (s, _, b) = api
            .send(reqwest::Method::GET, "/scim/v2/Users", None, None)
            .await;
        assert_eq!((s, b["status"].clone()), (401, json!("401")));
        let resp = api
            .http
            .get(api.url("/scim/v2/Users"))
            .header("X-Api-Key", "demo-key")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        api.sim.revoke_scim_key("demo-key");
        let (s, _, _) = api
            .send(
                reqwest::Method::GET,
                "/scim/v2/Users",
                Some("demo-key"),
                None,
            )
            .await;
        assert_eq!(s, 401);
        // A key whose owner is deactivated stops working.
        api.sim.add_api_key("k4", api.seed.reclaim_id);
        api.sim
            .update_member(api.seed.reclaim_id, |m| m.active = false);
        let (s, _, b) = api
            .send(reqwest::Method::GET, "/me", Some("k4"), None)
            .await;
        assert_eq!(s, 401);
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deactivated"));
    }

    #[tokio::test]
    async fn workspaces_page_with_cursors() {
        let api = Api::new().await;
        let (s, all) = api.get("/workspaces").await;
        assert_eq!(s, 200);
        let all = all["workspaces"].as_array().unwrap().clone();
        // Six team workspaces plus the admin's own personal one; not the leaver's.
        assert_eq!(all.len(), 7);
        assert!(all
            .iter()
            .all(|w| w.get("visibility").is_some() && w.get("createdBy").is_some()));
        let mut seen = Vec::new();
        let mut path = "/workspaces?limit=3".to_string();
        loop {
            let (s, page) = api.get(&path).await;
            assert_eq!(s, 200);
            let items = page["workspaces"].as_array().unwrap();
            assert!(items.len() <= 3);
            seen.extend(items.iter().map(|w| w["id"].clone()));
            match page["meta"]["nextCursor"].as_str() {
                Some(c) => path = format!("/workspaces?limit=3&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(
            seen,
            all.iter().map(|w| w["id"].clone()).collect::<Vec<_>>()
        );
        api.sim.set_page_size_cap(Some(2));
        let (_, page) = api.get("/workspaces?limit=100").await;
        assert_eq!(page["workspaces"].as_array().unwrap().len(), 2);
        assert_eq!(api.get("/workspaces?limit=101").await.0, 400);
        assert_eq!(
            api.get("/workspaces?type=team").await.1["workspaces"]
                .as_array()
                .unwrap()
                .len(),
            6
        );
        api.sim.set_workspaces_access(false);
        assert_eq!(api.get("/workspaces").await.0, 403);
    }

    #[tokio::test]
    async fn workspace_roles_are_read_and_changed() {
        let api = Api::new().await;
        let ws = api.seed.leaver_sole_admin_workspaces[0].clone();
        let (s, roles) = api.get(&format!("/workspaces/{ws}/roles")).await;
        assert_eq!(s, 200);
        let admin = roles["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["displayName"] == "Admin")
            .unwrap()
            .clone();
        assert_eq!(admin["id"], "3");
        assert_eq!(admin["user"], json!([api.seed.leaver_id.to_string()]));
        let body = json!({"roles": [{"op": "add", "path": "/user", "value": [{"id": api.seed.recipient_id.to_string(), "role": "3"}]}]});
        let (s, after) = api.patch(&format!("/workspaces/{ws}/roles"), body).await;
        assert_eq!(s, 200);
        assert!(after["roles"]
            .to_string()
            .contains(&api.seed.recipient_id.to_string()));
        assert_eq!(
            api.sim
                .workspace_role(&ws, api.seed.recipient_id)
                .as_deref(),
            Some("3")
        );
        let remove = json!({"roles": [{"op": "remove", "path": "/user", "value": [{"id": api.seed.leaver_id.to_string(), "role": "3"}]}]});
        assert_eq!(
            api.patch(&format!("/workspaces/{ws}/roles"), remove.clone())
                .await
                .0,
            200
        );
        assert_eq!(api.sim.workspace_role(&ws, api.seed.leaver_id), None);
        // Removing a role the user no longer holds changes nothing.
        assert_eq!(
            api.patch(&format!("/workspaces/{ws}/roles"), remove)
                .await
                .0,
            200
        );
        // SCIM ids with the identifierType header.
        let scim_id = api.sim.member(api.seed.reclaim_id).unwrap().scim_id;
        let resp = api
            .http
            .patch(api.url(&format!("/workspaces/{ws}/roles")))
            .header("X-Api-Key", "demo-key")
            .header("identifierType", "scim")
            .json(&json!({"roles": [{"op": "add", "path": "/user", "value": [{"id": scim_id, "role": "1"}]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            api.sim.workspace_role(&ws, api.seed.reclaim_id).as_deref(),
            Some("1")
        );
        let (_, scim_view) = api
            .get(&format!("/workspaces/{ws}/roles?include=scim"))
            .await;
        assert!(scim_view
            .to_string()
            .contains(&api.sim.member(api.seed.reclaim_id).unwrap().scim_id));
        // Validation: missing op, duplicate user, non-member, personal workspace, unknown workspace.
        let (s, b) = api
            .patch(
                &format!("/workspaces/{ws}/roles"),
                json!({"roles": [{"path": "/user", "value": [{"id": "1", "role": "1"}]}]}),
            )
            .await;
        assert_eq!((s, b["type"].clone()), (400, json!("invalidParamError")));
        let dup = json!({"roles": [
            {"op": "add", "path": "/user", "value": [{"id": api.seed.admin_id.to_string(), "role": "1"}]},
            {"op": "remove", "path": "/user", "value": [{"id": api.seed.admin_id.to_string(), "role": "3"}]}
        ]});
        assert_eq!(
            api.patch(&format!("/workspaces/{ws}/roles"), dup).await.0,
            400
        );
        let stranger = json!({"roles": [{"op": "add", "path": "/user", "value": [{"id": "99", "role": "1"}]}]});
        assert_eq!(
            api.patch(&format!("/workspaces/{ws}/roles"), stranger)
                .await
                .0,
            400
        );
        let personal = api
            .sim
            .add_workspace(SimWorkspace::personal("Mine", api.seed.admin_id));
        let any = json!({"roles": [{"op": "add", "path": "/user", "value": [{"id": api.seed.leaver_id.to_string(), "role": "1"}]}]});
        let (s, b) = api
            .patch(&format!("/workspaces/{personal}/roles"), any.clone())
            .await;
        assert_eq!((s, b["status"].clone()), (422, json!(422)));
        assert_eq!(api.patch("/workspaces/nope/roles", any).await.0, 404);
        let (s, kinds) = api.get("/workspaces-roles").await;
        assert_eq!(
            (s, kinds["roles"]["user"][0]["displayName"].clone()),
            (200, json!("Admin"))
        );
        api.sim.set_roles_access(false);
        assert_eq!(api.get(&format!("/workspaces/{ws}/roles")).await.0, 403);
        assert_eq!(api.get("/workspaces-roles").await.0, 403);
    }

    #[tokio::test]
    async fn audit_logs_filter_page_and_need_enterprise() {
        let api = Api::new().await;
        let (s, b) = api
            .get(&format!(
                "/audit/logs?userId={}&limit=1",
                api.seed.leaver_id
            ))
            .await;
        assert_eq!(s, 200);
        let trails = b["trails"].as_array().unwrap();
        assert_eq!(trails.len(), 1);
        assert_eq!(trails[0]["action"], "user.login_google_success");
        assert_eq!(trails[0]["data"]["user"]["id"], api.seed.leaver_id);
        let cursor = b["meta"]["nextCursor"].as_str().unwrap().to_string();
        let (_, next) = api
            .get(&format!(
                "/audit/logs?userId={}&limit=1&cursor={cursor}",
                api.seed.leaver_id
            ))
            .await;
        assert_eq!(next["trails"][0]["action"], "workspace.updated");
        assert!(next.get("meta").is_none());
        let (_, asc) = api.get("/audit/logs?orderBy=asc&limit=1").await;
        assert_eq!(asc["trails"][0]["data"]["user"]["id"], api.seed.reclaim_id);
        assert_eq!(api.get("/audit/logs?limit=301").await.0, 400);
        api.sim.set_audit_logs_access(false);
        let (s, b) = api.get("/audit/logs").await;
        assert_eq!(
            (s, b["error"]["name"].clone()),
            (403, json!("ForbiddenRequest"))
        );
        api.sim.set_enterprise(false);
        let (s, b) = api.get("/audit/logs").await;
        assert_eq!(s, 403);
        assert!(b["detail"].as_str().unwrap().contains("plan"));
    }

    #[tokio::test]
    async fn scim_lists_filters_and_deactivates() {
        let api = Api::new().await;
        let key = api.seed.scim_key.clone();
        let get = |path: String| {
            let api = &api;
            let key = key.clone();
            async move {
                api.send(reqwest::Method::GET, &path, Some(&key), None)
                    .await
            }
        };
        let (s, _, b) = get("/scim/v2/Users?startIndex=1&count=5".into()).await;
        assert_eq!(s, 200);
        assert_eq!(b["totalResults"], 12);
        assert_eq!(b["itemsPerPage"], 5);
        assert_eq!(b["Resources"].as_array().unwrap().len(), 5);
        let (_, _, last) = get("/scim/v2/Users?startIndex=11&count=5".into()).await;
        assert_eq!(last["Resources"].as_array().unwrap().len(), 2);
        let filter = format!("userName eq \"{}\"", api.seed.leaver_email);
        let (_, _, found) = get(format!(
            "/scim/v2/Users?filter={}",
            filter.replace(' ', "%20").replace('"', "%22")
        ))
        .await;
        assert_eq!(found["totalResults"], 1);
        let user = found["Resources"][0].clone();
        assert_eq!(user["active"], true);
        // Filter values are case-sensitive.
        let upper = format!("userName eq \"{}\"", api.seed.leaver_email.to_uppercase());
        let (_, _, none) = get(format!(
            "/scim/v2/Users?filter={}",
            upper.replace(' ', "%20").replace('"', "%22")
        ))
        .await;
        assert_eq!(none["totalResults"], 0);
        let (s, _, _) = get("/scim/v2/Users?filter=displayName%20co%20%22x%22".into()).await;
        assert_eq!(s, 400);
        let (_, _, inactive) = get("/scim/v2/Users?filter=active%20eq%20false".into()).await;
        assert_eq!(inactive["totalResults"], 1);

        let id = user["id"].as_str().unwrap().to_string();
        let before = api.sim.seats_consumed();
        let (s, _, after) = api
            .send(
                reqwest::Method::PATCH,
                &format!("/scim/v2/Users/{id}"),
                Some(&key),
                Some(deactivate()),
            )
            .await;
        assert_eq!((s, after["active"].clone()), (200, json!(false)));
        assert_eq!(api.sim.seats_consumed(), before - 1);
        let (_, acct) = api.get("/accounts").await;
        assert_eq!(acct["slots"]["consumed"], before - 1);
        assert_eq!(acct["slots"]["available"], 50 - (before - 1));
        // Gone from the team but not from role lists; the SCIM identity stays.
        assert_eq!(
            api.get(&format!("/users/{}", api.seed.leaver_id)).await.0,
            404
        );
        let ws = &api.seed.leaver_sole_admin_workspaces[0];
        let (_, roles) = api.get(&format!("/workspaces/{ws}/roles")).await;
        assert!(roles.to_string().contains(&api.seed.leaver_id.to_string()));
        let (s, _, still) = get(format!("/scim/v2/Users/{id}")).await;
        assert_eq!((s, still["active"].clone()), (200, json!(false)));
        // Reactivation (path form) brings the member and their roles back.
        let reactivate =
            json!({"Operations": [{"op": "Replace", "path": "active", "value": true}]});
        let (s, _, _) = api
            .send(
                reqwest::Method::PATCH,
                &format!("/scim/v2/Users/{id}"),
                Some(&key),
                Some(reactivate),
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(
            api.sim.workspace_role(ws, api.seed.leaver_id).as_deref(),
            Some("3")
        );
        assert_eq!(
            api.get(&format!("/users/{}", api.seed.leaver_id)).await.0,
            200
        );
        let (s, _, b) = get("/scim/v2/Users/unknown".into()).await;
        assert_eq!(
            (s, b["schemas"][0].clone()),
            (404, json!(SCIM_ERROR_SCHEMA))
        );
        api.sim.set_scim_enabled(false);
        assert_eq!(get("/scim/v2/Users".into()).await.0, 403);
    }

    #[tokio::test]
    async fn switches_forbid_areas_and_delete_the_team() {
        let api = Api::new().await;
        api.sim.set_users_access(false);
        let (s, b) = api.get("/users").await;
        assert_eq!(
            (s, b["error"]["name"].clone()),
            (403, json!("forbiddenError"))
        );
        api.sim.set_users_access(true);
        // A member without an admin-like role cannot list members either.
        api.sim.add_api_key("plain", api.seed.recipient_id);
        let (s, _, _) = api
            .send(reqwest::Method::GET, "/users", Some("plain"), None)
            .await;
        assert_eq!(s, 403);
        api.sim.set_team_deleted(true);
        let (s, me) = api.get("/me").await;
        assert_eq!(s, 200);
        assert_eq!(me["user"]["teamId"], 0);
        let (s, b) = api.get("/workspaces").await;
        assert_eq!(
            (s, b["detail"].clone()),
            (400, json!("You must be part of a team"))
        );
        let (s, _, _) = api
            .send(
                reqwest::Method::GET,
                "/scim/v2/Users",
                Some("demo-key"),
                None,
            )
            .await;
        assert_eq!(s, 400);
    }

    #[tokio::test]
    async fn rate_limit_answers_429_with_the_documented_headers() {
        let api = Api::new().await;
        api.sim.set_rate_limit(Some(2));
        assert_eq!(api.get("/me").await.0, 200);
        let (s, h, _) = api
            .send(reqwest::Method::GET, "/me", Some("demo-key"), None)
            .await;
        assert_eq!(s, 200);
        assert_eq!(h["x-ratelimit-limit"], "2");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        let (s, h, b) = api
            .send(reqwest::Method::GET, "/users", Some("demo-key"), None)
            .await;
        assert_eq!(s, 429);
        assert_eq!(b["error"]["name"], "rateLimited");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry));
        assert_eq!(h["retryafter"], h["retry-after"]);
        assert_eq!(h["x-ratelimit-retryafter"], h["retry-after"]);
        assert_eq!(h["x-ratelimit-remaining"], "0");
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!(reset >= unix_now());
        api.sim.set_rate_limit(None);
        assert_eq!(api.get("/users").await.0, 200);
    }

    #[tokio::test]
    async fn faults_hit_the_next_matching_calls_only() {
        let api = Api::new().await;
        api.sim.inject(
            Fault::new(
                "/workspaces",
                FaultKind::Error {
                    status: 503,
                    retry_after_secs: Some(7),
                },
            )
            .method("GET")
            .times(2),
        );
        assert_eq!(api.get("/users").await.0, 200);
        let (s, h, b) = api
            .send(reqwest::Method::GET, "/workspaces", Some("demo-key"), None)
            .await;
        assert_eq!((s, h["retry-after"].to_str().unwrap()), (503, "7"));
        assert_eq!(b["status"], 503);
        assert_eq!(api.get("/workspaces").await.0, 503);
        assert_eq!(api.get("/workspaces").await.0, 200);

        api.sim.inject(Fault::new(
            "/scim/v2/Users",
            FaultKind::Error {
                status: 500,
                retry_after_secs: None,
            },
        ));
        let (s, _, b) = api
            .send(
                reqwest::Method::GET,
                "/scim/v2/Users",
                Some("demo-key"),
                None,
            )
            .await;
        assert_eq!((s, b["status"].clone()), (500, json!("500")));

        api.sim.inject(Fault::new(
            "/me",
            FaultKind::Reply {
                status: 418,
                body: json!({"odd": true}),
            },
        ));
        let (s, b) = api.get("/me").await;
        assert_eq!((s, b), (418, json!({"odd": true})));

        api.sim.inject(Fault::new(
            "/me",
            FaultKind::Delay(Duration::from_millis(300)),
        ));
        let started = Instant::now();
        assert_eq!(api.get("/me").await.0, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));

        api.sim
            .inject(Fault::new("/users", FaultKind::DropConnection));
        let err = api
            .http
            .get(api.url("/users"))
            .header("X-Api-Key", "demo-key")
            .send()
            .await;
        assert!(err.is_err(), "expected no response, got {err:?}");
        assert_eq!(api.get("/users").await.0, 200);

        let calls = api.sim.calls();
        let dropped = calls.iter().rev().nth(1).unwrap();
        assert_eq!((dropped.path.as_str(), dropped.status), ("/users", 0));
        let first = &calls[0];
        assert_eq!(
            (first.method.as_str(), first.path.as_str(), first.status),
            ("GET", "/users", 200)
        );
        assert!(first.api_key_present && !first.authorization_present);
        api.sim.clear_calls();
        assert!(api.sim.calls().is_empty());
    }

    #[tokio::test]
    async fn calls_keep_query_and_body() {
        let api = Api::new().await;
        let ws = api.seed.leaver_workspaces[2].clone();
        let body = json!({"roles": [{"op": "remove", "path": "/user", "value": [{"id": api.seed.leaver_id.to_string(), "role": "2"}]}]});
        api.patch(&format!("/workspaces/{ws}/roles"), body.clone())
            .await;
        api.get("/workspaces?limit=5").await;
        let calls = api.sim.calls();
        assert_eq!(calls[0].body.as_ref(), Some(&body));
        assert_eq!(calls[0].method, "PATCH");
        assert_eq!(calls[1].query, "limit=5");
        assert_eq!(api.sim.workspace_role(&ws, api.seed.leaver_id), None);
    }

    #[test]
    fn helpers_round_trip() {
        assert_eq!(iso_from_unix(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_from_unix(1_661_959_172), "2022-08-31T15:19:32.000Z");
        assert_eq!(b64_encode(b"483265"), "NDgzMjY1");
        for n in [0usize, 7, 100, 483_265] {
            assert_eq!(offset_from_cursor(&cursor_for(n)), Some(n));
        }
        assert_eq!(scim_id_for(5).len(), 48);
        assert_ne!(scim_id_for(5), scim_id_for(6));
        assert_eq!(uuid_like(1).len(), 36);
        assert_eq!(SimMember::new("ada.lovelace@x.io").name, "Ada Lovelace");
    }
}
