//! A fake Smartsheet REST API 2.0 server that runs inside the test process.
//!
//! [`SmartsheetSim`] binds an axum server to a random local port and answers the
//! handful of endpoints `offboard` relies on (`/users`, `/users/me`,
//! `/users/{id}`, `/groups`, `/groups/{id}`) using an in-memory organisation:
//! users, groups and access tokens. It follows the official API's shapes closely
//! (paged `IndexResult` lists, `Result` envelopes for writes, the
//! `{errorCode, message, refId}` error body and the documented error codes, among
//! them the rules of a removal: 1018, 1019, 1021, 1107 and 1121 for `transferTo`,
//! 1022 for a user of another account, 1020 for an unknown user, 1106 for an unknown
//! group, and no transfer for a `PENDING` user), and lets a test bend reality on
//! purpose: expired or revoked tokens, missing permissions, a plan without API access,
//! a locked account, per-token rate limits, tiny page sizes, a case-sensitive email
//! filter, injected faults (error replies, slow replies, connections closed without any
//! reply) and random transient trouble ([`SmartsheetSim::set_chaos`]). Every request is
//! written to a call log that tests can inspect afterwards; `tests/connector_contract.rs`
//! checks the answers against Smartsheet's OpenAPI document. `offboard demo` uses the
//! same server, filled by [`SmartsheetSim::seed_demo`].

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use indexmap::IndexMap;
use serde_json::{json, Map, Value};

use crate::kit::{
    self, iso_from_unix, now_iso, ConnHandle, CredentialStatus, Credentials, SimServer, Trouble,
};

// ---------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------

/// A user of the simulated organisation account.
#[derive(Clone, Debug)]
pub struct SimUser {
    /// User id; `0` asks [`SmartsheetSim::add_user`] to pick one.
    pub id: i64,
    /// Primary email address.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// System administrator.
    pub admin: bool,
    /// Holds a paid licence (may create and own sheets).
    pub licensed_sheet_creator: bool,
    /// May create and edit groups.
    pub group_admin: bool,
    /// May open resource views.
    pub resource_viewer: bool,
    /// One of `ACTIVE`, `PENDING`, `DECLINED`, `DEACTIVATED`.
    pub status: String,
    /// Last sign-in time (ISO 8601), if the user ever signed in.
    pub last_login: Option<String>,
    /// Number of sheets the user owns.
    pub sheet_count: u32,
    /// Provisioned by a directory / identity provider: removal fails with 5666.
    pub directory_managed: bool,
    /// Belongs to a different organisation account: transfers to them fail with 1021.
    pub other_account: bool,
}

impl SimUser {
    /// An active, licensed, non-admin user whose names are guessed from the
    /// email's local part (`jane.doe@x` → "Jane" "Doe"); id `0` (auto-assigned).
    pub fn new(email: &str) -> Self {
        let local = email.split('@').next().unwrap_or("");
        let mut parts = local
            .split(['.', '_', '-', '+'])
            .filter(|p| !p.is_empty())
            .map(capitalize);
        let first_name = parts.next().unwrap_or_default();
        let last_name = parts.collect::<Vec<_>>().join(" ");
        SimUser {
            id: 0,
            email: email.to_string(),
            first_name,
            last_name,
            admin: false,
            licensed_sheet_creator: true,
            group_admin: false,
            resource_viewer: false,
            status: "ACTIVE".to_string(),
            last_login: None,
            sheet_count: 0,
            directory_managed: false,
            other_account: false,
        }
    }

    fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
            .trim()
            .to_string()
    }
}

/// A group of the simulated organisation account.
#[derive(Clone, Debug)]
pub struct SimGroup {
    /// Group id.
    pub id: i64,
    /// Group name (unique in the account).
    pub name: String,
    /// Id of the user who owns the group.
    pub owner_id: i64,
    /// Ids of the group's members.
    pub member_ids: Vec<i64>,
}

/// One request as the simulator saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct SimCall {
    /// HTTP method, upper case (`GET`, `DELETE`, ...).
    pub method: String,
    /// Path with the `/2.0` prefix removed, e.g. `/users/12`.
    pub path: String,
    /// Raw query string without the `?` (empty when there was none).
    pub query: String,
    /// Request body: parsed JSON, or a JSON string holding non-JSON text; `None` if empty.
    pub body: Option<serde_json::Value>,
    /// Status sent back; `0` when no response was sent (dropped connection).
    pub status: u16,
    /// Whether the request carried an `Authorization` header.
    pub authorization_present: bool,
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this status and Smartsheet error code (and optional `Retry-After`).
    Error {
        /// HTTP status to send.
        status: u16,
        /// Smartsheet `errorCode` in the body.
        error_code: i64,
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// Wait this long, then answer normally.
    Delay(std::time::Duration),
    /// Close the TCP connection without sending any response.
    DropConnection,
}

/// A fault for this simulator: which requests it hits and what it does to them.
pub type Fault = kit::Fault<FaultKind>;

/// Who is who in the organisation created by [`SmartsheetSim::seed_demo`].
#[derive(Clone, Debug)]
pub struct DemoSeed {
    /// Admin access token (`demo-token`).
    pub token: String,
    /// Email of the system administrator owning the token.
    pub admin_email: String,
    /// Email of the person leaving (owns two of the four groups and many sheets).
    pub leaver_email: String,
    /// Email of the group-admin who should inherit the leaver's assets.
    pub recipient_email: String,
    /// Email of a licensed user who has not signed in for over a year.
    pub reclaim_email: String,
    /// Id of the administrator.
    pub admin_id: i64,
    /// Id of the leaver.
    pub leaver_id: i64,
    /// Id of the recipient.
    pub recipient_id: i64,
    /// Id of the seat-reclaim user.
    pub reclaim_id: i64,
    /// Ids of the groups the leaver owns.
    pub leaver_group_ids: Vec<i64>,
}

// ---------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct GroupRecord {
    group: SimGroup,
    description: String,
    created_at: String,
    modified_at: String,
}

/// The account's users in the order they were added, found by id or by email without a
/// scan, so a simulator holding thousands of users answers as fast as one holding ten
/// (the bench's figures would otherwise fall with its own size).
#[derive(Default)]
struct Users {
    by_id: IndexMap<i64, SimUser>,
    /// Ids by lower-cased email; several users may share one in case-sensitive mode.
    by_email: HashMap<String, Vec<i64>>,
}

impl Users {
    fn get(&self, id: i64) -> Option<&SimUser> {
        self.by_id.get(&id)
    }

    /// Adds `user`, or replaces the user with its id in place.
    fn put(&mut self, user: SimUser) {
        self.unindex(user.id);
        self.by_email
            .entry(user.email.to_ascii_lowercase())
            .or_default()
            .push(user.id);
        self.by_id.insert(user.id, user);
    }

    /// Edits the user with this id (keeping the email index right); `None` if unknown.
    fn edit<R>(&mut self, id: i64, f: impl FnOnce(&mut SimUser) -> R) -> Option<R> {
        let mut user = self.by_id.get(&id)?.clone();
        let result = f(&mut user);
        self.put(user);
        Some(result)
    }

    fn remove(&mut self, id: i64) {
        self.unindex(id);
        self.by_id.shift_remove(&id);
    }

