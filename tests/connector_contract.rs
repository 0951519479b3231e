//! Contract tests (issue 10): every request the connectors send and every response the
//! simulators give, checked against the apps' own OpenAPI documents in
//! `../shared/reference/` (Smartsheet's `smartsheet-openapi-2024.json`, Postman's
//! `postman-openapi-with-scim.yml`, the one of Postman's two documents that also
//! describes SCIM). A recording proxy sits between the real clients and the simulators
//! while the workflows, the connection checks and the error cases run; then each
//! exchange is checked (path, method, query parameters, request body, status, content
//! type, response body), and every endpoint each connector calls must have been seen.

mod apps_support;
mod contract;
mod support;

use std::collections::BTreeSet;

use apps_support::{connection, request, Steps};
use contract::{Allowances, Api, Exchange, Recorder};
use offboard::apps::postman::client::Client as PostmanClient;
use offboard::apps::retry::CallRetry;
use offboard::apps::transport::Transported;
use offboard::apps::AppClient;
use offboard::config::{AppKind, Secret};
use offboard::domain::event::EventType;
use offboard_simulators::postman::{Fault as PmFault, FaultKind as PmFaultKind};
use offboard_simulators::smartsheet::{Fault, FaultKind};
use support::*;

const SMARTSHEET_OFFBOARD: &[&str] = &[
    "smartsheet.find_user",
    "smartsheet.list_groups",
    "smartsheet.check_recipient",
    "smartsheet.reassign_groups",
    "smartsheet.revoke_licenses",
    "smartsheet.remove_user",
    "smartsheet.confirm_removed",
];

const POSTMAN_OFFBOARD: &[&str] = &[
    "postman.find_member",
    "postman.record_activity",
    "postman.check_recipient",
    "postman.hand_over_workspaces",
    "postman.remove_workspace_roles",
    "postman.deprovision",
    "postman.confirm_deprovisioned",
];

/// Runs `actions` in order until one fails or ends the workflow.
async fn run(steps: &mut Steps, actions: &[&str]) {
    for action in actions {
        match steps.run(action).await {
            Ok(out) if out.finish_with.is_some() => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Checks every exchange; returns the operations seen.
fn verify(api: &mut Api, exchanges: &[Exchange]) -> BTreeSet<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for x in exchanges {
        problems.extend(api.check(x));
        if let Some((template, method)) = api.operation(&x.method, &x.path) {
            seen.insert(format!("{} {template}", method.to_uppercase()));
        }
    }
    assert!(
        problems.is_empty(),
        "{} exchanges break the document:\n{}",
        problems.len(),
        problems.join("\n")
    );
    seen
}

/// Headers the documents describe in prose only: `Retry-After` (and Postman's
/// `X-RateLimit-RetryAfter`) in whole seconds on a 429; the rate-limit counters as
/// integers. `X-RateLimit-Reset`'s format is not documented: only that it is an integer
/// is checked (offboard reads it as epoch seconds, or as seconds when small).
fn check_headers(exchanges: &[Exchange], on_429: &[&str]) {
    let integer = |x: &Exchange, name: &str| {
        x.headers.get(name).map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some()
        })
    };
    for x in exchanges {
        for name in [
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert_ne!(integer(x, name), Some(false), "{}: {name}", x.label());
        }
        if x.status == 429 {
            for name in on_429 {
                assert_eq!(integer(x, name), Some(true), "{}: {name}", x.label());
            }
        }
    }
}

fn expect_all(seen: &BTreeSet<String>, expected: &[&str]) {
    let missing: Vec<&&str> = expected.iter().filter(|e| !seen.contains(**e)).collect();
    assert!(
        missing.is_empty(),
        "never exercised: {missing:?}; seen {seen:?}"
    );
}

// ---------------------------------------------------------------------------
// Smartsheet
// ---------------------------------------------------------------------------

