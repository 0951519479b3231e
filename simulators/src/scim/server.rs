//! The HTTP side: the router under `/scim/v2`, the gate every request passes (call log,
//! bearer token, rate limit, faults, forbidden endpoints, media type) and the handlers.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::directory::{Kind, GROUP_SCHEMA, USER_SCHEMA};
use super::error::{scim_json, ScimError};
use super::filter::{matches, mentions, parse_filter, Filter};
use super::{
    lock, FaultKind, MembersFilter, ScimCall, Shared, SimState, TokenStatus, LIST_SCHEMA, ROOT,
};
use crate::kit::{self, ConnHandle, Trouble};

pub(super) fn router(shared: Shared) -> Router {
    let scim = Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/Schemas", get(schemas))
        .route("/Users", get(list_users).post(create_user))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(put_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", get(list_groups).post(create_group))
        .route(
            "/Groups/{id}",
            get(get_group)
                .put(put_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .fallback(|| async { ScimError::new(404, "no such endpoint") })
        .method_not_allowed_fallback(|| async { ScimError::new(405, "method not allowed here") });
    Router::new()
        .nest(ROOT, scim)
        .fallback(|| async { ScimError::new(404, "no such endpoint") })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

// ---------------------------------------------------------------------------
// The gate
// ---------------------------------------------------------------------------

/// The path under the SCIM root (`/Users/…`), or the full path outside it.
fn local_path(path: &str) -> &str {
    path.strip_prefix(ROOT)
        .filter(|p| !p.is_empty())
        .unwrap_or(path)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn record(st: &mut SimState, parts: &axum::http::request::Parts, bytes: &Bytes) -> u64 {
    let body = (!bytes.is_empty()).then(|| {
        serde_json::from_slice::<Value>(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    });
    let seq = st.next_seq;
    st.next_seq += 1;
    st.calls.push((
        seq,
        ScimCall {
            method: parts.method.as_str().to_string(),
            path: local_path(parts.uri.path()).to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            body,
            content_type: header_text(&parts.headers, header::CONTENT_TYPE),
            accept: header_text(&parts.headers, header::ACCEPT),
            if_match: header_text(&parts.headers, header::IF_MATCH),
            authorization_present: parts.headers.contains_key(header::AUTHORIZATION),
            status: 0,
        },
    ));
    seq
}

/// Counts the call against the token's sliding minute; the 429 when over the limit.
fn rate_check(st: &mut SimState, token: &str) -> Result<(), ScimError> {
    let Some(limit) = st.rate_limit else {
        return Ok(());
    };
    let now = Instant::now();
    let hits = st.rate_windows.entry(token.to_string()).or_default();
    let retry_after = kit::slide_minute(hits, now);
    if hits.len() >= limit as usize {
        let mut e = ScimError::new(429, "too many requests");
        e.retry_after = Some(retry_after);
        return Err(e);
    }
    hits.push_back(now);
    Ok(())
}

fn authenticate(st: &SimState, headers: &HeaderMap) -> Result<String, ScimError> {
    let auth = header_text(headers, header::AUTHORIZATION).unwrap_or_default();
    let token = match auth.trim().split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim().to_string(),
        _ => return Err(ScimError::new(401, "a bearer token is required")),
    };
    match st.tokens.get(&token) {
        Some(TokenStatus::Active) => Ok(token),
        Some(TokenStatus::Revoked) => Err(ScimError::new(401, "the token has been revoked")),
        None => Err(ScimError::new(401, "the token is not valid")),
    }
}

/// Whether a request body's media type is one SCIM accepts.
fn acceptable_media_type(headers: &HeaderMap) -> bool {
    let Some(ct) = header_text(headers, header::CONTENT_TYPE) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/scim+json" || essence == "application/json"
}

/// What the gate lets through: nothing (an answer instead), or a fault to apply.
type Admission = Result<Option<FaultKind>, ScimError>;

fn admit(st: &mut SimState, parts: &axum::http::request::Parts, has_body: bool) -> Admission {
    let token = authenticate(st, &parts.headers)?;
    rate_check(st, &token)?;
    let method = parts.method.as_str();
    let full = parts.uri.path();
    let local = local_path(full);
    if let Some(fault) = kit::take_fault(&mut st.faults, method, &[local, full]) {
        return Ok(Some(fault));
    }
    if let Some(trouble) = st.chaos.and_then(|c| c.draw()) {
        return Ok(Some(match trouble {
            Trouble::ServerError => FaultKind::Error {
                status: 503,
                retry_after_secs: None,
            },
            Trouble::RateLimited => FaultKind::Error {
                status: 429,
                retry_after_secs: Some(1),
            },
            Trouble::Dropped => FaultKind::DropConnection,
        }));
    }
    if !st.options.users && local.starts_with("/Users") {
        return Err(ScimError::new(
            404,
            "this provider has no User resource type",
        ));
    }
    if (st.users_forbidden && local.starts_with("/Users"))
        || (st.groups_forbidden && local.starts_with("/Groups"))
    {
        return Err(ScimError::new(
            403,
            "the token may not use this resource type",
        ));
    }
    if has_body && !acceptable_media_type(&parts.headers) {
        return Err(ScimError::new(
            415,
            "send application/scim+json or application/json",
        ));
    }
    Ok(None)
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
    let (seq, admission) = {
        let mut st = lock(&shared);
        let seq = record(&mut st, &parts, &bytes);
        (seq, admit(&mut st, &parts, !bytes.is_empty()))
    };
    let response = match admission {
        Err(e) => e.into_response(),
        Ok(None) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Some(FaultKind::Error {
            status,
            retry_after_secs,
        })) => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            let mut e = ScimError::new(status, reason);
            e.retry_after = retry_after_secs;
            e.into_response()
        }
        Ok(Some(FaultKind::Reply {
            status,
            content_type,
            body,
        })) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (status, body).into_response();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        Ok(Some(FaultKind::Delay(d))) => {
            tokio::time::sleep(d).await;
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Some(FaultKind::DropConnection)) => {
            conn.kill();
            // Never reaches the client: the killed stream refuses the write.
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut st = lock(&shared);
    if let Some((_, call)) = st.calls.iter_mut().rev().find(|(s, _)| *s == seq) {
        call.status = response.status().as_u16();
    }
    response
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

async fn service_provider_config(State(shared): State<Shared>) -> Response {
    let st = lock(&shared);
    let o = &st.options;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": o.patch},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": o.filter, "maxResults": o.max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": o.etag},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication scheme using the OAuth Bearer Token Standard",
            "specUri": "http://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", st.base),
        },
    });
    scim_json(StatusCode::OK, &body)
}

fn list_of(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

async fn resource_types(State(shared): State<Shared>) -> Response {
    let (base, users) = {
        let st = lock(&shared);
        (st.base.clone(), st.options.users)
    };
    let all = [
        ("User", "/Users", USER_SCHEMA),
        ("Group", "/Groups", GROUP_SCHEMA),
    ];
    let offered = all
        .into_iter()
        .filter(|(name, _, _)| users || *name != "User");
    let types: Vec<Value> = offered.map(|(name, endpoint, schema)| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": name,
            "name": name,
            "endpoint": endpoint,
            "schema": schema,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{name}")},
        })
    }).collect();
    scim_json(StatusCode::OK, &list_of(types))
}

