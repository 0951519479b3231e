//! A SCIM 2.0 service provider (RFC 7643 schema, RFC 7644 protocol) that runs inside the
//! test process, written from the RFCs, for the connector of any app that provisions
//! by SCIM.
//!
//! [`ScimSim`] binds an axum server to a random local port and serves, under
//! `<base>/scim/v2` ([`ScimSim::base_url`]), from an in-memory directory:
//!
//! | endpoint | what the simulator does |
//! |---|---|
//! | `GET /ServiceProviderConfig` | `patch`, `bulk`, `filter` (+ `maxResults`), `changePassword`, `sort`, `etag` `supported`, as the [`ScimOptions`] say; `authenticationSchemes` (OAuth bearer token) |
//! | `GET /ResourceTypes`, `GET /Schemas` | `User` and `Group` (ListResponses; the schemas list the core attributes only) |
//! | `GET /Users`, `GET /Groups` | `ListResponse` with `totalResults`, `startIndex` (1-based), `itemsPerPage`, `Resources`; `filter` (RFC 7644 §3.4.2.2, see [`filter`]), `startIndex`, `count` (capped at `maxResults`) |
//! | `POST /Users`, `POST /Groups` | 201 with `Location` and `ETag`; `userName` unique case-insensitively (409 `uniqueness`) |
//! | `GET`, `PUT`, `PATCH`, `DELETE /Users/{id}`, `/Groups/{id}` | 200 with the resource (PATCH per RFC 7644 §3.5.2, see [`patch`]); DELETE 204; 404 for an unknown id |
//!
//! Answers are `application/scim+json`; request bodies may be `application/scim+json` or
//! `application/json` (anything else: 415). Errors follow RFC 7644 §3.12: `schemas`
//! `["urn:ietf:params:scim:api:messages:2.0:Error"]`, `status` as a string, `scimType`
//! where the RFC defines one, `detail`. Every call needs `Authorization: Bearer <token>`
//! with a token added by [`ScimSim::add_token`] and not revoked (else 401 with
//! `WWW-Authenticate: Bearer`).
//!
//! Groups hold their `members` (`value`, `display`, `$ref`, `type`); a user's read-only
//! `groups` (RFC 7643 §4.1.2) is derived from them, so it is always in step. With ETags
//! on, resources carry `meta.version` `W/"n"` and an `ETag` header, and a PUT, PATCH or
//! DELETE whose `If-Match` names another version gets 412.
//!
//! Providers differ, and a test picks one with [`ScimOptions`]: no PATCH (PATCH answers
//! 501 Not Implemented, RFC 7644 §3.12; PUT of the full resource works), ETags, no
//! filtering (`filter.supported=false`; any `filter` answers 400 `invalidFilter`, whose
//! RFC definition covers "filter … not supported"), Groups that do not filter on
//! `members` ([`MembersFilter`]), a provider that ignores `count` or `startIndex`, users
//! without a `groups` attribute, no `User` resource type at all. At run time a test revokes tokens, forbids Users or Groups (403),
//! sets a rate limit (429 with `Retry-After`), makes the next conditional writes lose an
//! ETag race ([`ScimSim::race_next_writes`]), injects [`Fault`]s (error replies, slow or
//! dropped connections, any raw reply) and random trouble ([`ScimSim::set_chaos`]).
//! Every request lands in a call log ([`ScimSim::calls`]) with its raw query string,
//! body and the headers that matter (`If-Match`, `Content-Type`, `Accept`).
//!
//! Choices where the RFCs leave room: `attributes`, `excludedAttributes`, `sortBy` and
//! `/Bulk` are not implemented (the configuration says so); an unknown attribute in a
//! filter matches nothing; a missing `count` means `maxResults`; `count` above
//! `maxResults` is capped to it; removing a member a group does not have succeeds.

mod demo;
mod directory;
mod error;
pub mod filter;
pub mod patch;
mod server;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kit::{self, SimServer};
use directory::{Directory, Kind, View};

pub use demo::ScimDemoSeed;
pub use directory::{GROUP_SCHEMA, USER_SCHEMA};
pub use error::{ScimError, ERROR_SCHEMA, SCIM_JSON};
pub use patch::PATCH_SCHEMA;

