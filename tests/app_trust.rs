//! Trust at the apps' edge (issue 19): a redirect never carries a credential away from
//! the configured origin, the mass-offboarding brake counts what ends an account (a
//! Postman licence reclaim too, a Smartsheet one not), and a person protected by the
//! configuration in force is refused right before a destructive write, however long
//! after `find` it comes.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap, StatusCode};
use offboard::store::{Accepted, Store};
use offboard_simulators::smartsheet::{Fault, FaultKind};
use support::procs::{cli, command, ConfigFile, Procs};
use support::*;

/// What reached the redirect's target: (path, whether it carried `X-Api-Key`, whether it
/// carried `Authorization`).
type Reached = Arc<Mutex<Vec<(String, bool, bool)>>>;

/// A base URL answering every request with a 307 to another port (a query with a token
/// in its `Location`), and what reached that other port.
async fn redirecting_app() -> (String, String, Reached) {
    let reached: Reached = Arc::default();
    let seen = reached.clone();
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}", target.local_addr().unwrap());
    let sink = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        seen.lock().unwrap().push((
            uri.to_string(),
            headers.contains_key("x-api-key"),
            headers.contains_key(header::AUTHORIZATION),
        ));
        async { "{}" }
    });
    tokio::spawn(async move { axum::serve(target, sink).await });
    let to = target_url.clone();
    let redirect = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!("{to}{}?token=redirect-query-secret", uri.path());
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirect).await });
    (url, target_url, reached)
}

