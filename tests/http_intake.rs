//! HR systems post CloudEvents over HTTP (issue 22): the real binary on PostgreSQL and
//! RabbitMQ takes a signed structured event, a signed batch and an event with the bearer
//! token on `POST /events`, and each one's workflow completes on the Smartsheet
//! simulator; posting an id again starts nothing new. Unsigned or wrongly signed
//! requests are 401 `EVT-105` and start nothing; a malformed event is 400 with its code
//! (a batch holding one is refused whole); binary mode is 415; over 1 MiB is 413. With
//! the broker cut off from the intake, 503 with `Retry-After`, and the same request is
//! accepted and completes once it is back. The counters show on `/metrics`. A bearer
//! token variable named but unset stops `serve` (exit 2).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use offboard::domain::admission::{self, SigningKey};
use offboard::store::Store;
use offboard_simulators::smartsheet::SimUser;
use serde_json::Value;
use support::procs::{command, ConfigFile, Procs, TcpProxy};
use support::*;

/// The signing key of `[intake] signing_key_env`.
const KEY: &str = "http-intake-signing-key-5b1f";
/// The token of `[ingest] bearer_token_env`.
const BEARER: &str = "hr-tool-fixed-secret-0c7d";

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The Standard Webhooks headers for `body` sent as message `id` under `key`, now.
fn signed(key: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = SigningKey::decode(key).unwrap();
    let s = admission::sign(&key, id, chrono::Utc::now().timestamp(), body);
    vec![
        (admission::WEBHOOK_ID, s.id),
        (admission::WEBHOOK_TIMESTAMP, s.timestamp.to_string()),
        (admission::WEBHOOK_SIGNATURE, s.signature),
    ]
}