/// The URN of list responses.
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// How Groups treat a `filter` naming `members` (`members[value eq "…"]`,
/// `members.value eq "…"`), for providers that do not index membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembersFilter {
    /// Filtered like any other attribute.
    Supported,
    /// 400 `invalidFilter` ("the specified attribute and filter comparison
    /// combination is not supported", RFC 7644 Table 9).
    Rejected,
    /// The filter is ignored: every group comes back, members or not; a client must
    /// check each group's `members` itself.
    Ignored,
}

/// What kind of provider the simulator plays. [`Default`] is a capable one: PATCH,
/// filtering, `count` honoured, `maxResults` 100, users with `groups`, no ETags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimOptions {
    /// `patch.supported`; when `false`, PATCH answers 501.
    pub patch: bool,
    /// `etag.supported`: `meta.version`, `ETag` headers, `If-Match` checked (412).
    pub etag: bool,
    /// `filter.supported`; when `false`, any `filter` answers 400 `invalidFilter`.
    pub filter: bool,
    /// `filter.maxResults`: the most resources one page holds.
    pub max_results: u32,
    /// When `false`, `count` is ignored: each page holds every resource from
    /// `startIndex` on (`itemsPerPage` says how many).
    pub honour_count: bool,
    /// When `false`, `startIndex` is ignored: every request gets the first page again,
    /// so a client that follows `startIndex` alone pages forever.
    pub honour_start_index: bool,
    /// How Groups treat a filter on `members`.
    pub members_filter: MembersFilter,
    /// Whether users carry the read-only `groups` attribute.
    pub user_groups: bool,
    /// Whether the provider has a `User` resource type; when `false`, `/ResourceTypes`
    /// lists only `Group` and every `/Users` call answers 404 (a groups-only provider).
    pub users: bool,
}

impl Default for ScimOptions {
    fn default() -> Self {
        ScimOptions {
            patch: true,
            etag: false,
            filter: true,
            max_results: 100,
            honour_count: true,
            honour_start_index: true,
            members_filter: MembersFilter::Supported,
            user_groups: true,
            users: true,
        }
    }
}

impl ScimOptions {
    /// A provider without PATCH (501), where a client must PUT the whole resource.
    pub fn without_patch(mut self) -> Self {
        self.patch = false;
        self
    }

    /// A provider with ETags (`meta.version`, `If-Match` → 412 on mismatch).
    pub fn with_etags(mut self) -> Self {
        self.etag = true;
        self
    }

    /// A provider without filtering.
    pub fn without_filter(mut self) -> Self {
        self.filter = false;
        self
    }

    /// A provider that returns every resource on each page, whatever `count` says.
    pub fn ignoring_count(mut self) -> Self {
        self.honour_count = false;
        self
    }

    /// A provider that answers the first page whatever `startIndex` says.
    pub fn ignoring_start_index(mut self) -> Self {
        self.honour_start_index = false;
        self
    }

    /// Sets `filter.maxResults` (at least 1).
    pub fn max_results(mut self, max: u32) -> Self {
        self.max_results = max.max(1);
        self
    }

    /// Sets how Groups treat a filter on `members`.
    pub fn members_filter(mut self, how: MembersFilter) -> Self {
        self.members_filter = how;
        self
    }

    /// A provider with no `User` resource type (`/Users` answers 404).
    pub fn without_users(mut self) -> Self {
        self.users = false;
        self
    }

    /// Users without the `groups` attribute: a client finds memberships through Groups.
    pub fn without_user_groups(mut self) -> Self {
        self.user_groups = false;
        self
    }
}

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------

/// A user to seed, built with [`ScimUser::new`] and its `with_…` methods.
#[derive(Clone, Debug, PartialEq)]
pub struct ScimUser {
    /// The id to give it; assigned (UUID-shaped) when `None`.
    pub id: Option<String>,
    /// `userName` (unique, case-insensitive).
    pub user_name: String,
    /// `externalId` (case-exact).
    pub external_id: Option<String>,
    /// `emails` values; the first is the primary `work` address.
    pub emails: Vec<String>,
    /// `active`.
    pub active: bool,
    /// `name.givenName` and `name.familyName`.
    pub name: Option<(String, String)>,
    /// `displayName`.
    pub display_name: Option<String>,
}

