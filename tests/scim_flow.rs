//! SCIM workflows end to end: real RabbitMQ, a real PostgreSQL database, the SCIM
//! simulator (`offboard_simulators::scim`) standing in for the provider, and the
//! `offboard` binary for `check`, `show`, `replay`, `plan` and `explain`. Each test seeds
//! its own provider and checks, from the simulator's own request log, what reached it.

mod scim_support;
mod support;

use std::time::{Duration, Instant};

use offboard_simulators::scim::{Fault, FaultKind, ScimCall, ScimGroup, ScimOptions, ScimUser};
use scim_support::*;
use serde_json::{json, Value};
use support::{drop_database, fresh_database, serve, trail, writes_by_read_only_steps, Db};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offboarding_deactivates_and_empties_groups_reclaim_keeps_them_and_trails_verify() {
    let p = provider(ScimOptions::default()).await;
    let third = p.sim.add_user(ScimUser::new("linus@example.com"));
    p.sim.add_group(ScimGroup::new("Design", &[&third]));
    let (url, _dir) = fresh_database(Db::Postgres).await;
    let engine = scim_engine(&url, scim_connection(&p.sim.base_url(), ""), SCIM_TOKEN).await;
    let service = serve(&engine);

    // Offboarding, with a recipient SCIM cannot hand anything over to.
    let off = run(
        &engine,
        scim_event("ev-scim-off", OFFBOARDING, LEAVER, None, Some(COLLEAGUE)),
        OFFBOARDING,
        "ev-scim-off",
    )
    .await;
    assert_eq!(
        (off.state.as_str(), off.outcome.as_deref()),
        ("completed", Some("deactivated")),
        "{:?}",
        off.error_message
    );
    assert_eq!(p.sim.user_active(&p.leaver), Some(false));
    assert!(p.sim.user_groups(&p.leaver).is_empty());
    for g in &p.groups {
        assert_eq!(
            p.sim.group_members(g),
            std::slice::from_ref(&p.colleague),
            "the colleague stays in {g}"
        );
    }
    assert_eq!(p.sim.user_active(&p.colleague), Some(true));
    let calls = p.sim.calls();
    assert_eq!(
        writes(&calls),
        [
            format!("PATCH /Groups/{}", p.groups[0]),
            format!("PATCH /Groups/{}", p.groups[1]),
            format!("PATCH /Users/{}", p.leaver),
        ]
    );
    let patches: Vec<&ScimCall> = calls.iter().filter(|c| c.method == "PATCH").collect();
    let member = format!("members[value eq \"{}\"]", p.leaver);
    assert_eq!(
        patches[0].body.as_ref().unwrap()["Operations"],
        json!([{"op": "remove", "path": member}])
    );
    assert_eq!(
        patches[2].body.as_ref().unwrap()["Operations"],
        json!([{"op": "replace", "path": "active", "value": false}])
    );
    assert!(patches
        .iter()
        .all(|c| c.content_type.as_deref() == Some("application/scim+json")));
    assert!(calls.iter().all(|c| c
        .accept
        .as_deref()
        .is_some_and(|a| a.contains("application/scim+json"))));
    let lookup = calls
        .iter()
        .find(|c| c.path == "/Users" && c.query_param("filter").is_some())
        .unwrap();
    assert_eq!(
        lookup.query_param("filter").unwrap(),
        format!("userName eq \"{LEAVER}\"")
    );
    assert!(writes_by_read_only_steps(engine.store()).await.is_empty());

    // The trail holds the account before, and says nothing was transferred.
    let history: String = trail(engine.store(), &off.id)
        .await
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert!(
        history.contains("nothing is transferred to grace@example.com in this app"),
        "{history}"
    );
    assert!(history.contains("entitlements_before") && history.contains("Paid seats"));

    // Licence reclaim of the colleague: deactivated, groups kept.
    p.sim.clear_calls();
    let reclaim = run(
        &engine,
        scim_event("ev-scim-reclaim", RECLAIM, COLLEAGUE, None, None),
        RECLAIM,
        "ev-scim-reclaim",
    )
    .await;
    assert_eq!(
        (reclaim.state.as_str(), reclaim.outcome.as_deref()),
        ("completed", Some("downgraded"))
    );
    assert_eq!(p.sim.user_active(&p.colleague), Some(false));
    assert_eq!(p.sim.user_groups(&p.colleague).len(), 2);
    assert_eq!(
        writes(&p.sim.calls()),
        [format!("PATCH /Users/{}", p.colleague)]
    );

    // Someone with no account: absent, nothing written.
    p.sim.clear_calls();
    let absent = run(
        &engine,
        scim_event(
            "ev-scim-absent",
            OFFBOARDING,
            "nobody@example.com",
            None,
            None,
        ),
        OFFBOARDING,
        "ev-scim-absent",
    )
    .await;
    assert_eq!(absent.outcome.as_deref(), Some("absent"));
    assert!(writes(&p.sim.calls()).is_empty());
    service.stop().await;

    // The binary: the trails replay and verify; show --json says `deactivated`.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &url, &p.sim.base_url());
    for wf in [&off, &reclaim, &absent] {
        let (code, out, err) = offboard(&config, &["replay", &wf.id], SCIM_TOKEN).await;
        assert_eq!(code, 0, "replay {}: {out}{err}", wf.id);
    }
    let (code, out, _) = offboard(&config, &["show", &off.id, "--json"], SCIM_TOKEN).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (shown["app"].as_str(), shown["outcome"].as_str()),
        (Some("scim"), Some("deactivated"))
    );
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_connection_empties_the_groups_then_deletes_the_user() {
    let p = provider(ScimOptions::default()).await;
    let event = scim_event("ev-scim-del", OFFBOARDING, LEAVER, None, None);
    let (wf, url) = one(
        &p,
        "offboard = \"delete\"",
        event,
        OFFBOARDING,
        "ev-scim-del",
    )
    .await;
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("removed")),
        "{:?}",
        wf.error_message
    );
    assert_eq!(p.sim.user(&p.leaver), None);
    assert_eq!(
        writes(&p.sim.calls()),
        [
            format!("PATCH /Groups/{}", p.groups[0]),
            format!("PATCH /Groups/{}", p.groups[1]),
            format!("DELETE /Users/{}", p.leaver),
        ]
    );
    for g in &p.groups {
        assert_eq!(p.sim.group_members(g), std::slice::from_ref(&p.colleague));
    }
    // The trail, whose last step chose `removed` over the definition's `deactivated`,
    // replays to the stored state.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &url, &p.sim.base_url());
    let (code, out, err) = offboard(&config, &["replay", &wf.id], SCIM_TOKEN).await;
    assert_eq!(code, 0, "{out}{err}");
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_matching_accounts_stop_with_scim_114_b_and_nothing_written() {
    let p = provider(ScimOptions::default()).await;
    // Two accounts carry the leaver's address among their emails.
    p.sim
        .add_user(ScimUser::new("ada.lovelace").with_emails(&["ada.l@example.com", LEAVER]));
    let event = scim_event("ev-scim-two", OFFBOARDING, LEAVER, None, None);
    let (wf, url) = one(&p, "match = \"email\"", event, OFFBOARDING, "ev-scim-two").await;
    assert_eq!(
        (wf.state.as_str(), wf.error_code.as_deref()),
        ("failed", Some("SCIM-114-B"))
    );
    assert!(
        writes(&p.sim.calls()).is_empty(),
        "{:?}",
        writes(&p.sim.calls())
    );
    let lookup = p
        .sim
        .calls()
        .into_iter()
        .find(|c| c.path == "/Users")
        .unwrap();
    assert_eq!(
        lookup.query_param("filter").unwrap(),
        format!("emails[value eq \"{LEAVER}\"]")
    );
    assert!(p
        .sim
        .user_ids()
        .iter()
        .all(|id| p.sim.user_active(id) == Some(true)));
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_matched_value_with_quotes_backslashes_and_or_reaches_the_provider_escaped() {
    let p = provider(ScimOptions::default()).await;
    let tricky = r#"E"9\ or userName pr or ""#;
    let target = p
        .sim
        .add_user(ScimUser::new("odd@example.com").with_external_id(tricky));
    // Someone whose externalId is the tricky value's first part.
    let bystander = p
        .sim
        .add_user(ScimUser::new("bystander@example.com").with_external_id("E"));
    let event = scim_event(
        "ev-scim-esc",
        OFFBOARDING,
        "odd@example.com",
        Some(tricky),
        None,
    );
    let (wf, url) = one(
        &p,
        "match = \"externalId\"",
        event,
        OFFBOARDING,
        "ev-scim-esc",
    )
    .await;
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("deactivated")),
        "{:?}",
        wf.error_message
    );
    let lookup = p
        .sim
        .calls()
        .into_iter()
        .find(|c| c.path == "/Users")
        .unwrap();
    assert_eq!(
        lookup.query_param("filter").unwrap(),
        r#"externalId eq "E\"9\\ or userName pr or \"""#
    );
    assert_eq!(writes(&p.sim.calls()), [format!("PATCH /Users/{target}")]);
    for other in [&p.leaver, &p.colleague, &bystander] {
        assert_eq!(p.sim.user_active(other), Some(true), "{other} untouched");
    }
    drop_database(&url).await;

    // The same connection with an event that has no employee_id: SCIM-116-B, no call.
    p.sim.clear_calls();
    let event = scim_event("ev-scim-noid", OFFBOARDING, LEAVER, None, None);
    let (wf, url) = one(
        &p,
        "match = \"externalId\"",
        event,
        OFFBOARDING,
        "ev-scim-noid",
    )
    .await;
    assert_eq!(wf.error_code.as_deref(), Some("SCIM-116-B"));
    assert!(p.sim.calls().is_empty());
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_without_patch_gets_puts_of_what_was_just_read() {
    let p = provider(ScimOptions::default().without_patch()).await;
    let event = scim_event("ev-scim-put", OFFBOARDING, LEAVER, None, None);
    let (wf, url) = one(&p, "", event, OFFBOARDING, "ev-scim-put").await;
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("deactivated")),
        "{:?}",
        wf.error_message
    );
    assert_deactivated_by_puts(&p);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_etags_every_write_sends_if_match_and_a_412_is_read_again_and_retried_once() {
    let p = provider(ScimOptions::default().with_etags()).await;
    p.sim.race_next_writes(1);
    let event = scim_event("ev-scim-etag", OFFBOARDING, LEAVER, None, None);
    let (wf, url) = one(&p, "", event, OFFBOARDING, "ev-scim-etag").await;
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("deactivated")),
        "{:?}",
        wf.error_message
    );
    assert_if_match_and_one_race_lost(&p);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_etags_a_delete_sends_if_match_and_a_412_is_read_again_and_retried_once() {
    let p = provider(ScimOptions::default().with_etags()).await;
    p.sim.race_next_writes(1);
    let event = scim_event("ev-scim-etag-del", OFFBOARDING, LEAVER, None, None);
    let settings = "offboard = \"delete\"\nremove_from_groups = false";
    let (wf, url) = one(&p, settings, event, OFFBOARDING, "ev-scim-etag-del").await;
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("removed")),
        "{:?}",
        wf.error_message
    );
    let calls = p.sim.calls();
    let deletes: Vec<&ScimCall> = calls.iter().filter(|c| c.method == "DELETE").collect();
    assert_eq!(
        deletes.iter().map(|c| c.status).collect::<Vec<_>>(),
        [412, 204],
        "{deletes:?}"
    );
    assert!(
        deletes
            .iter()
            .all(|c| c.if_match.as_deref().is_some_and(|v| v.starts_with("W/\""))),
        "{deletes:?}"
    );
    // The delete that lost the race was sent again after a fresh read of the user.
    let lost = calls.iter().position(|c| c.status == 412).unwrap();
    assert_eq!(calls[lost + 1].method, "GET");
    assert_eq!(calls[lost + 2].method, "DELETE");
    assert_eq!(p.sim.user(&p.leaver), None);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_is_scim_100_a_at_check_and_scim_100_b_in_a_run() {
    let p = provider(ScimOptions::default()).await;
    let (url, _dir) = fresh_database(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &url, &p.sim.base_url());
    let (code, out, err) = offboard(&config, &["check"], SCIM_TOKEN).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"), "{out}");
    p.sim.revoke_token(SCIM_TOKEN);
    let (code, out, err) = offboard(&config, &["check"], SCIM_TOKEN).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(format!("{out}{err}").contains("SCIM-100-A"), "{out}{err}");
    assert!(!format!("{out}{err}").contains(SCIM_TOKEN));
    let (code, out, _) = offboard(&config, &["explain", "SCIM-114-B"], SCIM_TOKEN).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("SCIM-114-B: "), "{out}");

    let engine = scim_engine(&url, scim_connection(&p.sim.base_url(), ""), SCIM_TOKEN).await;
    let service = serve(&engine);
    let wf = run(
        &engine,
        scim_event("ev-scim-401", OFFBOARDING, LEAVER, None, None),
        OFFBOARDING,
        "ev-scim-401",
    )
    .await;
    service.stop().await;
    assert_eq!(
        (wf.state.as_str(), wf.error_code.as_deref()),
        ("failed", Some("SCIM-100-B"))
    );
    assert!(!wf.error_message.unwrap_or_default().contains(SCIM_TOKEN));
    assert_eq!(p.sim.user_active(&p.leaver), Some(true));
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_provider_is_paced_within_its_budget_and_its_retry_after_honoured() {
    let p = provider(ScimOptions::default()).await;
    // The provider allows 120 requests a minute, and the connection is set to that.
    p.sim.set_rate_limit(Some(120));
    // On top, the first lookup is refused once with 429 and `Retry-After: 1`.
    p.sim.inject(
        Fault::new(
            "/Users",
            FaultKind::Error {
                status: 429,
                retry_after_secs: Some(1),
            },
        )
        .method("GET"),
    );
    let started = Instant::now();
    let event = scim_event("ev-scim-429", OFFBOARDING, LEAVER, None, None);
    let (wf, url) = one(
        &p,
        "requests_per_minute = 120",
        event,
        OFFBOARDING,
        "ev-scim-429",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("deactivated")),
        "{:?}",
        wf.error_message
    );
    let calls = p.sim.calls();
    // Only the injected 429: the pacing kept every other call under the provider's limit.
    assert_eq!(calls.iter().filter(|c| c.status == 429).count(), 1);
    // Calls 500 ms apart at 120 a minute, and the 429's second waited out.
    let floor = Duration::from_millis(500) * (calls.len() as u32 - 2) + Duration::from_secs(1);
    assert!(took >= floor, "{} calls in {took:?}", calls.len());
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_lists_the_writes_of_a_scim_offboarding_and_sends_none() {
    let p = provider(ScimOptions::default()).await;
    let (url, _db) = fresh_database(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &url, &p.sim.base_url());
    let args = [
        "plan",
        "--email",
        LEAVER,
        "--transfer-to",
        COLLEAGUE,
        "--connection",
        "scim",
    ];
    let (code, out, err) = offboard(&config, &args, SCIM_TOKEN).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("would complete: deactivated"), "{out}");
    assert!(
        out.contains("nothing is transferred to grace@example.com in this app"),
        "{out}"
    );
    for write in [
        format!("PATCH /Groups/{}", p.groups[0]),
        format!("PATCH /Groups/{}", p.groups[1]),
        format!("PATCH /Users/{}", p.leaver),
    ] {
        assert!(out.contains(&write), "{write} missing from:\n{out}");
    }
    assert!(writes(&p.sim.calls()).is_empty());
    assert_eq!(p.sim.user_active(&p.leaver), Some(true));
    assert_eq!(p.sim.user_groups(&p.leaver).len(), 2);

    // Matching on externalId: the plan needs the employee id, as the event would.
    let config = config_file_with(
        dir.path(),
        &url,
        &p.sim.base_url(),
        "match = \"externalId\"",
    );
    let base = ["plan", "--email", LEAVER, "--connection", "scim"];
    let (code, out, err) = offboard(&config, &base, SCIM_TOKEN).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("SCIM-116-B"), "{out}");
    let with_id = [&base[..], &["--employee-id", "E1001"]].concat();
    let (code, out, err) = offboard(&config, &with_id, SCIM_TOKEN).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("PATCH /Users/{}", p.leaver)), "{out}");
    assert!(writes(&p.sim.calls()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scim_connections_side_by_side_each_offboard_on_their_own_provider() {
    use offboard::apps::AppClient;
    use offboard::config::{Config, Secret};
    use offboard::runtime::definitions::Registry;
    use offboard::runtime::engine::Engine;
    use offboard::store::Store;

    let slack = provider(ScimOptions::default()).await;
    let github = provider(ScimOptions::default().with_etags()).await;
    let (url, _dir) = fresh_database(Db::Postgres).await;
    let mut config = Config::defaults();
    config.database_url = url.clone();
    config.amqp_url = support::AMQP_URL.into();
    config.amqp = support::amqp_names();
    config.connections.clear();
    let slack_conn = scim_connection(&slack.sim.base_url(), "");
    let github_conn = scim_connection(&github.sim.base_url(), "offboard = \"delete\"");
    config
        .connections
        .insert("slack".into(), slack_conn.clone());
    config
        .connections
        .insert("github".into(), github_conn.clone());
    let store = Store::open(&url)
        .await
        .unwrap()
        .with_audit_key(support::audit_key());
    let engine = Engine::new(store, config, Registry::load(None).unwrap());
    for (name, conn) in [("slack", &slack_conn), ("github", &github_conn)] {
        let client = AppClient::new(conn, Secret::new(SCIM_TOKEN)).unwrap();
        engine.use_client(name, client).await;
    }
    let engine = std::sync::Arc::new(engine);
    let service = serve(&engine);
    // No `connections` in the event: every configured connection runs.
    let event = scim_event("ev-two-apps", OFFBOARDING, LEAVER, None, None);
    support::publish(&engine.config().amqp, OFFBOARDING, &event).await;
    let rows = support::finished(engine.store(), "ev-two-apps", 2, 40).await;
    service.stop().await;
    let mut outcomes: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| (r.connection.clone(), r.outcome.clone()))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("github".to_string(), Some("removed".to_string())),
            ("slack".to_string(), Some("deactivated".to_string())),
        ]
    );
    assert_eq!(slack.sim.user_active(&slack.leaver), Some(false));
    assert_eq!(github.sim.user(&github.leaver), None);
    drop_database(&url).await;
}