fn attribute(name: &str, kind: &str, multi: bool, case_exact: bool, mutability: &str) -> Value {
    json!({
        "name": name, "type": kind, "multiValued": multi, "required": name == "userName" || name == "displayName",
        "caseExact": case_exact, "mutability": mutability, "returned": "default",
        "uniqueness": if name == "userName" { "server" } else { "none" },
    })
}

async fn schemas(State(shared): State<Shared>) -> Response {
    let base = lock(&shared).base.clone();
    let user = json!({
        "id": USER_SCHEMA, "name": "User", "description": "User Account",
        "attributes": [
            attribute("userName", "string", false, false, "readWrite"),
            attribute("name", "complex", false, false, "readWrite"),
            attribute("displayName", "string", false, false, "readWrite"),
            attribute("active", "boolean", false, false, "readWrite"),
            attribute("emails", "complex", true, false, "readWrite"),
            attribute("groups", "complex", true, false, "readOnly"),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{USER_SCHEMA}")},
    });
    let group = json!({
        "id": GROUP_SCHEMA, "name": "Group", "description": "Group",
        "attributes": [
            attribute("displayName", "string", false, false, "readWrite"),
            attribute("members", "complex", true, false, "readWrite"),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{GROUP_SCHEMA}")},
    });
    scim_json(StatusCode::OK, &list_of(vec![user, group]))
}

// ---------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------

type Params = Query<HashMap<String, String>>;

/// A positive integer query parameter (`startIndex`, `count`), or `default`.
fn int_param(params: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, ScimError> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse::<i64>().map_err(|_| {
            ScimError::bad_request("invalidValue", format!("{name} must be an integer"))
        }),
    }
}

/// The filter a list applies, or `None` for every resource.
fn list_filter(
    st: &SimState,
    kind: Kind,
    params: &HashMap<String, String>,
) -> Result<Option<Filter>, ScimError> {
    let Some(text) = params.get("filter") else {
        return Ok(None);
    };
    if !st.options.filter {
        return Err(ScimError::bad_request(
            "invalidFilter",
            "filtering is not supported",
        ));
    }
    let filter =
        parse_filter(text).map_err(|e| ScimError::bad_request("invalidFilter", e.to_string()))?;
    if kind == Kind::Group && mentions(&filter, "members") {
        match st.options.members_filter {
            MembersFilter::Supported => {}
            MembersFilter::Rejected => {
                return Err(ScimError::bad_request(
                    "invalidFilter",
                    "filtering on members is not supported",
                ))
            }
            MembersFilter::Ignored => return Ok(None),
        }
    }
    Ok(Some(filter))
}

fn list(
    shared: &Shared,
    kind: Kind,
    params: &HashMap<String, String>,
) -> Result<Response, ScimError> {
    let st = lock(shared);
    let filter = list_filter(&st, kind, params)?;
    let max = i64::from(st.options.max_results);
    let asked_start = int_param(params, "startIndex", 1)?.max(1);
    let start = if st.options.honour_start_index {
        asked_start
    } else {
        1
    };
    let count = int_param(params, "count", max)?.clamp(0, max);
    let matching: Vec<Value> = st
        .directory
        .all(kind)
        .iter()
        .map(|r| st.directory.render(kind, r, st.view()))
        .filter(|v| filter.as_ref().is_none_or(|f| matches(f, v)))
        .collect();
    let total = matching.len();
    let skip = usize::try_from(start - 1).unwrap_or(usize::MAX);
    let page: Vec<Value> = if st.options.honour_count {
        matching
            .into_iter()
            .skip(skip)
            .take(count as usize)
            .collect()
    } else {
        matching.into_iter().skip(skip).collect()
    };
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": page.len(),
        "Resources": page,
    });
    Ok(scim_json(StatusCode::OK, &body))
}

