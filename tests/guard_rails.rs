//! Guard rails (issue 11), tested from outside like an operator and an attacker would:
//! who may ask (allowed sources, signatures), who may never be removed, the
//! mass-offboarding brake, a keyed audit chain nobody can rewrite without the key, and
//! output that cannot be turned against its reader.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offboard::domain::{admission, chain};
use offboard::store::entities::audit;
use offboard::store::Store;
use offboard_simulators::smartsheet::SimUser;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use support::procs::{command, ConfigFile, Procs};
use support::*;

const SIGNING_KEY: &str = "signing-key-test-8d1f0c27";

/// A CloudEvents offboarding event from `source`.
fn from_source(id: &str, source: &str, email: &str) -> Vec<u8> {
    serde_json::json!({
        "specversion": "1.0", "id": id, "source": source, "type": "offboarding.requested",
        "data": { "person": { "email": email } },
    })
    .to_string()
    .into_bytes()
}

/// Writes the test's `offboard.toml` with `extra` TOML appended (it continues the
/// `[connections.smartsheet]` table until a new `[section]` starts).
fn config_file(dir: &Path, url: &str, org: &Org, extra: &str) -> PathBuf {
    config_file_with_intake(dir, url, org, "allow_unsigned = true\n", extra)
}

/// [`config_file`] with `intake` as the lines of its `[intake]` table.
fn config_file_with_intake(dir: &Path, url: &str, org: &Org, intake: &str, extra: &str) -> PathBuf {
    let file = ConfigFile {
        intake: intake.to_string(),
        ..ConfigFile::new(url, &amqp_names(), &org.sim.base_url())
    };
    let path = file.write(&dir.join("offboard.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    // Keep the names the file was written with: read them back from it.
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    path
}

fn names_of(path: &Path) -> offboard::config::AmqpNames {
    offboard::config::Config::load(Some(path)).unwrap().amqp
}

fn run(path: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = command(path);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_sources_with_good_signatures_may_ask() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file_with_intake(
        dir.path(),
        &url,
        &org,
        "allowed_sources = [\"workday\", \"offboard-cli\"]\nsigning_key_env = \"OFFBOARD_TEST_SIGNING_KEY\"\n",
        "",
    );
    let names = names_of(&path);
    let mut procs = Procs::new();
    let mut serve = command(&path);
    serve
        .arg("serve")
        .env("RUST_LOG", "info")
        .env("OFFBOARD_TEST_SIGNING_KEY", SIGNING_KEY);
    procs.spawn("serve", serve, &dir.path().join("serve.log"));

    let send = |id: &'static str, source: &'static str, key: Option<&'static str>| {
        let names = names.clone();
        async move {
            let body = from_source(id, source, LEAVER);
            let now = chrono::Utc::now().timestamp();
            let signed = key.map(|k| {
                admission::sign(&admission::SigningKey::decode(k).unwrap(), id, now, &body)
            });
            offboard::intake::submit_signed(
                AMQP_URL,
                &names,
                "offboarding.requested",
                &body,
                signed.as_ref(),
            )
            .await
            .unwrap();
        }
    };
    send("ask-unsigned", "workday", None).await;
    send("ask-forged", "workday", Some("a guessed key")).await;
    send("ask-intruder", "intern-laptop", Some(SIGNING_KEY)).await;
    // `submit` signs with the key it finds through the same configuration.
    let (code, _, err) = run(
        &path,
        &[
            "submit",
            "--email",
            LEAVER,
            "--transfer-to",
            RECIPIENT,
            "--id",
            "ask-signed",
        ],
        &[("OFFBOARD_TEST_SIGNING_KEY", SIGNING_KEY)],
    );
    assert_eq!(code, 0, "{err}");

    let store = Store::open(&url).await.unwrap();
    let wf = finished(&store, "ask-signed", 1, 60).await.remove(0);
    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("removed"))
    );
    let dead = eventually(30, "three dead letters", || async {
        let rows = store.dead_letters().await.unwrap();
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    let codes: HashMap<String, String> = dead
        .into_iter()
        .map(|r| (r.event_id.unwrap_or_default(), r.code))
        .collect();
    assert_eq!(codes["ask-unsigned"], "EVT-105");
    assert_eq!(codes["ask-forged"], "EVT-105");
    assert_eq!(codes["ask-intruder"], "EVT-104");
    assert_eq!(codes.len(), 3, "{codes:?}");
    for id in ["ask-unsigned", "ask-forged", "ask-intruder"] {
        assert!(
            store.by_event(id).await.unwrap().is_empty(),
            "{id} started nothing"
        );
    }
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        !log.contains(SIGNING_KEY),
        "the signing key is never logged"
    );
}