    fn unindex(&mut self, id: i64) {
        let Some(old) = self.by_id.get(&id) else {
            return;
        };
        let key = old.email.to_ascii_lowercase();
        if let Some(ids) = self.by_email.get_mut(&key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_email.remove(&key);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &SimUser> {
        self.by_id.values()
    }

    /// The users with any of these emails, in the order they were added; exact matches
    /// only when `case_sensitive`.
    fn with_emails(&self, emails: &[&str], case_sensitive: bool) -> Vec<&SimUser> {
        let mut found: Vec<(usize, &SimUser)> = emails
            .iter()
            .flat_map(|e| {
                let ids = self.by_email.get(&e.to_ascii_lowercase());
                ids.into_iter().flatten().filter_map(move |id| {
                    let (at, _, u) = self.by_id.get_full(id)?;
                    (!case_sensitive || u.email == *e).then_some((at, u))
                })
            })
            .collect();
        found.sort_by_key(|(at, _)| *at);
        found.dedup_by_key(|(at, _)| *at);
        found.into_iter().map(|(_, u)| u).collect()
    }
}

struct SimState {
    users: Users,
    groups: Vec<GroupRecord>,
    tokens: Credentials,
    calls: Vec<(u64, SimCall)>,
    arrivals: Vec<Instant>,
    next_seq: u64,
    faults: Vec<Fault>,
    chaos: Option<kit::Chaos>,
    email_filter_case_sensitive: bool,
    plan_allows_api: bool,
    locked: Option<i64>,
    users_access: bool,
    groups_access: bool,
    rate_limit: Option<u32>,
    rate_windows: HashMap<String, VecDeque<Instant>>,
    page_size_cap: Option<u32>,
    next_user_id: i64,
    next_group_id: i64,
}

impl SimState {
    fn new() -> Self {
        SimState {
            users: Users::default(),
            groups: Vec::new(),
            tokens: Credentials::default(),
            calls: Vec::new(),
            arrivals: Vec::new(),
            next_seq: 0,
            faults: Vec::new(),
            chaos: None,
            email_filter_case_sensitive: false,
            plan_allows_api: true,
            locked: None,
            users_access: true,
            groups_access: true,
            rate_limit: None,
            rate_windows: HashMap::new(),
            page_size_cap: None,
            next_user_id: 2_331_373_580_117_892,
            next_group_id: 4_583_173_393_803_140,
        }
    }

    fn user(&self, id: i64) -> Option<&SimUser> {
        self.users.get(id)
    }

    fn group_mut(&mut self, id: i64) -> Option<&mut GroupRecord> {
        self.groups.iter_mut().find(|g| g.group.id == id)
    }

    fn add_user(&mut self, mut user: SimUser) -> i64 {
        if user.id == 0 {
            while self.user(self.next_user_id).is_some() {
                self.next_user_id += 1;
            }
            user.id = self.next_user_id;
            self.next_user_id += 1;
        }
        let id = user.id;
        self.users.put(user);
        id
    }

    fn add_group(&mut self, name: &str, owner_id: i64, member_ids: &[i64]) -> i64 {
        while self.groups.iter().any(|g| g.group.id == self.next_group_id) {
            self.next_group_id += 1;
        }
        let id = self.next_group_id;
        self.next_group_id += 1;
        let now = now_iso();
        self.groups.push(GroupRecord {
            group: SimGroup {
                id,
                name: name.to_string(),
                owner_id,
                member_ids: member_ids.to_vec(),
            },
            description: String::new(),
            created_at: now.clone(),
            modified_at: now,
        });
        id
    }

    fn set_call_status(&mut self, seq: u64, status: u16) {
        if let Some((_, call)) = self.calls.iter_mut().rev().find(|(s, _)| *s == seq) {
            call.status = status;
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

/// A running fake Smartsheet API; the server stops when this value is dropped.
pub struct SmartsheetSim {
    shared: Shared,
    server: SimServer,
}

impl SmartsheetSim {
    /// Binds `127.0.0.1:0` and serves the API from a spawned tokio task.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(0).await
    }

    /// As [`SmartsheetSim::start`], on a given port of `127.0.0.1` (`0`: any free one).
    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        let shared: Shared = Arc::new(Mutex::new(SimState::new()));
        let server = SimServer::start_on(port, router(shared.clone())).await?;
        Ok(SmartsheetSim { shared, server })
    }

    /// API root, e.g. `http://127.0.0.1:41234/2.0`.
    pub fn base_url(&self) -> String {
        format!("http://{}/2.0", self.server.addr())
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Adds (or replaces, when the id is already taken) a user; returns its id.
    pub fn add_user(&self, user: SimUser) -> i64 {
        lock(&self.shared).add_user(user)
    }

    /// Adds a group owned by `owner_id` with the given members; returns its id.
    pub fn add_group(&self, name: &str, owner_id: i64, member_ids: &[i64]) -> i64 {
        lock(&self.shared).add_group(name, owner_id, member_ids)
    }

    /// Registers a valid access token acting as `user_id`.
    pub fn add_token(&self, token: &str, user_id: i64) {
        lock(&self.shared).tokens.add(token, user_id);
    }

    /// Marks a token as expired (requests then fail with 401/1003).
    pub fn expire_token(&self, token: &str) {
        lock(&self.shared)
            .tokens
            .set_status(token, CredentialStatus::Expired);
    }

    /// Marks a token as revoked (requests then fail with 401/1002).
    pub fn revoke_token(&self, token: &str) {
        lock(&self.shared)
            .tokens
            .set_status(token, CredentialStatus::Revoked);
    }

    /// Edits a user in place; does nothing if the id is unknown.
    pub fn update_user(&self, id: i64, f: impl FnOnce(&mut SimUser)) {
        lock(&self.shared).users.edit(id, f);
    }

    /// A copy of the user with this id.
    pub fn user(&self, id: i64) -> Option<SimUser> {
        lock(&self.shared).user(id).cloned()
    }

    /// A copy of the user with this email (case-insensitive).
    pub fn user_by_email(&self, email: &str) -> Option<SimUser> {
        lock(&self.shared)
            .users
            .with_emails(&[email], false)
            .first()
            .map(|u| (*u).clone())
    }

    /// A copy of the group with this id.
    pub fn group(&self, id: i64) -> Option<SimGroup> {
        lock(&self.shared)
            .groups
            .iter()
            .find(|g| g.group.id == id)
            .map(|g| g.group.clone())
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
        let mut st = lock(&self.shared);
        st.calls.clear();
        st.arrivals.clear();
    }

    /// When each request of [`SmartsheetSim::calls`] arrived, in the same order.
    pub fn arrivals(&self) -> Vec<Instant> {
        lock(&self.shared).arrivals.clone()
    }

    /// Makes a share of the requests not hit by an injected fault fail transiently at
    /// random (503/4001, 429/4003 with `Retry-After: 1`, dropped connections); `None`
    /// stops it.
    pub fn set_chaos(&self, chaos: Option<kit::Chaos>) {
        lock(&self.shared).chaos = chaos;
    }

    /// When `true`, `GET /users?email=` compares emails case-sensitively (Smartsheet
    /// documents neither way); by default case is ignored.
    pub fn set_email_filter_case_sensitive(&self, sensitive: bool) {
        lock(&self.shared).email_filter_case_sensitive = sensitive;
    }

    /// Queues a fault; faults are tried in the order they were injected.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            lock(&self.shared).faults.push(fault);
        }
    }

    /// When `false`, every authenticated call fails with 403/1013.
    pub fn set_plan_allows_api(&self, allowed: bool) {
        lock(&self.shared).plan_allows_api = allowed;
    }

    /// `Some(code)` locks the account: every authenticated call fails with 400
    /// and that code (codes outside 5000–5999 become 5001). `None` unlocks.
    pub fn set_account_locked(&self, error_code: Option<i64>) {
        lock(&self.shared).locked =
            error_code.map(|c| if (5000..=5999).contains(&c) { c } else { 5001 });
    }

    /// When `false`, `/users` and `/users/{id}` answer 403/1004 even for admins
    /// (`/users/me` keeps working, as it needs no scope).
    pub fn set_users_access(&self, allowed: bool) {
        lock(&self.shared).users_access = allowed;
    }

    /// When `false`, every `/groups…` call answers 403/1004 even for admins.
    pub fn set_groups_access(&self, allowed: bool) {
        lock(&self.shared).groups_access = allowed;
    }

    /// Limits each token to this many requests per sliding minute (429/4003 beyond it).
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        let mut st = lock(&self.shared);
        st.rate_limit = per_minute;
        st.rate_windows.clear();
    }

    /// Caps every page (including `includeAll=true`) at this many items.
    pub fn set_page_size_cap(&self, cap: Option<u32>) {
        lock(&self.shared).page_size_cap = cap.map(|c| c.max(1));
    }

    /// Fills the account with a small, realistic organisation and the admin token `demo-token`.
    pub fn seed_demo(&self) -> DemoSeed {
        let mut st = lock(&self.shared);
        seed_demo_org(&mut st)
    }
}

fn seed_demo_org(st: &mut SimState) -> DemoSeed {
    const DOMAIN: &str = "northwind.example";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days_ago =
        |d: u64, hour: u64| iso_from_unix(now - now % 86_400 - d * 86_400 + hour * 3_600);
    let person = |first: &str, last: &str| {
        let email = format!(
            "{}.{}@{DOMAIN}",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase()
        );
        let mut u = SimUser::new(&email);
        u.first_name = first.to_string();
        u.last_name = last.to_string();
        u
    };

    let mut admin = person("Dana", "Whitfield");
    admin.admin = true;
    admin.group_admin = true;
    admin.resource_viewer = true;
    admin.sheet_count = 12;
    admin.last_login = Some(days_ago(0, 8));
    let admin_email = admin.email.clone();
    let admin_id = st.add_user(admin);

    let mut leaver = person("Marcus", "Lee");
    leaver.group_admin = true;
    leaver.sheet_count = 23;
    leaver.last_login = Some(days_ago(2, 16));
    let leaver_email = leaver.email.clone();
    let leaver_id = st.add_user(leaver);

    let mut recipient = person("Priya", "Raman");
    recipient.group_admin = true;
    recipient.resource_viewer = true;
    recipient.sheet_count = 31;
    recipient.last_login = Some(days_ago(1, 9));
    let recipient_email = recipient.email.clone();
    let recipient_id = st.add_user(recipient);

    let mut reclaim = person("Gordon", "Pike");
    reclaim.sheet_count = 0;
    reclaim.last_login = Some(days_ago(412, 11));
    let reclaim_email = reclaim.email.clone();
    let reclaim_id = st.add_user(reclaim);

    let others: [(&str, &str); 20] = [
        ("Aisha", "Khan"),
        ("Ben", "Carter"),
        ("Chloe", "Martin"),
        ("Diego", "Alvarez"),
        ("Elena", "Petrova"),
        ("Felix", "Wagner"),
        ("Grace", "Okafor"),
        ("Hiro", "Tanaka"),
        ("Isla", "Murray"),
        ("Jonas", "Berg"),
        ("Kavya", "Iyer"),
        ("Liam", "OBrien"),
        ("Maya", "Cohen"),
        ("Noah", "Schmidt"),
        ("Olivia", "Rossi"),
        ("Pedro", "Santos"),
        ("Quinn", "Harper"),
        ("Rosa", "Delgado"),
        ("Sam", "Nguyen"),
        ("Tara", "Walsh"),
    ];
    let mut other_ids = Vec::new();
    for (i, (first, last)) in others.iter().enumerate() {
        let mut u = person(first, last);
        let n = i as u64;
        u.sheet_count = ((i * 7) % 11) as u32;
        u.last_login = Some(days_ago(n * 3 % 40, 8 + n % 9));
        u.licensed_sheet_creator = i % 4 != 3;
        match i {
            4 | 11 => {
                u.status = "PENDING".to_string();
                u.last_login = None;
                u.sheet_count = 0;
            }
            9 => u.status = "DEACTIVATED".to_string(),
            15 => u.status = "DECLINED".to_string(),
            _ => {}
        }
        if i == 6 {
            u.group_admin = true;
        }
        if i == 13 {
            u.directory_managed = true;
        }
        if !u.licensed_sheet_creator {
            u.sheet_count = 0;
        }
        other_ids.push(st.add_user(u));
    }

    let pick = |idx: &[usize]| idx.iter().map(|&i| other_ids[i]).collect::<Vec<_>>();
    let mut eng = vec![leaver_id, recipient_id];
    eng.extend(pick(&[0, 1, 3, 7, 9, 13, 16, 18]));
    let mut launch = vec![leaver_id, admin_id];
    launch.extend(pick(&[2, 5, 8, 12]));
    let mut finance = vec![admin_id];
    finance.extend(pick(&[6, 10, 14, 17]));
    let mut all_staff = vec![admin_id, leaver_id, recipient_id, reclaim_id];
    all_staff.extend(other_ids.iter().copied());

    let g1 = st.add_group("Engineering", leaver_id, &eng);
    let g2 = st.add_group("Q3 Launch Team", leaver_id, &launch);
    st.add_group("Finance", admin_id, &finance);
    st.add_group("All Staff", admin_id, &all_staff);
    for (id, desc) in [
        (g1, "Product engineering"),
        (g2, "Cross-functional launch squad"),
    ] {
        if let Some(g) = st.group_mut(id) {
            g.description = desc.to_string();
        }
    }

    let token = "demo-token".to_string();
    st.tokens.add(&token, admin_id);

    DemoSeed {
        token,
        admin_email,
        leaver_email,
        recipient_email,
        reclaim_email,
        admin_id,
        leaver_id,
        recipient_id,
        reclaim_id,
        leaver_group_ids: vec![g1, g2],
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct ApiError {
    status: u16,
    code: i64,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, code: i64) -> Self {
        ApiError {
            status,
            code,
            message: standard_message(code).to_string(),
            retry_after: None,
        }
    }

    fn with_message(status: u16, code: i64, message: String) -> Self {
        ApiError {
            status,
            code,
            message,
            retry_after: None,
        }
    }

    fn invalid_value(value: &str, param: &str) -> Self {
        Self::with_message(
            400,
            1018,
            format!("The value {value} was not valid for the parameter {param}."),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({
            "errorCode": self.code,
            "message": self.message,
            "refId": ref_id(),
        });
        let mut resp = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

fn standard_message(code: i64) -> &'static str {
    match code {
        1001 => "An Access Token is required.",
        1002 => "Your Access Token is invalid.",
        1003 => "Your Access Token has expired.",
        1004 => "You are not authorized to perform this action.",
        1006 => "Not Found.",
        1008 => "Unable to parse request.",
        1013 => "The operation you are attempting to perform is not supported by your plan.",
        1018 => "The value was not valid for the parameter.",
        1019 => "Cannot transfer to the user specified. User not found.",
        1020 => "User not found.",
        1021 => "Cannot transfer to the user specified. They are not a member of your account.",
        1022 => "Cannot delete the user specified. They are not a member of your account.",
        1024 => "The HTTP request body is required for this Method.",
        1102 => "A user must be a licensed sheet creator to be a group administrator.",
        1103 => "A group with the same name already exists.",
        1106 => "Group not found.",
        1107 => "User specified in transferGroupsTo must be a group admin.",
        1121 => "transferTo must be provided because user being deleted owns one or more groups.",
        1122 => "Requested URL does not support this method.",
        4000 => "An unexpected error has occurred. Please contact api@smartsheet.com for assistance.",
        4001 => "Smartsheet.com is currently offline for system maintenance. Please check back again shortly.",
        4002 => "Server timeout exceeded. Request has failed.",
        4003 => "Rate limit exceeded.",
        4004 => "An unexpected error has occurred. Please retry your request. If you encounter this error repeatedly, please contact api@smartsheet.com for assistance.",
        5666 => "This user is managed by your organization's directory integration and cannot be removed here.",
        5000..=5999 => "Your organization account is locked or suspended. Please contact your Smartsheet administrator.",
        _ => "An unexpected error has occurred.",
    }
}

/// A short random-looking reference id, like the ones Smartsheet puts in error bodies.
fn ref_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let mut v = hasher.finish();
    (0..12)
        .map(|_| {
            let c = ALPHABET[(v % 36) as usize] as char;
            v /= 36;
            c
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn parse_bool(value: &str, param: &str) -> Result<bool, ApiError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ApiError::invalid_value(value, param))
    }
}

fn parse_i64(value: &str, param: &str) -> Result<i64, ApiError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| ApiError::invalid_value(value, param))
}

fn parse_path_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().map_err(|_| ApiError::new(404, 1006))
}