/// Posts `body` to `/events`: (status, `Retry-After`, the JSON answer or `Null`).
async fn post(
    base: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/events"))
        .header("content-type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let json = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, json)
}

const ONE: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_over_http_complete_and_the_rest_are_refused() {
    let org = org().await;
    let bob = org.sim.add_user(SimUser::new("bob@example.com"));
    let carol = org.sim.add_user(SimUser::new("carol@example.com"));
    let dave = org.sim.add_user(SimUser::new("dave@example.com"));
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let broker = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let (ingest_addr, http_addr) = (free_addr(), free_addr());
    let file = ConfigFile {
        intake: "signing_key_env = \"OFFBOARD_TEST_INGEST_KEY\"\n".into(),
        ..ConfigFile::new(&url, &names, &org.sim.base_url())
    };
    let config = file.write(&dir.path().join("offboard.toml"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[ingest]\nlisten = \"{ingest_addr}\"\nbearer_token_env = \"OFFBOARD_TEST_INGEST_BEARER\"\n\
         amqp_url = \"amqp://guest:guest@{}/%2f\"\n[http]\nlisten = \"{http_addr}\"\n",
        broker.addr()
    ));
    std::fs::write(&config, text).unwrap();
    // A token variable named but not set: serve refuses to start rather than open the
    // intake without it.
    let refused = command(&config)
        .arg("serve")
        .env("OFFBOARD_TEST_INGEST_KEY", KEY)
        .env_remove("OFFBOARD_TEST_INGEST_BEARER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[ingest] bearer_token_env names OFFBOARD_TEST_INGEST_BEARER"),
        "{stderr}"
    );

    let mut procs = Procs::new();
    let mut serve = command(&config);
    serve
        .arg("serve")
        .env("RUST_LOG", "info")
        .env("OFFBOARD_TEST_INGEST_KEY", KEY)
        .env("OFFBOARD_TEST_INGEST_BEARER", BEARER);
    let worker = procs.spawn("serve", serve, &dir.path().join("serve.log"));
    procs.wait_logs(&[worker], "consuming events", 60).await;
    procs.wait_logs(&[worker], "HTTP intake listening", 5).await;
    let base = format!("http://{ingest_addr}");
    let store = Store::open(&url).await.unwrap();

    // A signed structured event: accepted once the broker confirmed it, then completed.
    let body = event("http-one", "offboarding.requested", LEAVER, Some(RECIPIENT));
    let (status, _, answer) = post(&base, ONE, &signed(KEY, "http-one", &body), body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, serde_json::json!({ "accepted": ["http-one"] }));

    // Refused before anything is published: unsigned, signed with another key, a wrong
    // bearer token, a signature moved onto another event.
    let unsigned = event(
        "http-unsigned",
        "offboarding.requested",
        "bob@example.com",
        None,
    );
    let moved = signed(KEY, "http-one", &body);
    let refusals = [
        (vec![], unsigned.clone()),
        (
            signed("a guessed key", "http-unsigned", &unsigned),
            unsigned.clone(),
        ),
        (
            vec![("authorization", format!("Bearer {BEARER}x"))],
            unsigned.clone(),
        ),
        (moved, unsigned.clone()),
    ];
    for (headers, body) in refusals {
        let (status, _, answer) = post(&base, ONE, &headers, body).await;
        assert_eq!(status, 401, "{headers:?}: {answer}");
        assert_eq!(answer["code"], "EVT-105", "{answer}");
    }

    // Malformed: an event that is no offboarding request is 400 with its code; a batch
    // holding one is refused whole, the bad one named by its index.
    let bad = br#"{"specversion":"1.0","id":"http-bad","source":"hr","type":"offboarding.requested","data":{"person":{"email":"not-an-email"}}}"#.to_vec();
    let (status, _, answer) = post(&base, ONE, &signed(KEY, "http-bad", &bad), bad.clone()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "EVT-102", "{answer}");
    let good = event(
        "http-spared",
        "offboarding.requested",
        "bob@example.com",
        None,
    );
    let mixed = format!(
        "[{},{}]",
        String::from_utf8(good).unwrap(),
        String::from_utf8(bad).unwrap()
    )
    .into_bytes();
    let (status, _, answer) = post(&base, BATCH, &signed(KEY, "batch-mixed", &mixed), mixed).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["events"][0]["index"], 1, "{answer}");
    assert_eq!(answer["events"][0]["code"], "EVT-102", "{answer}");
    assert_eq!(answer["events"].as_array().unwrap().len(), 1, "{answer}");

    let object = b"{}".to_vec();
    let (status, _, answer) =
        post(&base, BATCH, &signed(KEY, "batch-object", &object), object).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "EVT-100", "{answer}");

    // Binary mode and oversized requests.
    let (status, _, answer) = post(
        &base,
        "application/json",
        &[
            ("ce-specversion", "1.0".into()),
            ("ce-id", "http-binary".into()),
        ],
        br#"{"person":{"email":"bob@example.com"}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 415, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("binary mode"),
        "{answer}"
    );
    let (status, _, answer) = post(&base, ONE, &[], vec![b' '; 1024 * 1024 + 1]).await;
    assert_eq!(status, 413, "{answer}");

    // A signed batch (webhook-id is the batch's own id), and an event with the bearer token.
    let batch = format!(
        "[{},{}]",
        String::from_utf8(event("http-b1", "license.reclaim.requested", RECLAIM, None)).unwrap(),
        String::from_utf8(event(
            "http-b2",
            "offboarding.requested",
            "bob@example.com",
            Some(RECIPIENT)
        ))
        .unwrap()
    )
    .into_bytes();
    let (status, _, answer) = post(&base, BATCH, &signed(KEY, "batch-7", &batch), batch).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer,
        serde_json::json!({ "accepted": ["http-b1", "http-b2"] })
    );
    let body = event(
        "http-bearer",
        "offboarding.requested",
        "carol@example.com",
        None,
    );
    let (status, _, answer) = post(
        &base,
        "application/json; charset=utf-8",
        &[("authorization", format!("Bearer {BEARER}"))],
        body,
    )
    .await;
    assert_eq!(status, 202, "{answer}");

    for (id, outcome) in [
        ("http-one", "removed"),
        ("http-b1", "downgraded"),
        ("http-b2", "removed"),
        ("http-bearer", "removed"),
    ] {
        let rows = finished(&store, id, 1, 60).await;
        assert_eq!(rows[0].outcome.as_deref(), Some(outcome), "{id}");
    }
    assert!(
        org.sim.user_by_email(LEAVER).is_none(),
        "the leaver is gone"
    );
    assert!(org.sim.user(bob).is_none() && org.sim.user(carol).is_none());

    // Posting an id again is harmless: accepted, and still one workflow.
    let body = event("http-one", "offboarding.requested", LEAVER, Some(RECIPIENT));
    let (status, _, _) = post(&base, ONE, &signed(KEY, "http-one", &body), body).await;
    assert_eq!(status, 202);
    // Everything the refused requests named started nothing (the later events are done).
    for id in ["http-unsigned", "http-bad", "http-spared", "http-binary"] {
        assert!(store.by_event(id).await.unwrap().is_empty(), "{id} started");
    }

    // The broker cut off from the intake: 503 with Retry-After, nothing started; once it
    // is back, the same request is accepted and completes.
    broker.cut(Duration::from_secs(12));
    let body = event(
        "http-outage",
        "offboarding.requested",
        "dave@example.com",
        None,
    );
    for _ in 0..2 {
        let (status, retry, answer) =
            post(&base, ONE, &signed(KEY, "http-outage", &body), body.clone()).await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(retry.as_deref(), Some("5"));
    }
    eventually(30, "the broker back", || async {
        (!broker.is_down()).then_some(())
    })
    .await;
    let (status, _, answer) =
        post(&base, ONE, &signed(KEY, "http-outage", &body), body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    let rows = finished(&store, "http-outage", 1, 60).await;
    assert_eq!(rows[0].outcome.as_deref(), Some("removed"));
    assert!(org.sim.user(dave).is_none());
    assert_eq!(store.by_event("http-one").await.unwrap().len(), 1);

    // The counters, on the operators' /metrics.
    let metrics = reqwest::get(format!("http://{http_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for outcome in [
        "accepted",
        "unauthorized",
        "invalid",
        "unsupported",
        "too_large",
        "unavailable",
    ] {
        assert!(
            metrics.contains(&format!(
                "offboard_ingest_requests_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome}:\n{metrics}"
        );
    }
    let log = procs.all[worker].log_text();
    assert!(
        !log.contains(KEY) && !log.contains(BEARER),
        "a secret in the log"
    );
    procs.terminate(worker, 20).await;
    delete_broker_names(&names).await;
}
