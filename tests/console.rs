//! The operators' listener over real HTTP: Prometheus metrics that move as workflows run,
//! health and readiness (503 while the database is cut off), the console's list, filters
//! and timelines, escaping of hostile event values, token-guarded retry and cancel that
//! the trail records with who asked, dead letters and the evidence download. With a
//! viewer token: every page, form and the CSV refused without it (a login redirect or
//! 401, no email shown), bearer and session-cookie access, the security headers on every
//! answer; and with the real binary: readiness from a cached check (probes do not cause
//! checks) and the warning of a console open on a non-loopback address.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use offboard::config::Secret;
use offboard::console::Console;
use offboard::runtime::engine::Engine;
use offboard::service::Service;
use offboard_simulators::smartsheet::SimUser;
use support::procs::{command, pg_url_via, ConfigFile, Procs, TcpProxy};
use support::*;

const OPERATOR_TOKEN: &str = "op-token-5d1e9b";
const VIEWER_TOKEN: &str = "viewer-token-8c2f41";
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

/// Starts the service with a console that asks for the viewer token; returns its URL.
async fn start_guarded(engine: &Arc<Engine>) -> (Service, String) {
    let service = serve(engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let console = Console::new(engine.clone(), Some(Secret::new(OPERATOR_TOKEN)))
        .with_viewer_token(Secret::new(VIEWER_TOKEN));
    (service.listen(listener, console), base)
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
    let text = eventually(10, "the first readiness check", || async {
        let (status, text) = get(&base, "/readyz").await;
        (status == 200).then_some(text)
    })
    .await;
    assert_eq!(text, "ready\n");
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
    assert!(page.contains(&maud::html! { (info.remedy[0]) }.into_string()));
    assert!(page.contains("Retry"), "an operable console offers retry");
    // Hostile values are escaped wherever they appear.
    let (_, page) = get(&base, &format!("/workflows/{}", ghost.id)).await;
    // Markup characters are escaped; `'` needs no escape, as every attribute is
    // double-quoted.
    assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'"));
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
    eventually(10, "readyz to turn 200", || async {
        (get(&base, "/readyz").await.0 == 200).then_some(())
    })
    .await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_follows_the_consumers_own_broker_connection() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let mut config = config(&url, amqp_names(), &org.sim.base_url());
    config.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let engine = engine(config, TOKEN).await;
    let (service, base) = start(&engine, None).await;
    eventually(30, "readyz to turn 200", || async {
        (get(&base, "/readyz").await.0 == 200).then_some(())
    })
    .await;

    // The consumer's connection is closed under it: not ready, for the broker's sake.
    proxy.cut(Duration::from_secs(4));
    let reason = eventually(10, "readyz to turn 503", || async {
        let (status, text) = get(&base, "/readyz").await;
        (status == 503).then_some(text)
    })
    .await;
    assert!(reason.contains("broker"), "{reason}");
    assert!(!reason.contains("database"), "{reason}");
    eventually(
        60,
        "the consumer to reconnect and readyz to turn 200",
        || async { (get(&base, "/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    service.stop().await;
}

/// Asserts the security headers every answer must carry.
fn assert_secure(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    let value = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(value("x-frame-options"), "DENY", "{what}");
    assert_eq!(value("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(value("referrer-policy"), "no-referrer", "{what}");
    let csp = value("content-security-policy");
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp:?} on {what}");
    }
    assert!(!csp.contains("unsafe"), "{csp} on {what}");
}

/// How a request identifies itself.
#[derive(Clone, Copy, Debug)]
enum Cred<'a> {
    Nothing,
    Bearer(&'a str),
    Cookie(&'a str),
}

/// Sends `method path` with `cred` (as a browser, or asking for JSON), checks the security
/// headers, and returns the answer.
async fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    cred: Cred<'_>,
    json: bool,
) -> reqwest::Response {
    let accept = if json {
        "application/json"
    } else {
        "text/html,application/xhtml+xml,*/*;q=0.8"
    };
    let mut req = client()
        .request(method.clone(), format!("{base}{path}"))
        .header("accept", accept);
    req = match cred {
        Cred::Nothing => req,
        Cred::Bearer(t) => req.bearer_auth(t),
        Cred::Cookie(c) => req.header("cookie", format!("offboard_session={c}")),
    };
    if method == reqwest::Method::POST {
        req = req.form(&[("by", "eve")]);
    }
    let r = req.send().await.unwrap();
    assert_secure(&r, &format!("{method} {path} with {cred:?}"));
    r
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
}

/// Posts the login form; returns the answer (headers checked).
async fn sign_in(base: &str, token: &str, next: &str) -> reqwest::Response {
    let r = client()
        .post(format!("{base}/login"))
        .form(&[("token", token), ("next", next)])
        .send()
        .await
        .unwrap();
    assert_secure(&r, &format!("POST /login next={next}"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_token_guards_every_page_form_and_the_csv() {
    use reqwest::Method;
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let (service, base) = start_guarded(&engine).await;
    publish(
        &names,
        "offboarding.requested",
        &event("ev-ok", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    publish(
        &names,
        "offboarding.requested",
        br#"{"not": "an event", "who": "dead-letter-person@example.com"}"#,
    )
    .await;
    let ok = finished(engine.store(), "ev-ok", 1, 30).await.remove(0);
    eventually(30, "the dead letter", || async {
        let n = engine.store().dead_letters().await.unwrap().len();
        (n == 1).then_some(())
    })
    .await;

    // Each guarded page, and what it shows to who may see it.
    let pages = [
        ("/workflows".to_string(), LEAVER),
        ("/workflows?person=ada".to_string(), LEAVER),
        (format!("/workflows/{}", ok.id), LEAVER),
        (
            "/dead-letters".to_string(),
            "dead-letter-person@example.com",
        ),
        ("/evidence.csv?since=2000-01-01".to_string(), LEAVER),
    ];
    for (path, shows) in &pages {
        // A browser without a session goes to the login page, and back after.
        let r = send(&base, Method::GET, path, Cred::Nothing, false).await;
        assert_eq!(r.status(), 303, "{path}");
        let next: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", path)
            .finish();
        assert_eq!(location(&r), format!("/login?{next}"));
        assert!(!r.text().await.unwrap().contains("@example.com"), "{path}");
        // A script asking for JSON, and anyone with a wrong bearer token: 401.
        for (cred, json) in [
            (Cred::Nothing, true),
            (Cred::Bearer("guess"), false),
            (Cred::Bearer("guess"), true),
            (Cred::Cookie(VIEWER_TOKEN), true),
        ] {
            let r = send(&base, Method::GET, path, cred, json).await;
            assert_eq!(r.status(), 401, "{path} with {cred:?}");
            assert!(r.headers().contains_key("www-authenticate"));
            assert!(!r.text().await.unwrap().contains("@example.com"), "{path}");
        }
        // Either token as a bearer opens it.
        for token in [VIEWER_TOKEN, OPERATOR_TOKEN] {
            let r = send(&base, Method::GET, path, Cred::Bearer(token), false).await;
            assert_eq!(r.status(), 200, "{path}");
            assert!(
                r.text().await.unwrap().contains(shows),
                "{path} shows {shows}"
            );
        }
    }
    let r = send(&base, Method::GET, "/", Cred::Nothing, false).await;
    assert!(location(&r).starts_with("/login?"), "{}", location(&r));

    // The operators' forms: refused before the handler without a credential.
    for action in ["retry", "cancel"] {
        let path = format!("/workflows/{}/{action}", ok.id);
        let r = send(&base, Method::POST, &path, Cred::Nothing, false).await;
        assert_eq!(r.status(), 401, "{path}");
        let r = send(
            &base,
            Method::POST,
            &path,
            Cred::Bearer(VIEWER_TOKEN),
            false,
        )
        .await;
        assert_eq!(r.status(), 401, "the viewer token does not operate: {path}");
    }
    // The operators' token passes the gate and reaches the handler.
    let r = send(
        &base,
        Method::POST,
        "/workflows/no-such-workflow/cancel",
        Cred::Bearer(OPERATOR_TOKEN),
        false,
    )
    .await;
    assert_eq!(r.status(), 404);
    let kinds: Vec<String> = trail(engine.store(), &ok.id)
        .await
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k.contains("retry") || k.contains("cancel")),
        "{kinds:?}"
    );

    // The login form: a wrong token sets nothing; either token opens a session.
    let r = send(
        &base,
        Method::GET,
        "/login?next=/dead-letters",
        Cred::Nothing,
        false,
    )
    .await;
    assert_eq!(r.status(), 200);
    let form = r.text().await.unwrap();
    assert!(form.contains("name=\"token\"") && form.contains("value=\"/dead-letters\""));
    let r = sign_in(&base, "guess", "/dead-letters").await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r).is_none());
    for token in [VIEWER_TOKEN, OPERATOR_TOKEN] {
        let r = sign_in(&base, token, "/dead-letters").await;
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), "/dead-letters");
        let cookie = set_cookie(&r).expect("a session cookie");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(part), "{part} in {cookie}");
        }
        assert!(!cookie.contains(token), "no token in the cookie: {cookie}");
        let value = cookie
            .strip_prefix("offboard_session=")
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_string();
        let r = send(
            &base,
            Method::GET,
            "/dead-letters",
            Cred::Cookie(&value),
            false,
        )
        .await;
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        assert!(page.contains("dead-letter-person@example.com"));
        assert!(page.contains("action=\"/logout\""), "a sign-out button");
        let r = send(
            &base,
            Method::GET,
            "/evidence.csv?since=2000-01-01",
            Cred::Cookie(&value),
            false,
        )
        .await;
        assert_eq!(r.status(), 200);
        // A cookie altered by one character is no session.
        let mut forged = value.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        let r = send(
            &base,
            Method::GET,
            "/workflows",
            Cred::Cookie(&forged),
            false,
        )
        .await;
        assert_eq!(r.status(), 303);
    }
    // Only paths on the console are followed after signing in.
    let r = sign_in(&base, VIEWER_TOKEN, "//evil.example/x").await;
    assert_eq!(location(&r), "/workflows");
    // Signing out clears the cookie.
    let r = send(&base, Method::POST, "/logout", Cred::Nothing, false).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/login".into()));
    assert!(set_cookie(&r).unwrap().contains("Max-Age=0"));

    // Open whatever the token: probes, metrics, the stylesheet; and the headers are on
    // every answer, errors included.
    eventually(10, "readyz to turn 200", || async {
        let r = send(&base, Method::GET, "/readyz", Cred::Nothing, false).await;
        (r.status() == 200).then_some(())
    })
    .await;
    for (path, status) in [
        ("/healthz", 200),
        ("/metrics", 200),
        ("/console.css", 200),
        ("/no-such-page", 404),
    ] {
        let r = send(&base, Method::GET, path, Cred::Nothing, false).await;
        assert_eq!(r.status(), status, "{path}");
    }
    let r = send(
        &base,
        Method::GET,
        "/evidence.csv?since=someday",
        Cred::Bearer(VIEWER_TOKEN),
        false,
    )
    .await;
    assert_eq!(r.status(), 400);
    service.stop().await;
}

/// A port free on this host a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration file for the binary with `[http] listen = "<addr>"` and `extra` lines.
fn binary_config(dir: &std::path::Path, sim: &str, addr: &str, extra: &str) -> std::path::PathBuf {
    let url = format!(
        "sqlite://{}/offboard-{}.db?mode=rwc",
        dir.display(),
        unique()
    );
    let file = dir.join(format!("offboard-{}.toml", unique()));
    ConfigFile::new(&url, &amqp_names(), sim).write(&file);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!("[http]\nlisten = \"{addr}\"\n{extra}"));
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_guards_its_console_and_answers_readiness_from_a_cached_check() {
    let org = org().await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::new();

    // Guarded, on loopback.
    let port = free_port();
    let config = binary_config(
        dir.path(),
        &org.sim.base_url(),
        &format!("127.0.0.1:{port}"),
        "viewer_token_env = \"OFFBOARD_TEST_VIEWER_TOKEN\"\n",
    );
    let mut cmd = command(&config);
    cmd.arg("serve")
        .env("RUST_LOG", "info")
        .env("OFFBOARD_TEST_VIEWER_TOKEN", VIEWER_TOKEN);
    let guarded = procs.spawn("guarded", cmd, &dir.path().join("guarded.log"));
    procs
        .wait_logs(
            &[guarded],
            "console, metrics and health probes listening",
            60,
        )
        .await;
    let base = format!("http://127.0.0.1:{port}");
    eventually(30, "readyz to turn 200", || async {
        (get(&base, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let r = send(
        &base,
        reqwest::Method::GET,
        "/workflows",
        Cred::Nothing,
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    let r = send(
        &base,
        reqwest::Method::GET,
        "/workflows",
        Cred::Bearer(VIEWER_TOKEN),
        false,
    )
    .await;
    assert_eq!(r.status(), 200);

    // Many probes, few checks: the checks follow the clock, not the probes.
    let checks = || async {
        let m = parse_prometheus(&get(&base, "/metrics").await.1);
        total(&m, "offboard_readiness_checks_total", &[])
    };
    let before = checks().await;
    let started = std::time::Instant::now();
    let probes = 200;
    for _ in 0..probes / 20 {
        let batch = (0..20).map(|_| get(&base, "/readyz"));
        for (status, _) in futures_util::future::join_all(batch).await {
            assert_eq!(status, 200);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ran = checks().await - before;
    let bound = (elapsed / 0.75).ceil() + 2.0;
    assert!(
        ran <= bound,
        "{ran} checks for {probes} probes in {elapsed:.2} s (at most {bound})"
    );
    // And the checks go on without any probe.
    eventually(10, "the background check to run again", || async {
        (checks().await > before + ran).then_some(())
    })
    .await;
    let warning = "the console shows every workflow";
    assert!(!procs.all[guarded].log_text().contains(warning));

    // Open, on every address: one warning line.
    let config = binary_config(
        dir.path(),
        &org.sim.base_url(),
        &format!("0.0.0.0:{}", free_port()),
        "",
    );
    let open = procs.serve("open", &config, &dir.path().join("open.log"));
    procs.wait_logs(&[open], warning, 60).await;
    procs
        .wait_logs(&[open], "console, metrics and health probes listening", 60)
        .await;
    let log = procs.all[open].log_text();
    assert_eq!(log.matches(warning).count(), 1, "{log}");
    assert!(!log.contains(VIEWER_TOKEN) && !procs.all[guarded].log_text().contains(VIEWER_TOKEN));
}