impl ScimUser {
    /// An active user with this `userName`, and the same value as its one email when it
    /// looks like an address.
    pub fn new(user_name: &str) -> Self {
        let emails = if user_name.contains('@') {
            vec![user_name.to_string()]
        } else {
            Vec::new()
        };
        ScimUser {
            id: None,
            user_name: user_name.to_string(),
            external_id: None,
            emails,
            active: true,
            name: None,
            display_name: None,
        }
    }

    /// With this id.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = Some(id.to_string());
        self
    }

    /// With this `externalId`.
    pub fn with_external_id(mut self, external_id: &str) -> Self {
        self.external_id = Some(external_id.to_string());
        self
    }

    /// With these emails instead (the first primary).
    pub fn with_emails(mut self, emails: &[&str]) -> Self {
        self.emails = emails.iter().map(|e| e.to_string()).collect();
        self
    }

    /// Inactive (already deactivated).
    pub fn inactive(mut self) -> Self {
        self.active = false;
        self
    }

    /// With `name.givenName`, `name.familyName` and a `displayName` made of both.
    pub fn with_name(mut self, given: &str, family: &str) -> Self {
        self.name = Some((given.to_string(), family.to_string()));
        self.display_name = Some(format!("{given} {family}"));
        self
    }

    /// The SCIM JSON of this user (without `id` and `meta`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "schemas": [USER_SCHEMA],
            "userName": self.user_name,
            "active": self.active,
        });
        if let Some(ext) = &self.external_id {
            v["externalId"] = json!(ext);
        }
        if !self.emails.is_empty() {
            let emails: Vec<Value> = self
                .emails
                .iter()
                .enumerate()
                .map(|(i, e)| json!({"value": e, "type": "work", "primary": i == 0}))
                .collect();
            v["emails"] = Value::Array(emails);
        }
        if let Some((given, family)) = &self.name {
            v["name"] = json!({"givenName": given, "familyName": family});
        }
        if let Some(display) = &self.display_name {
            v["displayName"] = json!(display);
        }
        v
    }
}

/// A group to seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimGroup {
    /// The id to give it; assigned when `None`.
    pub id: Option<String>,
    /// `displayName`.
    pub display_name: String,
    /// Ids of its members (users or groups, which must exist).
    pub members: Vec<String>,
}

impl ScimGroup {
    /// A group with these member ids.
    pub fn new(display_name: &str, members: &[&str]) -> Self {
        ScimGroup {
            id: None,
            display_name: display_name.to_string(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// With this id.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = Some(id.to_string());
        self
    }

    fn to_json(&self) -> Value {
        let members: Vec<Value> = self.members.iter().map(|m| json!({"value": m})).collect();
        json!({"schemas": [GROUP_SCHEMA], "displayName": self.display_name, "members": members})
    }
}

// ---------------------------------------------------------------------------
// Call log and faults
// ---------------------------------------------------------------------------

/// One request as the simulator received it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScimCall {
    /// HTTP method, upper case.
    pub method: String,
    /// The path under the SCIM root, e.g. `/Users/2819c223-…` (the root's `/scim/v2` cut).
    pub path: String,
    /// The raw query string as sent, without `?` (empty when none), still percent-encoded.
    pub query: String,
    /// The body parsed as JSON; a JSON string holding the text when it is not JSON;
    /// `None` when empty.
    pub body: Option<Value>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The `If-Match` header.
    pub if_match: Option<String>,
    /// Whether an `Authorization` header came (its value is never kept).
    pub authorization_present: bool,
    /// The status sent back; 0 when none was (dropped connection).
    pub status: u16,
}

impl ScimCall {
    /// A query parameter decoded (`%xx` and `+` as in a form), e.g. the `filter` exactly
    /// as the provider read it.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this status and a SCIM error body (`Retry-After` optional).
    Error {
        /// HTTP status.
        status: u16,
        /// `Retry-After` in seconds.
        retry_after_secs: Option<u64>,
    },
    /// Answer with exactly this status, content type and body (e.g. an HTML error page).
    Reply {
        /// HTTP status.
        status: u16,
        /// `Content-Type`.
        content_type: String,
        /// The body, as sent.
        body: String,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without answering.
    DropConnection,
}

/// A fault for this simulator. Its `path_prefix` is matched against the path under the
/// SCIM root (`/Users`, `/Groups/…`) and against the full path (`/scim/v2/Users`).
pub type Fault = kit::Fault<FaultKind>;

// ---------------------------------------------------------------------------
// State and handle
// ---------------------------------------------------------------------------

/// Where a bearer token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenStatus {
    Active,
    Revoked,
}

struct SimState {
    base: String,
    options: ScimOptions,
    directory: Directory,
    tokens: HashMap<String, TokenStatus>,
    users_forbidden: bool,
    groups_forbidden: bool,
    rate_limit: Option<u32>,
    rate_windows: HashMap<String, VecDeque<Instant>>,
    etag_races: u32,
    faults: Vec<Fault>,
    chaos: Option<kit::Chaos>,
    calls: Vec<(u64, ScimCall)>,
    next_seq: u64,
}

impl SimState {
    fn view(&self) -> View<'_> {
        View {
            base: &self.base,
            etags: self.options.etag,
            user_groups: self.options.user_groups,
        }
    }

