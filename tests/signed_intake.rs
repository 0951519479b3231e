//! Nobody but the HR system can start a removal (issue 19): the real binary on PostgreSQL
//! and RabbitMQ accepts events signed as Standard Webhooks says (a `whsec_` key, checked
//! against a signature computed here independently of offboard; a key being rotated; the
//! second of two configured keys; `offboard submit`), and dead-letters with `EVT-105`
//! every message that is unsigned, wrongly signed, signed for another id, replayed past
//! the tolerance or signed only the legacy way; a `transfer_to` outside
//! `recipient_domains` is `EVT-102`. `serve` on PostgreSQL refuses to start with neither a
//! key nor `allow_unsigned` (SQLite needs neither), and database passwords stay out of
//! what it prints.

mod support;

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use offboard::domain::admission::{self, SigningKey};
use offboard::intake::{self, Message, Received};
use offboard::store::Store;
use support::procs::{command, ConfigFile, Procs};
use support::*;

/// The Standard Webhooks reference libraries' test secret.
const WHSEC_KEY: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// A plain key (its UTF-8 bytes are the key), the one being retired.
const OLD_KEY: &str = "old-signing-key-3e7a91c5";

/// `v1,<base64 HMAC-SHA256("<id>.<timestamp>.<body>")>` under a `whsec_` secret, computed
/// here from the specification, not with offboard's code.
fn spec_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The headers of a signed message: `webhook-id`, `webhook-timestamp`, `webhook-signature`
/// (any of them left out when `None`), and `x-offboard-signature` when `legacy` is given.
fn headers(
    id: Option<&str>,
    timestamp: Option<i64>,
    signature: Option<&str>,
    legacy: Option<&str>,
) -> FieldTable {
    let mut h = FieldTable::default();
    let values = [
        (admission::WEBHOOK_ID, id.map(str::to_string)),
        (
            admission::WEBHOOK_TIMESTAMP,
            timestamp.map(|t| t.to_string()),
        ),
        (admission::WEBHOOK_SIGNATURE, signature.map(str::to_string)),
        (admission::LEGACY_SIGNATURE, legacy.map(str::to_string)),
    ];
    for (name, value) in values {
        if let Some(v) = value {
            h.insert(name.into(), AMQPValue::LongString(v.into()));
        }
    }
    h
}

