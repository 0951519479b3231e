//! The SCIM simulator checked against the RFCs' own examples (`tests/contract/scim/`,
//! RFC 7643 §8 and RFC 7644 §3), so the SCIM connector's tests stand on a provider that
//! speaks the standard: it accepts every RFC request example, answers in the RFC
//! response examples' shape, and reads filters the way §3.4.2.2 defines them — string
//! literals as JSON strings, so a value holding `"`, `\` or ` or ` finds exactly its
//! owner. The provider variants a connector must cope with (no PATCH, ETags, no
//! filtering, `count` ignored, Groups without `members` filtering) and the faults (401,
//! 403, 429) are checked here too.

use std::collections::BTreeSet;
use std::path::PathBuf;

use offboard_simulators::scim::{
    MembersFilter, ScimGroup, ScimOptions, ScimSim, ScimUser, ERROR_SCHEMA, LIST_SCHEMA,
    PATCH_SCHEMA,
};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "scim-test-token";

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/contract/scim")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A started simulator that accepts [`TOKEN`], and a client for it.
struct Provider {
    sim: ScimSim,
    http: Client,
}

impl Provider {
    async fn start(options: ScimOptions) -> Provider {
        let sim = ScimSim::start_with(options)
            .await
            .expect("simulator starts");
        sim.add_token(TOKEN);
        Provider {
            sim,
            http: Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.sim.base_url()))
            .bearer_auth(TOKEN)
            .header("Accept", "application/scim+json");
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/scim+json")
                .body(body.to_string());
        }
        request.send().await.expect("simulator answers")
    }

    /// Status and JSON body of a call (`Null` for an empty body).
    async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let response = self.call(method, path, body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, value)
    }

    /// The `userName`s a `GET /Users?filter=…` returns, the filter form-encoded in the URL.
    async fn find(&self, filter: &str) -> BTreeSet<String> {
        let url = url::Url::parse_with_params(
            &format!("{}/Users", self.sim.base_url()),
            [("filter", filter)],
        )
        .unwrap();
        let response = self.http.get(url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{filter}");
        let body: Value = response.json().await.unwrap();
        body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userName"].as_str().unwrap().to_string())
            .collect()
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn assert_has_keys_of(actual: &Value, example: &Value, what: &str) {
    let missing: Vec<String> = keys(example).difference(&keys(actual)).cloned().collect();
    assert!(
        missing.is_empty(),
        "{what}: missing {missing:?} in {actual}"
    );
}

#[tokio::test]
async fn service_provider_config_has_the_rfc_shape_and_tells_the_options() {
    let example = fixture("rfc7643-8.5-service-provider-config.json");
    let provider = Provider::start(ScimOptions::default().without_patch().with_etags()).await;
    let response = provider
        .call(Method::GET, "/ServiceProviderConfig", None)
        .await;
    assert_eq!(response.headers()["content-type"], "application/scim+json");
    let config: Value = response.json().await.unwrap();
    assert_has_keys_of(&config, &example, "ServiceProviderConfig");
    assert_eq!(config["schemas"], example["schemas"]);
    for feature in ["patch", "bulk", "filter", "changePassword", "sort", "etag"] {
        assert!(config[feature]["supported"].is_boolean(), "{feature}");
    }
    assert!(config["filter"]["maxResults"].is_u64());
    assert_eq!(config["patch"]["supported"], false);
    assert_eq!(config["etag"]["supported"], true);
    let scheme = &config["authenticationSchemes"][0];
    assert_has_keys_of(
        scheme,
        &json!({"name": 1, "description": 1, "type": 1}),
        "scheme",
    );
    assert_eq!(scheme["type"], example["authenticationSchemes"][0]["type"]);
}

#[tokio::test]
async fn rfc_users_and_groups_are_accepted_and_come_back_in_their_shape() {
    let provider = Provider::start(ScimOptions::default().with_etags()).await;
    for name in [
        "rfc7643-8.1-minimal-user.json",
        "rfc7643-8.2-full-user.json",
    ] {
        let example = fixture(name);
        provider.sim.clear_calls();
        let (status, created) = provider.json(Method::POST, "/Users", Some(&example)).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {created}");
        // Everything the example shows comes back, except the password (returned
        // "never", RFC 7643 §4.1.1) and the read-only groups a POST cannot set.
        let mut expected = example.clone();
        let object = expected.as_object_mut().unwrap();
        object.remove("password");
        object.remove("groups");
        assert_has_keys_of(&created, &expected, name);
        assert_has_keys_of(&created["meta"], &example["meta"], name);
        assert!(created.get("password").is_none());
        assert!(created["meta"]["version"]
            .as_str()
            .unwrap()
            .starts_with("W/\""));
        assert_eq!(created["userName"], example["userName"]);
        let id = created["id"].as_str().unwrap();
        // The next example reuses the userName: remove this one first.
        let response = provider
            .call(Method::DELETE, &format!("/Users/{id}"), None)
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(provider.sim.user(id), None);
    }

    let group = fixture("rfc7643-8.4-group.json");
    for member in group["members"].as_array().unwrap() {
        let id = member["value"].as_str().unwrap();
        let user_name = member["display"].as_str().unwrap();
        provider.sim.add_user(ScimUser::new(user_name).with_id(id));
    }
    let (status, created) = provider.json(Method::POST, "/Groups", Some(&group)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_has_keys_of(&created, &group, "group");
    for (ours, theirs) in created["members"]
        .as_array()
        .unwrap()
        .iter()
        .zip(group["members"].as_array().unwrap())
    {
        assert_has_keys_of(ours, theirs, "member");
        assert_eq!(ours["value"], theirs["value"]);
    }
    // RFC 7643 §4.1.2: the user's read-only groups follows the membership.
    let babs = provider
        .sim
        .user("2819c223-7f76-453a-919d-413861904646")
        .unwrap();
    assert_eq!(babs["groups"][0]["value"], created["id"]);
    assert_eq!(babs["groups"][0]["display"], "Tour Guides");
}

#[tokio::test]
async fn list_responses_have_the_rfc_shape_and_page_from_one() {
    let example = fixture("rfc7644-3.4.2-list-response.json");
    let provider = Provider::start(ScimOptions::default()).await;
    for name in ["Babs", "Ed", "Flo"] {
        provider.sim.add_user(ScimUser::new(name));
    }
    let (status, list) = provider
        .json(Method::GET, "/Users?startIndex=2&count=1", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_has_keys_of(&list, &example, "ListResponse");
    assert_eq!(list["schemas"], json!([LIST_SCHEMA]));
    assert_eq!(list["totalResults"], 3);
    assert_eq!(list["startIndex"], 2);
    assert_eq!(list["itemsPerPage"], 1);
    assert_eq!(list["Resources"][0]["userName"], "Ed");
    assert_has_keys_of(&list["Resources"][0], &example["Resources"][0], "resource");

    // A provider that ignores count returns every resource from startIndex on.
    provider
        .sim
        .set_options(ScimOptions::default().ignoring_count());
    let (_, list) = provider
        .json(Method::GET, "/Users?startIndex=1&count=1", None)
        .await;
    assert_eq!(list["itemsPerPage"], 3);
    assert_eq!(list["Resources"].as_array().unwrap().len(), 3);

    // One that ignores startIndex answers the first page again: a client paging by
    // startIndex alone would loop.
    provider
        .sim
        .set_options(ScimOptions::default().ignoring_start_index());
    let (_, list) = provider
        .json(Method::GET, "/Users?startIndex=3&count=1", None)
        .await;
    assert_eq!(list["startIndex"], 1);
    assert_eq!(list["Resources"][0]["userName"], "Babs");
}

#[tokio::test]
async fn the_demo_directory_has_its_leaver_in_two_groups() {
    let sim = ScimSim::start().await.unwrap();
    let seed = sim.seed_demo();
    assert_eq!(
        sim.find_user(&seed.leaver_email),
        Some(seed.leaver_id.clone())
    );
    let mut groups = sim.user_groups(&seed.leaver_id);
    groups.sort();
    let mut expected = seed.leaver_groups.clone();
    expected.sort();
    assert_eq!(groups, expected);
    let user = sim.user(&seed.leaver_id).unwrap();
    assert_eq!(user["groups"].as_array().unwrap().len(), 2);
    assert_eq!(sim.user_active(&seed.reclaim_id), Some(true));
}

/// A group holding users with the RFC examples' ids, elided ones included.
fn seed_rfc_group(sim: &ScimSim) -> String {
    let ids = [
        "2819c223-7f76-...413861904646",
        "2819c223...919d-413861904646",
        "2819c223-7f76-453a-919d-413861904646",
        "902c246b-6245-4190-8e05-00816be7344a",
    ];
    for (i, id) in ids.iter().enumerate() {
        sim.add_user(ScimUser::new(&format!("user{i}@example.com")).with_id(id));
    }
    for (i, id) in ["08e1d05d...473d93df9210", "2819c223...413861904646"]
        .iter()
        .enumerate()
    {
        sim.add_user(ScimUser::new(&format!("other{i}@example.com")).with_id(id));
    }
    sim.add_group(ScimGroup::new("Tour Guides", &ids).with_id("acbf3ae7-8463-...-9b4da3f908ce"))
}

#[tokio::test]
async fn every_rfc_patch_example_applies() {
    let provider = Provider::start(ScimOptions::default()).await;
    let group = seed_rfc_group(&provider.sim);
    let path = format!("/Groups/{group}");
    let members = |sim: &ScimSim| {
        sim.group_members(&group)
            .into_iter()
            .collect::<BTreeSet<_>>()
    };

    let remove = fixture("rfc7644-3.5.2.2-remove-member.json");
    let (status, body) = provider.json(Method::PATCH, &path, Some(&remove)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!members(&provider.sim).contains("2819c223-7f76-...413861904646"));
    assert_eq!(members(&provider.sim).len(), 3);
    // The same removal again: already done, still a success.
    let (status, _) = provider.json(Method::PATCH, &path, Some(&remove)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(members(&provider.sim).len(), 3);

    let remove_add = fixture("rfc7644-3.5.2.2-remove-and-add-member.json");
    let (status, body) = provider.json(Method::PATCH, &path, Some(&remove_add)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let now = members(&provider.sim);
    assert!(
        !now.contains("2819c223...919d-413861904646") && now.contains("08e1d05d...473d93df9210")
    );

    let replace = fixture("rfc7644-3.5.2.3-replace-members.json");
    let (status, body) = provider.json(Method::PATCH, &path, Some(&replace)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected: BTreeSet<String> = ["2819c223...413861904646", "08e1d05d...473d93df9210"]
        .map(String::from)
        .into();
    assert_eq!(members(&provider.sim), expected);

    let add = fixture("rfc7644-3.5.2.1-add-member.json");
    let (status, _) = provider.json(Method::PATCH, &path, Some(&add)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(members(&provider.sim).contains("2819c223-7f76-453a-919d-413861904646"));
    assert_eq!(
        provider
            .sim
            .user_groups("2819c223-7f76-453a-919d-413861904646"),
        vec![group.clone()]
    );

    let user = "2819c223-7f76-453a-919d-413861904646";
    let deactivate = fixture("patch-replace-active.json");
    let (status, body) = provider
        .json(Method::PATCH, &format!("/Users/{user}"), Some(&deactivate))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["active"], false);
    assert_eq!(provider.sim.user_active(user), Some(false));
}

/// A request (path, method, body) and the status and `scimType` it must get.
type ErrorCase = (
    &'static str,
    Method,
    Option<Value>,
    u16,
    Option<&'static str>,
);

#[tokio::test]
async fn errors_have_the_rfc_shape() {
    let example = fixture("rfc7644-3.12-error-not-found.json");
    let provider = Provider::start(ScimOptions::default()).await;
    let response = provider
        .call(
            Method::GET,
            "/Users/2819c223-7f76-453a-919d-413861904646",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["content-type"], "application/scim+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(keys(&body), keys(&example));
    assert_eq!(body["schemas"], json!([ERROR_SCHEMA]));
    assert_eq!(body["status"], "404");

    let cases: [ErrorCase; 5] = [
        (
            "/Users?filter=userName%20eq",
            Method::GET,
            None,
            400,
            Some("invalidFilter"),
        ),
        (
            "/Users?filter=userName%20eq%20%22x",
            Method::GET,
            None,
            400,
            Some("invalidFilter"),
        ),
        (
            "/Users",
            Method::POST,
            Some(json!({"schemas": [], "displayName": "no userName"})),
            400,
            Some("invalidValue"),
        ),
        ("/Groups/nope", Method::DELETE, None, 404, None),
        (
            "/Users/nope",
            Method::PATCH,
            Some(fixture("patch-replace-active.json")),
            404,
            None,
        ),
    ];
    for (path, method, body, status, scim_type) in cases {
        let (got, error) = provider.json(method.clone(), path, body.as_ref()).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {error}");
        assert_eq!(error["status"], status.to_string());
        assert_eq!(error["scimType"].as_str(), scim_type, "{method} {path}");
    }
}

#[tokio::test]
async fn filter_values_are_json_strings_that_match_only_their_owner() {
    let provider = Provider::start(ScimOptions::default()).await;
    for (user, external_id) in [
        ("quote@x.io", r#"7"01"#),
        ("backslash@x.io", r"7\01"),
        ("either@x.io", "a or b"),
        ("a@x.io", "a"),
        ("b@x.io", "b"),
        ("upper@x.io", "AB-1"),
    ] {
        provider
            .sim
            .add_user(ScimUser::new(user).with_external_id(external_id));
    }
    provider
        .sim
        .add_user(ScimUser::new("BJensen@Example.com").with_emails(&["babs@jensen.org"]));
    let only = |name: &str| BTreeSet::from([name.to_string()]);
    assert_eq!(
        provider.find(r#"externalId eq "7\"01""#).await,
        only("quote@x.io")
    );
    assert_eq!(
        provider.find(r#"externalId eq "7\\01""#).await,
        only("backslash@x.io")
    );
    assert_eq!(
        provider.find(r#"externalId eq "a or b""#).await,
        only("either@x.io")
    );
    assert_eq!(
        provider
            .find(r#"externalId eq "a" or externalId eq "b""#)
            .await
            .len(),
        2
    );
    // externalId is case-exact, userName and emails are not (RFC 7643).
    assert!(provider.find(r#"externalId eq "ab-1""#).await.is_empty());
    assert_eq!(
        provider.find(r#"userName eq "bjensen@example.com""#).await,
        only("BJensen@Example.com")
    );
    assert_eq!(
        provider.find(r#"emails[value eq "BABS@jensen.org"]"#).await,
        only("BJensen@Example.com")
    );
    assert_eq!(
        provider
            .find(r#"USERNAME sw "bjensen" and not (active eq false)"#)
            .await
            .len(),
        1
    );

    // The log keeps the query as sent (encoded) and decodes it as the provider read it.
    let sent = r#"externalId eq "7\\01""#;
    let calls = provider.sim.calls();
    let call = calls
        .iter()
        .find(|c| c.query_param("filter").as_deref() == Some(sent))
        .unwrap();
    assert_eq!(call.query, "filter=externalId+eq+%227%5C%5C01%22");
    assert_eq!(call.path, "/Users");
}

#[tokio::test]
async fn etags_guard_writes_and_a_lost_race_is_recoverable() {
    let provider = Provider::start(ScimOptions::default().with_etags()).await;
    let id = provider.sim.add_user(ScimUser::new("leaver@x.io"));
    let path = format!("/Users/{id}");
    let read = provider.call(Method::GET, &path, None).await;
    let etag = read.headers()["etag"].to_str().unwrap().to_string();
    let deactivate = fixture("patch-replace-active.json");
    let send = |if_match: String| {
        let request = provider
            .http
            .patch(format!("{}{path}", provider.sim.base_url()))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .header("If-Match", if_match)
            .body(deactivate.to_string());
        async move { request.send().await.unwrap() }
    };
    assert_eq!(
        send("W/\"999\"".to_string()).await.status(),
        StatusCode::PRECONDITION_FAILED
    );
    provider.sim.race_next_writes(1);
    assert_eq!(
        send(etag.clone()).await.status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(provider.sim.user_active(&id), Some(true));
    let fresh = provider.call(Method::GET, &path, None).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(fresh, etag);
    let response = send(fresh.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(response.headers()["etag"].to_str().unwrap(), fresh);
    assert_eq!(provider.sim.user_active(&id), Some(false));
    let calls = provider.sim.calls();
    assert_eq!(
        calls.last().unwrap().if_match.as_deref(),
        Some(fresh.as_str())
    );
    assert_eq!(
        calls.last().unwrap().content_type.as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn a_provider_without_patch_takes_a_put_of_the_whole_user() {
    let provider = Provider::start(ScimOptions::default().without_patch()).await;
    let id = provider
        .sim
        .add_user(ScimUser::new("leaver@x.io").with_name("Lee", "Ver"));
    let path = format!("/Users/{id}");
    let (status, error) = provider
        .json(
            Method::PATCH,
            &path,
            Some(&fixture("patch-replace-active.json")),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(error["status"], "501");
    let (_, mut user) = provider.json(Method::GET, &path, None).await;
    user["active"] = json!(false);
    let (status, put) = provider.json(Method::PUT, &path, Some(&user)).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["active"], false);
    assert_eq!(put["name"]["givenName"], "Lee");
}

#[tokio::test]
async fn providers_that_offer_less_say_so_or_return_everything() {
    let provider =
        Provider::start(ScimOptions::default().members_filter(MembersFilter::Rejected)).await;
    let a = provider.sim.add_user(ScimUser::new("a@x.io"));
    let b = provider.sim.add_user(ScimUser::new("b@x.io"));
    provider.sim.add_group(ScimGroup::new("A", &[&a]));
    provider.sim.add_group(ScimGroup::new("B", &[&b]));
    let by_member = format!("/Groups?filter=members%5Bvalue%20eq%20%22{a}%22%5D");
    let (status, error) = provider.json(Method::GET, &by_member, None).await;
    assert_eq!(
        (status, error["scimType"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalidFilter"))
    );

    provider
        .sim
        .set_options(ScimOptions::default().members_filter(MembersFilter::Ignored));
    let (_, list) = provider.json(Method::GET, &by_member, None).await;
    assert_eq!(list["totalResults"], 2);

    provider.sim.set_options(ScimOptions::default());
    let (_, list) = provider.json(Method::GET, &by_member, None).await;
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["displayName"], "A");

    provider
        .sim
        .set_options(ScimOptions::default().without_users());
    let (_, types) = provider.json(Method::GET, "/ResourceTypes", None).await;
    let names: Vec<&str> = types["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Group"]);
    let (status, error) = provider.json(Method::GET, "/Users", None).await;
    assert_eq!(
        (status, error["status"].as_str()),
        (StatusCode::NOT_FOUND, Some("404"))
    );

    provider
        .sim
        .set_options(ScimOptions::default().without_filter());
    let (status, error) = provider
        .json(
            Method::GET,
            "/Users?filter=userName%20eq%20%22a%40x.io%22",
            None,
        )
        .await;
    assert_eq!(
        (status, error["scimType"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalidFilter"))
    );
}

#[tokio::test]
async fn tokens_permissions_rate_limits_and_media_types_are_enforced() {
    let provider = Provider::start(ScimOptions::default()).await;
    provider.sim.set_groups_forbidden(true);
    assert_eq!(
        provider.call(Method::GET, "/Groups", None).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        provider.call(Method::GET, "/Users", None).await.status(),
        StatusCode::OK
    );
    provider.sim.set_groups_forbidden(false);

    let patch = json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let id = provider.sim.add_user(ScimUser::new("a@x.io"));
    let as_text = provider
        .http
        .patch(format!("{}/Users/{id}", provider.sim.base_url()))
        .bearer_auth(TOKEN)
        .header("Content-Type", "text/plain")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(as_text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(provider.sim.user_active(&id), Some(true));

    provider.sim.set_rate_limit(Some(1));
    assert_eq!(
        provider.call(Method::GET, "/Users", None).await.status(),
        StatusCode::OK
    );
    let limited = provider.call(Method::GET, "/Users", None).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    provider.sim.set_rate_limit(None);

    provider.sim.revoke_token(TOKEN);
    let revoked = provider
        .call(Method::GET, "/ServiceProviderConfig", None)
        .await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
    assert!(revoked.headers().contains_key("www-authenticate"));
    let body: Value = revoked.json().await.unwrap();
    assert_eq!(body["status"], "401");
    assert!(provider.sim.calls().iter().all(|c| c.authorization_present));
}