async fn list_users(
    State(shared): State<Shared>,
    Query(params): Params,
) -> Result<Response, ScimError> {
    list(&shared, Kind::User, &params)
}

async fn list_groups(
    State(shared): State<Shared>,
    Query(params): Params,
) -> Result<Response, ScimError> {
    list(&shared, Kind::Group, &params)
}

// ---------------------------------------------------------------------------
// One resource
// ---------------------------------------------------------------------------

/// The resource as JSON with its `Location` and, with ETags on, `ETag`.
fn resource_response(
    st: &SimState,
    kind: Kind,
    id: &str,
    status: StatusCode,
) -> Result<Response, ScimError> {
    let resource = st.directory.find(kind, id)?;
    let body = st.directory.render(kind, resource, st.view());
    let mut response = scim_json(status, &body);
    let headers = response.headers_mut();
    if let Some(location) = body["meta"]["location"]
        .as_str()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        headers.insert(header::LOCATION, location);
    }
    if st.options.etag {
        if let Ok(v) = HeaderValue::from_str(&resource.etag()) {
            headers.insert(header::ETAG, v);
        }
    }
    Ok(response)
}

fn parse_json(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body)
        .map_err(|e| ScimError::bad_request("invalidSyntax", format!("the body is not JSON: {e}")))
}