/// Offboards `email` through an in-process engine whose Smartsheet connection has
/// `protected` and `allow_admins`; returns the ended workflow.
async fn offboard_guarded(
    org: &Org,
    email: &str,
    protected: &[&str],
    allow_admins: bool,
) -> offboard::store::entities::workflow::Model {
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let mut config = config(&url, amqp_names(), &org.sim.base_url());
    let conn = config.connections.get_mut("smartsheet").unwrap();
    conn.protected = protected.iter().map(|p| p.to_string()).collect();
    conn.allow_admins = allow_admins;
    let engine = engine(config, TOKEN).await;
    let body = event(
        &format!("protect-{}", unique()),
        "offboarding.requested",
        email,
        Some(RECIPIENT),
    );
    let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
    engine
        .accept(&request, &String::from_utf8_lossy(&body))
        .await
        .unwrap()
        .unwrap();
    engine
        .run_until_settled(Duration::from_secs(5))
        .await
        .unwrap();
    engine
        .store()
        .by_event(&request.event_id)
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_people_are_never_removed() {
    let org = org().await;
    org.sim.add_user(SimUser {
        admin: true,
        ..SimUser::new("sysadmin@example.com")
    });
    org.sim.add_user(SimUser::new("sam@ops.example.com"));
    org.sim.add_user(SimUser::new("ceo@example.com"));
    for (email, protected, allow_admins, why) in [
        ("admin@example.com", &[][..], true, "owns the token"),
        ("sysadmin@example.com", &[][..], false, "administrator"),
        (
            "sam@ops.example.com",
            &["ceo@example.com", "*@ops.example.com"][..],
            false,
            "protected pattern",
        ),
        (
            "CEO@example.com",
            &["ceo@example.com"][..],
            false,
            "protected pattern",
        ),
    ] {
        org.sim.clear_calls();
        let wf = offboard_guarded(&org, email, protected, allow_admins).await;
        assert_eq!(
            (wf.state.as_str(), wf.error_code.as_deref()),
            ("failed", Some("SMT-112-B")),
            "{email}"
        );
        let message = wf.error_message.unwrap_or_default();
        assert!(message.contains(why), "{email}: {message}");
        let writes: Vec<_> = org
            .sim
            .calls()
            .into_iter()
            .filter(|c| c.method != "GET")
            .collect();
        assert!(writes.is_empty(), "{email}: {writes:?}");
        assert!(
            org.sim.user_by_email(email).is_some(),
            "{email} is still there"
        );
    }
    // The same rules let an ordinary leaver go.
    let wf = offboard_guarded(&org, LEAVER, &["*@ops.example.com"], false).await;
    assert_eq!(wf.outcome.as_deref(), Some("removed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_holds_offboardings_past_the_hourly_limit_until_released() {
    const EVENTS: usize = 60;
    const LIMIT: u32 = 50;
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        &url,
        &org,
        &format!("[limits]\nmax_offboardings_per_hour = {LIMIT}\n"),
    );
    // Two engines (two stores, as two `serve` processes would have) accept side by side:
    // the count is the database's, so exactly the events past the limit are held.
    let config = offboard::config::Config::load(Some(&path)).unwrap();
    let engines = [
        engine(config.clone(), TOKEN).await,
        engine(config, TOKEN).await,
    ];
    let mut accepts = tokio::task::JoinSet::new();
    for i in 0..EVENTS {
        let engine = engines[i % 2].clone();
        accepts.spawn(async move {
            let body = event(
                &format!("mass-{i:02}"),
                "offboarding.requested",
                &format!("p{i}@example.com"),
                None,
            );
            let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
            engine
                .accept(&request, &String::from_utf8_lossy(&body))
                .await
                .unwrap()
                .unwrap();
        });
    }
    accepts.join_all().await;
    let engine = &engines[0];
    engine
        .run_until_settled(Duration::from_secs(5))
        .await
        .unwrap();
    let rows = engine.store().list(None).await.unwrap();
    let count = |state: &str| rows.iter().filter(|r| r.state == state).count();
    assert_eq!((count("completed"), count("held")), (50, 10));

    let (code, out, _) = run(&path, &["list", "--state", "held"], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 10, "{out}");
    let (code, out, err) = run(
        &path,
        &["release", "--all", "--by", "auditor@example.com"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("10 workflows released"), "{out}");
    engine
        .run_until_settled(Duration::from_secs(5))
        .await
        .unwrap();
    let rows = engine.store().list(None).await.unwrap();
    assert!(
        rows.iter().all(|r| r.state == "completed"),
        "every released one ran"
    );

    let mut held = 0;
    for row in &rows {
        let kinds: Vec<String> = trail(engine.store(), &row.id)
            .await
            .into_iter()
            .map(|r| r.kind)
            .collect();
        if kinds[1] == "held" {
            held += 1;
            assert_eq!(kinds[2], "released", "{kinds:?}");
            let body = &trail(engine.store(), &row.id).await[2].body;
            assert!(body.contains("auditor@example.com"), "{body}");
        } else {
            assert!(!kinds.contains(&"released".to_string()));
        }
        let (code, out, _) = run(&path, &["replay", &row.id], &[]);
        assert_eq!(code, 0, "{out}");
    }
    assert_eq!(held, 10);
    // Releasing what is not held is refused.
    let (code, _, err) = run(&path, &["release", &rows[0].id, "--by", "x"], &[]);
    assert_eq!(code, 2, "{err}");
}

/// Rewrites record `at` (0-based) of a trail (with the leaver's email changed when
/// `edit`), then every later link and the stored head, linking with `key` (`None`: plain
/// SHA-256, what an attacker without the key can do).
async fn rewrite(store: &Store, id: &str, at: usize, key: Option<&chain::AuditKey>, edit: bool) {
    let trail = store.trail(id).await.unwrap();
    let mut prev = trail[at].prev_hash.clone();
    for (i, row) in trail.iter().enumerate().skip(at) {
        let body = if i == at && edit {
            row.body.replace("ada@example.com", "someone@else.example")
        } else {
            row.body.clone()
        };
        let hash = chain::link(key, &prev, row.seq, row.at, &body);
        let mut m: audit::ActiveModel = row.clone().into();
        m.body = Set(body);
        m.prev_hash = Set(prev.clone());
        m.hash = Set(hash.clone());
        m.update(store.connection()).await.unwrap();
        prev = hash;
    }
    store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE workflows SET trail_head = '{prev}' WHERE id = '{id}'"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_rewritten_without_the_key_is_detected() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &url, &org, "");
    let names = names_of(&path);
    let (watch, queue) = watch_exchange(&names, "workflow.*").await;

    // serve refuses to start on PostgreSQL without the key, in one line.
    let mut no_key = command(&path);
    no_key.arg("serve").env_remove("OFFBOARD_AUDIT_KEY");
    let out = no_key.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("OFFBOARD_AUDIT_KEY") && !err.contains(AUDIT_KEY),
        "{err}"
    );

    let mut procs = Procs::new();
    procs.serve("serve", &path, &dir.path().join("serve.log"));
    for id in ["chain-1", "chain-2", "chain-3"] {
        publish(
            &names,
            "offboarding.requested",
            &event(id, "offboarding.requested", LEAVER, Some(RECIPIENT)),
        )
        .await;
    }
    let store = Store::open(&url).await.unwrap().with_audit_key(audit_key());
    let mut ids = Vec::new();
    for id in ["chain-1", "chain-2", "chain-3"] {
        ids.push(finished(&store, id, 1, 60).await.remove(0).id);
    }
    // Each completion event carries the trail's final link, as stored.
    let events = take(&watch, &queue, 3, 30).await;
    for d in &events {
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        let id = v["data"]["workflow_id"].as_str().unwrap();
        let row = store.get(id).await.unwrap().unwrap();
        assert_eq!(v["data"]["trail_head"], row.trail_head.as_str());
        assert!(chain::is_keyed(&row.trail_head));
    }
    let (code, out, _) = run(&path, &["verify", "--all"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 intact, 0 mismatched"), "{out}");

    // Someone with write access edits a record and recomputes the chain with plain SHA-256.
    rewrite(&store, &ids[0], 0, None, true).await;
    let (code, out, _) = run(&path, &["replay", &ids[0]], &[]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("rewritten without the audit key"), "{out}");
    // …or with a key of their own.
    let guessed = chain::AuditKey::new("a guessed key").unwrap();
    rewrite(&store, &ids[1], 0, Some(&guessed), true).await;
    let (code, out, _) = run(&path, &["replay", &ids[1]], &[]);
    assert_eq!(code, 5, "{out}");
    // Verifying without the key is a usage error, not a verdict.
    let (code, _, err) = run(&path, &["replay", &ids[2]], &[("OFFBOARD_AUDIT_KEY", "")]);
    assert_eq!(code, 2, "{err}");

    let (code, out, _) = run(&path, &["verify", "--all", "--since", "2000-01-01"], &[]);
    assert_eq!(code, 5, "{out}");
    for id in &ids {
        assert!(
            out.contains(id.as_str()),
            "every workflow is reported: {out}"
        );
    }
    assert!(out.contains("1 intact, 2 mismatched"), "{out}");

    // Links written with the audit key (offboard's own writes) are what verifies.
    rewrite(&store, &ids[2], 0, Some(&audit_key()), false).await;
    let (code, out, _) = run(&path, &["replay", &ids[2]], &[]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_values_cannot_forge_log_lines_or_reach_the_terminal() {
    let org = org().await;
    let (url, _tmp) = fresh_database(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &url, &org, "");
    let names = names_of(&path);
    let mut procs = Procs::new();
    let log = dir.path().join("serve.log");
    procs.serve("serve", &path, &log);

    let forged = "2026-11-23T00:00:00.000000Z  INFO offboard: forged";
    let hostile: [(String, &str, &str); 4] = [
        (
            format!("crlf-1\r\n{forged}"),
            "offboarding.requested",
            RECLAIM,
        ),
        (
            "esc-\u{1b}[2J\u{1b}]0;owned\u{7}".into(),
            "offboarding.requested",
            RECLAIM,
        ),
        (
            "esc-email".into(),
            "offboarding.requested",
            "ada\u{1b}[31m@example.com",
        ),
        (format!("crlf-2\n{forged}"), "bogus.type", LEAVER),
    ];
    for (id, kind, email) in &hostile {
        publish(
            &names,
            "offboarding.requested",
            &event(id, kind, email, None),
        )
        .await;
    }
    publish(
        &names,
        "license.reclaim.requested",
        &event("plain-1", "license.reclaim.requested", RECLAIM, None),
    )
    .await;

    let store = Store::open(&url).await.unwrap();
    let wf = finished(&store, "plain-1", 1, 60).await.remove(0);
    let dead = eventually(30, "four dead letters", || async {
        let rows = store.dead_letters().await.unwrap();
        (rows.len() >= 4).then_some(rows)
    })
    .await;
    let code_of = |prefix: &str| {
        dead.iter()
            .find(|r| r.event_id.as_deref().is_some_and(|e| e.starts_with(prefix)))
            .map(|r| r.code.clone())
    };
    assert_eq!(
        code_of("esc-email").as_deref(),
        Some("EVT-102"),
        "an ESC in an email is refused"
    );
    assert_eq!(code_of("crlf-1").as_deref(), Some("EVT-102"));
    assert_eq!(code_of("esc-").as_deref(), Some("EVT-102"));
    assert_eq!(
        store.list(None).await.unwrap().len(),
        1,
        "no hostile event became a workflow"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("crlf-1\\r\\n"), "the id is logged escaped");
    for line in text.lines() {
        assert!(!line.starts_with(forged), "forged log line: {line}");
        assert!(
            !line.contains('\u{1b}') && !line.contains('\r'),
            "raw control character in the log: {line:?}"
        );
    }

    // Values an app sent back (stored as received) are shown escaped.
    store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE workflows SET error_code = 'SMT-199-B', error_message = 'gone\u{1b}[2J\u{1b}]0;owned\u{7}\r\n{forged}' WHERE id = '{}'",
            wf.id
        ))
        .await
        .unwrap();
    for args in [vec!["list"], vec!["show", &wf.id], vec!["history", &wf.id]] {
        let (code, out, _) = run(&path, &args, &[]);
        assert_eq!(code, 0);
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\r'),
            "{args:?}: {out:?}"
        );
        assert!(
            !out.lines().any(|l| l.starts_with(forged)),
            "{args:?}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_exports_evidence_before_removing_finished_workflows() {
    let org = org().await;
    let (url, _tmp) = fresh_database(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &url, &org, "");
    let config = offboard::config::Config::load(Some(&path)).unwrap();
    let engine = engine(config, TOKEN).await;
    for (id, email) in [("old-1", RECLAIM), ("old-2", "nobody@example.com")] {
        let body = event(id, "license.reclaim.requested", email, None);
        let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
        engine
            .accept(&request, &String::from_utf8_lossy(&body))
            .await
            .unwrap()
            .unwrap();
    }
    engine
        .run_until_settled(Duration::from_secs(5))
        .await
        .unwrap();
    engine
        .store()
        .dead_letter("EVT-100", "not JSON", None, "x", b"{")
        .await
        .unwrap();
    assert_eq!(engine.store().list(None).await.unwrap().len(), 2);

    // Refused without somewhere to put the evidence.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let (code, _, err) = run(&path, &["prune", "--before", &tomorrow], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(engine.store().list(None).await.unwrap().len(), 2);

    let file = dir.path().join("evidence.csv");
    let (code, out, err) = run(
        &path,
        &[
            "prune",
            "--before",
            &tomorrow,
            "--evidence",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let csv = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "a header and one row per workflow: {csv}"
    );
    assert!(csv.contains("old-1") && csv.contains("old-2"), "{csv}");
    assert!(engine.store().list(None).await.unwrap().is_empty());
    assert!(engine.store().dead_letters().await.unwrap().is_empty());
    let (code, out, _) = run(&path, &["verify", "--all"], &[]);
    assert_eq!(code, 0, "{out}");
}