fn parse_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(400, 1024));
    }
    let parse_error = |detail: String| {
        ApiError::with_message(
            400,
            1008,
            format!("Unable to parse request. The following error occurred: {detail}"),
        )
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(parse_error(
            "request body must be a JSON object".to_string(),
        )),
        Err(e) => Err(parse_error(e.to_string())),
    }
}

fn field_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::invalid_value(&other.to_string(), key)),
    }
}

fn field_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid_value(&other.to_string(), key)),
    }
}

fn field_i64(map: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid_value(&v.to_string(), key)),
    }
}

fn success(result: Option<Value>) -> Json<Value> {
    let mut body = json!({"message": "SUCCESS", "resultCode": 0});
    if let Some(r) = result {
        body["result"] = r;
    }
    Json(body)
}

// ---------------------------------------------------------------------------
// JSON views
// ---------------------------------------------------------------------------

fn user_json(u: &SimUser, admin_view: bool, with_last_login: bool) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(u.id));
    m.insert("email".into(), json!(u.email));
    let name = u.full_name();
    if !name.is_empty() {
        m.insert("name".into(), json!(name));
    }
    if !u.first_name.is_empty() {
        m.insert("firstName".into(), json!(u.first_name));
    }
    if !u.last_name.is_empty() {
        m.insert("lastName".into(), json!(u.last_name));
    }
    if admin_view {
        m.insert("admin".into(), json!(u.admin));
        m.insert(
            "licensedSheetCreator".into(),
            json!(u.licensed_sheet_creator),
        );
        m.insert("groupAdmin".into(), json!(u.group_admin));
        m.insert("resourceViewer".into(), json!(u.resource_viewer));
        m.insert("status".into(), json!(u.status));
        if u.status == "ACTIVE" {
            m.insert("sheetCount".into(), json!(u.sheet_count));
        }
    }
    if with_last_login {
        if let Some(ll) = &u.last_login {
            m.insert("lastLogin".into(), json!(ll));
        }
    }
    Value::Object(m)
}