/// With ETags on, an `If-Match` that names neither `*` nor the current version → 412.
/// A pending ETag race bumps the version first, as another client's write would.
fn check_if_match(
    st: &mut SimState,
    kind: Kind,
    id: &str,
    headers: &HeaderMap,
) -> Result<(), ScimError> {
    let Some(wanted) = header_text(headers, header::IF_MATCH) else {
        return Ok(());
    };
    if !st.options.etag {
        return Ok(());
    }
    st.directory.find(kind, id)?;
    if st.etag_races > 0 {
        st.etag_races -= 1;
        st.directory.touch(kind, id);
    }
    let current = st.directory.find(kind, id)?.etag();
    let ok = wanted
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == current);
    if ok {
        Ok(())
    } else {
        Err(ScimError::new(
            412,
            format!(
                "{} {id} has changed: its version is now {current}",
                kind.name()
            ),
        ))
    }
}

async fn get_one(
    shared: Shared,
    kind: Kind,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let st = lock(&shared);
    let resource = st.directory.find(kind, &id)?;
    let unchanged = header_text(&headers, header::IF_NONE_MATCH)
        .is_some_and(|t| t.split(',').any(|t| t.trim() == resource.etag()));
    if st.options.etag && unchanged {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    resource_response(&st, kind, &id, StatusCode::OK)
}

async fn create(shared: Shared, kind: Kind, body: Bytes) -> Result<Response, ScimError> {
    let body = parse_json(&body)?;
    let mut st = lock(&shared);
    let id = st.directory.create(kind, &body, None)?;
    resource_response(&st, kind, &id, StatusCode::CREATED)
}

/// The writes PUT and PATCH make.
#[derive(Clone, Copy)]
enum Write {
    Put,
    Patch,
}

async fn write(
    shared: Shared,
    kind: Kind,
    how: Write,
    id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let mut st = lock(&shared);
    if matches!(how, Write::Patch) && !st.options.patch {
        return Err(ScimError::new(
            501,
            "PATCH is not supported; PUT the whole resource",
        ));
    }
    let body = parse_json(&body)?;
    check_if_match(&mut st, kind, &id, &headers)?;
    match how {
        Write::Put => st.directory.replace(kind, &id, &body)?,
        Write::Patch => st.directory.patch(kind, &id, &body)?,
    }
    resource_response(&st, kind, &id, StatusCode::OK)
}

async fn delete(
    shared: Shared,
    kind: Kind,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let mut st = lock(&shared);
    check_if_match(&mut st, kind, &id, &headers)?;
    st.directory.delete(kind, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_user(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ScimError> {
    get_one(s, Kind::User, id, h).await
}

async fn get_group(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ScimError> {
    get_one(s, Kind::Group, id, h).await
}

async fn create_user(State(s): State<Shared>, body: Bytes) -> Result<Response, ScimError> {
    create(s, Kind::User, body).await
}

async fn create_group(State(s): State<Shared>, body: Bytes) -> Result<Response, ScimError> {
    create(s, Kind::Group, body).await
}

async fn put_user(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    write(s, Kind::User, Write::Put, id, h, body).await
}

async fn put_group(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    write(s, Kind::Group, Write::Put, id, h, body).await
}

async fn patch_user(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    write(s, Kind::User, Write::Patch, id, h, body).await
}

async fn patch_group(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    write(s, Kind::Group, Write::Patch, id, h, body).await
}

async fn delete_user(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ScimError> {
    delete(s, Kind::User, id, h).await
}

async fn delete_group(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ScimError> {
    delete(s, Kind::Group, id, h).await
}