/// An offboarding event for `email`, handing the data to `to`.
fn offboarding(id: &str, email: &str, to: Option<&str>) -> Vec<u8> {
    event(id, "offboarding.requested", email, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_events_from_the_right_keys_start_anything() {
    // The vector of the reference libraries: the helper above is Standard Webhooks.
    assert_eq!(
        spec_signature(
            WHSEC_KEY,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#
        ),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let file = ConfigFile {
        intake: "signing_key_env = [\"OFFBOARD_TEST_KEY_NEW\", \"OFFBOARD_TEST_KEY_OLD\"]\n\
                 recipient_domains = [\"EXAMPLE.com\"]\n"
            .into(),
        ..ConfigFile::new(&url, &names, &org.sim.base_url())
    };
    let config = file.write(&dir.path().join("offboard.toml"));
    let keys = [
        ("OFFBOARD_TEST_KEY_NEW", WHSEC_KEY),
        ("OFFBOARD_TEST_KEY_OLD", OLD_KEY),
    ];
    let mut procs = Procs::new();
    let mut serve = command(&config);
    serve.arg("serve").env("RUST_LOG", "info").envs(keys);
    let worker = procs.spawn("serve", serve, &dir.path().join("serve.log"));
    procs.wait_logs(&[worker], "consuming events", 60).await;

    let old = SigningKey::decode(OLD_KEY).unwrap();
    let stranger = SigningKey::decode("a guessed key").unwrap();
    let now = chrono::Utc::now().timestamp();
    let by_old = |id: &str, body: &[u8]| admission::sign(&old, id, now, body).signature;
    let mut messages: Vec<(&str, Vec<u8>, FieldTable)> = Vec::new();
    let mut add = |id: &'static str, body: Vec<u8>, h: FieldTable| messages.push((id, body, h));

    // Accepted: signed with the whsec_ key by the specification's own arithmetic.
    let body = offboarding("sig-whsec", LEAVER, Some(RECIPIENT));
    let sig = spec_signature(WHSEC_KEY, "sig-whsec", now, &body);
    add(
        "sig-whsec",
        body,
        headers(Some("sig-whsec"), Some(now), Some(&sig), None),
    );
    // Accepted: a sender rotating keys sends two signatures, an unknown one first.
    let body = event("sig-rotated", "license.reclaim.requested", RECLAIM, None);
    let two = format!(
        "{} {}",
        admission::sign(&stranger, "sig-rotated", now, &body).signature,
        by_old("sig-rotated", &body)
    );
    add(
        "sig-rotated",
        body,
        headers(Some("sig-rotated"), Some(now), Some(&two), None),
    );

    // Refused with EVT-105.
    add(
        "sig-missing",
        offboarding("sig-missing", LEAVER, None),
        headers(None, None, None, None),
    );
    let body = offboarding("sig-wrong", LEAVER, None);
    let wrong = admission::sign(&stranger, "sig-wrong", now, &body).signature;
    add(
        "sig-wrong",
        body,
        headers(Some("sig-wrong"), Some(now), Some(&wrong), None),
    );
    let body = offboarding("sig-empty", LEAVER, None);
    add(
        "sig-empty",
        body,
        headers(Some("sig-empty"), Some(now), Some("v1,"), None),
    );
    // A good signature for another id, carried with this body.
    let body = offboarding("sig-moved", LEAVER, None);
    let moved = by_old("sig-elsewhere", &body);
    add(
        "sig-moved",
        body,
        headers(Some("sig-elsewhere"), Some(now), Some(&moved), None),
    );
    // A message captured and replayed after the tolerance.
    let body = offboarding("sig-replayed", LEAVER, None);
    let then = now - 301;
    let replayed = admission::sign(&old, "sig-replayed", then, &body).signature;
    add(
        "sig-replayed",
        body,
        headers(Some("sig-replayed"), Some(then), Some(&replayed), None),
    );
    // The body-only signature of earlier releases, not enabled here.
    let body = offboarding("sig-legacy", LEAVER, None);
    let legacy = admission::sign_legacy(&old, &body);
    add("sig-legacy", body, headers(None, None, None, Some(&legacy)));

    // Refused with EVT-102: well signed, but the data would go outside the company.
    let body = offboarding("sig-outside", LEAVER, Some("mallory@evil.test"));
    let sig = by_old("sig-outside", &body);
    add(
        "sig-outside",
        body,
        headers(Some("sig-outside"), Some(now), Some(&sig), None),
    );

    let ch = channel().await;
    intake::declare(&ch, &names).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (_, body, h) in &messages {
        let kind = serde_json::from_slice::<serde_json::Value>(body).unwrap()["type"]
            .as_str()
            .unwrap()
            .to_string();
        ch.basic_publish(
            names.exchange.as_str().into(),
            kind.as_str().into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_headers(h.clone()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // `submit` and `submit --csv` sign with the first key they are given.
    let csv = dir.path().join("leavers.csv");
    std::fs::write(
        &csv,
        "email,type\ncsv@example.com,license.reclaim.requested\n",
    )
    .unwrap();
    let mut csv_id = String::new();
    for args in [
        &[
            "submit",
            "--type",
            "license.reclaim.requested",
            "--email",
            "submitted@example.com",
            "--id",
            "sig-submit",
        ][..],
        &["submit", "--csv", csv.to_str().unwrap()][..],
    ] {
        let out = command(&config).args(args).envs(keys).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        csv_id = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
    }

    let store = Store::open(&url).await.unwrap();
    for (id, n) in [
        ("sig-whsec", 1),
        ("sig-rotated", 1),
        ("sig-submit", 1),
        (csv_id.as_str(), 1),
    ] {
        let rows = eventually(30, &format!("{id} to be accepted"), || async {
            let rows = store.by_event(id).await.unwrap();
            (rows.len() == n).then_some(rows)
        })
        .await;
        assert_eq!(rows.len(), n, "{id}");
    }
    let refused = 7;
    let rows = eventually(30, "every refusal recorded", || async {
        let rows = store.dead_letters().await.unwrap();
        (rows.len() >= refused).then_some(rows)
    })
    .await;
    let codes: HashMap<String, (String, String)> = rows
        .into_iter()
        .map(|r| (r.event_id.unwrap_or_default(), (r.code, r.message)))
        .collect();
    for id in [
        "sig-missing",
        "sig-wrong",
        "sig-empty",
        "sig-moved",
        "sig-replayed",
        "sig-legacy",
    ] {
        assert_eq!(codes[id].0, "EVT-105", "{id}: {}", codes[id].1);
        assert!(
            store.by_event(id).await.unwrap().is_empty(),
            "{id} started nothing"
        );
    }
    assert!(
        codes["sig-replayed"].1.contains("signature_tolerance_secs"),
        "{:?}",
        codes["sig-replayed"]
    );
    assert!(
        codes["sig-legacy"].1.contains("accept_legacy_signatures"),
        "{:?}",
        codes["sig-legacy"]
    );
    assert!(
        codes["sig-moved"].1.contains("webhook-id"),
        "{:?}",
        codes["sig-moved"]
    );
    assert_eq!(
        codes["sig-outside"].0, "EVT-102",
        "{:?}",
        codes["sig-outside"]
    );
    assert_eq!(codes.len(), refused, "{codes:?}");
    let log = procs.all[worker].log_text();
    for secret in [OLD_KEY, &WHSEC_KEY[6..]] {
        assert!(!log.contains(secret), "a signing key is never logged");
    }
    procs.terminate(worker, 30).await;
}

/// The legacy `x-offboard-signature` is accepted once `accept_legacy_signatures` says so
/// (and a forged one still is not); checked through the intake's broker-free half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_signature_is_accepted_only_when_enabled() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    // A variable only this test reads.
    std::env::set_var("OFFBOARD_TEST_LEGACY_KEY", OLD_KEY);
    let mut config = config(&url, amqp_names(), &org.sim.base_url());
    config.intake.signing_key_env = vec!["OFFBOARD_TEST_LEGACY_KEY".into()];
    config.intake.accept_legacy_signatures = true;
    let engine = engine(config, TOKEN).await;
    let key = SigningKey::decode(OLD_KEY).unwrap();
    let receive = |id: &'static str, key: SigningKey| {
        let engine = engine.clone();
        async move {
            let body = event(id, "license.reclaim.requested", RECLAIM, None);
            let legacy = admission::sign_legacy(&key, &body);
            let message = Message {
                body: &body,
                routing_key: "license.reclaim.requested",
                signature: admission::SignatureHeaders {
                    legacy: Some(&legacy),
                    ..Default::default()
                },
                delivery_count: None,
            };
            intake::receive(&engine, &message).await.unwrap()
        }
    };
    assert!(matches!(
        receive("legacy-good", key).await,
        Received::Accepted(_)
    ));
    let forged = SigningKey::decode("a guessed key").unwrap();
    match receive("legacy-forged", forged).await {
        Received::DeadLettered(r) => assert_eq!(r.code.as_str(), "EVT-105"),
        other => panic!("a forged legacy signature was {other:?}"),
    }
}

/// `serve` on PostgreSQL with neither a signing key nor `allow_unsigned` exits 2 with one
/// line naming the setting; on SQLite it starts without either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_needs_a_key_or_allow_unsigned() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let unsigned = |url: &str| ConfigFile {
        intake: String::new(),
        ..ConfigFile::new(url, &amqp_names(), &org.sim.base_url())
    };
    let config = unsigned(&url).write(&dir.path().join("pg.toml"));
    let out = command(&config).arg("serve").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("signing_key_env") && err.contains("allow_unsigned"),
        "{err}"
    );

    let (sqlite, _db_dir) = fresh_database(Db::Sqlite).await;
    let config = unsigned(&sqlite).write(&dir.path().join("sqlite.toml"));
    let mut procs = Procs::new();
    let worker = procs.serve("serve", &config, &dir.path().join("serve.log"));
    procs.wait_logs(&[worker], "consuming events", 60).await;
    procs.terminate(worker, 30).await;
}

/// A database URL's password, after the user or as `?password=`, never reaches what
/// offboard prints.
#[test]
fn database_passwords_are_redacted_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigFile::new(DEAD_PG, &amqp_names(), "http://127.0.0.1:9/2.0")
        .write(&dir.path().join("offboard.toml"));
    for url in [
        "postgres://postgres@127.0.0.1:1/offboard?password=hunter2-secret",
        "postgres://postgres:hunter2-secret@127.0.0.1:1/offboard",
    ] {
        let out = command(&config)
            .arg("list")
            .env("OFFBOARD_DATABASE_URL", url)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("127.0.0.1:1") && err.contains("***"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// A PostgreSQL URL nothing listens on.
const DEAD_PG: &str = "postgres://postgres@127.0.0.1:1/offboard";
