//! The operators' listener over real HTTP: Prometheus metrics that move as workflows run,
//! health and readiness (503 while the database is cut off), the console's list, filters
//! and timelines, escaping of hostile event values, token-guarded retry and cancel that
//! the trail records with who asked, dead letters and the evidence download.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use offboard::config::Secret;
use offboard::http::Console;
use offboard::runtime::engine::Engine;
use offboard::service::Service;
use offboard_simulators::smartsheet::SimUser;
use support::procs::{pg_url_via, TcpProxy};
use support::*;

const OPERATOR_TOKEN: &str = "op-token-5d1e9b";
const HOSTILE: &str = r#"<script>alert("x")</script>'"#;

/// Starts the service with the console on a free port; returns its base URL.
async fn start(engine: &Arc<Engine>, token: Option<&str>) -> (Service, String) {
    let service = serve(engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = service.listen(
        listener,
        Console::new(engine.clone(), token.map(Secret::new)),
    );
    (service, base)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(base: &str, path: &str) -> (u16, String) {
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Parses Prometheus text exposition: every sample line is `name{labels} value`, every
/// comment `# HELP` or `# TYPE`. Returns the samples by their full series name.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        // Rust reads `+Inf`, `-Inf` and `NaN` as Prometheus writes them.
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.insert(series.to_string(), v);
    }
    samples
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn total(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_metrics_and_operator_actions() {
    let org = org().await;
    let mallory = org.sim.add_user(SimUser {
        group_admin: true,
        ..SimUser::new("mallory@example.com")
    });
    org.sim.add_group("Mallory's", mallory, &[mallory]);
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let (service, base) = start(&engine, Some(OPERATOR_TOKEN)).await;

    assert_eq!(get(&base, "/healthz").await.0, 200);
    let (status, text) = get(&base, "/readyz").await;
    assert_eq!((status, text.as_str()), (200, "ready\n"));
    let before = parse_prometheus(&get(&base, "/metrics").await.1);
    let calls_before = total(&before, "offboard_api_calls_total", &["app=\"smartsheet\""]);

    // A finished offboarding, a failed one (recipient unknown), a hostile source.
    publish(
        &names,
        "offboarding.requested",
        &event("ev-ok", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    publish(
        &names,
        "offboarding.requested",
        &event(
            "ev-bad",
            "offboarding.requested",
            "mallory@example.com",
            Some("nobody@example.com"),
        ),
    )
    .await;
    let hostile = serde_json::json!({
        "specversion": "1.0", "id": format!("ev-{HOSTILE}"), "source": HOSTILE,
        "type": "offboarding.requested", "time": "2026-11-20T17:00:00Z",
        "data": {"person": {"email": "ghost@example.com"}},
    });
    publish(
        &names,
        "offboarding.requested",
        hostile.to_string().as_bytes(),
    )
    .await;
    publish(&names, "offboarding.requested", b"{\"not\": \"an event\"}").await;
    let ok = finished(engine.store(), "ev-ok", 1, 30).await.remove(0);
    let bad = finished(engine.store(), "ev-bad", 1, 30).await.remove(0);
    let ghost = finished(engine.store(), &format!("ev-{HOSTILE}"), 1, 30)
        .await
        .remove(0);
    assert_eq!(ok.outcome.as_deref(), Some("removed"));
    assert_eq!(bad.error_code.as_deref(), Some("SMT-110-B"));

    // Metrics: valid text, counters moved, gauges read from the database.
    let after = parse_prometheus(&get(&base, "/metrics").await.1);
    let calls_after = total(&after, "offboard_api_calls_total", &["app=\"smartsheet\""]);
    assert!(
        calls_after >= calls_before + 6.0,
        "{calls_before} -> {calls_after}"
    );
    assert!(
        total(
            &after,
            "offboard_api_calls_total",
            &["method=\"DELETE\"", "status=\"200\""]
        ) >= 1.0
    );
    assert_eq!(
        total(
            &after,
            "offboard_workflows",
            &["state=\"completed\"", "app=\"smartsheet\""]
        ),
        2.0
    );
    assert_eq!(
        total(&after, "offboard_workflows", &["state=\"failed\""]),
        1.0
    );
    assert!(total(&after, "offboard_step_duration_seconds_count", &[]) >= 5.0);
    assert!(total(&after, "offboard_workflow_duration_seconds_count", &[]) >= 3.0);
    assert!(
        total(
            &after,
            "offboard_request_budget_limit_per_minute",
            &["connection=\"smartsheet\""]
        ) == 6000.0
    );
    assert!(total(&after, "offboard_intake_lag_seconds_count", &[]) >= 3.0);
    let dead = eventually(10, "the dead letter to be counted", || async {
        let m = parse_prometheus(&get(&base, "/metrics").await.1);
        let n = total(&m, "offboard_dead_letters_total", &["code=\"EVT-10"]);
        (n >= 1.0).then_some(n)
    })
    .await;
    assert!(dead >= 1.0);

    // The list: counts per state, newest first, filters.
    let (status, list) = get(&base, "/workflows").await;
    assert_eq!(status, 200);
    for email in [LEAVER, "mallory@example.com", "ghost@example.com"] {
        assert!(list.contains(email), "{email} listed");
    }
    let (_, failed) = get(&base, "/workflows?state=failed").await;
    assert!(failed.contains("mallory@example.com") && !failed.contains(LEAVER));
    let (_, by_code) = get(&base, "/workflows?code=SMT-110-B&app=smartsheet").await;
    assert!(by_code.contains("mallory@example.com") && !by_code.contains("ghost@"));
    let (_, by_person) = get(&base, "/workflows?person=ghost").await;
    assert!(by_person.contains("ghost@example.com") && !by_person.contains(LEAVER));
    let (_, future) = get(&base, "/workflows?since=2999-01-01").await;
    assert!(future.contains("No workflows match."));

    // A finished workflow's timeline and replay verdict.
    let (_, page) = get(&base, &format!("/workflows/{}", ok.id)).await;
    assert!(page.contains(&format!(
        "DELETE /users/{}?removeFromSharing=true",
        org.leaver
    )));
    assert!(page.contains("completed: removed"));
    assert!(page.contains("Replay OK"), "replay verdict shown");
    assert!(page.contains("ev-ok") && page.contains("smartsheet-offboard v"));
    assert!(page.contains("Entitlements"));
    // A failed one: its code with the catalog's explanation and remedy.
    let (_, page) = get(&base, &format!("/workflows/{}", bad.id)).await;
    let info = offboard::codes::Code::Smt110B.info();
    assert!(page.contains("SMT-110-B"));
    assert!(page.contains(&offboard::http::pages::esc(info.remedy[0])));
    assert!(page.contains("Retry"), "an operable console offers retry");
    // Hostile values are escaped wherever they appear.
    let (_, page) = get(&base, &format!("/workflows/{}", ghost.id)).await;
    assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;"));
    assert!(!page.contains("<script>"), "no markup from an event");
    let (_, list) = get(&base, "/workflows").await;
    assert!(!list.contains("<script>"));
    // No secret is ever rendered.
    for path in [
        "/workflows",
        "/dead-letters",
        &format!("/workflows/{}", bad.id),
    ] {
        let (_, body) = get(&base, path).await;
        assert!(
            !body.contains(TOKEN) && !body.contains(OPERATOR_TOKEN),
            "{path}"
        );
    }

    // Retry needs the token; with it the trail records who asked.
    let retry = format!("{base}/workflows/{}/retry", bad.id);
    let post = |url: String, form: Vec<(&'static str, &'static str)>| async move {
        client().post(url).form(&form).send().await.unwrap()
    };
    assert_eq!(post(retry.clone(), vec![("by", "eve")]).await.status(), 401);
    assert_eq!(
        post(retry.clone(), vec![("by", "eve"), ("token", "guess")])
            .await
            .status(),
        401
    );
    let r = post(
        retry.clone(),
        vec![("by", "alice"), ("token", OPERATOR_TOKEN)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let kinds = |id: String| {
        let store = engine.store().clone();
        async move {
            store
                .trail(&id)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.body)
                .collect::<Vec<_>>()
        }
    };
    assert!(kinds(bad.id.clone())
        .await
        .iter()
        .any(|b| b.contains("retry_requested") && b.contains("alice (console)")));

    // Cancel a waiting workflow with a bearer token.
    let mut later = serde_json::from_slice::<serde_json::Value>(&event(
        "ev-later",
        "license.reclaim.requested",
        RECLAIM,
        None,
    ))
    .unwrap();
    later["data"]["not_before"] = "2999-01-01T00:00:00Z".into();
    publish(
        &names,
        "license.reclaim.requested",
        later.to_string().as_bytes(),
    )
    .await;
    let waiting = eventually(30, "the waiting workflow", || async {
        engine.store().by_event("ev-later").await.unwrap().pop()
    })
    .await;
    let r = client()
        .post(format!("{base}/workflows/{}/cancel", waiting.id))
        .bearer_auth(OPERATOR_TOKEN)
        .form(&[("by", "bob")])
        .send()
        .await
        .unwrap();
    // Nobody holds a workflow waiting on its timer: the console cancels it and says so.
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("cancelled"));
    eventually(30, "the cancel to be recorded", || async {
        let row = engine.store().get(&waiting.id).await.unwrap()?;
        (row.state == "cancelled").then_some(())
    })
    .await;
    assert!(kinds(waiting.id.clone())
        .await
        .iter()
        .any(|b| b.contains("cancelled") && b.contains("bob (console)")));

    // Dead letters and the evidence download.
    let (_, dead) = get(&base, "/dead-letters").await;
    assert!(dead.contains("EVT-10"), "dead letter listed with its code");
    let r = client()
        .get(format!("{base}/evidence.csv?since=2000-01-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("workflow_id,person_email,"));
    assert_eq!(csv.lines().count(), 1 + 4);
    assert!(csv.contains(&ok.id) && csv.contains("removed"));
    assert_eq!(get(&base, "/evidence.csv?since=yesterday-ish").await.0, 400);

    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_console_refuses_interventions() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let (service, base) = start(&engine, None).await;
    publish(
        &names,
        "offboarding.requested",
        &event(
            "ev-ro",
            "offboarding.requested",
            LEAVER,
            Some("nobody@example.com"),
        ),
    )
    .await;
    let wf = finished(engine.store(), "ev-ro", 1, 30).await.remove(0);
    let (_, page) = get(&base, &format!("/workflows/{}", wf.id)).await;
    assert!(page.contains("SMT-110-B") && !page.contains("operator token"));
    let r = client()
        .post(format!("{base}/workflows/{}/retry", wf.id))
        .form(&[("by", "eve"), ("token", "anything")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!engine
        .store()
        .trail(&wf.id)
        .await
        .unwrap()
        .iter()
        .any(|r| r.kind == "retry_requested"));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_turns_503_while_the_database_is_cut_off_and_back() {
    let org = org().await;
    let (direct, _dir) = fresh_database(Db::Postgres).await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = pg_url_via(&proxy, &direct);
    let names = amqp_names();
    let engine = engine(config(&url, names, &org.sim.base_url()), TOKEN).await;
    let (service, base) = start(&engine, None).await;
    assert_eq!(get(&base, "/readyz").await.0, 200);

    proxy.cut(Duration::from_secs(6));
    let reason = eventually(30, "readyz to turn 503", || async {
        let (status, text) = get(&base, "/readyz").await;
        (status == 503).then_some(text)
    })
    .await;
    assert!(reason.contains("database"), "{reason}");
    assert_eq!(get(&base, "/healthz").await.0, 200, "still alive");

    eventually(60, "readyz to turn 200 again", || async {
        (get(&base, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    service.stop().await;
}
