//! Trails that cannot lie (issue 19): once a database has used its audit key, a trail
//! rewritten with plain SHA-256 links fails `verify` and `replay` whatever dates its
//! records claim, while trails from before the key (listed as legacy when the key was
//! first used) still verify; and `replay` checks the columns `list`, the console and the
//! evidence show against the state the trail rebuilds. Workflows run in this process on
//! PostgreSQL; the verdicts come from the real binary.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use offboard::apps::AppClient;
use offboard::config::Secret;
use offboard::domain::chain::{self, PlainLinks};
use offboard::runtime::definitions::Registry;
use offboard::runtime::engine::Engine;
use offboard::store::entities::audit;
use offboard::store::Store;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use support::procs::{cli, ConfigFile};
use support::*;

/// One PostgreSQL database, a simulator, and the configuration file the binary reads.
struct Setup {
    org: Org,
    url: String,
    config_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let config_file = ConfigFile::new(&url, &amqp_names(), &org.sim.base_url())
        .write(&dir.path().join("offboard.toml"));
    Setup {
        org,
        url,
        config_file,
        _dir: dir,
    }
}

impl Setup {
    /// An engine over the database, linking its records with `key`, or without one like a
    /// deployment from before the audit key.
    async fn engine(&self, key: Option<chain::AuditKey>) -> Arc<Engine> {
        let config = config(&self.url, amqp_names(), &self.org.sim.base_url());
        let mut store = Store::open(&self.url).await.unwrap();
        if let Some(key) = key {
            store = store.with_audit_key(key);
        }
        let conn = config.connections["smartsheet"].clone();
        let engine = Engine::new(store, config, Registry::load(None).unwrap())
            .with_lease(Duration::from_secs(3));
        engine
            .use_client(
                "smartsheet",
                AppClient::new(&conn, Secret::new(TOKEN)).unwrap(),
            )
            .await;
        Arc::new(engine)
    }

    /// Runs `event` to its end on `engine`; returns its workflow's id.
    async fn run(&self, engine: &Arc<Engine>, event: &[u8]) -> String {
        let request = offboard::domain::event::parse(event, &["smartsheet".into()]).unwrap();
        engine
            .accept(&request, &String::from_utf8_lossy(event))
            .await
            .unwrap()
            .unwrap();
        engine
            .run_until_settled(Duration::from_secs(30))
            .await
            .unwrap();
        let rows = engine.store().by_event(&request.event_id).await.unwrap();
        assert!(rows[0].finished_at.is_some(), "{} ended", rows[0].id);
        rows[0].id.clone()
    }

    /// `offboard ARGS` with the audit key: (exit code, stdout and stderr).
    fn cli(&self, args: &[&str]) -> (i32, String) {
        let (code, out, err) = cli(&self.config_file, args);
        (code, format!("{out}{err}"))
    }

    async fn sql(&self, store: &Store, sql: &str) {
        store.connection().execute_unprepared(sql).await.unwrap();
    }
}

