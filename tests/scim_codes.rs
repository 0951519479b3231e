//! What each SCIM provider condition turns into: the `-A` code of `offboard check` (the
//! binary), the `-B` code of a run (RabbitMQ, PostgreSQL, the SCIM simulator), and the
//! providers that differ (no `groups` on users, Groups that refuse or ignore a `members`
//! filter, a provider that ignores `startIndex`), and rechecks after a deactivation.

mod scim_support;
mod support;

use offboard_simulators::scim::{Fault, FaultKind, MembersFilter, ScimOptions, ScimSim};
use scim_support::*;
use serde_json::json;
use support::{drop_database, fresh_database, Db};

/// A check case: what it is, the provider, what is done to it, the code expected.
type CheckCase = (&'static str, ScimOptions, fn(&ScimSim), &'static str);

/// `offboard check` against a provider set up by `setup`: (exit code, output).
async fn check(options: ScimOptions, setup: impl Fn(&ScimSim)) -> (i32, String) {
    let p = provider(options).await;
    setup(&p.sim);
    let (url, _db) = fresh_database(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &url, &p.sim.base_url());
    let (code, out, err) = offboard(&config, &["check", "scim"], SCIM_TOKEN).await;
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_reports_the_a_code_of_each_condition() {
    let cases: [CheckCase; 5] = [
        (
            "no filtering",
            ScimOptions::default().without_filter(),
            |_| {},
            "SCIM-103-A",
        ),
        (
            "no Users resource",
            ScimOptions::default().without_users(),
            |_| {},
            "SCIM-103-A",
        ),
        (
            "Users forbidden",
            ScimOptions::default(),
            |s| s.set_users_forbidden(true),
            "SCIM-101-A",
        ),
        (
            "Groups forbidden",
            ScimOptions::default(),
            |s| s.set_groups_forbidden(true),
            "SCIM-102-A",
        ),
        (
            "revoked token",
            ScimOptions::default(),
            |s| s.revoke_token(SCIM_TOKEN),
            "SCIM-100-A",
        ),
    ];
    for (what, options, setup, expected) in cases {
        let (code, out) = check(options, setup).await;
        assert_eq!(code, 3, "{what}: {out}");
        assert!(
            out.contains(expected),
            "{what}: expected {expected} in {out}"
        );
    }
    let (code, out) = check(ScimOptions::default(), |_| {}).await;
    assert_eq!(code, 0, "{out}");
}

/// A fault on every matching request (not only the first).
fn always(method: &str, path: &str, kind: FaultKind) -> Fault {
    let mut fault = Fault::new(path, kind).method(method);
    fault.times = u32::MAX;
    fault
}

fn error(status: u16) -> FaultKind {
    FaultKind::Error {
        status,
        retry_after_secs: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_fails_with_the_b_code_of_each_condition_and_writes_nothing_it_should_not() {
    let page = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 5, "itemsPerPage": 1, "startIndex": 1,
        "Resources": [{"id": "u-1", "userName": "someone@example.com"}]
    });
    let same_page = FaultKind::Reply {
        status: 200,
        content_type: "application/scim+json".into(),
        body: page.to_string(),
    };
    let html = FaultKind::Reply {
        status: 200,
        content_type: "text/html".into(),
        body: "<html>sign in</html>".into(),
    };
    let redirect = FaultKind::Reply {
        status: 307,
        content_type: "text/plain".into(),
        body: String::new(),
    };
    // (what, provider, connection settings, faults, expected code)
    let cases: Vec<(&str, ScimOptions, &str, Vec<Fault>, &str)> = vec![
        (
            "Users forbidden",
            ScimOptions::default(),
            "",
            vec![always("GET", "/Users", error(403))],
            "SCIM-101-B",
        ),
        (
            "Groups forbidden",
            ScimOptions::default(),
            "",
            vec![always("PATCH", "/Groups", error(403))],
            "SCIM-102-B",
        ),
        (
            "no filtering",
            ScimOptions::default().without_filter(),
            "",
            vec![],
            "SCIM-103-B",
        ),
        (
            "PUT refused without PATCH",
            ScimOptions::default().without_patch(),
            "remove_from_groups = false",
            vec![always("PUT", "/Users", error(501))],
            "SCIM-103-B",
        ),
        (
            "protected",
            ScimOptions::default(),
            "protected = [\"ADA@*\"]",
            vec![],
            "SCIM-112-B",
        ),
        (
            "change refused",
            ScimOptions::default(),
            "remove_from_groups = false",
            vec![always("PATCH", "/Users", error(409))],
            "SCIM-115-B",
        ),
        (
            "the same page again",
            ScimOptions::default(),
            "",
            vec![always("GET", "/Users", same_page)],
            "SCIM-199-B",
        ),
        (
            "not SCIM JSON",
            ScimOptions::default(),
            "",
            vec![always("GET", "/Users", html)],
            "SCIM-199-B",
        ),
        (
            "a redirect (never followed)",
            ScimOptions::default(),
            "",
            vec![always("GET", "/Users", redirect)],
            "SCIM-199-B",
        ),
    ];
    for (i, (what, options, settings, faults, expected)) in cases.into_iter().enumerate() {
        let p = provider(options).await;
        for fault in faults {
            p.sim.inject(fault);
        }
        let id = format!("ev-scim-code-{i}");
        let event = scim_event(&id, OFFBOARDING, LEAVER, None, None);
        let (wf, url) = one(&p, settings, event, OFFBOARDING, &id).await;
        assert_eq!(
            (wf.state.as_str(), wf.error_code.as_deref()),
            ("failed", Some(expected)),
            "{what}: {:?}",
            wf.error_message
        );
        // Nothing reached the provider's state: the leaver is active and in its groups.
        assert_eq!(p.sim.user_active(&p.leaver), Some(true), "{what}");
        assert_eq!(p.sim.user_groups(&p.leaver).len(), 2, "{what}");
        let accepted: Vec<String> = p
            .sim
            .calls()
            .into_iter()
            .filter(|c| c.method != "GET" && c.status < 300)
            .map(|c| format!("{} {}", c.method, c.path))
            .collect();
        assert!(accepted.is_empty(), "{what}: {accepted:?}");
        drop_database(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memberships_are_found_without_a_groups_attribute_whatever_the_members_filter_does() {
    for how in [
        MembersFilter::Supported,
        MembersFilter::Rejected,
        MembersFilter::Ignored,
    ] {
        let options = ScimOptions::default()
            .without_user_groups()
            .members_filter(how);
        let p = provider(options).await;
        let outsider = p.sim.add_user(offboard_simulators::scim::ScimUser::new(
            "linus@example.com",
        ));
        let other = p.sim.add_group(offboard_simulators::scim::ScimGroup::new(
            "Design",
            &[&outsider],
        ));
        let id = format!("ev-scim-groups-{how:?}");
        let event = scim_event(&id, OFFBOARDING, LEAVER, None, None);
        let (wf, url) = one(&p, "", event, OFFBOARDING, &id).await;
        assert_eq!(
            wf.outcome.as_deref(),
            Some("deactivated"),
            "{how:?}: {:?}",
            wf.error_message
        );
        assert!(p.sim.user_groups(&p.leaver).is_empty(), "{how:?}");
        assert_eq!(
            p.sim.group_members(&other),
            std::slice::from_ref(&outsider),
            "{how:?}"
        );
        let patched: Vec<String> = writes(&p.sim.calls())
            .into_iter()
            .filter(|w| w.starts_with("PATCH /Groups/"))
            .collect();
        let expected: Vec<String> = p
            .groups
            .iter()
            .map(|g| format!("PATCH /Groups/{g}"))
            .collect();
        assert_eq!(patched, expected, "{how:?}");
        drop_database(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_ignoring_start_index_stops_with_scim_199_b_instead_of_paging_forever() {
    // A small page so the lookup needs a second one: 150 users share the leaver's domain
    // in their emails, and the connection matches on email.
    let p = provider(
        ScimOptions::default()
            .ignoring_start_index()
            .max_results(50),
    )
    .await;
    for n in 0..150 {
        p.sim.add_user(
            offboard_simulators::scim::ScimUser::new(&format!("user{n}")).with_emails(&[LEAVER]),
        );
    }
    let event = scim_event("ev-scim-loop", OFFBOARDING, LEAVER, None, None);
    let (wf, url) = one(&p, "match = \"email\"", event, OFFBOARDING, "ev-scim-loop").await;
    assert_eq!(
        wf.error_code.as_deref(),
        Some("SCIM-199-B"),
        "{:?}",
        wf.error_message
    );
    assert!(wf.error_message.unwrap_or_default().contains("startIndex"));
    let lookups = p.sim.calls().iter().filter(|c| c.path == "/Users").count();
    assert_eq!(
        lookups, 2,
        "the second page, the same as the first, ends the lookup"
    );
    assert!(writes(&p.sim.calls()).is_empty());
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recheck_reports_a_reactivated_user_as_scim_113_b_and_an_inactive_one_as_gone() {
    let p = provider(ScimOptions::default()).await;
    let workflows = support::fast_workflows(&["scim-offboard.toml", "scim-license-reclaim.toml"]);
    let path = workflows.path().join("scim-offboard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = support::edit(
        &text,
        r#"recheck_after = ["24h", "30d"]"#,
        r#"recheck_after = ["2s"]"#,
    );
    std::fs::write(&path, text).unwrap();
    let (url, _db) = fresh_database(Db::Postgres).await;
    let conn = scim_connection(&p.sim.base_url(), "");
    let engine = scim_engine_in(&url, conn, SCIM_TOKEN, Some(workflows.path())).await;
    let service = support::serve(&engine);
    for (id, email) in [("ev-back", LEAVER), ("ev-gone", COLLEAGUE)] {
        run(
            &engine,
            scim_event(id, OFFBOARDING, email, None, None),
            OFFBOARDING,
            id,
        )
        .await;
    }
    // The identity provider re-activates the leaver behind offboard's back.
    p.sim.set_user_active(&p.leaver, true);
    p.sim.clear_calls();
    let store = engine.store();
    let found = |id: &'static str| async move {
        support::eventually(30, &format!("the recheck of {id}"), || async {
            let row = store.by_event(id).await.unwrap().remove(0);
            let loaded = store.load(&row.id).await.unwrap().unwrap();
            (!loaded.state.rechecks.is_empty()).then_some(loaded)
        })
        .await
    };
    let back = found("ev-back").await;
    let gone = found("ev-gone").await;
    service.stop().await;
    let finding = &back.state.rechecks[0].finding;
    assert_eq!(
        (finding.result.as_str(), finding.code.map(|c| c.as_str())),
        ("reactivated", Some("SCIM-113-B"))
    );
    assert_eq!(finding.scim_id.as_deref(), Some(p.leaver.as_str()));
    let clean = &gone.state.rechecks[0].finding;
    assert_eq!((clean.result.as_str(), clean.code), ("still_gone", None));
    for loaded in [&back, &gone] {
        assert_eq!(loaded.row.outcome.as_deref(), Some("deactivated"));
        let checked = offboard::evidence::replay(store, &loaded.row.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(checked.report.problem, None);
    }
    assert!(writes(&p.sim.calls()).is_empty(), "a recheck wrote");
    drop_database(&url).await;
}