fn smartsheet_client(url: &str, token: &str) -> AppClient {
    AppClient::new(&connection(AppKind::Smartsheet, url), Secret::new(token))
        .unwrap()
        .with_call_retry(CallRetry::never())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smartsheet_traffic_follows_the_openapi_document() {
    let org = org().await;
    let proxy = Recorder::start(&org.sim.base_url()).await;
    let client = || smartsheet_client(proxy.url(), TOKEN);

    // The connection check and both workflows.
    assert_eq!(client().check().await.problem, None);
    let mut off = Steps::new(
        client(),
        request(
            "smartsheet",
            EventType::Offboarding,
            LEAVER,
            Some(RECIPIENT),
        ),
    );
    run(&mut off, SMARTSHEET_OFFBOARD).await;
    assert!(org.sim.user(org.leaver).is_none(), "{:?}", off.facts);
    let mut reclaim = Steps::new(
        client(),
        request("smartsheet", EventType::LicenseReclaim, RECLAIM, None),
    );
    run(&mut reclaim, &SMARTSHEET_OFFBOARD[..5]).await;

    // Error answers: a wrong token, missing permission, a transfer rule, a 429, a 5xx,
    // an unknown user.
    assert!(smartsheet_client(proxy.url(), "wrong")
        .check()
        .await
        .problem
        .is_some());
    org.sim.set_groups_access(false);
    assert!(client().check().await.problem.is_some());
    org.sim.set_groups_access(true);
    let owner = org.sim.add_user(offboard_simulators::smartsheet::SimUser {
        group_admin: true,
        ..offboard_simulators::smartsheet::SimUser::new("owner@example.com")
    });
    org.sim.add_group("Owned", owner, &[owner]);
    let mut no_recipient = Steps::new(
        client(),
        request(
            "smartsheet",
            EventType::LicenseReclaim,
            "owner@example.com",
            None,
        ),
    );
    run(
        &mut no_recipient,
        &["smartsheet.find_user", "smartsheet.list_groups"],
    )
    .await;
    assert!(no_recipient.run("smartsheet.remove_user").await.is_err());
    for (status, code, retry_after) in [(429, 4003, Some(1)), (500, 4000, None), (503, 4001, None)]
    {
        org.sim.inject(Fault::new(
            "/users",
            FaultKind::Error {
                status,
                error_code: code,
                retry_after_secs: retry_after,
            },
        ));
        let _ = client().check().await;
    }

    let mut api = Api::load(
        "smartsheet-openapi-2024.json",
        Allowances {
            base_path: "/2.0",
            // Documented as body properties, sent (as Smartsheet's own examples do) in the query.
            query_in_body: vec![("delete", "/users/{userId}")],
            ..Allowances::default()
        },
    );
    let exchanges = proxy.exchanges();
    let seen = verify(&mut api, &exchanges);
    check_headers(&exchanges, &["retry-after"]);
    expect_all(
        &seen,
        &[
            "GET /users",
            "GET /users/me",
            "GET /users/{userId}",
            "PUT /users/{userId}",
            "DELETE /users/{userId}",
            "GET /groups",
            "GET /groups/{groupId}",
            "PUT /groups/{groupId}",
        ],
    );
    let statuses: BTreeSet<u16> = exchanges.iter().map(|x| x.status).collect();
    for s in [200, 400, 401, 403, 404, 429, 500, 503] {
        assert!(
            statuses.contains(&s),
            "no {s} answer was checked: {statuses:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Postman
// ---------------------------------------------------------------------------

fn postman_client(url: &str, key: &str) -> AppClient {
    let conn = connection(AppKind::Postman, url);
    AppClient::Postman(
        PostmanClient::with_keys(&conn, Secret::new(key), Secret::new(key))
            .unwrap()
            .with_call_retry(CallRetry::never()),
    )
}

/// Postman's documented error shapes (`{"error": {"name", "message"}}` or
/// problem+json), as its `GET /me` 401 answer lists them, and SCIM's error.
const POSTMAN_ERRORS: &[&str] = &[
    "/paths/~1me/get/responses/401/content/application~1json/schema",
    "/components/schemas/scimError",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postman_traffic_follows_the_openapi_document() {
    let team = postman_team().await;
    let s = team.seed.clone();
    let proxy = Recorder::start(&team.sim.base_url()).await;
    let client = || postman_client(proxy.url(), POSTMAN_KEY);

    assert_eq!(client().check().await.problem, None);
    let mut off = Steps::new(
        client(),
        request(
            "postman",
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        ),
    );
    run(&mut off, POSTMAN_OFFBOARD).await;
    assert!(
        !team.sim.member(s.leaver_id).unwrap().active,
        "{:?}",
        off.facts
    );

    // A member deactivated earlier who is still an only Admin: role lists by SCIM id.
    let old = team
        .sim
        .add_member(offboard_simulators::postman::SimMember::new(
            "old.owner@northwind.example",
        ));
    team.sim
        .add_workspace(offboard_simulators::postman::SimWorkspace::team(
            "Old APIs", old,
        ));
    team.sim.update_member(old, |m| m.active = false);
    let mut gone = Steps::new(
        client(),
        request(
            "postman",
            EventType::Offboarding,
            "old.owner@northwind.example",
            Some(&s.recipient_email),
        ),
    );
    run(&mut gone, POSTMAN_OFFBOARD).await;

    // Error answers: a wrong key, no Enterprise plan, a rate limit, a team deleted
    // during the deactivation.
    assert!(postman_client(proxy.url(), "PMAK-wrong")
        .check()
        .await
        .problem
        .is_some());
    team.sim.set_enterprise(false);
    let report = client().check().await;
    assert_eq!(report.warnings.len(), 1, "{report:?}");
    team.sim.set_enterprise(true);
    team.sim.inject(PmFault::new(
        "/users",
        PmFaultKind::Error {
            status: 429,
            retry_after_secs: Some(1),
        },
    ));
    let _ = client().check().await;
    team.sim.inject(PmFault::new(
        "/me",
        PmFaultKind::Error {
            status: 500,
            retry_after_secs: None,
        },
    ));
    let _ = client().check().await;
    team.sim
        .inject(PmFault::new("/scim/v2/Users/", PmFaultKind::DeleteTeam).method("PATCH"));
    let mut late = Steps::new(
        client(),
        request("postman", EventType::LicenseReclaim, &s.reclaim_email, None),
    );
    run(&mut late, &["postman.find_member", "postman.deprovision"]).await;

    let error = POSTMAN_ERRORS.to_vec();
    let mut api = Api::load(
        "postman-openapi-with-scim.yml",
        Allowances {
            // The introduction: 401 for a missing or invalid key, 429 `rateLimited`.
            global_statuses: vec![(401, error.clone()), (429, error.clone())],
            // Not declared by this operation, yet answered by Postman: audit logs need
            // the Enterprise plan.
            extra_statuses: vec![("get", "/audit/logs", 403, error)],
            one_of_as_any_of: true,
            ..Allowances::default()
        },
    );
    let exchanges = proxy.exchanges();
    let seen = verify(&mut api, &exchanges);
    check_headers(&exchanges, &["retry-after", "x-ratelimit-retryafter"]);
    expect_all(
        &seen,
        &[
            "GET /me",
            "GET /users",
            "GET /users/{userId}",
            "GET /workspaces",
            "GET /workspaces-roles",
            "GET /workspaces/{workspaceId}/roles",
            "PATCH /workspaces/{workspaceId}/roles",
            "GET /audit/logs",
            "GET /accounts",
            "GET /scim/v2/Users",
            "GET /scim/v2/Users/{userId}",
            "PATCH /scim/v2/Users/{userId}",
        ],
    );
    let statuses: BTreeSet<u16> = exchanges.iter().map(|x| x.status).collect();
    for code in [200, 400, 401, 403, 404, 429, 500] {
        assert!(
            statuses.contains(&code),
            "no {code} answer was checked: {statuses:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The checker itself
// ---------------------------------------------------------------------------

fn exchange(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    status: u16,
    body: serde_json::Value,
) -> Exchange {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    Exchange {
        method: method.into(),
        path: path.into(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        request_headers: axum::http::HeaderMap::new(),
        request_type: None,
        request_body: None,
        status,
        headers,
        body,
    }
}

#[test]
fn the_checker_catches_what_the_documents_forbid() {
    let mut smartsheet = Api::load(
        "smartsheet-openapi-2024.json",
        Allowances {
            base_path: "/2.0",
            ..Allowances::default()
        },
    );
    let fine = exchange(
        "GET",
        "/2.0/users/me",
        &[],
        200,
        serde_json::json!({"id": 1, "email": "a@b.c"}),
    );
    assert_eq!(smartsheet.check(&fine), Vec::<String>::new());
    let cases = [
        exchange(
            "GET",
            "/2.0/users/me",
            &[],
            200,
            serde_json::json!({"id": "one"}),
        ),
        exchange(
            "GET",
            "/2.0/users",
            &[("pageSize", "many")],
            200,
            serde_json::json!({}),
        ),
        exchange(
            "GET",
            "/2.0/users",
            &[("colour", "red")],
            200,
            serde_json::json!({}),
        ),
        exchange("GET", "/2.0/userz", &[], 200, serde_json::json!({})),
        exchange("PATCH", "/2.0/users/1", &[], 200, serde_json::json!({})),
    ];
    for x in cases {
        assert!(!smartsheet.check(&x).is_empty(), "{x:?} passed");
    }
    let mut postman = Api::load("postman-openapi-with-scim.yml", Allowances::default());
    let bad = exchange(
        "GET",
        "/workspaces",
        &[],
        200,
        serde_json::json!({"workspaces": [{"id": 7}]}),
    );
    assert!(!postman.check(&bad).is_empty());
    let undeclared = exchange("GET", "/accounts", &[], 418, serde_json::json!({}));
    assert!(!postman.check(&undeclared).is_empty());
}