    fn render(&self, kind: Kind, id: &str) -> Option<Value> {
        let resource = self.directory.get(kind, id)?;
        Some(self.directory.render(kind, resource, self.view()))
    }
}

type Shared = Arc<Mutex<SimState>>;

fn lock(shared: &Shared) -> MutexGuard<'_, SimState> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The path prefix of the SCIM root on the simulator's server.
pub const ROOT: &str = "/scim/v2";

/// A running SCIM provider; the server stops when this value is dropped.
pub struct ScimSim {
    shared: Shared,
    server: SimServer,
}

impl ScimSim {
    /// A capable provider ([`ScimOptions::default`]) on `127.0.0.1:0`.
    pub async fn start() -> io::Result<Self> {
        ScimSim::start_with(ScimOptions::default()).await
    }

    /// A provider with these options on `127.0.0.1:0`.
    pub async fn start_with(options: ScimOptions) -> io::Result<Self> {
        let shared: Shared = Arc::new(Mutex::new(SimState {
            base: String::new(),
            options,
            directory: Directory::default(),
            tokens: HashMap::new(),
            users_forbidden: false,
            groups_forbidden: false,
            rate_limit: None,
            rate_windows: HashMap::new(),
            etag_races: 0,
            faults: Vec::new(),
            chaos: None,
            calls: Vec::new(),
            next_seq: 0,
        }));
        let server = SimServer::start(server::router(shared.clone())).await?;
        lock(&shared).base = format!("http://{}{ROOT}", server.addr());
        Ok(ScimSim { shared, server })
    }

    /// The SCIM root, e.g. `http://127.0.0.1:41234/scim/v2` (a connection's `base_url`).
    pub fn base_url(&self) -> String {
        lock(&self.shared).base.clone()
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The options in force.
    pub fn options(&self) -> ScimOptions {
        lock(&self.shared).options.clone()
    }

    /// Changes the kind of provider from now on.
    pub fn set_options(&self, options: ScimOptions) {
        lock(&self.shared).options = options;
    }

    /// Accepts this bearer token (again, if it was revoked).
    pub fn add_token(&self, token: &str) {
        lock(&self.shared)
            .tokens
            .insert(token.to_string(), TokenStatus::Active);
    }

    /// Revokes a token: calls with it answer 401 from now on.
    pub fn revoke_token(&self, token: &str) {
        if let Some(t) = lock(&self.shared).tokens.get_mut(token) {
            *t = TokenStatus::Revoked;
        }
    }

    /// When `true`, every `/Users` call answers 403 (the token may not manage users).
    pub fn set_users_forbidden(&self, forbidden: bool) {
        lock(&self.shared).users_forbidden = forbidden;
    }

    /// When `true`, every `/Groups` call answers 403.
    pub fn set_groups_forbidden(&self, forbidden: bool) {
        lock(&self.shared).groups_forbidden = forbidden;
    }

    /// Limits each token to this many requests per sliding minute; beyond it, 429 with
    /// `Retry-After` (seconds until the oldest request leaves the window). `None` lifts it.
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        let mut st = lock(&self.shared);
        st.rate_limit = per_minute;
        st.rate_windows.clear();
    }