/// Writes `offboard.toml` with the Smartsheet connection at `smartsheet_url`, a Postman
/// connection at `postman_url`, and `extra` TOML appended to the Smartsheet table.
fn config_with_postman(
    dir: &Path,
    database_url: &str,
    names: &offboard::config::AmqpNames,
    smartsheet_url: &str,
    postman_url: &str,
) -> PathBuf {
    let path =
        ConfigFile::new(database_url, names, smartsheet_url).write(&dir.join("offboard.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{text}[connections.postman]\napp = \"postman\"\nbase_url = \"{postman_url}\"\n\
             token_env = \"{POSTMAN_TOKEN_ENV}\"\nrequests_per_minute = 600000\ntimeout_secs = 10\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_never_carries_a_key_away_at_check_or_during_runs() {
    let (smartsheet_url, smartsheet_target, smartsheet_reached) = redirecting_app().await;
    let (postman_url, postman_target, postman_reached) = redirecting_app().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_postman(dir.path(), &url, &names, &smartsheet_url, &postman_url);

    // `offboard check`: each connection fails with its -199-B naming the target.
    let out = command(&config)
        .arg("check")
        .env(POSTMAN_TOKEN_ENV, POSTMAN_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
            .to_string()
    };
    let smartsheet = line("smartsheet");
    assert!(smartsheet.contains("SMT-199-B"), "{smartsheet}");
    assert!(
        smartsheet.contains(&format!("a redirect to \"{smartsheet_target}/users/me\"")),
        "{smartsheet}"
    );
    let postman = line("postman");
    assert!(postman.contains("POST-199-B"), "{postman}");
    assert!(
        postman.contains(&format!("a redirect to \"{postman_target}/me\"")),
        "{postman}"
    );
    assert!(!stdout.contains("redirect-query-secret"), "{stdout}");

    // A run: the event makes one workflow per connection; both fail at their first call.
    let mut procs = Procs::new();
    let mut serve = command(&config);
    serve
        .arg("serve")
        .env("RUST_LOG", "info")
        .env(POSTMAN_TOKEN_ENV, POSTMAN_KEY);
    let i = procs.spawn("serve", serve, &dir.path().join("serve.log"));
    procs.wait_logs(&[i], "consuming events", 60).await;
    publish(
        &names,
        "offboarding.requested",
        &event("redirected-1", "offboarding.requested", LEAVER, None),
    )
    .await;
    let store = Store::open(&url).await.unwrap();
    let rows = finished(&store, "redirected-1", 2, 60).await;
    for row in &rows {
        let (code, target) = match row.app.as_str() {
            "smartsheet" => ("SMT-199-B", &smartsheet_target),
            _ => ("POST-199-B", &postman_target),
        };
        let message = row.error_message.clone().unwrap_or_default();
        assert_eq!(
            (row.state.as_str(), row.error_code.as_deref()),
            ("failed", Some(code)),
            "{message}"
        );
        assert!(
            message.contains(&format!("a redirect to \"{target}/")),
            "{message}"
        );
        assert!(!message.contains("redirect-query-secret"), "{message}");
        // Not retried: one attempt of the first step, one call.
        let calls = trail(&store, &row.id)
            .await
            .into_iter()
            .filter(|r| r.kind == "api_call")
            .count();
        assert_eq!(calls, 1, "{}", row.app);
    }
    let log = procs.all[i].log_text();
    assert!(!log.contains(TOKEN) && !log.contains(POSTMAN_KEY));
    assert!(!log.contains("redirect-query-secret"), "{log}");
    // Whatever was asked, at check or during the run, the other port saw nothing.
    assert!(smartsheet_reached.lock().unwrap().is_empty());
    assert!(postman_reached.lock().unwrap().is_empty());
    procs.terminate(i, 30).await;
}

/// An event of `kind` for `email` naming `connections` (all of them when empty).
fn event_for(id: &str, kind: &str, email: &str, connections: &[&str]) -> Vec<u8> {
    let mut data = serde_json::json!({ "person": { "email": email } });
    if !connections.is_empty() {
        data["connections"] = serde_json::json!(connections);
    }
    serde_json::json!({
        "specversion": "1.0", "id": id, "source": "test", "type": kind, "data": data,
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_holds_postman_reclaims_and_lets_smartsheet_reclaims_run() {
    const RECLAIM: &str = "license.reclaim.requested";
    const OFFBOARD: &str = "offboarding.requested";
    for db in [Db::Postgres, Db::Sqlite] {
        let org = org().await;
        let team = postman_team().await;
        let (url, _dir) = fresh_database(db).await;
        let mut config = config(&url, amqp_names(), &org.sim.base_url());
        config
            .connections
            .insert("postman".into(), postman_connection(&team.sim.base_url()));
        config.limits.max_offboardings_per_hour = Some(2);
        let engine = engine(config, TOKEN).await;
        use_postman(&engine, POSTMAN_KEY).await;
        let known = ["smartsheet".to_string(), "postman".to_string()];
        let accept = |id: &str, kind: &str, person: &str, connections: &[&str]| {
            let body = event_for(id, kind, person, connections);
            let engine = engine.clone();
            let request = offboard::domain::event::parse(&body, &known).unwrap();
            async move {
                engine
                    .accept(&request, &String::from_utf8_lossy(&body))
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let new = |accepted: Accepted| match accepted {
            Accepted::New(ids) => ids.len(),
            other => panic!("{db:?}: expected new workflows, got {other:?}"),
        };

        // Smartsheet reclaims keep the account: never counted, never held.
        for i in 0..3 {
            let got = accept(
                &format!("s{i}"),
                RECLAIM,
                &format!("s{i}@example.com"),
                &["smartsheet"],
            )
            .await;
            assert_eq!(new(got), 1);
        }
        // Postman reclaims deactivate: the third is past the limit of 2.
        for i in 0..2 {
            let got = accept(
                &format!("p{i}"),
                RECLAIM,
                &format!("p{i}@example.com"),
                &["postman"],
            )
            .await;
            assert_eq!(new(got), 1);
        }
        let Accepted::Held {
            held,
            running,
            in_last_hour,
        } = accept("p2", RECLAIM, "p2@example.com", &["postman"]).await
        else {
            panic!("{db:?}: the third Postman reclaim was not held");
        };
        assert_eq!((held.len(), running.len(), in_last_hour), (1, 0, 3));
        // A reclaim on both apps: its Postman workflow is held, its Smartsheet one runs.
        let Accepted::Held {
            held: both_held,
            running: both_running,
            in_last_hour,
        } = accept("both", RECLAIM, "both@example.com", &[]).await
        else {
            panic!("{db:?}: the reclaim on both apps was not braked");
        };
        assert_eq!(in_last_hour, 4);
        let store = engine.store();
        let app_of = |id: String| async move {
            let rows = store.by_event("both").await.unwrap();
            rows.into_iter().find(|r| r.id == id).unwrap().app
        };
        assert_eq!(app_of(both_held[0].clone()).await, "postman");
        assert_eq!(app_of(both_running[0].clone()).await, "smartsheet");
        // Past the limit, a Smartsheet reclaim still runs; a Smartsheet offboarding does not.
        let got = accept("s3", RECLAIM, "s3@example.com", &["smartsheet"]).await;
        assert_eq!(new(got), 1);
        let got = accept("o1", OFFBOARD, "o1@example.com", &["smartsheet"]).await;
        assert!(
            matches!(
                got,
                Accepted::Held {
                    in_last_hour: 5,
                    ..
                }
            ),
            "{db:?}: {got:?}"
        );

        let rows = store.list(None).await.unwrap();
        let held_rows: Vec<_> = rows.iter().filter(|r| r.state == "held").collect();
        let mut held_events: Vec<&str> = held_rows.iter().map(|r| r.event_id.as_str()).collect();
        held_events.sort();
        assert_eq!(held_events, ["both", "o1", "p2"], "{db:?}");
        for row in &held_rows {
            let kinds: Vec<String> = trail(store, &row.id)
                .await
                .into_iter()
                .map(|r| r.kind)
                .collect();
            assert_eq!(kinds, ["created", "held"], "{db:?}");
        }
        assert!(rows
            .iter()
            .filter(|r| r.state != "held")
            .all(|r| r.state == "pending"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_protected_while_a_removal_waits_on_its_retry_stops_it_before_the_write() {
    let org = org().await;
    // The removal answers 503 and asks for 61 s: past the per-call retry budget (60 s),
    // so the step waits on its durable timer, with the workflow `retrying`.
    let delete = format!("/users/{}", org.leaver);
    org.sim.inject(
        Fault::new(
            &delete,
            FaultKind::Error {
                status: 503,
                error_code: 4001,
                retry_after_secs: Some(61),
            },
        )
        .method("DELETE")
        .times(u32::MAX),
    );
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let config =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.path().join("offboard.toml"));
    let store = Store::open(&url).await.unwrap();
    let mut procs = Procs::new();
    let first = procs.serve("serve", &config, &dir.path().join("serve-1.log"));
    procs.wait_logs(&[first], "consuming events", 60).await;
    publish(
        &names,
        "offboarding.requested",
        &event(
            "protect-late",
            "offboarding.requested",
            LEAVER,
            Some(RECIPIENT),
        ),
    )
    .await;
    let id = eventually(60, "the removal to wait on its retry", || async {
        let rows = store.by_event("protect-late").await.unwrap();
        rows.first()
            .filter(|r| r.state == "retrying")
            .map(|r| r.id.clone())
    })
    .await;
    let deletes = || {
        org.sim
            .calls()
            .into_iter()
            .filter(|c| c.method == "DELETE")
            .map(|c| c.status)
            .collect::<Vec<u16>>()
    };
    let before = deletes();
    assert!(
        !before.is_empty() && before.iter().all(|s| *s == 503),
        "{before:?}"
    );
    procs.terminate(first, 30).await;

    // The operator protects the person and starts `serve` again with that configuration.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}protected = [\"ADA@example.com\"]\n"),
    )
    .unwrap();
    let second = procs.serve("serve", &config, &dir.path().join("serve-2.log"));
    let rows = finished(&store, "protect-late", 1, 120).await;
    let row = &rows[0];
    let message = row.error_message.clone().unwrap_or_default();
    assert_eq!(
        (row.state.as_str(), row.error_code.as_deref()),
        ("failed", Some("SMT-112-B")),
        "{message}"
    );
    assert!(message.contains("protected pattern"), "{message}");
    // The step that found it was the removal, and no DELETE was sent after the restart.
    let last_failure = trail(&store, &id)
        .await
        .into_iter()
        .rev()
        .find(|r| r.kind == "step_failed")
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&last_failure.body).unwrap();
    // Step 5 is `remove-user` in `workflows/smartsheet-offboard.toml`.
    assert_eq!(
        (&body["step"], &body["error"]["code"]),
        (&serde_json::json!(5), &serde_json::json!("SMT-112-B")),
        "{body}"
    );
    assert_eq!(deletes(), before);
    assert!(
        org.sim.user(org.leaver).is_some(),
        "the person is still there"
    );
    let (code, out, err) = cli(&config, &["replay", &id]);
    assert_eq!(code, 0, "{out}{err}");
    procs.terminate(second, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_check_print_app_messages_escaped() {
    use offboard_simulators::postman::{Fault, FaultKind};
    const HOSTILE: &str = "no\u{1b}[2J\rforged: OK\nline";
    let hostile = |path: &str, times: u32| {
        Fault::new(
            path,
            FaultKind::Reply {
                status: 400,
                body: serde_json::json!({"error": {"name": "badRequest", "message": HOSTILE}}),
            },
        )
        .method("GET")
        .times(times)
    };
    let org = org().await;
    let team = postman_team().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_postman(
        dir.path(),
        &url,
        &names,
        &org.sim.base_url(),
        &team.sim.base_url(),
    );
    let run = |args: &[&str]| {
        let out = command(&config)
            .args(args)
            .env(POSTMAN_TOKEN_ENV, POSTMAN_KEY)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let safe = |out: &str| {
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
        assert!(out.contains("no\\u{1b}[2J\\rforged: OK\\nline"), "{out}");
    };

    // `check`: the team list answers with the hostile message.
    team.sim.inject(hostile("/users", 1));
    let out = run(&["check", "postman"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    safe(&out);

    // `retry`: a workflow failed on that message fails on it again.
    let engine = postman_engine(
        postman_config(&url, names, &team.sim.base_url()),
        POSTMAN_KEY,
    )
    .await;
    let body = event_for(
        "hostile-1",
        "offboarding.requested",
        &team.seed.leaver_email,
        &[],
    );
    let request = offboard::domain::event::parse(&body, &["postman".into()]).unwrap();
    team.sim.inject(hostile("/users", 2));
    engine
        .accept(&request, &String::from_utf8_lossy(&body))
        .await
        .unwrap()
        .unwrap();
    engine
        .run_until_settled(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let row = &engine.store().by_event("hostile-1").await.unwrap()[0];
    assert_eq!(row.state, "failed", "{:?}", row.error_message);
    let out = run(&["retry", &row.id, "--by", "operator@example.com"]);
    assert!(out.contains("failed (POST-"), "{out}");
    safe(&out);
}