/// What an attacker with write access to the database (and not the audit key) does to
/// hide a change: edits workflow `id`'s first record, dates every record `back` earlier,
/// relinks the whole trail with plain SHA-256, and moves the workflow's head to match.
async fn rewrite_plain_back_dated(store: &Store, id: &str, back: chrono::Duration) {
    let mut prev = chain::GENESIS.to_string();
    for (i, row) in store.trail(id).await.unwrap().into_iter().enumerate() {
        let at: DateTime<Utc> = row.at - back;
        let body = if i == 0 {
            row.body.replace(LEAVER, "someone@else.example")
        } else {
            row.body.clone()
        };
        let hash = chain::plain_link(&prev, row.seq, at, &body);
        let mut m: audit::ActiveModel = row.into();
        m.at = Set(at);
        m.body = Set(body);
        m.prev_hash = Set(prev.clone());
        m.hash = Set(hash.clone());
        m.update(store.connection()).await.unwrap();
        prev = hash;
    }
    store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE workflows SET trail_head = '{prev}', \
             created_at = created_at - interval '{} seconds' WHERE id = '{id}'",
            back.num_seconds()
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_dated_plain_rewrite_fails_and_a_trail_from_before_the_key_still_verifies() {
    let s = setup().await;
    // Before the key: a deployment without one writes a plain trail.
    let keyless = s.engine(None).await;
    let legacy = s
        .run(
            &keyless,
            &event("legacy", "license.reclaim.requested", RECLAIM, None),
        )
        .await;
    let legacy_len = keyless.store().trail(&legacy).await.unwrap().len() as i32;
    assert_eq!(keyless.store().key_first_used().await.unwrap(), None);
    assert_eq!(
        keyless.store().plain_links(&legacy).await.unwrap(),
        PlainLinks::Accepted,
        "a database that never used a key keeps accepting plain trails"
    );

    // The key arrives: its first write lists the plain trails of the moment, once.
    let keyed = s.engine(Some(audit_key())).await;
    let victim = s
        .run(
            &keyed,
            &event("victim", "offboarding.requested", LEAVER, Some(RECIPIENT)),
        )
        .await;
    let other = s
        .run(
            &keyed,
            &event("other", "offboarding.requested", "nobody@example.com", None),
        )
        .await;
    let store = keyed.store();
    let first_use = store.key_first_used().await.unwrap().expect("recorded");
    let listed = store.legacy_trails().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed.get(&legacy), Some(&legacy_len));
    for id in [&victim, &other] {
        assert_eq!(store.plain_links(id).await.unwrap(), PlainLinks::Through(0));
    }
    let (code, out) = s.cli(&["verify", "--all"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 intact, 0 mismatched"), "{out}");

    // A database that held keyed records before this record existed gets it from its
    // migration: the same legacy trail, the key's first use from its earliest keyed link.
    s.sql(
        store,
        "DROP TABLE legacy_trails; DROP TABLE audit_key_first_use; \
         DELETE FROM seaql_migrations WHERE version = 'm20261203_000008_legacy_trails'",
    )
    .await;
    let reopened = Store::open(&s.url).await.unwrap();
    assert_eq!(reopened.legacy_trails().await.unwrap(), listed);
    let backfilled = reopened
        .key_first_used()
        .await
        .unwrap()
        .expect("backfilled");
    assert!(backfilled >= first_use, "{backfilled} {first_use}");
    assert_eq!(s.cli(&["verify", "--all"]).0, 0);

    // The attack: the victim's trail edited, relinked plain and dated a month before the
    // key's first use (and before the legacy trail itself).
    rewrite_plain_back_dated(store, &victim, chrono::Duration::days(30)).await;
    assert!(store.trail(&victim).await.unwrap()[0].at < first_use);
    let (code, out) = s.cli(&["replay", &victim]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("MISMATCH at record 1"), "{out}");
    assert!(out.contains("rewritten without the audit key"), "{out}");
    let (code, out) = s.cli(&["verify", "--all"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("2 intact, 1 mismatched"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&legacy) && l.contains("intact")),
        "the legacy trail still verifies: {out}"
    );
    let (code, out) = s.cli(&["replay", &legacy]);
    assert_eq!(code, 0, "{out}");

    // A plain record added to the legacy trail after the key's first use (a process
    // without the key, or a forger) lies past its listed part: a break.
    let note = offboard::domain::machine::Record::DuplicateReceived {
        source: "forged".into(),
    };
    keyless
        .store()
        .append_note(&legacy, Utc::now() - chrono::Duration::days(60), &note)
        .await
        .unwrap();
    let (code, out) = s.cli(&["replay", &legacy]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains(&format!("MISMATCH at record {}", legacy_len + 1)),
        "{out}"
    );
    drop_database(&s.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_names_each_stored_column_that_differs_from_the_trail() {
    let s = setup().await;
    let engine = s.engine(Some(audit_key())).await;
    let id = s
        .run(
            &engine,
            &event("columns", "license.reclaim.requested", RECLAIM, None),
        )
        .await;
    let store = engine.store();
    assert_eq!(s.cli(&["replay", &id]).0, 0);
    let row = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.outcome.as_deref()),
        ("completed", Some("downgraded"))
    );
    let finished = row.finished_at.unwrap();
    let restore = format!(
        "UPDATE workflows SET state = 'completed', outcome = 'downgraded', error_code = NULL, \
         finished_at = '{}' WHERE id = '{id}'",
        finished.to_rfc3339()
    );
    // Each column edited alone (the machine state left as it was), then restored.
    let earlier = (finished - chrono::Duration::hours(1)).to_rfc3339();
    let edits = [
        (
            "state",
            "state = 'failed'".to_string(),
            "\"failed\"".to_string(),
        ),
        ("outcome", "outcome = 'absent'".into(), "\"absent\"".into()),
        (
            "error_code",
            "error_code = 'SMT-190-B'".into(),
            "\"SMT-190-B\"".into(),
        ),
        (
            "finished_at",
            format!("finished_at = '{earlier}'"),
            format!("{earlier:?}"),
        ),
        ("finished_at", "finished_at = NULL".into(), "nothing".into()),
    ];
    for (column, set, shown) in edits {
        s.sql(
            store,
            &format!("UPDATE workflows SET {set} WHERE id = '{id}'"),
        )
        .await;
        let (code, out) = s.cli(&["replay", &id]);
        assert_eq!(code, 5, "{column}: {out}");
        let verdict = out.lines().last().unwrap();
        assert!(
            verdict.contains(&format!("{column} is {shown}")),
            "{column}: {verdict}"
        );
        assert!(!verdict.contains("state_json"), "{verdict}");
        let (code, out) = s.cli(&["verify", "--all"]);
        assert_eq!(code, 5, "{column}: {out}");
        assert!(out.contains(column), "{out}");
        s.sql(store, &restore).await;
        assert_eq!(s.cli(&["replay", &id]).0, 0, "{column} restored");
    }

    // Several columns at once: each is named, and one bad value never reaches the
    // terminal raw.
    s.sql(
        store,
        &format!(
            "UPDATE workflows SET outcome = E'removed\\x1b[2J', error_code = 'SMT-110-B' \
             WHERE id = '{id}'"
        ),
    )
    .await;
    let (code, out) = s.cli(&["replay", &id]);
    assert_eq!(code, 5, "{out}");
    let verdict = out.lines().last().unwrap();
    assert!(
        verdict.contains("outcome is \"removed\\u{1b}[2J\", the trail says \"downgraded\"")
            && verdict.contains("error_code is \"SMT-110-B\", the trail says nothing"),
        "{verdict}"
    );
    assert!(!out.contains('\u{1b}'), "{out:?}");
    drop_database(&s.url).await;
}

/// Several processes taking the key into use at the same moment record its first use once
/// and list exactly the trails that were plain then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_taking_the_key_into_use_together_record_it_once() {
    let s = setup().await;
    let keyless = s.engine(None).await;
    let mut plain = std::collections::HashMap::new();
    for (id, email) in [("plain-1", RECLAIM), ("plain-2", "nobody@example.com")] {
        let wf = s
            .run(
                &keyless,
                &event(id, "license.reclaim.requested", email, None),
            )
            .await;
        let len = keyless.store().trail(&wf).await.unwrap().len() as i32;
        plain.insert(wf, len);
    }

    // Four processes (each its own pool) accept an event each, at once: each accept is
    // its process's first keyed write.
    let mut engines = Vec::new();
    for _ in 0..4 {
        engines.push(s.engine(Some(audit_key())).await);
    }
    let bodies: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            event(
                &format!("keyed-{i}"),
                "offboarding.requested",
                "nobody@example.com",
                None,
            )
        })
        .collect();
    let accepts = engines
        .iter()
        .zip(&bodies)
        .map(|(engine, body)| async move {
            let request = offboard::domain::event::parse(body, &["smartsheet".into()]).unwrap();
            engine
                .accept(&request, &String::from_utf8_lossy(body))
                .await
                .unwrap()
                .unwrap();
        });
    futures_util::future::join_all(accepts).await;
    engines[0]
        .run_until_settled(Duration::from_secs(30))
        .await
        .unwrap();

    let store = engines[0].store();
    assert!(store.key_first_used().await.unwrap().is_some());
    assert_eq!(store.legacy_trails().await.unwrap(), plain);
    let rows = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(*) AS n FROM audit_key_first_use",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.try_get::<i64>("", "n").unwrap(), 1);
    let (code, out) = s.cli(&["verify", "--all"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("6 intact, 0 mismatched"), "{out}");
    assert!(out.contains("4 keyed (HMAC-SHA256), 2 plain"), "{out}");
    drop_database(&s.url).await;
}