fn group_json(st: &SimState, g: &GroupRecord, with_members: bool) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(g.group.id));
    m.insert("name".into(), json!(g.group.name));
    m.insert("description".into(), json!(g.description));
    if let Some(owner) = st.user(g.group.owner_id) {
        m.insert("owner".into(), json!(owner.email));
    }
    m.insert("ownerId".into(), json!(g.group.owner_id));
    m.insert("createdAt".into(), json!(g.created_at));
    m.insert("modifiedAt".into(), json!(g.modified_at));
    if with_members {
        let members: Vec<Value> = g
            .group
            .member_ids
            .iter()
            .filter_map(|id| st.user(*id))
            .map(|u| {
                let mut mm = Map::new();
                mm.insert("id".into(), json!(u.id));
                mm.insert("email".into(), json!(u.email));
                let name = u.full_name();
                if !name.is_empty() {
                    mm.insert("name".into(), json!(name));
                }
                if !u.first_name.is_empty() {
                    mm.insert("firstName".into(), json!(u.first_name));
                }
                if !u.last_name.is_empty() {
                    mm.insert("lastName".into(), json!(u.last_name));
                }
                Value::Object(mm)
            })
            .collect();
        m.insert("members".into(), Value::Array(members));
    }
    Value::Object(m)
}

/// Position of one page inside a result set, following the API's `IndexResult` rules.
struct PageWindow {
    number: usize,
    size: usize,
    total_pages: usize,
    start: usize,
    end: usize,
}

fn page_window(
    q: &HashMap<String, String>,
    total: usize,
    cap: Option<u32>,
) -> Result<PageWindow, ApiError> {
    let include_all = match q.get("includeAll") {
        Some(v) => parse_bool(v, "includeAll")?,
        None => false,
    };
    let mut size = if include_all {
        total
    } else {
        match q.get("pageSize") {
            Some(v) => {
                let n = parse_i64(v, "pageSize")?;
                if n < 1 {
                    return Err(ApiError::invalid_value(v, "pageSize"));
                }
                n as usize
            }
            None => 100,
        }
    };
    if let Some(cap) = cap {
        size = size.min(cap as usize);
    }
    let total_pages = if total == 0 { 0 } else { total.div_ceil(size) };
    let requested = match q.get("page") {
        Some(v) if !include_all || cap.is_some() => parse_i64(v, "page")?.max(1) as usize,
        _ => 1,
    };
    // Asking past the end returns the last page, as the API documents.
    let number = requested.min(total_pages.max(1));
    let start = ((number - 1) * size).min(total);
    let end = (start + size).min(total);
    Ok(PageWindow {
        number,
        size,
        total_pages,
        start,
        end,
    })
}

fn index_result(w: &PageWindow, total: usize, data: Vec<Value>) -> Json<Value> {
    Json(json!({
        "pageNumber": w.number,
        "pageSize": w.size,
        "totalPages": w.total_pages,
        "totalCount": total,
        "data": data,
    }))
}

// ---------------------------------------------------------------------------
// Router and gatekeeping middleware
// ---------------------------------------------------------------------------

