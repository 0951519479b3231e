//! The SCIM client against the RFCs' own examples (`tests/contract/scim/`), not only
//! against the simulator: a scripted provider answers with the RFC 7643/7644 example
//! bodies (ServiceProviderConfig, ListResponse, the full User, the Group, the 404 error),
//! and the requests the client makes are compared with the RFC's PATCH examples.

mod apps_support;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use apps_support::{request, Steps};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use offboard::apps::AppClient;
use offboard::config::{Config, Secret};
use offboard::domain::event::EventType;
use offboard::domain::step::Outcome;
use serde_json::{json, Value};

/// The id of the RFC examples' user ("Babs Jensen").
const BABS: &str = "2819c223-7f76-453a-919d-413861904646";
/// The RFC 7643 §8.4 group, which has Babs as a member.
const TOUR_GUIDES: &str = "e9e30dba-f08f-4109-8486-d5c6a331660a";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/contract/scim/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One request as the scripted provider saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Option<Value>,
}

/// Answers per `METHOD path`, in order (the last one repeats); anything unscripted is the
/// RFC's 404 error.
#[derive(Default)]
struct Script {
    answers: HashMap<String, VecDeque<(u16, Value)>>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Script>>;

async fn answer(
    axum::extract::State(script): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let path = uri.path().trim_start_matches("/scim/v2").to_string();
    let mut script = script.lock().unwrap();
    script.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body: serde_json::from_slice(&body).ok(),
    });
    let key = format!("{method} {path}");
    let (status, body) = match script.answers.get_mut(&key) {
        Some(queue) if queue.len() > 1 => queue.pop_front().unwrap(),
        Some(queue) => queue[0].clone(),
        None => (404, fixture("rfc7644-3.12-error-not-found.json")),
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/scim+json")],
        body.to_string(),
    )
}

/// A scripted provider; returns its SCIM root URL and the script.
async fn provider(answers: &[(&str, &[(u16, Value)])]) -> (String, Shared) {
    let script: Shared = Arc::default();
    for (key, queue) in answers {
        script
            .lock()
            .unwrap()
            .answers
            .insert(key.to_string(), queue.iter().cloned().collect());
    }
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/scim/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, script)
}

fn client(url: &str) -> AppClient {
    let text = format!(
        "[connections.scim]\napp = \"scim\"\nbase_url = \"{url}\"\ntoken_env = \"T\"\nrequests_per_minute = 60000\n"
    );
    let config = Config::parse(&text).unwrap();
    AppClient::new(
        &config.connections["scim"],
        Secret::new("scim-contract-token"),
    )
    .unwrap()
}