    /// The next `times` PUT, PATCH or DELETE carrying `If-Match` find their resource
    /// changed by someone else just before (its version bumped), so they get 412 when
    /// ETags are on; a client that reads again and retries then succeeds.
    pub fn race_next_writes(&self, times: u32) {
        lock(&self.shared).etag_races = times;
    }

    /// Queues a fault; faults are tried in the order injected.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            lock(&self.shared).faults.push(fault);
        }
    }

    /// Makes a share of the requests not hit by a fault fail transiently (503, 429 with
    /// `Retry-After: 1`, dropped connections); `None` stops it.
    pub fn set_chaos(&self, chaos: Option<kit::Chaos>) {
        lock(&self.shared).chaos = chaos;
    }

    /// Adds a user; returns its id. Panics when the seed is invalid (a taken `userName`
    /// or id): a test's own mistake.
    pub fn add_user(&self, user: ScimUser) -> String {
        let body = user.to_json();
        self.add_user_json(&body, user.id.as_deref())
            .unwrap_or_else(|e| panic!("seeding user {}: {}", user.user_name, e.detail))
    }

    /// Adds a user from its SCIM JSON (e.g. an RFC example), keeping `id` when given as
    /// `id` argument; the JSON's own `id` and `meta` are ignored as in a POST.
    pub fn add_user_json(&self, body: &Value, id: Option<&str>) -> Result<String, ScimError> {
        lock(&self.shared).directory.create(Kind::User, body, id)
    }

    /// Adds a group; returns its id. Panics when a member does not exist.
    pub fn add_group(&self, group: ScimGroup) -> String {
        lock(&self.shared)
            .directory
            .create(Kind::Group, &group.to_json(), group.id.as_deref())
            .unwrap_or_else(|e| panic!("seeding group {}: {}", group.display_name, e.detail))
    }

    /// A user as `GET /Users/{id}` returns it; `None` once deleted.
    pub fn user(&self, id: &str) -> Option<Value> {
        lock(&self.shared).render(Kind::User, id)
    }

    /// A group as `GET /Groups/{id}` returns it; `None` once deleted.
    pub fn group(&self, id: &str) -> Option<Value> {
        lock(&self.shared).render(Kind::Group, id)
    }

    /// A user's `active` (`None` once deleted; `true` when the attribute is absent).
    pub fn user_active(&self, id: &str) -> Option<bool> {
        let st = lock(&self.shared);
        let user = st.directory.get(Kind::User, id)?;
        Some(user.attr("active").and_then(Value::as_bool).unwrap_or(true))
    }

    /// Sets a user's `active` behind SCIM's back (e.g. an admin re-enables the account).
    pub fn set_user_active(&self, id: &str, active: bool) {
        lock(&self.shared).directory.set_active(id, active);
    }

    /// Ids of the groups the user is a direct member of.
    pub fn user_groups(&self, user_id: &str) -> Vec<String> {
        let st = lock(&self.shared);
        st.directory
            .groups_of(user_id)
            .iter()
            .map(|g| g.id.clone())
            .collect()
    }

    /// Ids of a group's members (empty when the group does not exist).
    pub fn group_members(&self, group_id: &str) -> Vec<String> {
        let st = lock(&self.shared);
        st.directory
            .get(Kind::Group, group_id)
            .map(|g| {
                directory::member_ids(g)
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The id of the user with this `userName` (case-insensitive).
    pub fn find_user(&self, user_name: &str) -> Option<String> {
        let st = lock(&self.shared);
        let found = st.directory.all(Kind::User).iter().find(|u| {
            u.attr("userName")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
        });
        found.map(|u| u.id.clone())
    }

    /// Ids of every user, in creation order.
    pub fn user_ids(&self) -> Vec<String> {
        let st = lock(&self.shared);
        st.directory
            .all(Kind::User)
            .iter()
            .map(|u| u.id.clone())
            .collect()
    }

    /// Every request received so far, oldest first.
    pub fn calls(&self) -> Vec<ScimCall> {
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
}