/// The authenticated user behind a request, put in request extensions by the gate.
#[derive(Clone, Copy, Debug)]
struct Caller {
    user_id: i64,
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/2.0/users", get(list_users))
        .route("/2.0/users/me", get(get_me))
        .route(
            "/2.0/users/{id}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .route("/2.0/groups", get(list_groups))
        .route("/2.0/groups/{id}", get(get_group).put(update_group))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::new(404, 1006)
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::with_message(
        405,
        1122,
        format!("Requested URL does not support this method: {method}."),
    )
}

/// Authentication, account-wide switches, rate limiting and fault selection.
fn admit(
    st: &mut SimState,
    authorization: Option<&str>,
    method: &str,
    path: &str,
    full_path: &str,
) -> Result<(Caller, Option<FaultKind>), ApiError> {
    let header_value = authorization
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::new(401, 1001))?;
    let token = match header_value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(ApiError::new(401, 1002)),
    };
    if token.is_empty() {
        return Err(ApiError::new(401, 1001));
    }
    let record = st
        .tokens
        .get(token)
        .ok_or_else(|| ApiError::new(401, 1002))?;
    match record.status {
        CredentialStatus::Active => {}
        CredentialStatus::Expired => return Err(ApiError::new(401, 1003)),
        CredentialStatus::Revoked => return Err(ApiError::new(401, 1002)),
    }
    if st.user(record.user_id).is_none() {
        // The token's owner has been removed from the account.
        return Err(ApiError::new(401, 1002));
    }
    if let Some(code) = st.locked {
        return Err(ApiError::new(400, code));
    }
    if !st.plan_allows_api {
        return Err(ApiError::new(403, 1013));
    }
    if let Some(limit) = st.rate_limit {
        let now = Instant::now();
        let hits = st.rate_windows.entry(token.to_string()).or_default();
        let retry_after = kit::slide_minute(hits, now);
        if hits.len() >= limit as usize {
            let mut e = ApiError::new(429, 4003);
            e.retry_after = Some(retry_after);
            return Err(e);
        }
        hits.push_back(now);
    }
    let fault = kit::take_fault(&mut st.faults, method, &[path, full_path]).or_else(|| {
        st.chaos
            .and_then(|c| c.draw())
            .map(|trouble| match trouble {
                Trouble::ServerError => FaultKind::Error {
                    status: 503,
                    error_code: 4001,
                    retry_after_secs: None,
                },
                Trouble::RateLimited => FaultKind::Error {
                    status: 429,
                    error_code: 4003,
                    retry_after_secs: Some(1),
                },
                Trouble::Dropped => FaultKind::DropConnection,
            })
    });
    Ok((
        Caller {
            user_id: record.user_id,
        },
        fault,
    ))
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
    let full_path = parts.uri.path().to_string();
    let path = if full_path == "/2.0" {
        "/".to_string()
    } else if let Some(rest) = full_path.strip_prefix("/2.0/") {
        format!("/{rest}")
    } else {
        full_path.clone()
    };
    let query = parts.uri.query().unwrap_or("").to_string();
    let body_json = if bytes.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        )
    };
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    let (seq, admission) = {
        let mut st = lock(&shared);
        let seq = st.next_seq;
        st.next_seq += 1;
        st.arrivals.push(Instant::now());
        st.calls.push((
            seq,
            SimCall {
                method: method.clone(),
                path: path.clone(),
                query,
                body: body_json,
                status: 0,
                authorization_present: authorization.is_some(),
            },
        ));
        let admission = admit(
            &mut st,
            authorization.as_deref(),
            &method,
            &path,
            &full_path,
        );
        (seq, admission)
    };

    let response = match admission {
        Err(e) => e.into_response(),
        Ok((caller, fault)) => match fault {
            Some(FaultKind::Error {
                status,
                error_code,
                retry_after_secs,
            }) => {
                let mut e = ApiError::new(status, error_code);
                e.retry_after = retry_after_secs;
                e.into_response()
            }
            Some(FaultKind::DropConnection) => {
                conn.kill();
                // Never reaches the client: the killed stream refuses the write.
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            Some(FaultKind::Delay(d)) => {
                tokio::time::sleep(d).await;
                forward(parts, bytes, caller, next).await
            }
            None => forward(parts, bytes, caller, next).await,
        },
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

fn caller_user(st: &SimState, caller: Caller) -> Result<SimUser, ApiError> {
    st.user(caller.user_id)
        .cloned()
        .ok_or_else(|| ApiError::new(401, 1002))
}

fn require_users(st: &SimState, caller: Caller, need_admin: bool) -> Result<SimUser, ApiError> {
    let me = caller_user(st, caller)?;
    if !st.users_access || (need_admin && !me.admin) {
        return Err(ApiError::new(403, 1004));
    }
    Ok(me)
}

fn require_groups(st: &SimState, caller: Caller) -> Result<SimUser, ApiError> {
    let me = caller_user(st, caller)?;
    if !st.groups_access || !(me.admin || me.group_admin) {
        return Err(ApiError::new(403, 1004));
    }
    Ok(me)
}

// ---------------------------------------------------------------------------
// Handlers: users
// ---------------------------------------------------------------------------

type Q = Query<HashMap<String, String>>;

async fn list_users(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    require_users(&st, caller, true)?;
    // Smartsheet does not document whether the filter ignores case; a switch picks.
    let matching: Vec<&SimUser> = match q.get("email") {
        Some(list) => {
            let wanted: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect();
            st.users
                .with_emails(&wanted, st.email_filter_case_sensitive)
        }
        None => st.users.iter().collect(),
    };
    let window = page_window(&q, matching.len(), st.page_size_cap)?;
    // lastLogin only on request, and never for pages of more than 100 users.
    let with_last_login = q
        .get("include")
        .is_some_and(|v| v.split(',').any(|s| s.trim() == "lastLogin"))
        && window.end - window.start <= 100;
    let data = matching[window.start..window.end]
        .iter()
        .map(|u| user_json(u, true, with_last_login))
        .collect();
    Ok(index_result(&window, matching.len(), data))
}

async fn get_me(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    let me = caller_user(&st, caller)?;
    let mut body = user_json(&me, true, true);
    if body.get("sheetCount").is_some() {
        // The real endpoint reports a static 0 here for performance reasons.
        body["sheetCount"] = json!(0);
    }
    body["locale"] = json!("en_US");
    body["timeZone"] = json!("US/Pacific");
    body["account"] = json!({"id": 1_234_567_890_123_i64, "name": "Simulated Org"});
    Ok(Json(body))
}

async fn get_user(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    let me = require_users(&st, caller, false)?;
    let id = parse_path_id(&raw)?;
    let user = st.user(id).ok_or_else(|| ApiError::new(404, 1020))?;
    Ok(Json(user_json(user, me.admin, me.admin)))
}

async fn update_user(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut st = lock(&shared);
    require_users(&st, caller, true)?;
    let id = parse_path_id(&raw)?;
    if st.user(id).is_none() {
        return Err(ApiError::new(404, 1020));
    }
    let map = parse_object(&body)?;
    let admin = field_bool(&map, "admin")?;
    let licensed = field_bool(&map, "licensedSheetCreator")?;
    let group_admin = field_bool(&map, "groupAdmin")?;
    let resource_viewer = field_bool(&map, "resourceViewer")?;
    let first_name = field_string(&map, "firstName")?;
    let last_name = field_string(&map, "lastName")?;

    let mut updated = st
        .user(id)
        .cloned()
        .ok_or_else(|| ApiError::new(404, 1020))?;
    if let Some(v) = admin {
        updated.admin = v;
    }
    if let Some(v) = licensed {
        updated.licensed_sheet_creator = v;
    }
    if let Some(v) = group_admin {
        updated.group_admin = v;
    }
    if let Some(v) = resource_viewer {
        updated.resource_viewer = v;
    }
    if let Some(v) = first_name {
        updated.first_name = v;
    }
    if let Some(v) = last_name {
        updated.last_name = v;
    }
    if updated.group_admin && !updated.licensed_sheet_creator {
        return Err(ApiError::new(403, 1102));
    }
    let result = user_json(&updated, true, false);
    st.users.put(updated);
    Ok(success(Some(result)))
}

async fn delete_user(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let mut st = lock(&shared);
    require_users(&st, caller, true)?;
    let id = parse_path_id(&raw)?;
    let transfer_to = q
        .get("transferTo")
        .map(|v| parse_i64(v, "transferTo"))
        .transpose()?;
    let transfer_sheets = match q.get("transferSheets") {
        Some(v) => parse_bool(v, "transferSheets")?,
        None => false,
    };
    if let Some(v) = q.get("removeFromSharing") {
        // Only validated: sharing is not modelled, the call log keeps the flag.
        parse_bool(v, "removeFromSharing")?;
    }

    let target = st
        .user(id)
        .cloned()
        .ok_or_else(|| ApiError::new(404, 1020))?;
    if target.other_account {
        return Err(ApiError::new(403, 1022));
    }
    if target.directory_managed {
        return Err(ApiError::new(400, 5666));
    }
    if target.status == "PENDING" && (transfer_to.is_some() || q.contains_key("transferSheets")) {
        // Documented: transferTo and transferSheets cannot be given for a user who has
        // not accepted the invitation yet; the error code is not documented.
        return Err(ApiError::with_message(
            400,
            1032,
            "The attribute(s) transferTo, transferSheets are not allowed for this operation."
                .into(),
        ));
    }
    let owns_groups = st.groups.iter().any(|g| g.group.owner_id == id);
    if owns_groups && transfer_to.is_none() {
        return Err(ApiError::new(400, 1121));
    }
    if let Some(to) = transfer_to {
        if to == id {
            return Err(ApiError::invalid_value(&to.to_string(), "transferTo"));
        }
        let recipient = st.user(to).ok_or_else(|| ApiError::new(400, 1019))?;
        if recipient.other_account {
            return Err(ApiError::new(403, 1021));
        }
        if recipient.status != "ACTIVE" {
            // Not documented; modelled as an invalid transferTo (a PENDING user has not
            // joined the account and cannot own anything yet).
            return Err(ApiError::invalid_value(&to.to_string(), "transferTo"));
        }
        if owns_groups && !(recipient.group_admin || recipient.admin) {
            return Err(ApiError::new(400, 1107));
        }
    }

    if let Some(to) = transfer_to {
        let now = now_iso();
        for g in st.groups.iter_mut().filter(|g| g.group.owner_id == id) {
            g.group.owner_id = to;
            g.modified_at = now.clone();
        }
        if transfer_sheets {
            st.users.edit(to, |r| {
                r.sheet_count = r.sheet_count.saturating_add(target.sheet_count);
            });
        }
    }
    st.users.remove(id);
    for g in st.groups.iter_mut() {
        g.group.member_ids.retain(|m| *m != id);
    }
    Ok(success(None))
}

// ---------------------------------------------------------------------------
// Handlers: groups
// ---------------------------------------------------------------------------

async fn list_groups(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    require_groups(&st, caller)?;
    let window = page_window(&q, st.groups.len(), st.page_size_cap)?;
    let data = st.groups[window.start..window.end]
        .iter()
        .map(|g| group_json(&st, g, false))
        .collect();
    Ok(index_result(&window, st.groups.len(), data))
}

async fn get_group(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let st = lock(&shared);
    require_groups(&st, caller)?;
    let id = parse_path_id(&raw)?;
    let g = st
        .groups
        .iter()
        .find(|g| g.group.id == id)
        .ok_or_else(|| ApiError::new(404, 1106))?;
    Ok(Json(group_json(&st, g, true)))
}

async fn update_group(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut st = lock(&shared);
    let me = require_groups(&st, caller)?;
    let id = parse_path_id(&raw)?;
    let current = st
        .groups
        .iter()
        .find(|g| g.group.id == id)
        .cloned()
        .ok_or_else(|| ApiError::new(404, 1106))?;
    if !me.admin && current.group.owner_id != me.id {
        // Group admins may only edit the groups they own.
        return Err(ApiError::new(403, 1004));
    }
    let map = parse_object(&body)?;
    let name = field_string(&map, "name")?;
    let description = field_string(&map, "description")?;
    let owner_id = field_i64(&map, "ownerId")?;

    if let Some(n) = &name {
        if n.trim().is_empty() {
            return Err(ApiError::invalid_value(n, "name"));
        }
        if st
            .groups
            .iter()
            .any(|g| g.group.id != id && g.group.name.eq_ignore_ascii_case(n))
        {
            return Err(ApiError::new(400, 1103));
        }
    }
    if let Some(owner) = owner_id {
        let new_owner = st.user(owner).ok_or_else(|| ApiError::new(400, 1019))?;
        if new_owner.other_account {
            return Err(ApiError::new(403, 1021));
        }
        if !(new_owner.group_admin || new_owner.admin) {
            return Err(ApiError::new(400, 1107));
        }
    }

    let now = now_iso();
    let g = st.group_mut(id).ok_or_else(|| ApiError::new(404, 1106))?;
    if let Some(n) = name {
        g.group.name = n;
    }
    if let Some(d) = description {
        g.description = d;
    }
    if let Some(o) = owner_id {
        g.group.owner_id = o;
    }
    g.modified_at = now;
    let g = g.clone();
    let result = group_json(&st, &g, false);
    Ok(success(Some(result)))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method as M;
    use std::time::Duration;

    struct Reply {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Value,
    }

    async fn send(
        sim: &SmartsheetSim,
        method: M,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let client = reqwest::Client::new();
        let mut req = client.request(method, format!("{}{}", sim.base_url(), path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(sim: &SmartsheetSim, path: &str, token: &str) -> Reply {
        send(sim, M::GET, path, Some(token), None).await
    }

    fn assert_error(r: &Reply, status: u16, code: i64) {
        assert_eq!(r.status, status, "body: {}", r.body);
        assert_eq!(r.body["errorCode"], json!(code), "body: {}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(r.body["refId"].as_str().is_some_and(|m| !m.is_empty()));
    }

    struct Org {
        sim: SmartsheetSim,
        admin: i64,
        plain: i64,
        gadmin: i64,
    }

    /// admin (token "adm"), a plain user (token "usr"), a group admin (token "gad").
    async fn org() -> Org {
        let sim = SmartsheetSim::start().await.unwrap();
        let mut a = SimUser::new("ada.admin@example.com");
        a.admin = true;
        let admin = sim.add_user(a);
        let plain = sim.add_user(SimUser::new("paul.plain@example.com"));
        let mut g = SimUser::new("gina.groups@example.com");
        g.group_admin = true;
        let gadmin = sim.add_user(g);
        sim.add_token("adm", admin);
        sim.add_token("usr", plain);
        sim.add_token("gad", gadmin);
        Org {
            sim,
            admin,
            plain,
            gadmin,
        }
    }

    #[tokio::test]
    async fn paging_walks_every_page() {
        let o = org().await;
        for i in 0..4 {
            o.sim
                .add_user(SimUser::new(&format!("user{i}@example.com")));
        }
        // 7 users in total, pages of 3.
        let mut seen = Vec::new();
        for page in 1..=3 {
            let r = get(&o.sim, &format!("/users?page={page}&pageSize=3"), "adm").await;
            assert_eq!(r.status, 200);
            assert_eq!(r.body["pageNumber"], json!(page));
            assert_eq!(r.body["pageSize"], json!(3));
            assert_eq!(r.body["totalPages"], json!(3));
            assert_eq!(r.body["totalCount"], json!(7));
            for u in r.body["data"].as_array().unwrap() {
                seen.push(u["id"].as_i64().unwrap());
            }
        }
        assert_eq!(seen.len(), 7);
        seen.dedup();
        assert_eq!(seen.len(), 7);
        // Past the end: the last page comes back.
        let r = get(&o.sim, "/users?page=9&pageSize=3", "adm").await;
        assert_eq!(r.body["pageNumber"], json!(3));
        assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
        // Defaults and includeAll.
        let r = get(&o.sim, "/users", "adm").await;
        assert_eq!(r.body["pageSize"], json!(100));
        assert_eq!(r.body["totalPages"], json!(1));
        let r = get(&o.sim, "/users?includeAll=true&pageSize=2", "adm").await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 7);
        // Bad paging values.
        let r = get(&o.sim, "/users?pageSize=abc", "adm").await;
        assert_error(&r, 400, 1018);
        // A cap forces small pages even with includeAll.
        o.sim.set_page_size_cap(Some(2));
        let r = get(&o.sim, "/users?includeAll=true", "adm").await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
        assert_eq!(r.body["totalPages"], json!(4));
        let r = get(&o.sim, "/groups?pageSize=50", "adm").await;
        assert_eq!(r.body["pageSize"], json!(2));
        assert_eq!(r.body["totalPages"], json!(0));
        assert_eq!(r.body["data"], json!([]));
    }

    #[tokio::test]
    async fn email_filter_and_user_views() {
        let o = org().await;
        let mut u = SimUser::new("zoe.zed@example.com");
        u.last_login = Some("2024-01-02T03:04:05Z".into());
        u.sheet_count = 4;
        let zoe = o.sim.add_user(u);
        let r = get(
            &o.sim,
            "/users?email=ZOE.zed@example.com,%20paul.plain@example.com,nobody@x.io",
            "adm",
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["totalCount"], json!(2));
        let zoe_json = &r.body["data"][1];
        assert_eq!(zoe_json["id"], json!(zoe));
        assert_eq!(zoe_json["name"], json!("Zoe Zed"));
        assert_eq!(zoe_json["sheetCount"], json!(4));
        assert_eq!(zoe_json["status"], json!("ACTIVE"));
        assert!(zoe_json.get("lastLogin").is_none());
        let r = get(
            &o.sim,
            "/users?email=zoe.zed@example.com&include=lastLogin",
            "adm",
        )
        .await;
        assert_eq!(
            r.body["data"][0]["lastLogin"],
            json!("2024-01-02T03:04:05Z")
        );

        // Single user: full view for admins, trimmed for others.
        let r = get(&o.sim, &format!("/users/{zoe}"), "adm").await;
        assert_eq!(r.body["lastLogin"], json!("2024-01-02T03:04:05Z"));
        assert_eq!(r.body["licensedSheetCreator"], json!(true));
        let r = get(&o.sim, &format!("/users/{zoe}"), "usr").await;
        assert_eq!(r.status, 200);
        assert!(r.body.get("admin").is_none());
        assert_error(&get(&o.sim, "/users/42", "adm").await, 404, 1020);
        assert_error(&get(&o.sim, "/users/abc", "adm").await, 404, 1006);

        // /users/me for admin and non-admin.
        let r = get(&o.sim, "/users/me", "adm").await;
        assert_eq!(r.body["id"], json!(o.admin));
        assert_eq!(r.body["admin"], json!(true));
        let r = get(&o.sim, "/users/me", "usr").await;
        assert_eq!(r.body["id"], json!(o.plain));
        assert_eq!(r.body["admin"], json!(false));
    }

    #[tokio::test]
    async fn update_user_changes_roles() {
        let o = org().await;
        let body = json!({"admin": false, "licensedSheetCreator": false, "firstName": "Pauline"});
        let r = send(
            &o.sim,
            M::PUT,
            &format!("/users/{}", o.plain),
            Some("adm"),
            Some(body),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["message"], json!("SUCCESS"));
        assert_eq!(r.body["resultCode"], json!(0));
        assert_eq!(r.body["result"]["licensedSheetCreator"], json!(false));
        assert_eq!(r.body["result"]["name"], json!("Pauline Plain"));
        let u = o.sim.user(o.plain).unwrap();
        assert!(!u.licensed_sheet_creator);
        assert_eq!(u.first_name, "Pauline");
        // A group admin must stay licensed.
        let r = send(
            &o.sim,
            M::PUT,
            &format!("/users/{}", o.gadmin),
            Some("adm"),
            Some(json!({"licensedSheetCreator": false})),
        )
        .await;
        assert_error(&r, 403, 1102);
        let r = send(
            &o.sim,
            M::PUT,
            "/users/5",
            Some("adm"),
            Some(json!({"admin": true})),
        )
        .await;
        assert_error(&r, 404, 1020);
        let r = send(
            &o.sim,
            M::PUT,
            &format!("/users/{}", o.plain),
            Some("adm"),
            Some(json!({"admin": "yes"})),
        )
        .await;
        assert_error(&r, 400, 1018);
        let r = send(
            &o.sim,
            M::PUT,
            &format!("/users/{}", o.plain),
            Some("usr"),
            Some(json!({"admin": true})),
        )
        .await;
        assert_error(&r, 403, 1004);
    }

    #[tokio::test]
    async fn delete_user_constraints() {
        let o = org().await;
        let sim = &o.sim;
        let mut leaver = SimUser::new("leo.leaver@example.com");
        leaver.sheet_count = 9;
        let leaver = sim.add_user(leaver);
        let g1 = sim.add_group("Alpha", leaver, &[leaver, o.plain]);
        let g2 = sim.add_group("Beta", leaver, &[leaver]);
        let mut dir = SimUser::new("dir.user@example.com");
        dir.directory_managed = true;
        let dir = sim.add_user(dir);
        let mut foreign = SimUser::new("far.away@example.com");
        foreign.other_account = true;
        foreign.group_admin = true;
        let foreign = sim.add_user(foreign);

        let del = |q: String| async move { send(sim, M::DELETE, &q, Some("adm"), None).await };
        assert_error(&del("/users/77".into()).await, 404, 1020);
        assert_error(&del(format!("/users/{dir}")).await, 400, 5666);
        assert_error(&del(format!("/users/{leaver}")).await, 400, 1121);
        assert_error(
            &del(format!("/users/{leaver}?transferTo={leaver}")).await,
            400,
            1018,
        );
        assert_error(
            &del(format!("/users/{leaver}?transferTo=99")).await,
            400,
            1019,
        );
        assert_error(
            &del(format!("/users/{leaver}?transferTo={foreign}")).await,
            403,
            1021,
        );
        assert_error(
            &del(format!("/users/{leaver}?transferTo={}", o.plain)).await,
            400,
            1107,
        );
        assert_error(
            &del(format!("/users/{leaver}?transferTo=abc")).await,
            400,
            1018,
        );
        let r = send(
            sim,
            M::DELETE,
            &format!("/users/{leaver}"),
            Some("usr"),
            None,
        )
        .await;
        assert_error(&r, 403, 1004);
        assert!(sim.user(leaver).is_some());

        let r = del(format!(
            "/users/{leaver}?transferTo={}&transferSheets=true&removeFromSharing=true",
            o.gadmin
        ))
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, json!({"message": "SUCCESS", "resultCode": 0}));
        assert!(sim.user(leaver).is_none());
        assert_eq!(sim.group(g1).unwrap().owner_id, o.gadmin);
        assert_eq!(sim.group(g2).unwrap().owner_id, o.gadmin);
        assert_eq!(sim.group(g1).unwrap().member_ids, vec![o.plain]);
        assert_eq!(sim.user(o.gadmin).unwrap().sheet_count, 9);
        let g = get(sim, &format!("/groups/{g1}"), "adm").await;
        assert_eq!(g.body["owner"], json!("gina.groups@example.com"));
        let calls = sim.calls();
        let last = &calls[calls.len() - 2];
        assert_eq!(last.method, "DELETE");
        assert!(last.query.contains("removeFromSharing=true"));
        assert_eq!(last.status, 200);

        // No groups owned: plain removal works, sheets stay put without transferSheets.
        let r = del(format!("/users/{}?transferTo={}", o.plain, o.admin)).await;
        assert_eq!(r.status, 200);
        assert_eq!(sim.user(o.admin).unwrap().sheet_count, 0);
    }

    #[tokio::test]
    async fn groups_listing_and_owner_change() {
        let o = org().await;
        let sim = &o.sim;
        let g = sim.add_group("Ops", o.gadmin, &[o.plain, o.gadmin]);
        let other = sim.add_group("Sales", o.admin, &[o.admin]);

        let r = get(sim, "/groups", "gad").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["totalCount"], json!(2));
        assert_eq!(r.body["data"][0]["owner"], json!("gina.groups@example.com"));
        assert_eq!(r.body["data"][0]["ownerId"], json!(o.gadmin));
        assert!(r.body["data"][0]["createdAt"].is_string());
        assert_error(&get(sim, "/groups", "usr").await, 403, 1004);

        let r = get(sim, &format!("/groups/{g}"), "adm").await;
        let members = r.body["members"].as_array().unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0]["email"], json!("paul.plain@example.com"));
        assert_error(&get(sim, "/groups/1", "adm").await, 404, 1106);

        let put = |path: String, token: &'static str, body: Value| async move {
            send(sim, M::PUT, &path, Some(token), Some(body)).await
        };
        let gp = format!("/groups/{g}");
        assert_error(
            &put(gp.clone(), "adm", json!({"ownerId": 5})).await,
            400,
            1019,
        );
        assert_error(
            &put(gp.clone(), "adm", json!({"ownerId": o.plain})).await,
            400,
            1107,
        );
        assert_error(
            &put(gp.clone(), "adm", json!({"name": "Sales"})).await,
            400,
            1103,
        );
        // A group admin cannot edit someone else's group.
        assert_error(
            &put(
                format!("/groups/{other}"),
                "gad",
                json!({"ownerId": o.gadmin}),
            )
            .await,
            403,
            1004,
        );
        let r = put(
            gp.clone(),
            "gad",
            json!({"ownerId": o.admin, "description": "Operations"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["result"]["ownerId"], json!(o.admin));
        assert_eq!(r.body["result"]["owner"], json!("ada.admin@example.com"));
        assert_eq!(r.body["result"]["description"], json!("Operations"));
        assert_eq!(sim.group(g).unwrap().owner_id, o.admin);

        sim.set_groups_access(false);
        assert_error(&get(sim, "/groups", "adm").await, 403, 1004);
        assert_error(&get(sim, &gp, "adm").await, 403, 1004);
        assert_eq!(get(sim, "/users", "adm").await.status, 200);
        sim.set_groups_access(true);
        sim.set_users_access(false);
        assert_error(&get(sim, "/users", "adm").await, 403, 1004);
        assert_eq!(get(sim, "/users/me", "adm").await.status, 200);
        assert_eq!(get(sim, "/groups", "adm").await.status, 200);
    }

    #[tokio::test]
    async fn authentication_failures() {
        let o = org().await;
        let sim = &o.sim;
        let r = send(sim, M::GET, "/users/me", None, None).await;
        assert_error(&r, 401, 1001);
        assert_error(&get(sim, "/users/me", "nope").await, 401, 1002);
        sim.add_token("old", o.admin);
        sim.expire_token("old");
        assert_error(&get(sim, "/users/me", "old").await, 401, 1003);
        sim.add_token("gone", o.admin);
        sim.revoke_token("gone");
        assert_error(&get(sim, "/users/me", "gone").await, 401, 1002);
        assert_error(&get(sim, "/users", "usr").await, 403, 1004);
        // Unknown routes and methods.
        assert_error(&get(sim, "/sheets", "adm").await, 404, 1006);
        let r = send(sim, M::POST, "/users/me", Some("adm"), None).await;
        assert_error(&r, 405, 1122);
    }

    #[tokio::test]
    async fn plan_lock_and_rate_limit() {
        let o = org().await;
        let sim = &o.sim;
        sim.set_plan_allows_api(false);
        assert_error(&get(sim, "/users/me", "adm").await, 403, 1013);
        sim.set_plan_allows_api(true);

        sim.set_account_locked(Some(5002));
        assert_error(&get(sim, "/users", "adm").await, 400, 5002);
        sim.set_account_locked(Some(1));
        assert_error(&get(sim, "/groups", "adm").await, 400, 5001);
        sim.set_account_locked(None);

        sim.set_rate_limit(Some(2));
        assert_eq!(get(sim, "/users/me", "adm").await.status, 200);
        assert_eq!(get(sim, "/users/me", "adm").await.status, 200);
        let r = get(sim, "/users/me", "adm").await;
        assert_error(&r, 429, 4003);
        let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs));
        // Other tokens have their own budget.
        assert_eq!(get(sim, "/users/me", "usr").await.status, 200);
        sim.set_rate_limit(None);
        assert_eq!(get(sim, "/users/me", "adm").await.status, 200);
    }

    #[tokio::test]
    async fn injected_faults() {
        let o = org().await;
        let sim = &o.sim;
        sim.inject(Fault {
            method: Some("GET".into()),
            path_prefix: "/users".into(),
            times: 2,
            kind: FaultKind::Error {
                status: 503,
                error_code: 4001,
                retry_after_secs: Some(7),
            },
        });
        // Auth failures do not consume faults.
        assert_error(&get(sim, "/users/me", "bad").await, 401, 1002);
        // Method mismatch does not match either.
        let r = send(
            sim,
            M::PUT,
            &format!("/users/{}", o.plain),
            Some("adm"),
            Some(json!({"resourceViewer": true})),
        )
        .await;
        assert_eq!(r.status, 200);
        for _ in 0..2 {
            let r = get(sim, "/users/me", "adm").await;
            assert_error(&r, 503, 4001);
            assert_eq!(r.headers["retry-after"], "7");
        }
        assert_eq!(get(sim, "/users/me", "adm").await.status, 200);

        sim.inject(Fault::new(
            "/2.0/groups",
            FaultKind::Delay(Duration::from_millis(150)),
        ));
        let started = Instant::now();
        assert_eq!(get(sim, "/groups", "adm").await.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));

        sim.clear_calls();
        sim.inject(Fault::new("/users/me", FaultKind::DropConnection).method("get"));
        let client = reqwest::Client::new();
        let err = client
            .get(format!("{}/users/me", sim.base_url()))
            .bearer_auth("adm")
            .send()
            .await;
        assert!(err.is_err(), "expected a connection error");
        // Same client, next request: a fresh connection works.
        let ok = client
            .get(format!("{}/users/me", sim.base_url()))
            .bearer_auth("adm")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status().as_u16(), 200);
        let calls = sim.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].status, 0);
        assert_eq!(calls[1].status, 200);
    }

    #[tokio::test]
    async fn call_log_records_requests() {
        let o = org().await;
        let sim = &o.sim;
        send(sim, M::GET, "/users/me", None, None).await;
        let body = json!({"ownerId": o.admin});
        let g = sim.add_group("Team", o.admin, &[]);
        send(
            sim,
            M::PUT,
            &format!("/groups/{g}"),
            Some("adm"),
            Some(body.clone()),
        )
        .await;
        get(sim, "/users?email=a%40b.c&pageSize=5", "adm").await;
        let calls = sim.calls();
        assert_eq!(
            calls,
            vec![
                SimCall {
                    method: "GET".into(),
                    path: "/users/me".into(),
                    query: String::new(),
                    body: None,
                    status: 401,
                    authorization_present: false,
                },
                SimCall {
                    method: "PUT".into(),
                    path: format!("/groups/{g}"),
                    query: String::new(),
                    body: Some(body),
                    status: 200,
                    authorization_present: true,
                },
                SimCall {
                    method: "GET".into(),
                    path: "/users".into(),
                    query: "email=a%40b.c&pageSize=5".into(),
                    body: None,
                    status: 200,
                    authorization_present: true,
                },
            ]
        );
        sim.clear_calls();
        assert!(sim.calls().is_empty());
    }

    #[tokio::test]
    async fn demo_seed_and_shutdown() {
        let sim = SmartsheetSim::start().await.unwrap();
        let seed = sim.seed_demo();
        assert_eq!(seed.token, "demo-token");
        let r = get(&sim, "/users/me", &seed.token).await;
        assert_eq!(r.body["email"], json!(seed.admin_email));
        assert_eq!(r.body["admin"], json!(true));
        let r = get(&sim, "/users?includeAll=true", &seed.token).await;
        let total = r.body["totalCount"].as_i64().unwrap();
        assert!((20..=30).contains(&total));
        let r = get(&sim, "/groups", &seed.token).await;
        let groups = r.body["data"].as_array().unwrap();
        assert_eq!(groups.len(), 4);
        let owned = groups
            .iter()
            .filter(|g| g["owner"] == json!(seed.leaver_email))
            .count();
        assert_eq!(owned, 2);
        let leaver = sim.user_by_email(&seed.leaver_email).unwrap();
        assert!(leaver.sheet_count > 0);
        assert_eq!(leaver.id, seed.leaver_id);
        assert!(sim.user(seed.recipient_id).unwrap().group_admin);
        assert!(sim
            .user_by_email(&seed.reclaim_email)
            .unwrap()
            .last_login
            .is_some());

        let url = sim.base_url();
        drop(sim);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let res = reqwest::Client::new()
            .get(format!("{url}/users/me"))
            .bearer_auth("demo-token")
            .send()
            .await;
        assert!(res.is_err(), "server should be gone after drop");
    }

    #[test]
    fn iso_formatting() {
        assert_eq!(iso_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_from_unix(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