/// The RFC's remove-member example with its elided id replaced by `id`.
fn remove_member(id: &str) -> Value {
    let text = fixture("rfc7644-3.5.2.2-remove-member.json")
        .to_string()
        .replace("2819c223-7f76-...413861904646", id);
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn an_offboarding_speaks_the_rfc_examples() {
    let user = fixture("rfc7643-8.2-full-user.json");
    let group = fixture("rfc7643-8.4-group.json");
    let not_found = fixture("rfc7644-3.12-error-not-found.json");
    let users = format!("GET /Users/{BABS}");
    let (url, script) = provider(&[
        (
            "GET /ServiceProviderConfig",
            &[(200, fixture("rfc7643-8.5-service-provider-config.json"))],
        ),
        (
            "GET /Users",
            &[(200, fixture("rfc7644-3.4.2-list-response.json"))],
        ),
        (
            users.as_str(),
            // Read by find, by the group removal and by the deactivation; then gone.
            &[
                (200, user.clone()),
                (200, user.clone()),
                (200, user.clone()),
                (404, not_found),
            ],
        ),
        (&format!("GET /Groups/{TOUR_GUIDES}"), &[(200, group)]),
        (
            &format!("PATCH /Groups/{TOUR_GUIDES}"),
            &[(204, Value::Null)],
        ),
        (&format!("PATCH /Users/{BABS}"), &[(200, user)]),
    ])
    .await;
    // The RFC's list answers "Babs" and "Ed": only the exact (case-insensitive) match counts.
    let mut steps = Steps::new(
        client(&url),
        request("scim", EventType::Offboarding, "babs", None),
    );
    let found = steps.run("scim.find_user").await.unwrap();
    assert_eq!(found.facts["scim_id"], BABS);
    assert_eq!(
        found.facts["entitlements_before"]["meta"]["version"],
        "W/\"a330bc54f0671c9\""
    );
    steps.run("scim.remove_from_groups").await.unwrap();
    steps.run("scim.offboard_user").await.unwrap();
    let confirmed = steps.run("scim.confirm_offboarded").await.unwrap();
    // The RFC's 404 error body read as "gone".
    assert_eq!(confirmed.finish_with, Some(Outcome::Removed));

    let seen = script.lock().unwrap().seen.clone();
    let lookup = seen.iter().find(|s| s.path == "/Users").unwrap();
    let filter = url::form_urlencoded::parse(lookup.query.as_bytes())
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.into_owned());
    assert_eq!(filter.as_deref(), Some("userName eq \"babs\""));
    let writes: Vec<&Seen> = seen.iter().filter(|s| s.method != "GET").collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    // RFC 7644 §3.5.2.2's remove, with the version RFC 7643 §8.4 gives the group.
    assert_eq!(writes[0].body.as_ref(), Some(&remove_member(BABS)));
    assert_eq!(writes[0].headers["if-match"], "W/\"3694e05e9dff592\"");
    // The deactivation, with the user's `meta.version` (RFC 7643 §8.2) as If-Match.
    assert_eq!(
        writes[1].body.as_ref(),
        Some(&fixture("patch-replace-active.json"))
    );
    assert_eq!(writes[1].headers["if-match"], "W/\"a330bc54f0671c9\"");
    for s in &writes {
        assert_eq!(s.headers["content-type"], "application/scim+json");
    }
    for s in &seen {
        assert!(s.headers["accept"]
            .to_str()
            .unwrap()
            .contains("application/scim+json"));
        assert_eq!(s.headers["authorization"], "Bearer scim-contract-token");
    }
    // The two other groups of the RFC user are unknown here (404): already gone, no write.
    assert_eq!(
        seen.iter()
            .filter(|s| s.path.starts_with("/Groups/"))
            .count(),
        4
    );
}

#[tokio::test]
async fn a_scim_error_body_gives_the_code_with_its_scim_type_and_detail() {
    // RFC 7644 §3.12's example of a 400: an attempt to change a read-only attribute.
    let refused = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "scimType": "mutability",
        "detail": "Attribute 'id' is readOnly",
        "status": "400"
    });
    let mut user = fixture("rfc7643-8.2-full-user.json");
    user.as_object_mut().unwrap().remove("groups");
    let users = format!("GET /Users/{BABS}");
    let (url, _) = provider(&[
        (
            "GET /ServiceProviderConfig",
            &[(
                200,
                json!({"patch": {"supported": true}, "filter": {"supported": true}}),
            )],
        ),
        (users.as_str(), &[(200, user)]),
        (&format!("PATCH /Users/{BABS}"), &[(400, refused)]),
    ])
    .await;
    let mut steps = Steps::new(
        client(&url),
        request("scim", EventType::Offboarding, "babs", None),
    );
    steps.facts.insert("scim_id".into(), BABS.into());
    let err = steps.run("scim.offboard_user").await.unwrap_err();
    assert_eq!(err.code.as_str(), "SCIM-115-B");
    assert!(
        err.message.contains("scimType \"mutability\"")
            && err.message.contains("Attribute 'id' is readOnly"),
        "{}",
        err.message
    );
    assert!(!err.retryable);
}
